"""Every plot widecli draws (matplotlib, Agg backend): accuracy vs widening factor and connectivity
per study, heat maps of 2-D custom-connectivity sweeps, ablation arms, and the kernel distance.
The only module that calls matplotlib."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from widecli.analysis.frame import Study, curve, ok_runs
from widecli.methods import METHODS, bottlenecks


def _pyplot():
    # Lazy: matplotlib costs ~0.3 s to import, paid only by commands that draw (keeps --help fast).
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, safe in worker processes and CI
    import matplotlib.pyplot as plt  # after use("Agg"), as matplotlib requires

    return plt


def _save(fig, path: Path, dpi: int = 110) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    _pyplot().close(fig)
    return path


def _png(fig) -> bytes:
    """The figure as PNG bytes (for atomic writes); the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def plot_study(study: Study, path: Path) -> Path:
    """Test and train accuracy vs widening factor per method, test accuracy vs connectivity."""
    fig, axes = _pyplot().subplots(1, 3, figsize=(15, 4.2))
    methods = [m for m in ("sparse", "dense", *bottlenecks()) if (study.rows["method"] == m).any()]
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
    base = ok_runs(study.rows[study.rows["factor"] == 1])["test_accuracy"]
    if not base.empty:
        ax.axhline(100 * base.mean(), color="grey", ls="--", label="baseline (f=1)")
    ax.set(xscale="log", xlabel="connectivity (sparse runs)", ylabel="test accuracy (%)",
           title="test accuracy vs connectivity")
    plain_log_ticks(ax, [round(x, 3) for x in c["connectivity"]] if not c.empty else None)
    ax.legend()
    fig.suptitle(" · ".join(f"{v}" for v in study.labels.values() if v != "-"))
    fig.tight_layout()
    return _save(fig, path)


def plain_log_ticks(ax, ticks: list[float] | None = None) -> None:
    """Log axes labelled 1, 2, 4 (or 0.25, 0.5) instead of 2x10^0."""
    from matplotlib.ticker import FuncFormatter, NullFormatter  # lazy with matplotlib (see _pyplot)

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
    sparse = ok_runs(df[(df["method"] == "sparse") & (df["factor"] > 1)])
    written = []
    for (recipe, factor), cell in sparse.groupby(["recipe", "factor"]):
        grid = cell.pivot_table(index=axes[1], columns=axes[0], values="test_accuracy", aggfunc="mean")
        fig, ax = _pyplot().subplots(figsize=(5.5, 4.5))
        im = ax.imshow(100 * grid.values, origin="lower", cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(grid.columns)), [f"{v:g}" for v in grid.columns])
        ax.set_yticks(range(len(grid.index)), [f"{v:g}" for v in grid.index])
        ax.set(xlabel=axes[0].split(".")[-1] + " connectivity", ylabel=axes[1].split(".")[-1] + " connectivity",
               title=f"{recipe}: test accuracy (%) at f={factor:g}")
        for (i, j), v in np.ndenumerate(100 * grid.values):
            ax.text(j, i, "" if np.isnan(v) else f"{v:.1f}", ha="center", va="center", color="w", fontsize=8)
        fig.colorbar(im)
        fig.tight_layout()
        written.append(_save(fig, out / f"{recipe}-connectivity-f{factor:g}.png"))
    return written


def plot_ablation(items: list, frames: dict[str, pd.DataFrame], path: Path) -> Path:
    """Test accuracy vs factor for every arm's wide method (solid) and dense wide runs (dashed)."""
    fig, ax = _pyplot().subplots(figsize=(7.5, 4.8))
    drawn_dense = set()
    for arm in items:
        rows = frames[arm.name]
        c = curve(rows, arm.method, "test_accuracy")
        line = ax.errorbar(c["factor"], 100 * c["mean"], yerr=100 * c["std"].fillna(0), marker="o", capsize=3,
                           label=f"{arm.name}: {arm.method}")
        dense_ids = frozenset(rows.loc[(rows["method"] == "dense") & (rows["factor"] > 1), "run_id"])
        if METHODS.get(arm.method).holds_budget and dense_ids and dense_ids not in drawn_dense:
            drawn_dense.add(dense_ids)
            d = curve(rows, "dense", "test_accuracy")
            ax.errorbar(d["factor"], 100 * d["mean"], yerr=100 * d["std"].fillna(0), ls="--", marker="s",
                        capsize=3, color=line[0].get_color(), alpha=0.6, label=f"{arm.name}: dense")
    factors = sorted({f for a in items for f in a.recipe.widen.factors})
    ax.set(xscale="log", xlabel="widening factor f", ylabel="test accuracy (%)",
           title=f"{items[0].recipe.name}: ablation arms")
    plain_log_ticks(ax, factors)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_kernel_distance(df: pd.DataFrame, title: str) -> bytes:
    """Kernel distance at init vs widening factor, one line per method (PNG bytes)."""
    from matplotlib.ticker import ScalarFormatter  # lazy with matplotlib (see _pyplot)

    fig, ax = _pyplot().subplots(figsize=(5.5, 4))
    base = df[df["factor"] == 1]  # the dense baseline starts every method's curve
    for method, g in df[df["factor"] > 1].groupby("method", sort=True):
        g = pd.concat([base, g]).sort_values("factor")
        ax.plot(g["factor"], g["distance"], "o-", label=method)
    if not (df["factor"] > 1).any():  # only the baseline
        ax.plot(base["factor"], base["distance"], "o", label="dense")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(df["factor"].unique()))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel("widening factor")
    ax.set_ylabel("||K_f - K_inf|| / ||K_inf||")
    ax.set_title(f"{title}: kernel distance at init ({df['reference'].iloc[0]})", fontsize=9)
    ax.legend()
    return _png(fig)


def plot_kernel_accuracy(df: pd.DataFrame, title: str, rho: float) -> bytes:
    """Test accuracy vs kernel distance, labelled by factor (PNG bytes)."""
    d = df.dropna(subset=["test_accuracy"])
    fig, ax = _pyplot().subplots(figsize=(5.5, 4))
    for method, g in d.groupby("method", sort=True):
        ax.scatter(g["distance"], g["test_accuracy"], label=method)
        for _, r in g.iterrows():
            ax.annotate(f"{r['factor']:g}", (r["distance"], r["test_accuracy"]), fontsize=7)
    ax.set_xlabel("||K_f - K_inf|| / ||K_inf||")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{title}: Spearman rho = {rho:.3f} (labels: factor)", fontsize=9)
    ax.legend()
    return _png(fig)
