"""Per-cell summaries of runs: the runs table of a report (mean ± std per recipe x method x factor x
setting), a sweep's best-per-cell table, and the bars of a study's terminal chart."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from widecli.analysis.frame import COMPUTE, EXEC_COLUMNS, Study, ok_runs
from widecli.methods import bottlenecks


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


def best_table(rows: list[dict]) -> pd.DataFrame:
    """Per method and factor of a sweep's runs (runs.csv rows): runs, statuses and best / mean test
    accuracy."""
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    g = df.groupby(["method", "factor"], sort=True)
    out = g.agg(runs=("run_id", "size"), ok=("status", lambda s: int((s == "ok").sum())))
    if "test_accuracy" in df:
        out["mean_test_accuracy"] = g["test_accuracy"].mean()
        out["best_test_accuracy"] = g["test_accuracy"].max()
    return out.reset_index()


@dataclass
class AccuracyBars:
    """Mean test accuracy over seeds per (method, factor) of a study, in the order a chart shows them:
    the baseline, then each method's factors > 1 (sparse, dense, the bottlenecks)."""

    study: str
    bars: list[tuple[str, float, float]]   # (method, factor, mean test accuracy)
    low: float                             # the lowest and highest mean of the study's cells
    high: float
    baseline: float                        # the baseline's mean (NaN without f=1 runs)


def accuracy_bars(study: Study) -> AccuracyBars | None:
    """The bars of a study's accuracy-vs-factor chart; None without ok runs."""
    ok = ok_runs(study.rows)
    if ok.empty:
        return None
    means = ok.groupby(["method", "factor"])["test_accuracy"].mean()
    base = ok[ok["factor"] == 1]["test_accuracy"].mean()
    order = [("dense", 1.0)] + [(m, f) for m in ("sparse", "dense", *bottlenecks())
                                for f in sorted(ok["factor"].unique()) if f > 1]
    return AccuracyBars(study.name, [(m, f, means[(m, f)]) for m, f in order if (m, f) in means],
                        float(means.min()), float(means.max()), base)
