"""Plots of a report (matplotlib, Agg backend): accuracy vs widening factor and connectivity per
study, heat maps of 2-D custom-connectivity sweeps. One PNG per study."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed, safe in worker processes and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from widecli import report  # noqa: E402
from widecli.report import Study  # noqa: E402


def curve(rows: pd.DataFrame, method: str, metric: str, x: str = "factor") -> pd.DataFrame:
    """Mean and std over seeds per x; every method's curve starts at the shared f=1 baseline."""
    ok = report.ok_runs(rows)
    pts = ok[(ok["method"] == method) & (ok["factor"] > 1)]
    if x == "factor":
        pts = pd.concat([ok[ok["factor"] == 1], pts])
    return pts.groupby(x)[metric].agg(["mean", "std"]).reset_index().sort_values(x)


def plot_study(study: Study, path: Path) -> Path:
    """Test and train accuracy vs widening factor per method, test accuracy vs connectivity."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    methods = [m for m in ("sparse", "dense", *report.BOTTLENECKS) if (study.rows["method"] == m).any()]
    for metric, ax in zip(("test_accuracy", "train_accuracy"), axes):
        for m in methods:
            c = curve(study.rows, m, metric)
            ax.errorbar(c["factor"], 100 * c["mean"], yerr=100 * c["std"].fillna(0), marker="o", capsize=3, label=m)
        ax.set(xscale="log", xlabel="widening factor f", ylabel=f"{metric.split('_')[0]} accuracy (%)",
               title=metric.replace("_", " "))
        plain_log_ticks(ax, sorted(study.rows["factor"].unique()))
        ax.legend()
    ax = axes[2]  # dense runs all sit at connectivity 1: only the sparse runs (f > 1) make this curve
    c = curve(study.rows, "sparse", "test_accuracy", x="connectivity")
    if not c.empty:
        ax.errorbar(c["connectivity"], 100 * c["mean"], yerr=100 * c["std"].fillna(0), marker="o", capsize=3,
                    label="sparse")
    base = report.ok_runs(study.rows[study.rows["factor"] == 1])["test_accuracy"]
    if not base.empty:
        ax.axhline(100 * base.mean(), color="grey", ls="--", label="baseline (f=1)")
    ax.set(xscale="log", xlabel="connectivity (sparse runs)", ylabel="test accuracy (%)",
           title="test accuracy vs connectivity")
    plain_log_ticks(ax, [round(x, 3) for x in c["connectivity"]] if not c.empty else None)
    ax.legend()
    fig.suptitle(" · ".join(f"{v}" for v in study.labels.values() if v != "-"))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plain_log_ticks(ax, ticks: list[float] | None = None) -> None:
    """Log axes labelled 1, 2, 4 (or 0.25, 0.5) instead of 2x10^0."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    if ticks:
        ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def heatmaps(df: pd.DataFrame, out: Path) -> list[Path]:
    """Mean test accuracy over a 2-D sweep of custom connectivities (sweep axes on two layers)."""
    axes = [c for c in df.columns if c.startswith("axis:sparsity.connectivity.")
            and df.loc[df["method"] == "sparse", c].nunique() > 1]
    if len(axes) != 2:
        return []
    sparse = report.ok_runs(df[(df["method"] == "sparse") & (df["factor"] > 1)])
    written = []
    for (recipe, factor), cell in sparse.groupby(["recipe", "factor"]):
        grid = cell.pivot_table(index=axes[1], columns=axes[0], values="test_accuracy", aggfunc="mean")
        fig, ax = plt.subplots(figsize=(5.5, 4.5))
        im = ax.imshow(100 * grid.values, origin="lower", cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(grid.columns)), [f"{v:g}" for v in grid.columns])
        ax.set_yticks(range(len(grid.index)), [f"{v:g}" for v in grid.index])
        ax.set(xlabel=axes[0].split(".")[-1] + " connectivity", ylabel=axes[1].split(".")[-1] + " connectivity",
               title=f"{recipe}: test accuracy (%) at f={factor:g}")
        for (i, j), v in np.ndenumerate(100 * grid.values):
            ax.text(j, i, "" if np.isnan(v) else f"{v:.1f}", ha="center", va="center", color="w", fontsize=8)
        fig.colorbar(im)
        fig.tight_layout()
        path = out / f"{recipe}-connectivity-f{factor:g}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
