"""RunSpec -> model, masks and weight accounting for MLPs (exact budgets, seeded masks, init)."""

import math
import random

import pytest
import torch

from widecli.methods import build
from widecli.methods import plan_weights as plan
from widecli.models.layout import count_weights


def spec_for(spec_of, factor, method="sparse", seed=0, **over):
    return spec_of(None, *(f"{k}={v}" for k, v in over.items()), factor=factor, method=method, seed=seed)


@pytest.mark.parametrize("rule", ["proportional", "leveling"])
def test_nonzeros_equal_the_budget_exactly(spec_of, rule):
    rnd = random.Random(0)
    for _ in range(40):
        hidden = [rnd.randint(3, 300) for _ in range(rnd.randint(1, 3))]
        layers = rnd.choice(["first", "last", "all"])
        factor = round(rnd.uniform(1.05, 40), 2)
        spec = spec_for(spec_of, factor, **{"model.hidden": hidden, "widen.layers": layers,
                                                "sparsity.rule": rule})
        p = plan(spec, (rnd.randint(5, 800),), rnd.randint(2, 100))
        assert p.nonzeros == p.budget, (hidden, layers, factor)
        assert p.dense_weights > p.budget
        assert all(0 < p.counts[n] <= math.prod(p.shapes[n]) for n in p.masked)


def test_baseline_and_dense_wide_accounting(spec_of):
    base = plan(spec_for(spec_of, 1, "dense"), (40,), 10)
    assert base.budget == base.nonzeros == 40 * 16 + 16 * 10 and base.connectivity == 1
    assert base.other_params == 16 + 10  # biases, reported separately
    wide = plan(spec_for(spec_of, 4, "dense"), (40,), 10)
    assert wide.widths == {"fc1": 64} and wide.nonzeros == 4 * base.budget


def test_proportional_gives_every_layer_the_same_connectivity(spec_of):
    p = plan(spec_for(spec_of, 4), (40,), 10)
    assert p.counts == {"fc1": 640, "out": 160}
    assert p.layers()["fc1"]["connectivity"] == p.layers()["out"]["connectivity"] == 0.25


def test_leveling_thins_the_largest_layer_first(spec_of):
    # fc1 (64x40 = 2560) is levelled down toward out (10x64 = 640): 800 kept -> out keeps 400, fc1 400
    p = plan(spec_for(spec_of, 4, **{"sparsity.rule": "leveling"}), (40,), 10)
    assert p.counts == {"fc1": 400, "out": 400}
    # with a smaller cut only the largest layer loses weights
    p = plan(spec_for(spec_of, 1.25, **{"sparsity.rule": "leveling"}), (40,), 10)
    assert p.counts["out"] == 200 and p.counts["fc1"] == p.budget - 200


def test_scope_widened_keeps_untouched_layers_dense(spec_of):
    p = plan(spec_for(spec_of, 3, **{"model.hidden": [16, 16, 16], "widen.layers": "[fc3]",
                                         "sparsity.scope": "widened"}), (40,), 10)
    assert p.masked == ["fc3", "out"] and p.counts["fc1"] == 40 * 16 and p.nonzeros == p.budget


def test_masks_have_exact_counts_and_depend_on_seed(spec_of):
    a = build([spec_for(spec_of, 4, seed=0)], (40,), 10)
    b = build([spec_for(spec_of, 4, seed=1)], (40,), 10)
    assert {n: int(m.sum()) for n, m in a.masks.items()} == {"fc1": 640, "out": 160}
    assert not torch.equal(a.masks["fc1"], b.masks["fc1"])
    nonzero = sum(int((m.weight != 0).sum()) for n, m in a.model.named_children() if hasattr(m, "weight"))
    assert nonzero == a.plan.budget == count_weights(build([spec_for(spec_of, 1, "dense")], (40,), 10).model)


def test_same_seed_same_model(spec_of):
    a = build([spec_for(spec_of, 4)], (40,), 10).model.state_dict()
    b = build([spec_for(spec_of, 4)], (40,), 10).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fan_in_init_rescales_by_connectivity(spec_of):
    fan = build([spec_for(spec_of, 16)], (40,), 10)
    std = build([spec_for(spec_of, 16, **{"sparsity.init": "standard"})], (40,), 10)
    w_fan, w_std = fan.model.fc1.weight, std.model.fc1.weight
    kept = fan.masks["fc1"]
    # same draws, scaled by 1/sqrt(connectivity) = 4 on the kept weights
    assert torch.allclose(w_fan[kept], 4 * w_std[kept])


def test_stacked_build_equals_separate_builds(spec_of):
    specs = [spec_for(spec_of, 4, seed=s) for s in (0, 1, 2)]
    stacked = build(specs, (40,), 10)
    for k, s in enumerate(specs):
        alone = build([s], (40,), 10)
        assert torch.equal(stacked.model.fc1.weight[k], alone.model.fc1.weight[0])
        assert torch.equal(stacked.masks["out"][k], alone.masks["out"][0])
