"""Settings that do nothing under the chosen options (`train.nesterov` without momentum,
`sparsity.granularity: kernel` on an MLP, ...): silently ignoring them hides mistakes in a study.

Only keys the recipe gives explicitly are judged (a default that does not apply is not a mistake).
A setting without effect at every point of the recipe's grid is an error; one without effect at
some sweep points only (a sweep over `train.optimizer` with `train.momentum` set) is legitimate
and becomes a warning, printed once by the command. Which methods use the sparsity settings and
which mask families move their masks are the catalog's to say (config.catalog).
"""

from __future__ import annotations

from widecli.config.catalog import Catalog
from widecli.config.schema import Recipe

# Appended to the reasons that come from a narrowed grid (`--set widen.factors=[1]` to train the
# baselines only, `--method dense`): legitimate, so always a warning, never an error.
GRID = "; the grid leaves it unused"
CONV_ARCHS = ("cnn", "resnet18", "resnet18_imagenet")


def _given(section, key: str) -> bool:
    return key in section.model_fields_set


def ineffective(r: Recipe, catalog: Catalog) -> list[tuple[str, str]]:
    """(dotted key, why it does nothing) for every explicitly given setting of `r` that has no
    effect on any run of `r` as it stands (one grid point: sweep axes already applied)."""
    t, m, s, d = r.train, r.model, r.sparsity, r.data
    out: list[tuple[str, str]] = []
    if t.optimizer == "sgd":
        if t.nesterov and t.momentum == 0:
            out.append(("train.nesterov", "Nesterov needs momentum, and train.momentum is 0"))
    else:
        if _given(t, "momentum"):
            out.append(("train.momentum", f"{t.optimizer} has no momentum setting (its betas are fixed)"))
        if t.nesterov:
            out.append(("train.nesterov", f"Nesterov momentum applies to sgd only, not {t.optimizer}"))
    if t.schedule != "step":
        if t.milestones:
            out.append(("train.milestones", f"milestones apply to the step schedule only, not {t.schedule}"))
        if _given(t, "gamma"):
            out.append(("train.gamma", f"gamma applies to the step schedule only, not {t.schedule}"))
    elif any(e >= t.epochs for e in t.milestones):
        late = [e for e in t.milestones if e >= t.epochs]
        out.append(("train.milestones", f"epoch {late[0]} is not before train.epochs {t.epochs}"))
    if t.checkpoint_every >= t.epochs and t.checkpoint_every > 0:
        out.append(("train.checkpoint_every", f"{t.checkpoint_every} is not below train.epochs {t.epochs}, "
                                              f"so no checkpoint is ever written before the run ends"))
    if m.arch == "mlp":
        for key in ("width", "batchnorm"):
            if _given(m, key):
                out.append((f"model.{key}", "applies to convnets only; the mlp's widths are model.hidden"))
        if s.granularity == "kernel":
            out.append(("sparsity.granularity", "kernel granularity applies to convolutions; an mlp has none"))
    elif m.arch in CONV_ARCHS:
        for key in ("hidden", "activation", "bias", "parameterization"):
            if _given(m, key):
                out.append((f"model.{key}", f"applies to the mlp only, not {m.arch}"))
        if _given(m, "batchnorm") and m.arch != "cnn":
            out.append(("model.batchnorm", f"applies to the cnn only; {m.arch} always has BatchNorm"))
    wide = [f for f in r.widen.factors if f != 1]
    sparse = [x for x in r.widen.methods if catalog.uses_sparsity(x)]
    if not wide or not sparse:
        why = ("every factor is 1 (the dense baseline)" if not wide
               else f"no method in widen.methods ({', '.join(r.widen.methods)}) uses sparsity")
        out += [(f"sparsity.{k}", why + GRID) for k in sorted(s.model_fields_set)]
    elif s.connectivity and s.rule != "custom":
        out.append(("sparsity.connectivity", f"per-layer connectivities apply to rule custom, not {s.rule}"))
    for method in r.widen.per_method_factor:
        if method not in r.widen.methods:
            out.append((f"widen.per_method_factor.{method}",
                        f"{method} is not in widen.methods ({', '.join(r.widen.methods)})" + GRID))
    if d.subset_draw != "fixed" and d.subset is None:
        out.append(("data.subset_draw", "a subset is drawn only when data.subset is set"))
    if not wide and _given(r.widen, "layers"):
        out.append(("widen.layers", "every factor is 1 (the dense baseline widens nothing)" + GRID))
    if d.pipeline == "device" and _given(d, "workers"):
        out.append(("data.workers", "DataLoader workers apply to pipeline stream, not device"))
    if d.path is not None and d.dataset != "npz":
        out.append(("data.path", f"a file path applies to dataset npz only, not {d.dataset}"))
    if wide and sparse:
        out += mask_settings(r)
    return out


def judge(points: list[Recipe], catalog: Catalog) -> tuple[list[str], list[str]]:
    """(errors, warnings) over the grid's points: a setting without effect at every point is an
    error, at some points a warning (legitimate in a sweep), and one left unused by the grid's
    factors or methods always a warning. Each names its key."""
    found = [dict(ineffective(p, catalog)) for p in points]
    keys = list(dict.fromkeys(k for f in found for k in f))
    errors, warnings = list(dict.fromkeys(c for p in points for c in mask_conflicts(p, catalog))), []
    for key in keys:
        where = [f for f in found if key in f]
        if len(where) == len(found) and not where[0][key].endswith(GRID):
            errors.append(f"{key}: has no effect: {where[0][key]}; remove it or change the setting it depends on")
        else:
            at = "" if len(where) == len(found) else f" at {len(where)} of {len(found)} sweep points"
            warnings.append(f"{key}: has no effect{at} ({where[0][key]})")
    return errors, warnings


# --------------------------------------------------------------------------- mask families (issue 29)

# The settings of one mask family (sparsity.families): given for another family, they do nothing.
MASK_SETTINGS = {"snip_batches": ("snip",), "synflow_iterations": ("synflow",), "update_every": ("set", "rigl"),
                 "drop_fraction": ("set", "rigl"), "update_end": ("set", "rigl")}


def mask_settings(r: Recipe) -> list[tuple[str, str]]:
    """(key, why) for a family's own setting given while no family that uses it is chosen (a sweep
    over sparsity.mask that includes one does use it: its other points canonicalize it away)."""
    s = r.sparsity
    chosen = [str(m) for m in r.sweep.get("sparsity.mask", [s.mask])]
    return [(f"sparsity.{key}", f"applies to sparsity.mask {' and '.join(families)}, not {', '.join(chosen)}")
            for key, families in MASK_SETTINGS.items() if _given(s, key) and not set(chosen) & set(families)]


def mask_conflicts(r: Recipe, catalog: Catalog) -> list[str]:
    """Settings that cannot train together with the chosen mask family (an error at any grid point)."""
    s, t = r.sparsity, r.train
    if not any(f != 1 for f in r.widen.factors) or not any(catalog.uses_sparsity(x) for x in r.widen.methods):
        return []
    out = []
    if catalog.moves_masks(s.mask) and t.backend == "sparse":
        out.append(f"train.backend: sparse keeps each layer's kept positions fixed (CSR), but sparsity.mask "
                   f"{s.mask} moves them during training; use train.backend auto or dense (auto trains {s.mask} "
                   f"dense)")
    if s.granularity == "kernel" and s.mask != "random":
        out.append(f"sparsity.granularity: kernel applies to sparsity.mask random only, not {s.mask}; use "
                   f"granularity weight")
    return out
