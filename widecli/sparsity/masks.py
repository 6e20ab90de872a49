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


def fan_stats(mask: torch.Tensor) -> dict[str, int]:
    """Fan-in of each output unit (kept weights of its row; a conv channel: over in x kh x kw) and
    fan-out of each input unit (kept weights of its column), min and (lower) median, and how many
    units have none: an output unit with no inputs computes a constant, an input unit with no
    outputs is ignored by the layer."""
    m = mask.bool()
    fan_in = m.flatten(1).sum(1)
    fan_out = m.transpose(0, 1).flatten(1).sum(1)
    return {"fan_in_min": int(fan_in.min()), "fan_in_median": int(fan_in.median()),
            "fan_out_min": int(fan_out.min()), "fan_out_median": int(fan_out.median()),
            "no_inputs": int((fan_in == 0).sum()), "no_outputs": int((fan_out == 0).sum())}


def nonzeros(masks: dict[str, torch.Tensor]) -> dict[str, int]:
    return {n: int(m.sum()) for n, m in masks.items()}


class MaskEnforcer:
    """Holds (weight, mask) pairs of the dense masked layers; zeroes masked entries in place.

    Zeroing the weights after every step suffices: SGD, Adam and AdamW update each entry from its
    own gradient and state only, so what they do to a masked entry is undone before any forward.
    """

    def __init__(self, model: torch.nn.Module, masks: dict[str, torch.Tensor]):
        pairs = [(n, m.weight, masks[n].to(m.weight.dtype)) for n, m in weight_modules(model) if n in masks]
        self.names = [n for n, _, _ in pairs]
        self.weights, self.masks = [w for _, w, _ in pairs], [m for _, _, m in pairs]

    def set(self, name: str, mask: torch.Tensor) -> None:
        """Take a layer's changed mask (dynamic sparse training; sparsity.dynamic)."""
        self.masks[self.names.index(name)].copy_(mask)

    @torch.no_grad()
    def apply(self) -> None:
        """Zero every masked weight (one foreach dispatch for all layers)."""
        if self.weights:
            torch._foreach_mul_(self.weights, self.masks)
