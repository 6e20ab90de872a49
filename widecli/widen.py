"""Which layers widen, and the per-layer widths that result from a widening factor."""

from __future__ import annotations

from widecli import models
from widecli.errors import RecipeError


def selected_layers(model_cfg, layers) -> list[str]:
    """Resolve `widen.layers` (first | last | all | [names]) to layer names."""
    names = models.widenable_layers(model_cfg)
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


def widths(model_cfg, layers, factor: float) -> dict[str, int]:
    """Baseline widths with each selected layer scaled to round(factor * width)."""
    chosen = set(selected_layers(model_cfg, layers))
    return {name: max(1, round(factor * w)) if name in chosen else w
            for name, w in models.base_widths(model_cfg).items()}
