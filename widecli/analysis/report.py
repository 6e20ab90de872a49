"""Reports: the paper's Table 1, a runs table and text formats (md, txt, csv, latex) from the
finished runs of a results directory (analysis.frame); plots through analysis.plots.

Table 1 per study (see analysis.frame): baseline accuracy (f = 1 dense), the best sparse-wide
accuracy and its factor/connectivity, dense-wide accuracy at that factor, and the fraction of the
dense improvement reached by width alone, (sparse - baseline) / (dense - baseline).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from widecli.analysis import plots, stats
from widecli.analysis.export import load_metrics
from widecli.analysis.frame import (
    COMPUTE,
    EXEC_COLUMNS,
    Study,
    load_frame,
    mixed_execution,
    ok_runs,
    short_label,
    studies,
)
from widecli.config.schema import RunSpec
from widecli.errors import StoreError
from widecli.methods import bottlenecks
from widecli.store import runs as store

FORMATS = ("md", "txt", "csv", "latex")


# --------------------------------------------------------------------------- Table 1


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


def runs_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per recipe x method x factor x settings: connectivity, nonzeros, mean ± std accuracy, seeds."""
    keep = [c for c in df.attrs["study_cols"] if c not in EXEC_COLUMNS]
    varying = [c for c in keep if c not in ("recipe", "widen_layers") and df[c].map(str).nunique() > 1]
    keys = ["recipe", "method", "factor", "widen_layers"] + [c for c in varying if c != "sparsity.rule"]
    if "sparsity.rule" in df:
        keys.insert(4, "sparsity.rule")
    ok = ok_runs(df)
    g = df.groupby(keys, dropna=False, sort=True)
    t = g.agg(runs=("run_id", "size")).join(ok.groupby(keys, dropna=False).agg(
        **{c: (c, "mean") for c in COMPUTE if c in df},  # issue 29: compute columns, where recorded
        connectivity=("connectivity", "mean"), nonzeros=("nonzeros", "mean"),
        test=("test_accuracy", "mean"), test_std=("test_accuracy", "std"),
        train=("train_accuracy", "mean"), train_std=("train_accuracy", "std"),
        seeds=("seed", "nunique")))
    t["seeds"] = t["seeds"].fillna(0).astype(int)
    most = t.groupby(level="recipe")["runs"].transform("max")
    t["complete"] = t["seeds"] >= most
    t = t.reset_index()
    for c in ("sparsity.rule", "widen_layers"):
        if c in t:
            t.loc[t["factor"] == 1, c] = "-"
    if "sparsity.rule" in t:
        t.loc[t["method"] != "sparse", "sparsity.rule"] = "-"
    return t.drop(columns="runs")


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


def _count(v) -> str:
    """A MAC count for people: 6.35k, 504k, 1.2M."""
    if v is None or pd.isna(v):
        return "-"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.3g}"


def display_compute(d: pd.DataFrame, t: pd.DataFrame) -> pd.DataFrame:
    """The compute columns for people (Table 1 or the runs table), where any run recorded them."""
    d = d.drop(columns=[c for c in COMPUTE if c in d])

    def col(c: str) -> pd.Series:
        return t[c] if c in t else pd.Series(np.nan, index=t.index)

    def secs(values) -> str:
        return ", ".join("-" if pd.isna(v) else f"{v:.3g}" for v in values)

    if any(c in t for c in ("baseline_macs", "sparse_macs", "dense_macs")):   # Table 1
        d["MACs/example: base, sparse (dense equiv.), dense"] = [
            f"{_count(b)}, {_count(s)} ({_count(sd)}), {_count(dn)}" for b, s, sd, dn
            in zip(col("baseline_macs"), col("sparse_macs"), col("sparse_macs_dense"), col("dense_macs"))]
        d["s/epoch: base, sparse, dense"] = [
            secs(v) for v in zip(col("baseline_epoch_s"), col("sparse_epoch_s"), col("dense_epoch_s"))]
    elif col("macs_nonzero").notna().any():                                    # the runs table
        d["MACs (dense equiv.)"] = [f"{_count(n)} ({_count(x)})" for n, x in zip(col("macs_nonzero"),
                                                                               col("macs_dense"))]
        d["s/epoch"] = [secs([v]) for v in col("epoch_seconds")]
    return d


# --------------------------------------------------------------------------- formatting


def pm(mean: float, std: float, scale: float = 100.0, digits: int = 2) -> str:
    if mean is None or pd.isna(mean):
        return "-"
    s = f"{scale * mean:.{digits}f}"
    return s if pd.isna(std) else f"{s} ± {scale * std:.{digits}f}"


def with_interval(value: float, ci: str, scale: float, sign: bool = False, digits: int = 2) -> str:
    """`+2.91 [+2.50, +3.32]`: a value and its interval (a `[lo, hi]` cell of stats.as_text), scaled."""
    if value is None or pd.isna(value):
        return "-"
    fmt = f"{{:{'+' if sign else ''}.{digits}f}}"
    text = fmt.format(scale * value)
    if ci:
        lo, hi = json.loads(ci)
        text += f" [{fmt.format(scale * lo)}, {fmt.format(scale * hi)}]"
    return text


def display_table1(t: pd.DataFrame) -> pd.DataFrame:
    """Table 1 in the paper's layout: accuracies in %, fraction as a ratio."""
    d = t[[c for c in ("recipe", "dataset", "model", "widened", "rule") if c in t.columns]].copy()
    settings = [c for c in t.columns if "." in c]
    if settings:  # the settings that tell studies apart, in one narrow column: epochs=1000, scope=all
        d["settings"] = [", ".join(f"{c.split('.')[-1]}={short_label(v)}" for c, v in zip(settings, vals)
                                   if str(v) not in ("-", "nan", "None"))
                         or "-" for vals in t[settings].itertuples(index=False)]
    d["baseline"] = [pm(m, s) for m, s in zip(t["baseline"], t["baseline_std"])]
    d["best sparse wide (f, connectivity)"] = [
        "-" if pd.isna(m) else f"{pm(m, s)} (f={f:g}, {c:.3g})"
        for m, s, f, c in zip(t["sparse"], t.get("sparse_std"), t["sparse_factor"], t["sparse_connectivity"])]
    d["selected by"] = t["selected_by"].replace("", "-")
    d["Δ sparse [95% CI]"] = [with_interval(v, ci, 100.0, sign=True) for v, ci in zip(t["delta"], t["delta_ci95"])]
    d["dense wide"] = ["-" if pd.isna(m) else f"{pm(m, s)} (f={f:g}{', widest' if at == 'widest' else ''})"
                       for m, s, f, at in zip(t["dense"], t.get("dense_std"), t["dense_factor"], t["dense_at"])]
    d["Δ dense [95% CI]"] = [with_interval(v, ci, 100.0, sign=True)
                             for v, ci in zip(t["dense_delta"], t["dense_delta_ci95"])]
    d["fraction [95% CI]"] = [with_interval(v, ci, 1.0) for v, ci in zip(t["fraction"], t["fraction_ci95"])]
    for m in bottlenecks():
        if m in t:
            d[m.replace("_", " ")] = ["-" if pd.isna(v) else f"{pm(v, s)} (f={f:g})"
                                      for v, s, f in zip(t[m], t[f"{m}_std"], t[f"{m}_factor"])]
    d = display_compute(d, t)
    d["note"] = t["note"].replace("", "-")
    return d


def display_runs(t: pd.DataFrame) -> pd.DataFrame:
    """The runs table for people: accuracies in %, '*' marks cells with fewer seeds than the recipe's most."""
    d = t.drop(columns=["test", "test_std", "train", "train_std", "complete", "connectivity", "nonzeros"]).copy()
    d["factor"] = d["factor"].map(lambda f: f"{f:g}")
    d["connectivity"] = t["connectivity"].map(lambda c: "-" if pd.isna(c) else f"{c:.4f}")
    d["nonzeros"] = t["nonzeros"].map(lambda n: "-" if pd.isna(n) else f"{int(n):,}")
    d = display_compute(d, t)
    d["test acc %"] = [pm(m, s) for m, s in zip(t["test"], t["test_std"])]
    d["train acc %"] = [pm(m, s) for m, s in zip(t["train"], t["train_std"])]
    d["seeds"] = [f"{n}" if ok else f"{n}*" for n, ok in zip(t["seeds"], t["complete"])]
    return d.rename(columns={"widen_layers": "widened", "sparsity.rule": "rule"})


def render(df: pd.DataFrame, fmt: str) -> str:
    """A table as md (GitHub), txt (plain), csv (full precision) or latex (booktabs)."""
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "md":
        return tabulate(df, headers="keys", tablefmt="github", showindex=False, disable_numparse=True)
    if fmt == "txt":
        return tabulate(df, headers="keys", tablefmt="simple", showindex=False, disable_numparse=True)
    if fmt == "latex":
        tex = tabulate(df, headers="keys", tablefmt="latex_booktabs", showindex=False, disable_numparse=True)
        return tex.replace("±", r"$\pm$")
    raise ValueError(fmt)


# --------------------------------------------------------------------------- the whole report


@dataclass
class ReportOutput:
    tables: dict[str, pd.DataFrame]     # numeric tables: "table1", "runs"
    shown: dict[str, pd.DataFrame]      # the same for people (formatted strings)
    studies: list[Study]
    files: list[Path]
    rejected: list[str] = field(default_factory=list)   # corrupt/foreign result files, left out
    notes: list[str] = field(default_factory=list)      # studies whose cells mix execution choices


def build(results: str | Path, *, table1_: bool = True, runs: bool = True, plot: bool = False,
          fmt: str | None = None, out: str | Path | None = None, recipes: list[str] | None = None,
          expected: list[RunSpec] | None = None, curves: bool = False) -> ReportOutput:
    """Load, compute, and write report.md/report.txt (+ csv/latex when asked) and plots into `out`.

    Report files are written only when there is a table to put in them (never an empty file). A
    report filtered to some recipes and written to the results directory itself (no `out`) is
    named report-<recipe>[+<recipe>...].md, so it never replaces the report of everything there."""
    if fmt is not None and fmt not in FORMATS:
        raise StoreError(f"--format: unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
    df = load_frame(results, recipes, expected)
    items = studies(df)
    tables, shown = {}, {}
    if table1_:
        tables["table1"] = table1(items)
        shown["table1"] = display_table1(tables["table1"])
    if runs:
        tables["runs"] = runs_table(df)
        shown["runs"] = display_runs(tables["runs"])
    stem = "report" if out is not None or not recipes else "report-" + "+".join(sorted(set(recipes)))
    out = Path(out or results)
    files = write_tables(tables, shown, out, fmt, stem) if tables else []
    if plot:
        files += [plots.plot_study(s, out / "plots" / f"{s.name}.png") for s in items]
        files += plots.pareto(df, out / "plots")
        files += plots.heatmaps(df, out / "plots")
    if curves:
        metrics = load_metrics(results, sorted(set(df["recipe"])))
        files += [plots.plot_curves(s, metrics, out / "plots" / f"{s.name}-curves.png") for s in items]
    return ReportOutput(tables, shown, items, files, df.attrs.get("rejected", []), mixed_execution(items))


def table1_of(results: str | Path, recipes: list[str]) -> pd.DataFrame:
    """Table 1 of some recipes' finished runs, nothing written (what a sweep shows at its end)."""
    return table1(studies(load_frame(results, recipes)))


def write_tables(tables: dict, shown: dict, out: Path, fmt: str | None, stem: str = "report") -> list[Path]:
    """<stem>.md and <stem>.txt always; <stem>-<table>.csv / .tex for --format csv / latex."""
    files = []
    texts = {"md": "", "txt": ""}
    for name, d in shown.items():
        texts["md"] += f"## {TITLES[name]}\n\n{render(d, 'md')}\n\n"
        texts["txt"] += f"{TITLES[name]}\n\n{render(d, 'txt')}\n\n"
    try:
        out.mkdir(parents=True, exist_ok=True)
        for ext, text in texts.items():
            store.atomic_write(out / f"{stem}.{ext}", text.encode())
            files.append(out / f"{stem}.{ext}")
        for name in tables if fmt in ("csv", "latex") else []:
            text = render(tables[name], "csv") if fmt == "csv" else render(shown[name], "latex")
            path = out / f"{stem}-{name}.{'csv' if fmt == 'csv' else 'tex'}"
            store.atomic_write(path, text.encode())
            files.append(path)
    except OSError as e:
        raise StoreError(f"{out}: cannot write the report ({e.strerror or e})") from None
    return files


TITLES = {"table1": "Table 1: width alone vs dense widening at a fixed number of weights",
          "runs": "Runs: mean ± std over seeds (accuracy in %)"}
