"""Finished runs as one DataFrame, grouped into studies (the rows of Table 1).

A *study* is one row of Table 1: a recipe with fixed data/model/training settings (sweep axes on
those keys included), one choice of widened layers and one set of sparsity settings. Its runs are
  - the baseline: dense runs at factor 1 with the same recipe, data, model and training settings.
    Factor 1 is stored canonically (dense, widen "first", default sparsity), so every study of
    those settings shares it whatever its own widen/sparsity columns say;
  - its sparse runs at factors > 1;
  - the dense and bottleneck runs at factors > 1 with the same widened layers. They carry default
    sparsity settings, so they are shared by studies that differ only in sparsity.
Means and ± are over seeds: ± is the sample standard deviation (ddof=1), empty with one seed.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from widecli.config.effects import MASK_SETTINGS
from widecli.config.identity import EXECUTION_KEYS
from widecli.config.schema import RunSpec, SparsityConfig
from widecli.errors import StoreError
from widecli.store import runs as store

EXEC_COLUMNS = {f"{section}.{k}" for section, keys in EXECUTION_KEYS.items() for k in keys}
# Compute columns (issue 29): forward multiply-accumulates per example at the kept weights and of
# the dense model at the same widths (result.json `weights`), mean training seconds per epoch (`final`).
COMPUTE = ("macs_nonzero", "macs_dense", "epoch_seconds")
_SHOWN = {"recipe", "data.dataset", "model.arch", "model.hidden", "model.width", "widen_layers",
          "sparsity.rule"}


def load_frame(results: str | Path, recipes: list[str] | None = None,
               expected: list[RunSpec] | None = None) -> pd.DataFrame:
    """One row per finished run under `results` (all recipes, or those named), spec keys flattened.

    `expected` specs (a recipe's expansion) that have no finished run are added with status
    "missing", so a study shows what is still to run.
    """
    root = Path(results)
    if not root.is_dir():
        raise StoreError(f"{root}: no such results directory")
    if not recipes and store.holds_runs(root):  # given results/<recipe>/ itself
        root, recipes = root.parent, [root.name]
    rejected: list[str] = []
    # Keyed by (recipe, run id): recipes may share runs (same spec), each study keeps its own.
    found = {(r["recipe"], r["run_id"]): r for r in store.iter_runs(root, recipes, rejected=rejected)}
    rows = [{**store.flatten(r), "stale": _stale(r)} for r in found.values()]
    for spec in expected or []:
        if (spec.recipe, spec.run_id) not in found:
            rows.append(store.flatten({"run_id": spec.run_id, "recipe": spec.recipe, "status": "missing",
                                       "spec": spec.model_dump(mode="json")}))
    if not rows:
        where = f" for recipe(s) {', '.join(recipes)}" if recipes else ""
        why = f" ({len(rejected)} result file(s) rejected: {rejected[0]})" if rejected else ""
        inside = [d for d in sorted(root.iterdir()) if d.is_dir() and store.holds_runs(d, levels=2)]
        if not recipes and not rejected and inside:  # e.g. results/ of a fresh clone: results/studies/ holds them
            raise StoreError(f"{root}: no finished runs here, but {inside[0]} holds some: widecli report "
                             f"{inside[0]}")
        raise StoreError(f"{root}: no finished runs{where}{why}; run `widecli sweep RECIPE` first")
    df = pd.DataFrame(rows)
    df.attrs["rejected"] = rejected  # corrupt/foreign result files: not counted, reported by the CLI
    for col in ("test_accuracy", "train_accuracy", "connectivity", "nonzeros"):
        df[col] = pd.to_numeric(df.get(col), errors="coerce")
    for col in COMPUTE:  # recorded since issue 29: absent from older runs
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    # Sparsity keys added after a run was stored read as their default: what that run computed.
    for name, f in SparsityConfig.model_fields.items():
        default = f.get_default(call_default_factory=True)
        if not isinstance(default, (dict, list)):
            col = f"sparsity.{name}"
            df[col] = df[col].where(df[col].notna(), default) if col in df else default
            if isinstance(default, int) and not isinstance(default, bool):  # NaN made the column float: 20.0
                df[col] = df[col].map(lambda v: int(v) if isinstance(v, float) and v.is_integer() else v)
    # A family's own settings read "-" for the other families and at their defaults, so that labels
    # and file names name them only where they were chosen (mask=rigl update_every=20).
    for key, families in MASK_SETTINGS.items():
        col, default = f"sparsity.{key}", SparsityConfig.model_fields[key].default
        df[col] = df[col].astype(object).where(df["sparsity.mask"].isin(families) & (df[col] != default), "-")
    return _with_keys(_mark_per_factor(df))


def _mark_per_factor(df: pd.DataFrame) -> pd.DataFrame:
    """Settings tied to the widening factor (a recipe's `widen.per_factor`, e.g. per-width learning
    rates) must not split a recipe into one study per value. A data/model/train column is
    such a setting in a recipe when it has one value in every (factor, method) cell but several
    across cells; its cells read "per factor" and the values move to the column `per_factor:<key>`."""
    df = df.copy()
    # (sparsity settings are left out: they are reset for every method but sparse, by design)
    cols = [c for c in df.columns if c.split(".")[0] in ("data", "model", "train") and c not in EXEC_COLUMNS]
    for recipe, rows in df.groupby("recipe"):
        for c in cols:
            values = rows[c].map(str)
            if values.nunique() > 1 and values.groupby([rows["factor"], rows["method"]]).nunique().max() == 1:
                df[f"per_factor:{c}"] = df.get(f"per_factor:{c}", pd.Series(None, index=df.index, dtype=object))
                df.loc[rows.index, f"per_factor:{c}"] = rows[c].astype(object)
                df[c] = df[c].astype(object)
                df.loc[rows.index, c] = "per factor"
    return df


def _stale(result: dict) -> bool:
    """Whether a run is stored under an id that its spec no longer hashes to (an older widecli)."""
    try:
        return RunSpec.model_validate(result["spec"]).run_id != result["run_id"]
    except ValueError:  # pydantic's ValidationError: a spec of an older schema
        return True


def _key(df: pd.DataFrame, cols: list[str]) -> pd.Series:
    # str() of every value (NaN and None included: pandas' astype(str) keeps NaN in pandas >= 3)
    return pd.Series(["|".join(map(str, t)) for t in df[cols].itertuples(index=False)], index=df.index)


def _with_keys(df: pd.DataFrame) -> pd.DataFrame:
    """Add _base (baseline match), _arm (+ widened layers) and _study (+ sparsity) keys."""
    shared = ["recipe"] + sorted(c for c in df.columns if c.split(".")[0] in ("data", "model", "train")
                                 and c not in EXEC_COLUMNS)
    sparsity = sorted(c for c in df.columns if c.startswith("sparsity."))
    df = df.copy()
    df["_base"] = _key(df, shared)
    df["_arm"] = df["_base"] + "|" + df["widen_layers"].astype(str)
    df["_study"] = df["_arm"] + "|" + _key(df, sparsity)
    df.attrs["study_cols"] = shared + ["widen_layers"] + sparsity
    return df


# --------------------------------------------------------------------------- studies


@dataclass
class Study:
    name: str
    labels: dict          # recipe, dataset, model, widened, rule and the settings that vary
    rows: pd.DataFrame    # baseline + sparse + dense + bottleneck runs (missing ones included)
    sparse: bool          # False: a study of dense/bottleneck runs only (no sparsity settings)


def studies(df: pd.DataFrame) -> list[Study]:
    """Group runs into studies (see the module docstring), in a stable order."""
    wide = df[df["factor"] > 1]
    keys = list(dict.fromkeys(wide.loc[wide["method"] == "sparse", "_study"]))
    arms_with_sparse = set(wide.loc[wide["method"] == "sparse", "_arm"])
    keys += [a for a in dict.fromkeys(wide["_arm"]) if a not in arms_with_sparse]
    bases_with_wide = set(wide["_base"])
    keys += [b for b in dict.fromkeys(df["_base"]) if b not in bases_with_wide]
    firsts = {k: _first_row(df, k) for k in keys}
    varying = _varying(df, list(firsts.values()))
    # File names use only what varies within the study's own recipe, so adding another recipe's
    # results never renames (and breaks links to) a study's plot.
    varying_in = {r: [c for c in varying if c in _varying(df, [f for f in firsts.values() if f["recipe"] == r])]
                  for r in {f["recipe"] for f in firsts.values()}}
    wide_studies = set(wide["_study"])
    out = []
    for key, first in firsts.items():
        base = first["_base"]
        is_sparse = key in wide_studies and first["method"] == "sparse"
        members = (df["_base"] == base) & (df["factor"] == 1)
        if key != base:
            members |= (df["_arm"] == first["_arm"]) & (df["factor"] > 1) & (df["method"] != "sparse")
        if is_sparse:
            members |= (df["_study"] == key) & (df["method"] == "sparse") & (df["factor"] > 1)
        labels = _labels(first, key != base, is_sparse, varying)
        out.append(Study(_name(labels, varying_in[first["recipe"]]), labels, df[members], is_sparse))
    out.sort(key=lambda s: [str(v) for v in s.labels.values()])
    _dedup_names(out)
    return out


def _first_row(df: pd.DataFrame, key: str) -> pd.Series:
    """A representative row of a key (a wide sparse row for a study key, else any)."""
    for col in ("_study", "_arm", "_base"):
        hit = df[(df[col] == key) & (df["factor"] > 1)] if col != "_base" else df[df[col] == key]
        if not hit.empty:
            return hit.sort_values("method", key=lambda m: m != "sparse", kind="stable").iloc[0]
    raise KeyError(key)


def _varying(df: pd.DataFrame, firsts: list[pd.Series]) -> list[str]:
    """Study settings (beyond the Table 1 label columns) that differ between studies (their first rows)."""
    reps = pd.DataFrame(firsts)
    cols = [c for c in df.attrs["study_cols"] if c not in _SHOWN and c not in EXEC_COLUMNS]
    sparse_reps = reps[reps["method"] == "sparse"]
    return [c for c in cols if (sparse_reps if c.startswith("sparsity.") else reps)[c].map(str).nunique() > 1]


def _model_label(row: pd.Series) -> str:
    if row.get("model.arch") == "mlp":
        return f"mlp {row.get('model.hidden')}"
    return f"{row.get('model.arch')} w{row.get('model.width')}"


def _labels(row: pd.Series, wide: bool, sparse: bool, varying: list[str]) -> dict:
    labels = {"recipe": row["recipe"], "dataset": row["data.dataset"], "model": _model_label(row),
              "widened": row["widen_layers"] if wide else "-",
              "rule": row["sparsity.rule"] if sparse else "-"}
    for c in varying:
        labels[c] = row[c] if (sparse or not c.startswith("sparsity.")) else "-"
    return labels


def _name(labels: dict, varying: list[str]) -> str:
    """recipe-widened-rule plus key=value for each setting that varies within the recipe."""
    parts = [short_label(labels[k]) for k in ("recipe", "widened", "rule") if labels[k] != "-"]
    parts += [f"{c.split('.')[-1]}={short_label(labels[c])}" for c in varying if labels.get(c, "-") != "-"]
    return re.sub(r"[^A-Za-z0-9_.=,-]+", "_", "-".join(parts)).strip("_")


def short_label(v) -> str:
    """A label value for a file name: JSON mappings as k=v,k=v."""
    try:
        d = json.loads(v) if isinstance(v, str) else None
    except ValueError:
        d = None
    return ",".join(f"{k}={x}" for k, x in d.items()) if isinstance(d, dict) else str(v)


def _dedup_names(items: list[Study]) -> None:
    seen: dict[str, int] = {}
    for s in items:
        seen[s.name] = seen.get(s.name, 0) + 1
    for s in items:
        if seen[s.name] > 1:
            s.name += "-" + hashlib.sha256(json.dumps(s.labels, default=str).encode()).hexdigest()[:6]


# result.json's record of how a run was executed (store.manage.EXECUTION_CHOICES): a CSR kernel, a
# stacked matmul, the thread count or the device sum in another order, and over hundreds of epochs
# that moves a run's accuracy as much as its seed does.
EXECUTION = ("device", "backend", "stacked_with", "threads", "fused_step")


def mixed_execution(items: list[Study]) -> list[str]:
    """One line per study whose runs of one cell (method, factor: the seeds averaged together) were
    executed differently; empty when every cell is uniform."""
    lines = []
    for s in items:
        ok = ok_runs(s.rows)
        cols = [c for c in EXECUTION if c in ok]
        for (method, factor), cell in ok.groupby(["method", "factor"], sort=True):
            mixed = {c: sorted(cell[c].dropna().map(str).unique()) for c in cols}
            mixed = {c: v for c, v in mixed.items() if len(v) > 1}
            if mixed:
                what = "; ".join(f"{c} {' / '.join(v)}" for c, v in mixed.items())
                lines.append(f"{s.name}: the seeds of f={factor:g} {method} ran with different execution choices "
                             f"({what}): their spread mixes seed and float-order effects (docs: reproducibility)")
                break
    return lines


def ok_runs(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["status"] == "ok"]


def curve(rows: pd.DataFrame, method: str, metric: str, x: str = "factor") -> pd.DataFrame:
    """Mean and std over seeds per x; every method's curve starts at the shared f=1 baseline."""
    ok = ok_runs(rows)
    pts = ok[(ok["method"] == method) & (ok["factor"] > 1)]
    if x == "factor":
        pts = pd.concat([ok[ok["factor"] == 1], pts])
    return pts.groupby(x)[metric].agg(["mean", "std"]).reset_index().sort_values(x)
