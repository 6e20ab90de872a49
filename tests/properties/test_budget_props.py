"""Property: a sparse-wide model keeps exactly the baseline's number of weights, for any architecture
the recipe can describe - MLPs of depth 1-4 and widths 1-512, CNN and ResNet-18 widths - any rule,
layer selection, widening factor in [1, 64] (fractions included), scope and custom connectivity
(near 0 and 1 included); or, where custom connectivities make it unreachable, one RecipeError line.

The count is independent of the plan's own numbers: the budget is the weights of the baseline built
here, the nonzeros are the ones of the masks `methods.build` draws plus the whole unmasked layers of
the model it builds, and whether custom connectivities can reach the budget is decided here.
Masks only: no training, small inputs (mnist1d, 8x8 digits), wide layers capped so a mask draws fast.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

from widecli.errors import RecipeError, WidecliError
from widecli.methods import build
from widecli.models import registry as models
from widecli.models.layout import widths
from widecli.recipes import make_spec, validate

SHAPES = {"mnist1d": ((40,), 10), "digits": ((1, 8, 8), 10)}
RULES = ["proportional", "leveling", "erk", "uniform", "custom"]
# The widest widened layer a generated model may have (units or channels): masks are drawn with
# torch.randperm over each layer, so this keeps an example to milliseconds.
MAX_WIDE_UNITS, MAX_WIDE_CHANNELS = 768, 96

factors = st.one_of(st.integers(1, 64).map(float),
                    st.fractions(min_value=1, max_value=64, max_denominator=8).map(float),
                    st.floats(min_value=1, max_value=64, allow_nan=False, allow_infinity=False))
connectivities = st.one_of(st.floats(min_value=1e-9, max_value=1e-3), st.floats(min_value=1e-3, max_value=0.999),
                           st.floats(min_value=0.999, max_value=1.0), st.just(1.0))


def weight_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """Layer name -> weight shape of every Linear/Conv-like weight (2-D and up; BatchNorm's are 1-D),
    a stack dimension of 1 removed: counted here, not by widecli.models.layout."""
    out = {}
    for name, m in model.named_modules():
        w = m._parameters.get("weight")
        if w is not None and w.dim() >= 2:
            out[name] = tuple(w.shape[1:]) if w.dim() == 3 and w.shape[0] == 1 else tuple(w.shape)
    return out


def meta_shapes(model_cfg, unit_widths, shape, classes) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return weight_shapes(models.build(model_cfg, unit_widths, shape, classes))


@st.composite
def studies(draw):
    """(recipe dict, factor, seed) of one sparse-wide run."""
    arch = draw(st.sampled_from(["mlp", "cnn", "resnet18"]))
    factor = draw(factors)
    if arch == "mlp":
        cap = max(1, min(512, int(MAX_WIDE_UNITS / factor)))
        model = {"arch": "mlp", "hidden": draw(st.lists(st.integers(1, cap), min_size=1, max_size=4))}
        dataset = draw(st.sampled_from(sorted(SHAPES)))
    else:
        widest = 4 if arch == "cnn" else 8      # stages k, 2k, 4k (cnn) or k..8k (resnet18)
        model = {"arch": arch, "width": draw(st.integers(1, max(1, int(MAX_WIDE_CHANNELS / (widest * factor)))))}
        dataset = "digits"
    cfg = validate({"name": "prop", "data": {"dataset": dataset}, "model": model}, "generated").model
    units = list(models.base_widths(cfg))
    layers = draw(st.one_of(st.sampled_from(["first", "last", "all"]),
                            st.lists(st.sampled_from(units), min_size=1, unique=True)))
    sparsity = {"rule": draw(st.sampled_from(RULES)), "scope": draw(st.sampled_from(["all", "widened"]))}
    if arch != "mlp":
        sparsity["granularity"] = draw(st.sampled_from(["weight", "kernel"]))
    if sparsity["rule"] == "custom":   # connectivity for some of the layers (of any width)
        names = list(meta_shapes(cfg, models.base_widths(cfg), *SHAPES[dataset]))
        keys = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
        sparsity["connectivity"] = {k: draw(connectivities) for k in keys}
    raw = {"name": "prop", "data": {"dataset": dataset}, "model": model,
           "widen": {"layers": layers, "factors": [factor], "methods": ["sparse"]}, "sparsity": sparsity}
    return raw, factor, draw(st.integers(0, 3))


def reachable(spec, shape, classes, budget: int) -> bool:
    """Whether custom connectivities can meet the budget (DESIGN.md: the given layers keep
    round(connectivity x size) weights, the other maskable layers share what is left)."""
    base = meta_shapes(spec.model, models.base_widths(spec.model), shape, classes)
    wide = meta_shapes(spec.model, widths(spec.model, spec.widen_layers, spec.factor), shape, classes)
    maskable = [n for n in wide if spec.sparsity.scope == "all" or wide[n] != base.get(n)]
    keep = budget - sum(math.prod(wide[n]) for n in wide if n not in maskable)
    if not maskable:
        return keep == 0
    if spec.sparsity.rule != "custom":
        return keep > 0
    given = spec.sparsity.connectivity
    if any(k not in maskable for k in given):
        return False
    fixed = sum(round(c * math.prod(wide[n])) for n, c in given.items())
    rest = sum(math.prod(wide[n]) for n in maskable if n not in given)
    return 0 < keep - fixed <= rest if rest else keep == fixed


def count_nonzeros(spec, shape, classes) -> tuple[int, int]:
    """(nonzeros, how far below the budget kernel granularity may leave them) of the built model:
    the ones of each mask, plus every weight of the layers without one."""
    built = build([spec], shape, classes)
    layers = weight_shapes(built.model)
    assert set(built.masks) <= set(layers)
    nonzeros, slack = 0, 0
    for name, module in built.model.named_modules():
        if name not in layers:
            continue
        mask = built.masks.get(name)
        if mask is None:
            nonzeros += module.weight.numel()
            continue
        assert mask.shape == module.weight.shape and mask.dtype == torch.bool
        assert not module.weight[~mask].any()            # the masked weights are zero
        nonzeros += int(mask.sum())
        if spec.sparsity.granularity == "kernel" and len(layers[name]) > 2:
            slack += math.prod(layers[name][2:])        # at most one kernel short per conv layer
    return nonzeros, slack


@settings(max_examples=settings.default.max_examples)
@given(studies())
def test_nonzeros_equal_the_budget_or_one_line_error(study):
    raw, factor, seed = study
    spec = make_spec(validate(raw, "generated"), factor, "sparse", seed)
    shape, classes = SHAPES[spec.data.dataset]
    budget = sum(math.prod(s) for s in meta_shapes(spec.model, models.base_widths(spec.model), shape,
                                                   classes).values())
    can = reachable(spec, shape, classes, budget)
    event(f"{spec.model.arch}, rule {spec.sparsity.rule}")
    try:
        nonzeros, slack = count_nonzeros(spec, shape, classes)
    except WidecliError as e:
        assert isinstance(e, RecipeError) and len(str(e).splitlines()) == 1, repr(e)
        assert not can, f"refused a reachable budget of {budget}: {e}"
        event("refused: unreachable")
        return
    assert can, f"met a budget the connectivities {spec.sparsity.connectivity} cannot reach"
    if slack:   # kernel granularity: whole kernels, short of the budget by less than one per conv layer
        assert budget - slack < nonzeros <= budget, f"{nonzeros} nonzeros for a budget of {budget} (slack {slack})"
    else:
        assert nonzeros == budget, f"{nonzeros} nonzeros for a budget of {budget}"


@pytest.mark.parametrize("hidden, factor", [([1], 1.4), ([3, 2], 1.1)])
def test_a_factor_that_widens_nothing_keeps_the_baseline_with_scope_widened(hidden, factor):
    """round(factor x width) == width for every selected layer: nothing is widened, so nothing is
    masked and the model is the baseline (found by the property above: it was a RecipeError)."""
    raw = {"name": "prop", "data": {"dataset": "mnist1d"}, "model": {"arch": "mlp", "hidden": hidden},
           "widen": {"layers": "all", "factors": [factor], "methods": ["sparse"]}, "sparsity": {"scope": "widened"}}
    spec = make_spec(validate(raw, "generated"), factor, "sparse", 0)
    nonzeros, _ = count_nonzeros(spec, *SHAPES["mnist1d"])
    assert nonzeros == 40 * hidden[0] + sum(a * b for a, b in zip(hidden, hidden[1:])) + hidden[-1] * 10


def test_a_layer_keeping_no_weight_builds():
    """Rule uniform empties the smallest layers first: here `out` keeps none of its 20 weights, and
    the fan_in init rescale divided by its zero connectivity (found by the property: ZeroDivisionError)."""
    raw = {"name": "prop", "data": {"dataset": "digits"}, "model": {"arch": "mlp", "hidden": [1]},
           "widen": {"layers": "first", "factors": [2.0], "methods": ["sparse"]}, "sparsity": {"rule": "uniform"}}
    spec = make_spec(validate(raw, "generated"), 2.0, "sparse", 0)
    built = build([spec], *SHAPES["digits"])
    assert int(built.masks["out"].sum()) == 0 and not built.model.out.weight.any()
    assert count_nonzeros(spec, *SHAPES["digits"]) == (64 * 1 + 1 * 10, 0)
