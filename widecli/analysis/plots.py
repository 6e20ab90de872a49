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
    fig.savefig(path, dpi=dpi, bbox_inches="tight")  # legends placed beside the axes stay in
    _pyplot().close(fig)
    return path


def _png(fig) -> bytes:
    """The figure as PNG bytes (for atomic writes); the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


MARKERS = {"sparse": "o", "dense": "s", "linear_bottleneck": "^", "nonlinear_bottleneck": "v"}


def study_title(study: Study) -> str:
    """A plot's title: every setting labelled (key=value), the weight budget, what the bars are."""
    # The settings that tell this study apart from the others of its recipe (those its name carries).
    labels = [str(v) if k in ("recipe", "dataset", "model") else f"{k.split('.')[-1]}={v}"
              for k, v in study.labels.items()
              if str(v) not in ("-", "nan", "None", "{}")
              and (k in ("recipe", "dataset", "model", "widened", "rule") or f"{k.split('.')[-1]}=" in study.name)]
    ok = ok_runs(study.rows)
    seeds = ok.groupby(["method", "factor"])["seed"].nunique()
    n = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}-{seeds.max()}"
    budget = ok["budget"].dropna()
    weights = f"budget {int(budget.iloc[0]):,} weights" if not budget.empty else "weights not recorded"
    return f"{' · '.join(labels)}\n{weights}; points: mean over {n} seeds, error bars: std over seeds"


def study_figure(study: Study):
    """Test and train accuracy vs widening factor per method, and (when the study has sparse runs)
    test accuracy vs connectivity. Methods are offset a little along x and drawn with their own
    markers, so coinciding curves stay visible; accuracy axes stop at 100%; connectivity at 1."""
    has_sparse = ((study.rows["method"] == "sparse") & (study.rows["factor"] > 1)).any()
    fig, axes = _pyplot().subplots(1, 3 if has_sparse else 2, figsize=(15 if has_sparse else 10.5, 4.8))
    methods = [m for m in ("dense", *bottlenecks(), "sparse") if (study.rows["method"] == m).any()]
    factors = sorted(study.rows["factor"].unique())
    for metric, ax in zip(("test_accuracy", "train_accuracy"), axes):
        lo, hi = [], []
        for i, m in enumerate(methods):
            c = curve(study.rows, m, metric)
            shift = 1 + 0.025 * (i - (len(methods) - 1) / 2)  # a small offset on the log axis
            mean, std = 100 * c["mean"], 100 * c["std"].fillna(0)
            ax.errorbar(c["factor"] * shift, mean, yerr=std, marker=MARKERS.get(m, "o"), capsize=3, label=m,
                        alpha=0.85, lw=2.2 if m == "sparse" else 1.5, ms=6 if m == "sparse" else 5,
                        zorder=3 if m == "sparse" else 2)
            lo.append((mean - std).min())
            hi.append((mean + std).max())
        _accuracy_limits(ax, lo, hi)
        ax.set(xscale="log", xlabel="widening factor f", ylabel=f"{metric.split('_')[0]} accuracy (%)",
               title=metric.replace("_", " ") + " vs widening factor")
        plain_log_ticks(ax, factors)
        ax.legend(fontsize=8)
    if has_sparse:
        ax = axes[2]  # dense runs all sit at connectivity 1: only the sparse runs (f > 1) make this curve
        c = curve(study.rows, "sparse", "test_accuracy", x="connectivity")
        mean, std = 100 * c["mean"], 100 * c["std"].fillna(0)
        ax.errorbar(c["connectivity"], mean, yerr=std, marker="o", capsize=3, label="sparse wide")
        base = ok_runs(study.rows[study.rows["factor"] == 1])["test_accuracy"]
        lo, hi = [(mean - std).min()], [(mean + std).max()]
        if not base.empty:
            ax.axhline(100 * base.mean(), color="grey", ls="--", label="dense baseline (f=1, connectivity 1)")
            lo.append(100 * base.mean())
            hi.append(100 * base.mean())
        _accuracy_limits(ax, lo, hi)
        ax.set(xscale="log", xlabel="connectivity of the sparse runs (kept / dense weights)",
               ylabel="test accuracy (%)", title="test accuracy vs connectivity")
        ax.set_xlim(min(c["connectivity"]) / 1.4, 1.0)  # connectivity cannot exceed 1
        plain_log_ticks(ax, [round(x, 3) for x in c["connectivity"]])
        ax.legend(fontsize=8)
    fig.suptitle(study_title(study), fontsize=10)
    fig.tight_layout()
    return fig


def _accuracy_limits(ax, lo: list[float], hi: list[float]) -> None:
    """A margin around the data, never below 0% or above 100% (+ room for the markers)."""
    lo_, hi_ = np.nanmin(lo), np.nanmax(hi)
    pad = max(1.0, 0.06 * (hi_ - lo_))
    ax.set_ylim(max(0.0, lo_ - pad), min(100.5, hi_ + pad))


def plot_study(study: Study, path: Path) -> Path:
    return _save(study_figure(study), path)


def curves_figure(study: Study, metrics: pd.DataFrame):
    """Learning curves: test and train accuracy per epoch, mean over seeds, one line per method and
    factor (colour: factor; line style: method). `metrics`: store.runs.read_metrics rows of the study's runs."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), layout="constrained")
    rows = metrics[metrics["run_id"].isin(ok_runs(study.rows)["run_id"])]
    factors = sorted(rows["factor"].unique())
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, max(1, len(factors))))
    styles = {"sparse": "-", "dense": "--", "linear_bottleneck": ":", "nonlinear_bottleneck": "-."}
    for metric, ax in zip(("test_accuracy", "train_accuracy"), axes):
        for (method, factor), g in rows.groupby(["method", "factor"], sort=True):
            if factor == 1 and method != "dense":
                continue
            per_epoch = 100 * g.groupby("epoch")[metric].mean()
            label = "baseline f=1" if factor == 1 else f"{method} f={factor:g}"
            ax.plot(per_epoch.index, per_epoch.values, styles.get(method, "-"),
                    color=colours[factors.index(factor)], lw=2.2 if factor == 1 else 1.3, alpha=0.9, label=label)
        ax.set(xlabel="epoch", ylabel=f"{metric.split('_')[0]} accuracy (%)", ylim=(0, 100.5),
               title=f"{metric.split('_')[0]} accuracy per epoch")
        ax.grid(alpha=0.3)
    lines = len(axes[1].get_lines())
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), ncol=1 if lines <= 14 else 2)
    fig.suptitle(study_title(study).replace("points: mean over", "lines: mean over").split(", error bars")[0],
                 fontsize=10)
    return fig


def plot_curves(study: Study, metrics: pd.DataFrame, path: Path) -> Path:
    return _save(curves_figure(study, metrics), path)


def plain_log_ticks(ax, ticks: list[float] | None = None) -> None:
    """Log axes labelled 1, 2, 4 (or 0.25, 0.5) instead of 2x10^0; labels of ticks closer than a
    label's width (64 and 79.375) are turned so that they never overlap."""
    from matplotlib.ticker import (  # lazy with matplotlib (see _pyplot)
        FuncFormatter,
        NullFormatter,
    )

    if ticks:
        ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.4g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    if ticks and len(ticks) > 1:
        logs = np.log10(np.asarray(sorted(t for t in ticks if t > 0), dtype=float))
        left, right = ax.get_xlim()
        span = max(np.log10(right) - np.log10(left), 1e-9)
        if np.min(np.diff(logs)) / span < 0.09:  # closer than ~9% of the axis: labels would touch
            ax.tick_params(axis="x", labelrotation=45)


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


# --------------------------------------------------------------------------- compute (issue 29)

PARETO_MARKERS = ("o", "^", "v", "D", "P", "X", "*", "<", ">", "h")


def _arm(row) -> str:
    """The Pareto plot's series: the method, and for sparse runs its mask family."""
    if row["factor"] == 1:
        return "baseline (f=1)"
    mask = row.get("sparsity.mask", "random")
    return f"sparse · {mask}" if row["method"] == "sparse" else str(row["method"])


def pareto_figure(rows: pd.DataFrame, title: str):
    """Test accuracy against forward MACs per example at the kept weights, and against training
    seconds per epoch: one point per (method/mask, factor, other setting), mean over seeds, one
    marker per method/mask; the grey staircase links the points no other point beats on both axes."""
    plt = _pyplot()
    ok = ok_runs(rows).copy()
    ok["arm"] = [_arm(r) for _, r in ok.iterrows()]
    settings = [c for c in ok.columns if c.startswith("sparsity.") and c != "sparsity.mask"
                and ok.loc[ok["method"] == "sparse", c].map(str).nunique() > 1]
    for c in settings:  # another sparsity setting varies (a rule sweep): it names the series too
        ok["arm"] += [f" · {c.split('.')[-1]}={v}" if m == "sparse" and f > 1 and str(v) != "-" else ""
                      for m, f, v in zip(ok["method"], ok["factor"], ok[c])]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), layout="constrained")
    for ax, x, label in ((axes[0], "macs_nonzero", "forward multiply-accumulates per example (kept weights)"),
                         (axes[1], "epoch_seconds", "training seconds per epoch (this machine)")):
        cells = ok.dropna(subset=[x]).groupby(["arm", "factor"]).agg(x=(x, "mean"), acc=("test_accuracy", "mean"))
        cells = cells.reset_index()
        for i, (arm, g) in enumerate(cells.groupby("arm", sort=True)):
            g = g.sort_values("factor")
            ax.plot(g["x"], 100 * g["acc"], PARETO_MARKERS[i % len(PARETO_MARKERS)] + "-", lw=0.8, ms=7,
                    alpha=0.85, label=arm)
            for _, r in g.iterrows():
                ax.annotate(f"f{r['factor']:g}", (r["x"], 100 * r["acc"]), fontsize=6, alpha=0.7,
                            xytext=(3, 3), textcoords="offset points")
        front = cells.sort_values(["x", "acc"], ascending=[True, False])
        front = front[front["acc"] >= front["acc"].cummax()]  # nothing cheaper is as accurate
        ax.step(front["x"], 100 * front["acc"], where="post", color="grey", ls="--", lw=1, alpha=0.6,
                label="Pareto front")
        # Collapsed runs (far below the baseline) would squash the curves that matter: keep the axis
        # from 10 points under the baseline up, and say how many points fall below it.
        base = ok.loc[ok["factor"] == 1, "test_accuracy"].mean()
        floor = 100 * (base - 0.10) if base == base else 0.0
        shown = 100 * cells["acc"]
        below = cells.loc[shown < floor]
        if not below.empty and (shown >= floor).any():
            ax.set_ylim(floor - 1, min(100.5, shown.max() + 1))
            at = ", ".join(f"f{f:g}" for f in sorted(set(below["factor"])))
            ax.text(0.98, 0.02, f"{len(below)} point(s) below the axis ({at}: "
                    f"{100 * below['acc'].min():.0f}-{100 * below['acc'].max():.0f}%)",
                    transform=ax.transAxes, ha="right", va="bottom", fontsize=7, color="dimgrey")
        ax.set(xscale="log", xlabel=label, ylabel="test accuracy (%)")
        plain_log_ticks(ax)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(f"{title}: accuracy per compute (points: mean over seeds; labels: widening factor)", fontsize=10)
    return fig


def pareto(df: pd.DataFrame, out: Path) -> list[Path]:
    """<recipe>-pareto.png for every recipe whose runs recorded their compute (issue 29)."""
    if "macs_nonzero" not in df:
        return []
    written = []
    for recipe, rows in df.groupby("recipe", sort=True):
        if ok_runs(rows)["macs_nonzero"].notna().any():
            written.append(_save(pareto_figure(rows, str(recipe)), out / f"{recipe}-pareto.png"))
    return written


def plot_tuning(cells: list[dict], title: str) -> bytes:
    """`widecli tune`: per cell (rows) the search curve (validation accuracy per trial, the best so
    far as a step line, pruned trials as x at their last per-epoch value) and the accuracy against
    the searched value (PNG bytes)."""
    fig, axes = _pyplot().subplots(len(cells), 2, figsize=(10, 2.9 * len(cells)), squeeze=False)
    for (curve_ax, value_ax), c in zip(axes, cells):
        for ax, x in ((curve_ax, 0), (value_ax, 1)):
            if c["complete"]:
                ax.plot([p[x] for p in c["complete"]], [100 * p[2] for p in c["complete"]], "o", label="complete")
            if c["pruned"]:
                ax.plot([p[x] for p in c["pruned"]], [100 * p[2] for p in c["pruned"]], "x", color="grey",
                        label="pruned (last value)")
        if c["best_so_far"]:
            curve_ax.step([p[0] for p in c["best_so_far"]], [100 * p[1] for p in c["best_so_far"]], where="post",
                          label="best so far")
        if c["best"]:
            value_ax.axvline(c["best"][0], ls="--", color="k", lw=0.8, label=f"best {c['best'][0]:.4g}")
        curve_ax.set(xlabel="trial", ylabel="validation accuracy (%)", title=c["name"])
        value_ax.set(xlabel=c["key"], xscale="log" if c["log"] else "linear", title=f"{c['name']}: by value")
        for ax in (curve_ax, value_ax):
            if ax.has_data():
                ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _png(fig)
