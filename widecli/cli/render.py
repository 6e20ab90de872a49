"""Everything widecli prints: rich tables, THE progress component, terminal charts, error lines.

Only this module (and app.py through it) writes to the terminal; the packages below report through
callbacks and return data.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from widecli.analysis.frame import Study, ok_runs
from widecli.execute.run import Event
from widecli.execute.sweep import SweepSummary, best_table
from widecli.methods import bottlenecks

out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def pct(fraction: float, decimals: int = 2) -> str:
    """THE accuracy format everywhere widecli prints one: a percentage with fixed decimals."""
    return "-" if fraction is None or fraction != fraction else f"{100 * fraction:.{decimals}f}%"


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def error(message: str) -> None:
    """One red line on stderr (a value like [b] in the message is not markup)."""
    err.print(f"[red]error:[/] {escape(message)}", markup=True)


def interrupted(again: str) -> None:
    err.print("[red]interrupted[/]: finished runs are kept and the current run's partial files were "
              f"removed; resume with: {escape(again)}", markup=True)


def warning(message: str) -> None:
    err.print(f"[yellow]warning:[/] {escape(message)}", markup=True)


def json_out(doc) -> None:
    """One JSON document on stdout, nothing else there (numbers as numbers, NaN as null)."""
    sys.stdout.write(json.dumps(_jsonable(doc), indent=1, default=str) + "\n")


def _jsonable(x):
    if isinstance(x, float) and x != x:
        return None
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):  # numpy scalars
        return _jsonable(x.item())
    return x


def records(df: pd.DataFrame) -> list[dict]:
    return df.to_dict(orient="records")


def run_record(spec, plan) -> dict:
    """A planned run for --json: identity, widths and the weight accounting."""
    return {"run_id": spec.run_id, "factor": spec.factor, "method": spec.method, "seed": spec.seed,
            "axes": spec.axes, "widths": plan.widths, "budget": plan.budget, "nonzeros": plan.nonzeros,
            "dense_weights": plan.dense_weights, "connectivity": plan.connectivity, "ranks": plan.ranks,
            "layers": plan.layers()}


def fmt_count(n: int) -> str:
    return f"{n:,}"


def layer_summary(layers: dict) -> str:
    return ", ".join(f"{n}:{v['connectivity']:.3g}" for n, v in layers.items())


def table(df: pd.DataFrame, title: str) -> Table:
    """A DataFrame of display strings as a rich Table (the one table renderer)."""
    t = Table(title=title, title_justify="left")
    for col in df.columns:
        t.add_column(str(col), overflow="fold")
    for row in df.itertuples(index=False):
        t.add_row(*[str(v) for v in row])
    return t


# --------------------------------------------------------------------------- check, layers, train


def check_table(name: str, shape, classes: int, rows: list[tuple]) -> None:
    """rows: (spec, weight plan, whether the method holds the budget) per planned run."""
    t = Table(title=f"{name}: {len(rows)} runs, input {shape}, {classes} classes")
    for col in ("run_id", "factor", "method", "seed", "widths", "budget", "nonzeros", "gap",
                "connectivity", "per-layer connectivity"):
        t.add_column(col, overflow="fold")
    for s, p, budgeted in rows:
        gap = p.budget - p.nonzeros
        gap_s = "[green]0[/]" if gap == 0 else (f"{gap:+,}" if budgeted else "-")
        t.add_row(s.run_id, f"{s.factor:g}", s.method, str(s.seed), ",".join(str(w) for w in p.widths.values()),
                  fmt_count(p.budget), fmt_count(p.nonzeros), gap_s, f"{p.connectivity:.4f}",
                  layer_summary(p.layers()))
    out.print(t)
    masked = [s for s, p, _ in rows if p.masked]
    if masked:
        short = [s for s in masked if s.sparsity.granularity == "kernel"]
        exact = f"for all {len(masked)}" if not short else \
            f"for {len(masked) - len(short)}; {len(short)} with granularity kernel may fall short by < one conv kernel"
        out.print(f"sparse runs: nonzeros == budget {exact} (gap column); "
                  "biases/BatchNorm are counted separately and never masked")


def layers_table(title: str, rows: list[dict], widenable: list[str]) -> None:
    t = Table(title=title)
    for col in ("layer", "shape", "weights", "nonzeros", "widens with", "masked"):
        t.add_column(col, justify="right" if col in ("weights", "nonzeros") else "left")
    for row in rows:
        t.add_row(row["name"], "x".join(map(str, row["shape"])), fmt_count(row["weights"]),
                  fmt_count(row["nonzeros"]), row["widens_with"] or "no", "yes" if row["masked"] else "no")
    out.print(t)
    out.print(f"{len(rows)} weight layers, {fmt_count(sum(x['weights'] for x in rows))} weights; "
              f"widen.layers may name: {', '.join(widenable)} (or first, last, all)")


def run_summary(result: dict, path: Path) -> None:
    """A run's status, accuracy, weight accounting and where it is stored."""
    w, f, status = result["weights"], result["final"], result["status"]
    colour = "green" if status == "ok" else "red"
    if status == "failed":
        out.print(f"[red]failed[/]: {escape(result.get('error') or '')}")
    else:
        out.print(f"[{colour}]{status}[/]: test accuracy {pct(f['test_accuracy'])}, train accuracy "
                  f"{pct(f['train_accuracy'])} after {f['epochs_run']} epochs ({f['wall_time_s']:.1f}s)")
    if w:
        out.print(f"weights: budget {fmt_count(w['budget'])}, nonzeros {fmt_count(w['nonzeros'])}, "
                  f"dense {fmt_count(w['dense_weights'])}, connectivity {w['connectivity']:.4f}; "
                  f"biases/BN {fmt_count(w['other_params'])} (never masked)")
        out.print(f"per layer: {layer_summary(w['layers'])}")
    out.print(f"written to {path}")


# --------------------------------------------------------------------------- progress


class RunProgress:
    """THE progress component: overall runs done/total with ETA and one bar per training group,
    driven by the Events of execute.run and execute.sweep (train, sweep and ablate alike)."""

    def __init__(self, name: str, results: Path, lines: bool | None = None):
        """lines: also print a plain line per epoch interval per group (default: when stdout is not a
        terminal, e.g. a log file, nohup or a cluster job, where a live bar shows nothing)."""
        self.name, self.results = name, results
        self.lines = (not out.is_terminal) if lines is None else lines
        self.every = float(os.environ.get("WIDECLI_LOG_SECONDS", "60"))
        self.started: dict[tuple, float] = {}
        self.last_line: dict[tuple, float] = {}

    def __enter__(self):
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=out,
                                 transient=True)
        self.progress.__enter__()
        self.overall, self.groups = None, {}
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def on_event(self, e: Event) -> None:
        p, key = self.progress, tuple(r[0] for r in e.runs)
        if e.kind == "plan":
            for run in e.planned:
                if run.error:
                    p.console.print(f"[red]corrupt[/] {run.run_id}: {escape(run.error)}")
            if e.total == 0:
                p.console.print(f"{self.name}: nothing to train, all {e.skipped} runs are finished in "
                                f"{self.results / self.name} (--force retrains)")
            else:
                p.console.print(f"{self.name}: {e.total} runs to train, {e.skipped} already finished")
            self.overall = p.add_task("runs", total=e.total, info="")
        elif e.kind == "start":
            label = ", ".join(f"f={f:g} {m} s{s}" for _, f, m, s in e.runs)
            self.groups[key] = p.add_task(f"  {label[:60]}", total=None, info="")
            self.started[key] = self.last_line[key] = time.monotonic()
        elif e.kind == "epoch" and key in self.groups:
            info = " ".join(f"test {pct(r['test_accuracy'])} train {pct(r['train_accuracy'])}" for r in e.rows[:4])
            p.update(self.groups[key], total=e.epochs, completed=e.epoch, info=info)
            if self.lines and self._line_due(key, e):
                p.console.print(self.epoch_line(e, time.monotonic() - self.started[key]), markup=False)
        elif e.kind == "done":
            run_id, f, m, s = e.runs[0]
            colour = {"ok": "green", "diverged": "yellow", "failed": "red"}.get(e.status, "dim")
            why = f": {e.error}" if e.error else (" (finished by another sweep)" if e.status == "elsewhere" else "")
            p.console.print(f"[{colour}]{e.status}[/] {run_id} f={f:g} {m} seed {s}{escape(why)}")
            if self.overall is not None:
                p.advance(self.overall)
            for k in [k for k in self.groups if run_id in k]:
                p.remove_task(self.groups.pop(k))
        elif e.kind == "note":
            p.console.print(f"[yellow]note:[/] {escape(e.error or '')}")
        elif e.kind == "wait":
            who = ", ".join(sorted({f"{h['host']} pid {h['pid']}" for h in e.holders})) or "another process"
            p.console.print(f"waiting for {len(e.runs)} runs another process is training ({who})")

    def _line_due(self, key: tuple, e: Event) -> bool:
        """Epoch 1, every tenth of the epochs, the last, and at least every WIDECLI_LOG_SECONDS."""
        now, step = time.monotonic(), max(1, e.epochs // 10)
        if e.epoch in (1, e.epochs) or e.epoch % step == 0 or now - self.last_line[key] >= self.every:
            self.last_line[key] = now
            return True
        return False

    @staticmethod
    def epoch_line(e: Event, elapsed: float) -> str:
        """`f=2 sparse · epoch 10/100 · test s0 55.20% s1 54.00% · train ... · 3s elapsed, ~27s left`"""
        _, f, m, _ = e.runs[0]
        seeds = [f"s{run[3]}" for run in e.runs]
        test = " ".join(f"{s} {pct(r['test_accuracy'])}" for s, r in zip(seeds, e.rows))
        train = " ".join(f"{s} {pct(r['train_accuracy'])}" for s, r in zip(seeds, e.rows))
        left = elapsed / max(e.epoch, 1) * (e.epochs - e.epoch)
        return (f"f={f:g} {m} · epoch {e.epoch}/{e.epochs} · test {test} · train {train} · "
                f"{duration(elapsed)} elapsed, ~{duration(left)} left")

    def count(self, description: str, total: int):
        """A plain counted task (e.g. the kernel's models): returns a function advancing it by one."""
        task = self.progress.add_task(description, total=total, info="")
        return lambda: self.progress.advance(task)


# --------------------------------------------------------------------------- sweep


def leases_table(recipe: str, leases: list[dict]) -> None:
    t = Table(title=f"{recipe}: {len(leases)} lease(s)")
    for col in ("run_id", "host", "pid", "renewed", "owner"):
        t.add_column(col)
    for x in leases:
        renewed = "-" if x["renewed"] is None else f"{x['renewed']:.0f} s ago"
        owner = ("alive (this host)" if x["this_host"] else "renewing (another host)") if x["alive"] else "gone"
        t.add_row(x["run_id"], str(x["host"]), str(x["pid"]), renewed, owner)
    out.print(t)


def plan_table(name: str, planned, connectivity: dict[str, float]) -> None:
    todo = sum(p.todo for p in planned)
    t = Table(title=f"{name}: {len(planned)} runs, {todo} to train")
    for col in ("run_id", "factor", "method", "seed", "axes", "connectivity", "status", "train"):
        t.add_column(col, overflow="fold")
    colours = {"finished": "green", "failed": "red", "corrupt": "red", "partial": "yellow"}
    for p in planned:
        s = p.spec
        axes = ", ".join(f"{k}={v}" for k, v in s.axes.items())
        status = f"[{colours[p.status]}]{p.status}[/]" if p.status in colours else p.status
        t.add_row(s.run_id, f"{s.factor:g}", s.method, str(s.seed), axes, f"{connectivity[p.run_id]:.4f}",
                  status, "yes" if p.todo else "-")
    out.print(t)
    for p in planned:
        if p.error:
            out.print(f"[red]corrupt[/] {p.run_id}: {escape(p.error)}")


def sweep_summary(summary: SweepSummary) -> None:
    out.print(f"trained {summary.trained}: [green]{summary.ok} ok[/], [yellow]{summary.diverged} diverged[/], "
              f"[red]{summary.failed} failed[/]; {summary.skipped} skipped (already finished)")
    df = best_table(summary.rows)
    if not df.empty:
        t = Table(title="test accuracy (%) by method and factor")
        for col in df.columns:
            t.add_column(str(col).replace("_test_accuracy", " test acc %"), justify="right")
        for row in df.itertuples(index=False):
            t.add_row(*[pct(v)[:-1] if str(col).endswith("accuracy") else
                        (f"{v:g}" if isinstance(v, float) else str(v)) for col, v in zip(df.columns, row)])
        out.print(t)
    for run_id, error_ in summary.failures:
        out.print(f"[red]failed[/] {run_id}: {escape(error_)}")
    out.print(f"runs.csv: {summary.runs_csv}")


# --------------------------------------------------------------------------- report


def text_chart(study: Study, width: int = 60) -> str:
    """Accuracy vs factor as text bars per method (scaled between the lowest and highest mean)."""
    ok = ok_runs(study.rows)
    if ok.empty:
        return ""
    means = ok.groupby(["method", "factor"])["test_accuracy"].mean()
    base = ok[ok["factor"] == 1]["test_accuracy"].mean()
    lo, hi = float(means.min()), float(means.max())
    span = max(hi - lo, 1e-9)
    bar_w = max(10, width - 34)
    lines = [f"{study.name}: test accuracy vs widening factor (bars span {100 * lo:.1f}%..{100 * hi:.1f}%)"]
    order = [("dense", 1.0)] + [(m, f) for m in ("sparse", "dense", *bottlenecks())
                                for f in sorted(ok["factor"].unique()) if f > 1]
    for method, f in order:
        if (method, f) not in means:
            continue
        m = means[(method, f)]
        n = 1 + round((m - lo) / span * (bar_w - 1))
        tag = "baseline" if f == 1 else method
        mark = "" if f == 1 or pd.isna(base) else (" ▲" if m > base else " ▼")
        lines.append(f"{tag:>20} f={f:<5g} {'█' * n:<{bar_w}} {100 * m:5.1f}%{mark}")
    return "\n".join(lines)


def kernel_row(row: dict) -> None:
    out.print(f"factor {row['factor']:g} {row['method']} rule {row['rule']}: connectivity "
              f"{row['connectivity']:.4f}, distance {row['distance']:.4f} (expected "
              f"{row['expected_distance']:.4f}, one init {row['init_distance']:.4f})")


def written(paths, to_stderr: bool = False) -> None:
    (err if to_stderr else out).print("written: " + ", ".join(str(f) for f in paths), markup=False)

