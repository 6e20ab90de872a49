"""Methods: how a wider model is held to the baseline's weight budget, one object per method.

  dense                 the wide model itself, no budget (the paper's "dense wide" reference)
  sparse                static random masks: exactly `budget` weights kept (DESIGN.md, Sparsity)
  linear_bottleneck     every grown layer W replaced by U V, inner width fitted to the budget
  nonlinear_bottleneck  the same with a ReLU between U and V

A Method owns what differs between them: the inner widths (ranks), which layers carry masks and
how many weights each keeps, how masks are applied at init, whether the sparsity settings apply,
and its display label. Nothing else in widecli tests a method's name.

`plan_weights()` does the bookkeeping on the meta device (no memory, no init), so `widecli check`
can show the nonzeros of a 10^9-weight model instantly; `build()` makes the real, initialized,
masked model for one run or for K runs stacked.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from widecli.config.schema import ModelConfig, RunSpec
from widecli.data.registry import shape_of
from widecli.errors import BudgetError, RecipeError, WidecliError
from widecli.models import registry as models
from widecli.models.init import initialize
from widecli.models.layout import (
    count_other,
    count_weights,
    is_stacked,
    layer_shapes,
    weight_modules,
    widths,
)
from widecli.registry import Registry
from widecli.sparsity.families import Batches, family
from widecli.sparsity.rules import allocate, to_whole_conv_kernels


@dataclass
class WeightPlan:
    """Weight accounting of one run: what `check` prints and `result.json` records."""

    widths: dict[str, int]
    budget: int                      # N: weights of the dense baseline
    dense_weights: int               # D: weights of the dense model at these widths
    counts: dict[str, int]           # kept weights per layer (== size for unmasked layers)
    shapes: dict[str, tuple[int, ...]]
    masked: list[str]                # layers that carry a mask
    other_params: int                # biases + BatchNorm (never masked)
    ranks: dict[str, int] = field(default_factory=dict)  # bottleneck inner widths
    dynamic: bool = False            # the masks change during training (SET, RigL): dense layout only

    @property
    def nonzeros(self) -> int:
        return sum(self.counts.values())

    @property
    def connectivity(self) -> float:
        return self.nonzeros / self.dense_weights

    def layers(self) -> dict[str, dict]:
        return {n: {"shape": list(s), "weights": math.prod(s), "nonzeros": self.counts[n],
                    "connectivity": self.counts[n] / math.prod(s), "masked": n in self.masked}
                for n, s in self.shapes.items()}


# --------------------------------------------------------------------------- the methods


@dataclass(frozen=True)
class Method:
    """The dense wide model: every weight kept, no budget."""

    name: str
    label: str                       # for tables and plots
    holds_budget: bool = False       # the wide model is held to the baseline's weight count
    uses_sparsity: bool = False      # the recipe's sparsity settings apply (and enter the run id)
    factored: bool = False           # grown layers become two factors (a bottleneck)
    nonlinear: bool = False          # a ReLU between the factors

    def ranks(self, spec: RunSpec, widths_: dict[str, int], input_shape, num_classes: int, budget: int) -> dict[str, int]:
        """Inner width of each factored layer (none: the layers stay whole)."""
        return {}

    def masked_counts(self, spec: RunSpec, shapes: dict, base_shapes: dict, budget: int) -> dict[str, int]:
        """Kept weights of each masked layer (none: nothing is masked)."""
        return {}

    def apply_masks(self, model: nn.Module, plan: WeightPlan, specs: list[RunSpec], input_shape=None,
                    batches: Batches | None = None) -> dict[str, torch.Tensor]:
        """Draw each run's masks, zero the masked weights, return layer -> mask (stacked where the layer is)."""
        return {}


@dataclass(frozen=True)
class Sparse(Method):
    """Static random sparsity: the rule spreads the budget over the maskable layers."""

    def masked_counts(self, spec: RunSpec, shapes, base_shapes, budget):
        s = spec.sparsity
        masked = [n for n in shapes if s.scope == "all" or shapes[n] != base_shapes.get(n)]
        if not masked:
            return {}  # round(f x width) == width everywhere: nothing widened, the baseline itself
        fixed = sum(math.prod(shapes[n]) for n in shapes if n not in masked)
        keep = budget - fixed
        if keep <= 0:
            raise BudgetError(f"sparsity.scope: the unmasked layers alone hold {fixed} weights, "
                              f"over the budget of {budget}; use scope: all")
        kept = allocate(s.rule, {n: shapes[n] for n in masked}, keep, s.connectivity)
        if s.granularity == "kernel":
            kept = to_whole_conv_kernels(kept, {n: shapes[n] for n in masked})
        family(s.mask).check({n: shapes[n] for n in masked}, kept, spec)
        return kept

    def apply_masks(self, model, plan, specs: list[RunSpec], input_shape=None, batches=None):
        spec = specs[0]
        # The family chooses which weights (sparsity.families), on the dense model as initialized.
        per_seed = family(spec.sparsity.mask).initial({n: plan.shapes[n] for n in plan.masked}, plan.counts,
                                                      specs, model, input_shape, batches)
        masks = {}
        for name, module in weight_modules(model):
            if name not in plan.masked:
                continue
            mask = torch.stack([m[name] for m in per_seed]) if is_stacked(module) else per_seed[0][name]
            with torch.no_grad():
                if spec.sparsity.init == "fan_in" and plan.counts[name]:  # (a layer may keep none)
                    # Official code: init std 1/sqrt(fan_in * connectivity), so the pre-activation
                    # variance does not shrink with sparsity (PAPER.md, "How the official code...").
                    module.weight.mul_(1.0 / math.sqrt(plan.counts[name] / math.prod(plan.shapes[name])))
                module.weight.mul_(mask)
            masks[name] = mask
        return masks


@dataclass(frozen=True)
class Bottleneck(Method):
    """Every layer whose weight shape grew with the widening is replaced by two factors.

    Layer l's inner width is r_l = max(1, R * b_l // B), where b_l = min(out, in*kh*kw) is the
    rank bound of its *baseline* weight and B the largest b_l: one knob R keeps the inner widths in
    the baseline's proportions (a 1-hidden-layer MLP gets one common r = R). R is the largest for
    which the counted weights of the whole factored model fit the budget, found by bisection on
    meta-device models, so the count can never exceed the budget whatever the architecture.
    """

    def ranks(self, spec: RunSpec, widths_, input_shape, num_classes, budget):
        if spec.factor == 1:
            return {}
        bound = rank_bounds(spec.model, widths_, input_shape, num_classes)
        if not bound:
            return {}

        def fits(R: int) -> bool:
            with torch.device("meta"):
                model = models.build(spec.model, widths_, input_shape, num_classes, ranks=scaled(bound, R),
                                     rank_nonlinear=self.nonlinear)
            return count_weights(model) <= budget

        if not fits(1):
            raise BudgetError(f"widen.methods: {spec.method} at factor {spec.factor:g} cannot fit the "
                              f"budget of {budget} weights even with inner width 1")
        lo, hi = 1, 2
        while fits(hi):          # weights grow with R: double until it no longer fits
            lo, hi = hi, hi * 2
        while hi - lo > 1:       # invariant: fits(lo), not fits(hi)
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        return scaled(bound, lo)


def rank_bounds(model_cfg: ModelConfig, widths_: dict[str, int], input_shape, num_classes: int) -> dict[str, int]:
    """b_l = min(out, in*kh*kw) of the baseline weight of every layer whose shape grew."""
    with torch.device("meta"):
        base = layer_shapes(models.build(model_cfg, models.base_widths(model_cfg), input_shape, num_classes))
        wide = layer_shapes(models.build(model_cfg, widths_, input_shape, num_classes))
    return {n: min(base[n][0], math.prod(base[n][1:])) for n in wide if wide[n] != base.get(n)}


def scaled(bound: dict[str, int], R: int) -> dict[str, int]:
    """Inner widths at knob R: r_l = max(1, R * b_l // max(b)); the largest-bound layer gets R."""
    top = max(bound.values())
    return {n: max(1, R * b // top) for n, b in bound.items()}


def _user_method(name: str, obj) -> Method:
    if not isinstance(obj, Method):
        raise RecipeError(f"widen.methods: {name!r} is a {type(obj).__name__}, not a method (an instance of "
                          f"widecli.methods.Method)")
    return obj


METHODS: Registry[Method] = Registry("methods", "widen.methods", _user_method)
METHODS.add("sparse", Sparse("sparse", "sparse wide", holds_budget=True, uses_sparsity=True))
METHODS.add("dense", Method("dense", "dense wide"))
METHODS.add("linear_bottleneck", Bottleneck("linear_bottleneck", "linear bottleneck", holds_budget=True,
                                            factored=True))
METHODS.add("nonlinear_bottleneck", Bottleneck("nonlinear_bottleneck", "non-linear bottleneck",
                                               holds_budget=True, factored=True, nonlinear=True))


def get(name: str) -> Method:
    return METHODS.get(name)


def bottlenecks() -> list[str]:
    """Names of the factored methods (reports show their best accuracy beside Table 1)."""
    return [n for n in METHODS.names() if METHODS.get(n).factored]


# --------------------------------------------------------------------------- planning and building

_PLANS: dict[tuple, WeightPlan] = {}


def plan_weights(spec: RunSpec, input_shape, num_classes: int) -> WeightPlan:
    """Widths, budget and per-layer kept counts of a run, computed without allocating weights.

    Memoized on everything but the seed (which the accounting does not depend on): `check` plans
    every seed of a grid, and a bottleneck's rank search builds a dozen meta models."""
    key = (spec.stack_key(), tuple(input_shape), num_classes)
    if key not in _PLANS:
        if len(_PLANS) > 1024:
            _PLANS.clear()
        _PLANS[key] = _plan(spec, input_shape, num_classes)
    return copy.deepcopy(_PLANS[key])


def _plan(spec: RunSpec, input_shape, num_classes: int) -> WeightPlan:
    method = get(spec.method)
    with torch.device("meta"):
        base = models.build(spec.model, models.base_widths(spec.model), input_shape, num_classes)
        budget = count_weights(base)
        wide_widths = widths(spec.model, spec.widen_layers, spec.factor)
        ranks = method.ranks(spec, wide_widths, input_shape, num_classes, budget)
        wide = models.build(spec.model, wide_widths, input_shape, num_classes, ranks=ranks,
                            rank_nonlinear=method.nonlinear)
    shapes = layer_shapes(wide)
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    kept = method.masked_counts(spec, shapes, layer_shapes(base), budget) if spec.factor > 1 else {}
    return WeightPlan(wide_widths, budget, sum(sizes.values()), {**sizes, **kept}, shapes,
                      [n for n in shapes if n in kept],
                      count_other(wide), ranks, bool(kept) and family(spec.sparsity.mask).dynamic)


def build_model(spec: RunSpec, plan: WeightPlan, input_shape, num_classes: int, stack: int = 1) -> nn.Module:
    """The (uninitialized) model of a run at its planned widths and ranks."""
    kw = {"stack": stack} if stack > 1 else {}
    return models.build(spec.model, plan.widths, input_shape, num_classes, ranks=plan.ranks,
                        rank_nonlinear=get(spec.method).nonlinear, **kw)


def planned_masks(spec: RunSpec, plan: WeightPlan) -> dict[str, torch.Tensor] | None:
    """The masks run `spec` starts training with, where they depend on its seed alone (random, N:M
    and the random start of SET/RigL); None for families scored on the initialized model (snip,
    synflow: chosen when the run starts)."""
    fam = family(spec.sparsity.mask)
    if not plan.masked or fam.scored:
        return None
    return fam.initial({n: plan.shapes[n] for n in plan.masked}, plan.counts, [spec])[0]


def trace_meta(spec: RunSpec, plan: WeightPlan, input_shape, num_classes: int, batch: int,
               hook: Callable[[nn.Module, torch.Tensor], None], named: bool = False) -> bool:
    """Run a run's model once on the meta device (no allocation, eval mode: BatchNorm takes any
    batch) on `batch` examples, calling hook(module, output) for every leaf module (named:
    hook(name, module, output)); False if an op has no meta kernel (the hook then saw part of the
    model only)."""
    def leaf_hook(name):
        def call(module, inputs, output) -> None:
            if isinstance(output, torch.Tensor):
                hook(name, module, output) if named else hook(module, output)
        return call

    with torch.device("meta"):
        model = build_model(spec, plan, input_shape, num_classes).eval()
        handles = [m.register_forward_hook(leaf_hook(n)) for n, m in model.named_modules() if not list(m.children())]
        try:
            model(torch.empty(batch, *input_shape))
            return True
        except (RuntimeError, NotImplementedError, TypeError, ValueError):
            return False
        finally:
            for h in handles:
                h.remove()


def macs(spec: RunSpec, plan: WeightPlan, input_shape, num_classes: int) -> dict[str, int | None]:
    """Forward multiply-accumulates per example in the weight layers (biases, BatchNorm and
    activations not counted): `macs_nonzero` at the kept weights (the model as trained, each kept
    weight once per output position: convs count every spatial position) and `macs_dense` of the
    dense model at the same widths. None where the model cannot be traced on the meta device."""
    positions: dict[str, int] = {}

    def count(name, module, output) -> None:
        if name in plan.shapes:  # output elements per output unit: 1 for a linear layer, H*W for a conv
            positions[name] = positions.get(name, 0) + output.numel() // plan.shapes[name][0]

    if not trace_meta(spec, plan, input_shape, num_classes, 1, count, named=True) or set(positions) != set(plan.shapes):
        return {"macs_nonzero": None, "macs_dense": None}
    return {"macs_nonzero": sum(positions[n] * plan.counts[n] for n in plan.shapes),
            "macs_dense": sum(positions[n] * math.prod(s) for n, s in plan.shapes.items())}


def distinct_models(specs: list[RunSpec], skip_undescribed: bool = False) -> list[tuple]:
    """(spec, input_shape, num_classes) for one run per distinct model (stack key) of `specs`, each
    data set described once. skip_undescribed: a data set that cannot be described here (any
    WidecliError) gives (spec, None, None) instead of raising."""
    shapes: dict[str, tuple] = {}
    seen, out = set(), []
    for s in specs:
        if s.stack_key() in seen:
            continue
        seen.add(s.stack_key())
        data = s.data.model_dump_json()
        if data not in shapes:
            try:
                shapes[data] = shape_of(s.data)
            except WidecliError:
                if not skip_undescribed:
                    raise
                shapes[data] = (None, None)
        out.append((s, *shapes[data]))
    return out


@dataclass
class Built:
    model: nn.Module
    masks: dict[str, torch.Tensor]   # layer name -> bool mask shaped like the (stacked) weight
    plan: WeightPlan


def build(specs: list[RunSpec], input_shape, num_classes: int, device="cpu", batches: Batches | None = None) -> Built:
    """The initialized, masked model for one run, or for K runs differing only in seed (stacked).

    batches: n -> the runs' first n training batches, for mask families scored on data (snip)."""
    spec = specs[0]
    p = plan_weights(spec, input_shape, num_classes)
    model = build_model(spec, p, input_shape, num_classes, stack=len(specs))
    initialize(model, [s.seed for s in specs])
    masks = get(spec.method).apply_masks(model, p, specs, input_shape, batches) if p.masked else {}
    model.to(device)
    return Built(model, {n: m.to(device) for n, m in masks.items()}, p)


def layer_table(spec: RunSpec, input_shape, num_classes: int) -> list[dict]:
    """Every weight layer of a run: name, shape, weights, nonzeros, the widenable unit whose
    widening changes its output channels (None: it never widens) and whether it carries a mask."""
    p = plan_weights(spec, input_shape, num_classes)
    base = models.base_widths(spec.model)
    with torch.device("meta"):
        base_shapes = layer_shapes(models.build(spec.model, base, input_shape, num_classes))
        owner: dict[str, str] = {}
        for unit in base:
            grown = layer_shapes(models.build(spec.model, {**base, unit: base[unit] * 2 + 1},
                                              input_shape, num_classes))
            owner.update({n: unit for n, s in grown.items() if s[0] != base_shapes[n][0]})
    return [{"name": n, "shape": tuple(s), "weights": math.prod(s), "nonzeros": p.counts[n],
             "widens_with": owner.get(n.removesuffix(".V").removesuffix(".U")), "masked": n in p.masked}
            for n, s in p.shapes.items()]
