"""RunSpec -> model + masks + weight accounting.

`plan()` does the bookkeeping on the meta device (no memory, no init), so `widecli check` can
show the nonzeros of a 10^9-weight model instantly; `build()` makes the real, initialized, masked
model for one run or for K runs stacked.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from widecli import bottleneck, models, widen
from widecli.errors import BudgetError
from widecli.recipe import RunSpec
from widecli.rng import generator
from widecli.sparsity import (allocate, count_other, count_weights, layer_shapes, make_masks, to_kernels,
                              weight_modules)


@dataclass
class Plan:
    """Weight accounting of one run: what `check` prints and `result.json` records."""

    widths: dict[str, int]
    budget: int                      # N: weights of the dense baseline
    dense_weights: int               # D: weights of the dense model at these widths
    counts: dict[str, int]           # kept weights per layer (== size for unmasked layers)
    shapes: dict[str, tuple[int, ...]]
    masked: list[str]                # layers that carry a mask
    other_params: int                # biases + BatchNorm (never masked)
    ranks: dict[str, int] = field(default_factory=dict)  # bottleneck inner widths

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


_PLANS: dict[tuple, Plan] = {}


def plan(spec: RunSpec, input_shape, num_classes: int) -> Plan:
    """Widths, budget and per-layer kept counts of a run, computed without allocating weights.

    Memoized on everything but the seed (which the accounting does not depend on): `check` plans
    every seed of a grid, and a bottleneck's rank search builds a dozen meta models."""
    key = (spec.stack_key(), tuple(input_shape), num_classes)
    if key not in _PLANS:
        if len(_PLANS) > 1024:
            _PLANS.clear()
        _PLANS[key] = _plan(spec, input_shape, num_classes)
    return copy.deepcopy(_PLANS[key])


def _plan(spec: RunSpec, input_shape, num_classes: int) -> Plan:
    with torch.device("meta"):
        base = models.build(spec.model, models.base_widths(spec.model), input_shape, num_classes)
        budget = count_weights(base)
        widths = widen.widths(spec.model, spec.widen_layers, spec.factor)
        ranks = bottleneck.ranks(spec, widths, input_shape, num_classes, budget)
        wide = models.build(spec.model, widths, input_shape, num_classes, ranks=ranks,
                            rank_nonlinear=spec.method == "nonlinear_bottleneck")
    shapes = layer_shapes(wide)
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    counts, masked = dict(sizes), []
    if spec.method == "sparse" and spec.factor > 1:
        base_shapes = layer_shapes(base)
        masked = [n for n in shapes if spec.sparsity.scope == "all" or shapes[n] != base_shapes.get(n)]
        fixed = sum(sizes[n] for n in shapes if n not in masked)
        keep = budget - fixed
        if keep <= 0:
            raise BudgetError(f"sparsity.scope: the unmasked layers alone hold {fixed} weights, "
                              f"over the budget of {budget}; use scope: all")
        kept = allocate(spec.sparsity.rule, {n: shapes[n] for n in masked}, keep,
                        spec.sparsity.connectivity)
        if spec.sparsity.granularity == "kernel":
            kept = to_kernels(kept, {n: shapes[n] for n in masked})
        counts.update(kept)
    return Plan(widths, budget, sum(sizes.values()), counts, shapes, masked, count_other(wide), ranks)


@dataclass
class Built:
    model: nn.Module
    masks: dict[str, torch.Tensor]   # layer name -> bool mask shaped like the (stacked) weight
    plan: Plan


def build(specs: list[RunSpec], input_shape, num_classes: int, device="cpu") -> Built:
    """The initialized, masked model for one run, or for K runs differing only in seed (stacked)."""
    spec = specs[0]
    p = plan(spec, input_shape, num_classes)
    stack = len(specs)
    kw = {"stack": stack} if stack > 1 else {}
    model = models.build(spec.model, p.widths, input_shape, num_classes, ranks=p.ranks,
                         rank_nonlinear=spec.method == "nonlinear_bottleneck", **kw)
    seeds = [s.seed for s in specs]
    initialize(model, seeds)
    masks: dict[str, torch.Tensor] = {}
    if p.masked:
        per_seed = [make_masks({n: p.shapes[n] for n in p.masked}, p.counts, seed,
                               spec.sparsity.granularity) for seed in seeds]
        for name, module in weight_modules(model):
            if name not in p.masked:
                continue
            stacked = getattr(module, "stacked", False)
            mask = torch.stack([m[name] for m in per_seed]) if stacked else per_seed[0][name]
            with torch.no_grad():
                if spec.sparsity.init == "fan_in":
                    # Official code: init std 1/sqrt(fan_in * connectivity), so the pre-activation
                    # variance does not shrink with sparsity (PAPER.md, "How the official code...").
                    module.weight.mul_(1.0 / math.sqrt(p.counts[name] / math.prod(p.shapes[name])))
                module.weight.mul_(mask)
            masks[name] = mask
    model.to(device)
    return Built(model, {n: m.to(device) for n, m in masks.items()}, p)


def initialize(model: nn.Module, seeds: list[int]) -> None:
    """Seeded init of every weight layer: layer `name` of run k draws from (seeds[k], init, name)."""
    for name, m in weight_modules(model):
        gens = [generator(s, "init", name) for s in seeds]
        if getattr(m, "stacked", False):
            m.reset_parameters(gens)
        else:
            _default_init(m, gens[0])


def _default_init(m: nn.Module, g: torch.Generator) -> None:
    """PyTorch's default Linear/Conv init (uniform, bound 1/sqrt(fan_in)), from a given generator."""
    fan_in = math.prod(m.weight.shape[1:])
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        m.weight.copy_(torch.empty(m.weight.shape).uniform_(-bound, bound, generator=g))
        if m.bias is not None:
            m.bias.copy_(torch.empty(m.bias.shape).uniform_(-bound, bound, generator=g))


def layer_table(spec: RunSpec, input_shape, num_classes: int) -> list[dict]:
    """Every weight layer of a run: name, shape, weights, nonzeros, the widenable unit whose
    widening changes its output channels (None: it never widens) and whether it carries a mask."""
    p = plan(spec, input_shape, num_classes)
    base = models.base_widths(spec.model)
    with torch.device("meta"):
        base_shapes = layer_shapes(models.build(spec.model, base, input_shape, num_classes))
        owner: dict[str, str] = {}
        for unit in models.widenable_layers(spec.model):
            grown = layer_shapes(models.build(spec.model, {**base, unit: base[unit] * 2 + 1},
                                              input_shape, num_classes))
            owner.update({n: unit for n, s in grown.items() if s[0] != base_shapes[n][0]})
    return [{"name": n, "shape": tuple(s), "weights": math.prod(s), "nonzeros": p.counts[n],
             "widens_with": owner.get(n.removesuffix(".V").removesuffix(".U")), "masked": n in p.masked}
            for n, s in p.shapes.items()]
