"""The paper's Table 1, computed: one row per study (analysis.frame), numbers as fractions in [0, 1].

Per study: baseline accuracy (f = 1 dense), the best sparse-wide accuracy and its factor/connectivity,
dense-wide accuracy at that factor, and the fraction of the dense improvement reached by width alone,
(sparse - baseline) / (dense - baseline); mean ± std over seeds, with paired-by-seed bootstrap
intervals (analysis.stats), and the compute of the three cells where the runs recorded it. How the
rows are grouped per recipe for a terminal (`by_recipe`) is decided here too; formats and layouts
are analysis.formats (files) and cli.render.table1 (the terminal).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from widecli.analysis import stats
from widecli.analysis.frame import Study, ok_runs
from widecli.methods import bottlenecks

# Table 1's label columns after the recipe: what tells a study apart before its settings.
LABELS = ("dataset", "model", "widened", "rule")


def _seeds(rows: pd.DataFrame, column: str = "test_accuracy") -> pd.Series:
    """Test (or another) accuracy per seed of one cell (a seed with several runs is averaged)."""
    return ok_runs(rows).groupby("seed")[column].mean()


def _stats(per_seed: pd.Series) -> tuple[float, float, int]:
    n = len(per_seed)
    return (float(per_seed.mean()) if n else np.nan, float(per_seed.std(ddof=1)) if n > 1 else np.nan, n)


def selected_by(cells: pd.DataFrame) -> str:
    """`validation` where every run has a validation accuracy (data.validation), else `test`."""
    has = "val_accuracy" in cells and not cells.empty and cells["val_accuracy"].notna().all()
    return "validation" if has else "test"


def best_wide(rows: pd.DataFrame, method: str) -> dict | None:
    """The factor > 1 of `method` with the highest mean accuracy over seeds (ties: smaller f), and
    its test accuracy. The factor is chosen by validation accuracy where the runs have a validation
    split: choosing it by test accuracy picks the luckiest of several noisy cells and reports that
    same lucky number, which flatters the sparse-wide row (the baseline is one cell, not a choice)."""
    cells = ok_runs(rows[(rows["method"] == method) & (rows["factor"] > 1)])
    if cells.empty:
        return None
    by = selected_by(cells)
    means = cells.groupby("factor")["val_accuracy" if by == "validation" else "test_accuracy"].mean()
    f = float(means.idxmax())
    cell = cells[cells["factor"] == f]
    per_seed = _seeds(cell)
    mean, std, n = _stats(per_seed)
    return {"factor": f, "mean": mean, "std": std, "seeds": n, "selected_by": by,
            "connectivity": float(cell["connectivity"].mean()), "per_seed": per_seed}


def fraction(base: pd.Series, wide: pd.Series, dense: pd.Series) -> tuple[float, float, int]:
    """(wide - base) / (dense - base): the ratio of the seed means, ± the std of per-seed ratios.

    The point value uses the means shown in the table (checkable by hand from the row). The ± pairs
    runs by seed: for each seed present in all three cells, (wide_s - base_s) / (dense_s - base_s),
    and takes their sample std (ddof=1); empty with fewer than two paired seeds.
    """
    gain = dense.mean() - base.mean()
    point = float((wide.mean() - base.mean()) / gain) if gain != 0 else np.nan
    paired = sorted(set(base.index) & set(wide.index) & set(dense.index))
    per_seed = [(wide[s] - base[s]) / (dense[s] - base[s]) for s in paired if dense[s] != base[s]]
    return point, float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else np.nan, len(per_seed)


def study_row(study: Study, method: str = "sparse") -> dict:
    """Table 1 figures of a study; `method` is the wide method compared (sparse in the paper)."""
    rows, notes = study.rows, []
    base_seeds = _seeds(rows[rows["factor"] == 1])
    b_mean, b_std, b_n = _stats(base_seeds)
    row = {**study.labels, "baseline": b_mean, "baseline_std": b_std, "baseline_seeds": b_n}
    if not b_n:
        notes.append("no baseline (f=1) run")
    compared = study.sparse or method != "sparse"   # a dense-only study has no sparse runs to compare
    best = best_wide(rows, method) if compared else None
    row.update({"sparse": np.nan, "sparse_std": np.nan, "sparse_seeds": 0, "sparse_factor": np.nan,
                "sparse_connectivity": np.nan, "selected_by": "", "delta": np.nan, "delta_ci95": "",
                "dense": np.nan, "dense_std": np.nan, "dense_seeds": 0, "dense_factor": np.nan, "dense_at": "",
                "dense_delta": np.nan, "dense_delta_ci95": "", "fraction": np.nan, "fraction_std": np.nan,
                "fraction_ci95": "", "fraction_seeds": 0})
    if best:
        row.update({"sparse": best["mean"], "sparse_std": best["std"], "sparse_seeds": best["seeds"],
                    "sparse_factor": best["factor"], "sparse_connectivity": best["connectivity"],
                    "selected_by": best["selected_by"]})
        if b_n:
            row.update({"delta": best["mean"] - b_mean,
                        "delta_ci95": stats.as_text(*stats.delta_interval(base_seeds, best["per_seed"])[:2])})
    elif compared:
        notes.append(f"no {method} runs at f>1")
    dense = ok_runs(rows[(rows["method"] == "dense") & (rows["factor"] > 1)])
    if dense.empty:
        notes.append("no dense-wide runs")
    else:
        at_best = best is not None and (dense["factor"] == best["factor"]).any()
        f = best["factor"] if at_best else float(dense["factor"].max())
        d_seeds = _seeds(dense[dense["factor"] == f])
        d_mean, d_std, d_n = _stats(d_seeds)
        row.update({"dense": d_mean, "dense_std": d_std, "dense_seeds": d_n, "dense_factor": f,
                    "dense_at": "same f" if at_best else "widest"})
        if b_n:
            row.update({"dense_delta": d_mean - b_mean,
                        "dense_delta_ci95": stats.as_text(*stats.delta_interval(base_seeds, d_seeds)[:2])})
        if best is not None and b_n:
            fr, fr_std, fr_n = fraction(base_seeds, best["per_seed"], d_seeds)
            row.update({"fraction": fr, "fraction_std": fr_std, "fraction_seeds": fr_n,
                        "fraction_ci95": stats.as_text(*stats.fraction_interval(base_seeds, best["per_seed"],
                                                                                d_seeds)[:2])})
            if np.isnan(fr):
                notes.append("dense = baseline: fraction undefined")
            elif d_mean <= b_mean:
                notes.append("dense wide not above baseline")
            elif best["mean"] <= b_mean:
                notes.append("sparse wide below baseline")
    for m in bottlenecks():
        b = best_wide(rows, m)
        if b:
            row.update({m: b["mean"], f"{m}_std": b["std"], f"{m}_factor": b["factor"]})
    stale = int(rows.get("stale", pd.Series(dtype=bool)).fillna(False).astype(bool).sum())
    if stale:
        notes.append(f"{stale} run(s) under outdated run ids (an older widecli; a sweep re-runs them)")
    failed = int(rows["status"].isin(["diverged", "failed"]).sum())
    if failed:
        notes.append(f"{failed} run(s) failed/diverged")
    row["missing"] = missing_runs(study)
    if row["missing"]:
        notes.append(f"{row['missing']} run(s) missing")
    row["note"] = "; ".join(notes)
    return row


def missing_runs(study: Study) -> int:
    """Runs still to do: 'missing' rows (from a recipe), else holes in the grid that the runs span.

    Without a recipe the expected grid is inferred: every (method, factor > 1) cell present and the
    baseline, each with every seed seen in the study.
    """
    rows = study.rows
    if (rows["status"] == "missing").any():
        return int((rows["status"] == "missing").sum())
    seeds = set(rows["seed"])
    cells = rows.groupby(["method", "factor"])["seed"].agg(set)
    return int(sum(len(seeds - s) for s in cells))


def table1(items: list[Study], method: str = "sparse") -> pd.DataFrame:
    """Table 1, one row per study, numbers as fractions in [0, 1] (full precision)."""
    t = with_compute(pd.DataFrame([study_row(s, method) for s in items]), items, method)
    return t[[c for c in t.columns if c in _T1_ALWAYS or not t[c].isna().all()]]


_T1_ALWAYS = ("baseline", "baseline_std", "sparse", "sparse_std", "sparse_factor", "sparse_connectivity",
              "selected_by", "delta", "delta_ci95", "dense", "dense_std", "dense_factor", "dense_delta",
              "dense_delta_ci95", "fraction", "fraction_std", "fraction_ci95", "note")


# --------------------------------------------------------------------------- compute (issue 29)


def _cell_mean(rows: pd.DataFrame, col: str, method: str | None, factor) -> float:
    """Mean of `col` over the ok runs of one (method, factor) cell (factor 1: the baseline)."""
    if col not in rows or pd.isna(factor):
        return np.nan
    ok = ok_runs(rows)
    cell = ok[ok["factor"] == 1] if factor == 1 else ok[(ok["method"] == method) & (ok["factor"] == factor)]
    return float(cell[col].mean()) if not cell.empty else np.nan


def with_compute(t: pd.DataFrame, items: list[Study], method: str = "sparse") -> pd.DataFrame:
    """Table 1 plus the compute of its three cells: forward multiply-accumulates per example at the
    kept weights (`*_macs`; the sparse cell also at its dense equivalent, `sparse_macs_dense`) and
    mean training seconds per epoch (`*_epoch_s`). Empty (dropped) for runs that did not record them."""
    t = t.copy()
    for i, s in enumerate(items):
        r = t.iloc[i]
        cells = {"baseline": (None, 1), "sparse": (method, r.get("sparse_factor")),
                 "dense": ("dense", r.get("dense_factor"))}
        for name, (m, f) in cells.items():
            t.loc[t.index[i], f"{name}_macs"] = _cell_mean(s.rows, "macs_nonzero", m, f)
            t.loc[t.index[i], f"{name}_epoch_s"] = _cell_mean(s.rows, "epoch_seconds", m, f)
        t.loc[t.index[i], "sparse_macs_dense"] = _cell_mean(s.rows, "macs_dense", method, r.get("sparse_factor"))
    return t


# --------------------------------------------------------------------------- grouped per recipe


def given(v) -> bool:
    """Whether a label or setting has a value (not "-", NaN or None)."""
    return str(v) not in ("-", "nan", "None")


@dataclass
class RecipeRows:
    """The Table 1 rows of one recipe, as a terminal groups them."""

    recipe: str
    shared: dict                          # label column -> the value all of the recipe's studies share
    rows: list[tuple[dict, pd.Series]]    # per study: the settings that tell it apart (column -> value), its row


def by_recipe(t: pd.DataFrame) -> list[RecipeRows]:
    """Table 1 rows grouped per recipe (in order of appearance): the label columns every study of the
    recipe shares, and per row every setting that differs between the recipe's studies (label columns
    and dotted settings; unset values left out). A recipe of one study is told apart by its widening
    and rule, as a longer recipe's rows are."""
    settings = [c for c in LABELS if c in t] + [c for c in t.columns if "." in c]
    out = []
    for recipe, g in t.groupby("recipe", sort=False):
        varying = [c for c in settings if g[c].map(str).nunique() > 1]
        shared = [c for c in LABELS if c in g and c not in varying and given(g[c].iloc[0])]
        if len(g) == 1:   # one study: its widening and rule label the row, as in a longer recipe
            shared, varying = [c for c in shared if c not in ("widened", "rule")], ["widened", "rule"]
        rows = [({c: r[c] for c in varying if c in r and given(r[c])}, r) for _, r in g.iterrows()]
        out.append(RecipeRows(recipe, {c: g[c].iloc[0] for c in shared}, rows))
    return out
