"""Linear / non-linear bottleneck variants held to the budget: which layers are factored and their
inner widths (ranks). The factored layers themselves are `models.common.Factorized` (convnets) and
`models.mlp.FactorizedLinear`.

Every layer whose weight shape grew with the widening is replaced by two factors (DESIGN.md,
Bottlenecks). Layer l's inner width is r_l = max(1, R * b_l // B), where b_l = min(out, in*kh*kw) is
the rank bound of its *baseline* weight and B the largest b_l: one knob R keeps the inner widths in
the baseline's proportions (a 1-hidden-layer MLP gets one common r = R). R is the largest for which
the counted weights of the whole factored model fit the budget, found by bisection on meta-device
models, so the count can never exceed the budget whatever the architecture.
"""

from __future__ import annotations

import math

import torch

from widecli import models
from widecli.errors import BudgetError
from widecli.sparsity import count_weights, layer_shapes

METHODS = ("linear_bottleneck", "nonlinear_bottleneck")


def ranks(spec, widths: dict[str, int], input_shape, num_classes: int, budget: int) -> dict[str, int]:
    """Inner width of each factored layer: the largest common scale whose model fits `budget`."""
    if spec.method not in METHODS or spec.factor == 1:
        return {}
    bound = rank_bounds(spec.model, widths, input_shape, num_classes)
    if not bound:
        return {}

    def fits(R: int) -> bool:
        with torch.device("meta"):
            model = models.build(spec.model, widths, input_shape, num_classes, ranks=scaled(bound, R),
                                 rank_nonlinear=spec.method == "nonlinear_bottleneck")
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


def rank_bounds(model_cfg, widths: dict[str, int], input_shape, num_classes: int) -> dict[str, int]:
    """b_l = min(out, in*kh*kw) of the baseline weight of every layer whose shape grew."""
    with torch.device("meta"):
        base = layer_shapes(models.build(model_cfg, models.base_widths(model_cfg), input_shape,
                                         num_classes))
        wide = layer_shapes(models.build(model_cfg, widths, input_shape, num_classes))
    return {n: min(base[n][0], math.prod(base[n][1:])) for n in wide if wide[n] != base.get(n)}


def scaled(bound: dict[str, int], R: int) -> dict[str, int]:
    """Inner widths at knob R: r_l = max(1, R * b_l // max(b)); the largest-bound layer gets R."""
    top = max(bound.values())
    return {n: max(1, R * b // top) for n, b in bound.items()}
