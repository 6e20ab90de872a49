"""Tables for people and their text formats: Table 1 and the runs table with accuracies in %, mean ±
std and intervals as text, compute in k/M/G, and any table as md (GitHub), txt, csv or latex."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from tabulate import tabulate

from widecli.analysis.frame import COMPUTE, short_label
from widecli.methods import bottlenecks

FORMATS = ("md", "txt", "csv", "latex")


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


def pm(mean: float, std: float, scale: float = 100.0, digits: int = 2, sep: str = " ± ") -> str:
    """`57.00 ± 0.57` (`sep="±"`: the terminal's compact `57.00±0.57`); `-` without a mean, no ± part
    without a std."""
    if mean is None or pd.isna(mean):
        return "-"
    s = f"{scale * mean:.{digits}f}"
    return s if pd.isna(std) else f"{s}{sep}{scale * std:.{digits}f}"


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


def table_text(df: pd.DataFrame, fmt: str) -> str:
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

