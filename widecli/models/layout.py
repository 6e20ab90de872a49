"""Layout helpers: which units widen, the widths a widening factor gives, and a model's weight layers.

Weights (DESIGN.md, Words) are the `weight` tensors of Linear and Conv layers (and of widecli's
StackedLinear); biases and BatchNorm are counted separately and never masked.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch import nn

from widecli.config.schema import ModelConfig
from widecli.errors import RecipeError
from widecli.models import registry

# Layers whose `weight` counts toward the budget. BatchNorm and biases never do.
WEIGHT_TYPES: tuple[type, ...] = (nn.Linear, nn.Conv1d, nn.Conv2d)


def selected_layers(model_cfg: ModelConfig, layers: str | list[str]) -> list[str]:
    """Resolve `widen.layers` (first | last | all | [names]) to unit names."""
    names = registry.widenable_layers(model_cfg)
    if layers == "first":
        return names[:1]
    if layers == "last":
        return names[-1:]
    if layers == "all":
        return list(names)
    unknown = [n for n in layers if n not in names]
    if unknown:
        raise RecipeError(f"widen.layers: unknown layer {unknown[0]!r}; allowed: first, last, all "
                          f"or any of {', '.join(names)}")
    return [n for n in names if n in layers]


def widths(model_cfg: ModelConfig, layers: str | list[str], factor: float) -> dict[str, int]:
    """Baseline widths with each selected unit scaled to round(factor * width)."""
    chosen = set(selected_layers(model_cfg, layers))
    return {name: max(1, round(factor * w)) if name in chosen else w
            for name, w in registry.base_widths(model_cfg).items()}


def is_stacked(m: nn.Module) -> bool:
    """A layer whose weight has a leading stack dimension (K runs in one tensor)."""
    return getattr(m, "stacked", False)


def weight_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) of every weight layer, in definition order."""
    for name, m in model.named_modules():
        if isinstance(m, WEIGHT_TYPES) or is_stacked(m) and hasattr(m, "in_features") \
                and isinstance(getattr(m, "weight", None), torch.Tensor):
            yield name, m


def layer_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Per-run weight shape of each weight layer (the stack dimension removed)."""
    return {name: tuple(m.weight.shape[1:] if is_stacked(m) else m.weight.shape)
            for name, m in weight_modules(model)}


def count_weights(model: nn.Module) -> int:
    """Number of weights (Linear/Conv weight entries) of one run of the model."""
    return sum(math.prod(s) for s in layer_shapes(model).values())


def count_other(model: nn.Module) -> int:
    """Biases, BatchNorm and every other trainable parameter of one run (never masked)."""
    weights = {id(m.weight) for _, m in weight_modules(model)}
    total = 0
    for m in model.modules():
        stack = getattr(m, "stack", 1) if is_stacked(m) else 1
        for p in m.parameters(recurse=False):
            if id(p) not in weights and p.requires_grad:
                total += p.numel() // stack
    return total
