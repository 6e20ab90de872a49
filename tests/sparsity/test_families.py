"""Mask families (issue 29): which weights a layer keeps, at exactly the rule's count per layer.

Counts are checked against an independent count (a plain Python sum over the mask's entries), the
scores against a hand-computed reference, and every tie-break against the seed alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from widecli.config.schema import RunSpec
from widecli.errors import BudgetError, RecipeError
from widecli.rng import generator
from widecli.sparsity.families import (
    MASKS,
    family,
    nm_mask,
    nm_problem,
    nm_satisfied,
    snip_scores,
    synflow_masks,
    top_k,
)


def count(mask: torch.Tensor) -> int:
    """An independent count: every entry visited in Python."""
    return sum(1 for v in mask.flatten().tolist() if v)


# ---------------------------------------------------------------- top_k


def test_top_k_keeps_exactly_k_of_the_highest():
    scores = torch.tensor([[0.1, 5.0, 3.0], [4.0, 0.0, 2.0]])
    mask = top_k(scores, 3, generator(0, "t"))
    assert count(mask) == 3
    assert mask.tolist() == [[False, True, True], [True, False, False]]


def test_top_k_breaks_ties_by_the_seed_alone():
    scores = torch.zeros(1000)  # every score tied: the seed decides
    a, b = top_k(scores, 100, generator(1, "t")), top_k(scores, 100, generator(1, "t"))
    c = top_k(scores, 100, generator(2, "t"))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert count(a) == count(c) == 100


def test_top_k_ranks_nan_last():
    scores = torch.tensor([float("nan"), 1.0, 2.0])
    assert top_k(scores, 2, generator(0)).tolist() == [False, True, True]


# ---------------------------------------------------------------- N:M


@pytest.mark.parametrize("shape, count_, n, m", [
    ((8, 16), 64, 2, 4),          # exactly N/M: every group keeps exactly N
    ((8, 16), 37, 2, 4),          # below N/M: balanced, at most N per group
    ((6, 8, 3, 3), 100, 1, 4),    # a conv: groups along the input channels
    ((10, 32), 1, 2, 4),
])
def test_nm_mask_is_exact_and_satisfies_the_pattern(shape, count_, n, m):
    assert nm_problem(shape, count_, n, m) is None
    mask = nm_mask(shape, count_, n, m, generator(3, "nm"))
    assert mask.shape == shape and count(mask) == count_
    assert nm_satisfied(mask, n, m)
    # independently: every group of m consecutive input weights, for every row and kernel position
    moved = mask.movedim(1, -1).reshape(-1, shape[1])
    for row in moved.tolist():
        for i in range(0, shape[1], m):
            assert sum(row[i:i + m]) <= n


def test_nm_mask_at_exactly_n_over_m_keeps_n_in_every_group():
    mask = nm_mask((4, 8), 16, 2, 4, generator(0))
    assert (mask.reshape(4, 2, 4).sum(-1) == 2).all()


def test_nm_satisfied_detects_a_violation():
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[0, :3] = True  # three in the first group of four
    assert not nm_satisfied(mask, 2, 4)
    assert nm_satisfied(mask, 3, 4)


def test_nm_problem_says_why():
    assert "divisible by M = 4" in nm_problem((10, 6), 10, 2, 4)
    assert "connectivity 0.6 > N/M = 0.5" in nm_problem((10, 8), 48, 2, 4)
    assert nm_problem((10, 6), 60, 2, 4) is None  # kept whole: dense, no pattern


# ---------------------------------------------------------------- the registry


def test_family_names_and_patterns():
    assert set(MASKS.names()) >= {"random", "snip", "synflow", "set", "rigl"}
    assert family("rigl").dynamic and family("set").dynamic and not family("snip").dynamic
    assert family("rigl").grow == "gradient" and family("set").grow == "random"
    nm = family("2:4")
    assert (nm.n, nm.m, nm.name) == (2, 4, "2:4")
    for bad in ("4:4", "0:4", "5:4", "magic"):
        with pytest.raises(RecipeError) as e:
            family(bad)
        assert "sparsity.mask" in str(e.value) and "\n" not in str(e.value)


def test_a_users_family_through_a_dotted_path():
    fam = family("widecli.sparsity.families:MaskFamily")
    assert fam.name == "widecli.sparsity.families:MaskFamily" and not fam.dynamic


# ---------------------------------------------------------------- scored families on a model


class Tiny(nn.Module):
    """An unstacked two-layer model (the convention of a user's model: [B, ...] in, [B, C] out)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.out = nn.Linear(6, 5), nn.Linear(5, 3)

    def forward(self, x):
        return self.out(torch.relu(self.fc1(x)))


def test_snip_scores_are_the_connection_sensitivity():
    torch.manual_seed(0)
    model = Tiny()
    x, y = torch.randn(1, 4, 6), torch.tensor([[0, 1, 2, 1]])
    scores = snip_scores(model, ["fc1", "out"], [(x, y)])
    ref = Tiny()
    ref.load_state_dict(model.state_dict())
    nn.functional.cross_entropy(ref(x[0]), y[0]).backward()
    for name in ("fc1", "out"):
        w = getattr(ref, name).weight
        assert torch.allclose(scores[name][0], (w.grad * w).abs())
    assert model.fc1.weight.grad is None  # scored on a copy: the model itself is untouched


def test_snip_masks_keep_the_top_scores_exactly():
    torch.manual_seed(0)
    model = Tiny()
    x, y = torch.randn(1, 8, 6), torch.randint(0, 3, (1, 8))
    specs = [spec(mask="snip", seed=4)]
    masks = family("snip").initial({"fc1": (5, 6), "out": (3, 5)}, {"fc1": 7, "out": 15}, specs, model,
                                   (6,), lambda n: [(x, y)] * n)[0]
    assert count(masks["fc1"]) == 7 and count(masks["out"]) == 15
    scores = snip_scores(model, ["fc1"], [(x, y)])["fc1"][0]
    assert scores[masks["fc1"]].min() >= scores[~masks["fc1"]].max()


def test_synflow_keeps_exact_counts_and_is_data_free():
    torch.manual_seed(0)
    model = Tiny()
    counts = {"fc1": 9, "out": 4}
    a = synflow_masks(model, counts, [7], (6,), iterations=10)[0]
    b = synflow_masks(model, counts, [7], (6,), iterations=10)[0]
    assert {n: count(m) for n, m in a.items()} == counts
    assert all(torch.equal(a[n], b[n]) for n in a)
    # One round with a single-layer model: the synaptic flow of w_ij is |w_ij| * 1 (input ones), so
    # SynFlow keeps the largest magnitudes.
    lin = nn.Linear(10, 1, bias=False)
    m = synflow_masks(lin, {"": 3}, [0], (10,), iterations=1)[0][""]
    assert set(m[0].nonzero().flatten().tolist()) == set(lin.weight[0].abs().topk(3).indices.tolist())


# ---------------------------------------------------------------- checks at plan time


def spec(**sparsity) -> RunSpec:
    return RunSpec.model_validate({
        "recipe": "t", "data": {"dataset": "mnist1d"}, "model": {"arch": "mlp", "hidden": [8]},
        "widen_layers": "first", "factor": 4.0, "method": "sparse", "sparsity": sparsity,
        "train": {}, "seed": sparsity.pop("seed", 0)})


def test_nm_check_names_the_layer_and_what_is_allowed():
    with pytest.raises(BudgetError) as e:
        family("2:4").check({"fc1": (32, 40), "out": (10, 32)}, {"fc1": 1000, "out": 320}, spec(mask="2:4"))
    msg = str(e.value)
    assert "sparsity.mask" in msg and "fc1" in msg and "N/M" in msg and "\n" not in msg
    family("2:4").check({"fc1": (32, 40), "out": (10, 32)}, {"fc1": 640, "out": 320}, spec(mask="2:4"))


def test_random_family_is_todays_masks():
    shapes, counts = {"fc1": (32, 40), "out": (10, 32)}, {"fc1": 300, "out": 320}
    from widecli.sparsity.masks import make_masks
    got = family("random").initial(shapes, counts, [spec(seed=3)])[0]
    want = make_masks(shapes, counts, 3)
    assert all(torch.equal(got[n], want[n]) for n in shapes)


def test_every_family_keeps_exact_counts_on_a_stacked_mlp():
    """K = 2 seeds in one stacked model: each run's own mask, each with exactly the count."""
    from widecli.methods import build, plan_weights
    for name in ("random", "snip", "synflow", "set", "rigl", "2:4"):
        specs = [spec(mask=name, rule="proportional", seed=s) for s in (0, 1)]
        if name == "2:4":  # proportional at factor 2 of a 1-hidden-layer MLP: connectivity exactly 1/2
            specs = [s.model_copy(update={"factor": 2.0}) for s in specs]
        plan = plan_weights(specs[0], (40,), 10)
        x, y = torch.randn(2, 16, 40), torch.randint(0, 10, (2, 16))
        built = build(specs, (40,), 10, batches=lambda n: [(x, y)] * n)
        for n in plan.masked:
            for j in range(2):
                m = built.masks[n][j]
                assert count(m) == plan.counts[n], (name, n)
                w = getattr(built.model, n).weight[j]
                assert not bool(((w != 0) & ~m).any()), (name, n)
        if name != "random":
            assert not torch.equal(built.masks["fc1"][0], built.masks["fc1"][1])
        if name == "2:4":
            assert all(nm_satisfied(built.masks[n][j], 2, 4) for n in plan.masked for j in range(2))


def test_synflow_scores_the_linearized_network():
    """Two bias-free linear layers, one round: the flow through w1_ij is |w1_ij| * sum_k |w2_ki| (the
    network linearized by absolute values, all-ones input), not the signed product."""
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[3.0, -2.5, 0.1], [0.2, 0.3, -0.4], [-2.8, 0.5, 0.6], [0.7, 0.8, 0.9]]))
        model[1].weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1.0], [-1.0, 1.0, -1.0, 1.0]]))  # signed sums 0, 2, 0, 2
    w1, w2 = model[0].weight.detach(), model[1].weight.detach()
    flow = w1.abs() * w2.abs().sum(0)[:, None]
    mask = synflow_masks(model, {"0": 5, "1": 8}, [0], (3,), iterations=1)[0]["0"]
    assert set(mask.flatten().nonzero().flatten().tolist()) == set(flow.flatten().topk(5).indices.tolist())


def test_snip_without_training_batches_is_one_line():
    with pytest.raises(RecipeError, match="sparsity.mask: snip chooses its masks on training batches"):
        family("snip").initial({"fc1": (5, 6)}, {"fc1": 3}, [spec(mask="snip")], Tiny(), (6,), None)
