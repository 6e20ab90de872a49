"""Exact-count seeded masks and their enforcement during training.

A mask of layer `name` has exactly counts[name] ones, a `torch.randperm` prefix from a generator
seeded by (run seed, "mask", name): masks do not depend on the other layers or on the device, and
the total nonzeros equal the budget exactly (DESIGN.md, Sparsity).
"""

from __future__ import annotations

import math

import torch

from widecli.models.layout import weight_modules
from widecli.rng import generator


def make_masks(shapes: dict[str, tuple[int, ...]], counts: dict[str, int], seed: int,
               granularity: str = "weight") -> dict[str, torch.Tensor]:
    """Boolean masks with exactly counts[name] ones (granularity "kernel": whole conv kernels, floor).

    The ones of each layer are a `torch.randperm` prefix from a generator seeded by (seed, layer),
    so masks do not depend on the other layers or on the device.
    """
    masks = {}
    for name, shape in shapes.items():
        numel = math.prod(shape)
        unit = math.prod(shape[2:]) if granularity == "kernel" and len(shape) > 2 else 1
        units, keep = numel // unit, counts[name] // unit
        flat = torch.zeros(units, dtype=torch.bool)
        if keep >= units:
            flat[:] = True
        else:
            flat[torch.randperm(units, generator=generator(seed, "mask", name))[:keep]] = True
        masks[name] = flat.repeat_interleave(unit).view(shape) if unit > 1 else flat.view(shape)
    return masks


def nonzeros(masks: dict[str, torch.Tensor]) -> dict[str, int]:
    return {n: int(m.sum()) for n, m in masks.items()}


class MaskEnforcer:
    """Holds (weight, mask) pairs of the dense masked layers; zeroes masked entries in place.

    Zeroing the weights after every step suffices: SGD, Adam and AdamW update each entry from its
    own gradient and state only, so what they do to a masked entry is undone before any forward.
    """

    def __init__(self, model: torch.nn.Module, masks: dict[str, torch.Tensor]):
        pairs = [(m.weight, masks[n].to(m.weight.dtype)) for n, m in weight_modules(model) if n in masks]
        self.weights, self.masks = [w for w, _ in pairs], [m for _, m in pairs]

    @torch.no_grad()
    def apply(self) -> None:
        """Zero every masked weight (one foreach dispatch for all layers)."""
        if self.weights:
            torch._foreach_mul_(self.weights, self.masks)
