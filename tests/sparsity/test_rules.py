"""Distribution rules: exact totals for every rule on the MLP, ResNet-18 and the small CNN, ERK
densities, custom connectivities, kernel granularity, scope, and `widecli check` on every recipe."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from helpers import invoke

from widecli.data.registry import shape_of
from widecli.errors import BudgetError
from widecli.methods import plan_weights as plan
from widecli.recipes import expand, load_recipe, make_spec, validate
from widecli.sparsity.masks import make_masks, nonzeros
from widecli.sparsity.rules import allocate
from widecli.sparsity.rules import to_whole_conv_kernels as to_kernels

RECIPES = sorted(Path(__file__).resolve().parents[2].glob("recipes/**/*.yaml"))
assert RECIPES  # the repo's recipes/ (a wrong path would leave the check below with no cases)
FACTORS = [1.5, 2, 2.25, 3, 4, 5.5, 8, 13, 16]
CIFAR = ((3, 32, 32), 10)
MNIST1D = ((40,), 10)


def spec(model: dict, layers="all", factor=2.0, method="sparse", dataset="digits", **sparsity):
    r = validate({"name": "t", "data": {"dataset": dataset}, "model": model,
                         "widen": {"layers": layers, "factors": [factor], "methods": [method]},
                         "sparsity": sparsity}, "test")
    return make_spec(r, factor, method, 0)


def rule_kwargs(rule: str, arch: str) -> dict:
    if rule != "custom":
        return {"rule": rule}
    # A fixed first-layer connectivity (the paper's 2-D sweep) and a stage-level request for ResNet-18.
    conn = {"out": 0.5} if arch == "mlp" else {"fc": 1.0}
    return {"rule": rule, "connectivity": conn}


@pytest.mark.parametrize("rule", ["proportional", "leveling", "erk", "uniform", "custom"])
@pytest.mark.parametrize("arch", ["mlp", "resnet18"])
def test_every_rule_keeps_exactly_the_budget(rule, arch):
    model = {"arch": "mlp", "hidden": [32, 16]} if arch == "mlp" else {"arch": "resnet18", "width": 8}
    shape = MNIST1D if arch == "mlp" else CIFAR
    for layers in ("all", "first", "last"):
        for f in FACTORS:
            p = plan(spec(model, layers, f, **rule_kwargs(rule, arch)), *shape)
            assert p.nonzeros == p.budget, (rule, arch, layers, f)
            assert all(0 <= p.counts[n] <= math.prod(s) for n, s in p.shapes.items())
            assert p.dense_weights > p.budget


def test_budget_is_the_baseline_weight_count():
    # ResNet-18 at width 64 is kuangliu's 11,173,962-parameter model: 11,164,352 conv/fc weights.
    p = plan(spec({"arch": "resnet18", "width": 64}, factor=1.0, method="dense"), *CIFAR)
    assert p.budget == p.nonzeros == 11_164_352
    assert p.other_params == 9_600 + 10  # BatchNorm affine (2 per channel) + fc bias


def test_erk_densities_proportional_to_sum_over_prod_of_shape():
    shapes = {"a": (64, 32, 3, 3), "b": (128, 64, 3, 3), "c": (10, 128), "d": (128, 64, 1, 1)}
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    keep = sum(sizes.values()) // 20      # low enough that no layer is capped at density 1
    counts = allocate("erk", shapes, keep)
    assert sum(counts.values()) == keep
    ratios = [counts[n] / sizes[n] / (sum(shapes[n]) / sizes[n]) for n in shapes]
    assert max(ratios) / min(ratios) == pytest.approx(1.0, abs=2e-3)


def test_erk_caps_dense_layers_and_rescales_the_rest():
    shapes = {"small": (10, 4), "big": (512, 512)}
    counts = allocate("erk", shapes, 40 + 5000)
    assert counts == {"small": 40, "big": 5000}


def test_uniform_removes_the_same_number_from_each_layer():
    shapes = {"a": (100, 10), "b": (50, 10), "c": (300, 10)}
    counts = allocate("uniform", shapes, 4500 - 600)
    assert {n: 10 * s[0] - counts[n] for n, s in shapes.items()} == {"a": 200, "b": 200, "c": 200}


def test_custom_honours_given_connectivities():
    s = spec({"arch": "mlp", "hidden": [32]}, "first", 8.0, dataset="mnist1d", rule="custom",
             connectivity={"out": 0.5})
    p = plan(s, *MNIST1D)
    assert p.counts["out"] == round(0.5 * 10 * 256)
    assert p.nonzeros == p.budget
    s = spec({"arch": "resnet18", "width": 8}, "all", 4.0, rule="custom",
             connectivity={"layer1": 0.25, "layer1.0.conv1": 0.5, "fc": 1.0})
    p = plan(s, *CIFAR)
    assert p.counts["layer1.0.conv1"] == round(0.5 * 32 * 32 * 9)     # most specific key wins
    assert p.counts["layer1.1.conv2"] == round(0.25 * 32 * 32 * 9)
    assert p.counts["fc"] == 10 * 256 and p.nonzeros == p.budget


@pytest.mark.parametrize("conn, needle", [
    ({"fc1": 1.0, "out": 1.0}, "leave one layer out"),       # every layer fixed, budget missed
    ({"fc1": 1.0}, "not reachable"),                          # fc1 alone exceeds the budget
    ({"fc7": 0.5}, "not a maskable layer"),
])
def test_custom_rejects_impossible_requests_in_one_line(conn, needle):
    s = spec({"arch": "mlp", "hidden": [32]}, "first", 4.0, dataset="mnist1d", rule="custom",
             connectivity=conn)
    with pytest.raises(BudgetError) as e:
        plan(s, *MNIST1D)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_connectivity_above_one_is_a_recipe_error():
    from widecli.errors import RecipeError

    with pytest.raises(RecipeError, match="sparsity.connectivity"):
        spec({"arch": "mlp"}, rule="custom", connectivity={"out": 1.5})


@pytest.mark.parametrize("rule", ["proportional", "leveling", "erk"])
def test_kernel_granularity_falls_short_by_less_than_one_kernel(rule):
    for f in FACTORS:
        s = spec({"arch": "resnet18", "width": 8}, "all", f, rule=rule, granularity="kernel")
        p = plan(s, *CIFAR)
        gap = p.budget - p.nonzeros
        assert 0 <= gap < 9 * len(p.masked), (rule, f, gap)
        for n in p.masked:
            if len(p.shapes[n]) == 4:
                assert p.counts[n] % math.prod(p.shapes[n][2:]) == 0
    masks = make_masks({n: p.shapes[n] for n in p.masked}, p.counts, seed=3, granularity="kernel")
    assert nonzeros(masks) == {n: p.counts[n] for n in p.masked}
    conv = masks["layer2.0.conv2"].flatten(2)
    assert bool(((conv.sum(-1) == 0) | (conv.sum(-1) == 9)).all())  # whole 3x3 kernels only


def test_to_kernels_hands_the_shortfall_to_layers_with_room():
    shapes = {"conv": (4, 4, 3, 3), "fc": (10, 4)}
    out = to_kernels({"conv": 50, "fc": 20}, shapes)
    assert out["conv"] % 9 == 0 and sum(out.values()) == 70


def test_scope_widened_masks_only_grown_layers():
    s = spec({"arch": "resnet18", "width": 8}, ["layer4"], 2.0, scope="widened")
    p = plan(s, *CIFAR)
    assert p.masked and all(n.startswith("layer4") or n == "fc" for n in p.masked)
    assert all(p.counts[n] == math.prod(p.shapes[n]) for n in p.shapes if n not in p.masked)
    assert p.nonzeros == p.budget


def test_masks_have_exact_counts_on_a_real_resnet():
    from widecli.methods import build

    s = spec({"arch": "resnet18", "width": 4}, "all", 3.0, rule="erk")
    b = build([s], *CIFAR)
    assert sum(int(m.sum()) for m in b.masks.values()) + sum(
        b.plan.counts[n] for n in b.plan.shapes if n not in b.plan.masked) == b.plan.budget
    from widecli.models.layout import weight_modules

    nz = sum(int((m.weight != 0).sum()) for _, m in weight_modules(b.model))
    assert nz == b.plan.budget


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_check_on_every_bundled_recipe(path):
    result = invoke(*["check", str(path)])
    assert result.exit_code == 0, result.output
    r = load_recipe(path)
    shape, classes = shape_of(r.data)
    for s in expand(r):
        p = plan(s, shape, classes)
        if s.method == "sparse" and s.factor > 1 and s.sparsity.granularity == "kernel":
            assert 0 <= p.budget - p.nonzeros < 9 * len(p.masked)
        elif s.method in ("sparse",) or s.factor == 1:
            assert p.nonzeros == p.budget, (path.name, s.factor, s.method)
        elif s.method.endswith("bottleneck"):
            assert 0 <= p.budget - p.nonzeros < p.budget
    assert "nonzeros == budget" in result.output or "sparse" not in r.widen.methods
