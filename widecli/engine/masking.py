"""Masks while a run trains: the dynamic masks (SET, RigL) wired into the step, and what every run's
masks are at the end, checked against the plan (issue 29: every layer keeps exactly its allocation).

The loop asks two things of this module: the mask updater of a group (None for static masks) and,
after training, each run's per-layer mask record for result.json (kept entries, and for dynamic
masks the fraction of kept positions that moved since step 0). The record is also the guard: a
layer whose kept count differs from the rule's allocation, or a nonzero weight outside the mask,
fails the run instead of storing a model that breaks the budget.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from widecli.config.schema import RunSpec
from widecli.methods import Built, WeightPlan
from widecli.models.layout import is_stacked, weight_modules
from widecli.sparsity.dynamic import MaskUpdater
from widecli.sparsity.families import family
from widecli.sparsity.masks import MaskEnforcer


def updater(specs: list[RunSpec], built: Built, model: nn.Module, opt: torch.optim.Optimizer, enforcer: MaskEnforcer,
            steps_per_epoch: int) -> MaskUpdater | None:
    """The SET/RigL mask updater of a (stacked) group; None when its masks are fixed."""
    spec = specs[0]
    fam = family(spec.sparsity.mask)
    if not fam.dynamic or not built.masks:
        return None
    plan = built.plan
    # SET regrows at a fresh draw of the layer's init, with the same fan_in rescale (methods.Sparse).
    scale = {n: 1.0 / math.sqrt(plan.counts[n] / math.prod(plan.shapes[n])) if spec.sparsity.init == "fan_in"
             else 1.0 for n in plan.masked}
    return MaskUpdater(model, built.masks, enforcer, opt, [s.seed for s in specs], spec.sparsity, fam.grow,
                       spec.train.epochs * steps_per_epoch, scale)


@torch.no_grad()
def records(model: nn.Module, masks: dict[str, torch.Tensor], plan: WeightPlan, dynamic: MaskUpdater | None,
            k: int, alive: torch.Tensor | None = None) -> list[dict[str, dict]]:
    """Per run: {layer: {"kept": mask entries, "moved": fraction (dynamic masks only)}}.

    Raises RuntimeError (the run is then `failed`) where a layer's kept count is not the plan's or a
    weight outside the mask is nonzero: the budget is counted at the end of every run, not assumed.
    A diverged run (`alive` False) is exempt from the second check: masks are enforced by multiplying
    with 0/1, and 0 x NaN is NaN, so its non-finite weights may sit outside the mask."""
    moved = dynamic.moved() if dynamic else {}
    out: list[dict[str, dict]] = [{} for _ in range(k)]
    for name, module in weight_modules(model):
        if name not in masks:
            continue
        stacked = is_stacked(module)
        for j in range(k):
            m = masks[name][j] if stacked else masks[name]
            w = module.weight[j] if stacked else module.weight
            kept = int(m.sum())
            outside = int(((w != 0) & ~m.bool()).sum()) if alive is None or alive[j] else 0
            if kept != plan.counts[name] or outside:
                raise RuntimeError(f"{name}: the mask keeps {kept:,} weights (planned {plan.counts[name]:,}) and "
                                   f"{outside:,} weights outside it are nonzero: the budget is broken")
            out[j][name] = {"kept": kept, **({"moved": float(moved[name][j])} if dynamic else {})}
    return out
