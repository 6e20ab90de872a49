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
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from widecli.analysis.frame import Study, ok_runs
from widecli.cli.console import duration, err, out, pct  # noqa: F401 (out, err: the consoles of every command)
from widecli.cli.tables import fitted, table1_compact  # noqa: F401 (table1_compact: the CLI's)
from widecli.cli.tuning import trial_line
from widecli.execute.eta import Eta
from widecli.execute.preflight import size
from widecli.execute.run import Event
from widecli.execute.sweep import SweepSummary, best_table
from widecli.methods import bottlenecks

def error(message: str) -> None:
    """One red line on stderr (a value like [b] in the message is not markup)."""
    err.print(f"[red]error:[/] {escape(message)}", markup=True)


def interrupted(again: str) -> None:
    err.print("[red]interrupted[/]: finished runs are kept and the current run's partial files were "
              f"removed; resume with: {escape(again)}", markup=True)


def warning(message: str) -> None:
    err.print(f"[yellow]warning:[/] {escape(message)}", markup=True)


def note(message: str) -> None:
    err.print(f"[cyan]note:[/] {escape(message)}", markup=True)


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


def width() -> int:
    """The terminal's columns (200 when stdout is not a terminal: a log keeps every column)."""
    return out.width or 120


def table(df: pd.DataFrame, title: str, keep: int = 1, more: str = "the report files have every column"):
    """A DataFrame of display strings as a table that fits the terminal (cli.tables.fitted: no cell
    is ever split; columns are left out from the right, the first `keep` never)."""
    return fitted(df.astype(str), title, width(), keep=keep, more=more)


# --------------------------------------------------------------------------- check, layers, train


def check_table(name: str, shape, classes: int, rows: list[tuple], memory: dict[str, int] | None = None,
                available: int | None = None) -> None:
    """rows: (spec, weight plan, whether the method holds the budget) per planned run; memory: run id
    -> estimated training memory (bytes; red where over `available`)."""
    records = []
    for s, p, budgeted in rows:
        gap = p.budget - p.nonzeros
        record = {"run_id": s.run_id, "factor": f"{s.factor:g}", "method": s.method, "seed": str(s.seed),
                  "connectivity": f"{p.connectivity:.4f}", "nonzeros": fmt_count(p.nonzeros),
                  "budget": fmt_count(p.budget),
                  "gap": "[green]0[/]" if gap == 0 else (f"{gap:+,}" if budgeted else "-"),
                  "widths": ",".join(str(w) for w in p.widths.values()),
                  "per-layer connectivity": escape(layer_summary(p.layers()))}
        if memory:
            need = memory.get(s.run_id)
            over = available is not None and need is not None and need > available
            record["memory"] = "-" if need is None else f"[red]{size(need)}[/]" if over else size(need)
        records.append(record)
    df = pd.DataFrame(records)
    # Left out first when the terminal is narrow; run_id .. seed tell the runs apart and stay.
    order = ["per-layer connectivity", "widths", "budget", "gap", "nonzeros", "memory", "connectivity"]
    out.print(fitted(df, f"{name}: {len(rows)} runs, input {shape}, {classes} classes", width(), keep=4,
                     order=[c for c in order if c in df], markup=True,
                     right=("factor", "seed", "connectivity", "nonzeros", "budget", "gap", "memory")))
    masked = [s for s, p, _ in rows if p.masked]
    if masked:
        short = [s for s in masked if s.sparsity.granularity == "kernel"]
        exact = f"for all {len(masked)}" if not short else \
            f"for {len(masked) - len(short)}; {len(short)} with granularity kernel may fall short by < one conv kernel"
        out.print(f"sparse runs: nonzeros == budget {exact} (gap column); "
                  "biases/BatchNorm are counted separately and never masked")


def mask_table(name: str, diagnostics: list[dict]) -> None:
    """Per masked model and layer: kept weights, fan-in / fan-out (min / median), units without any;
    fitted to the terminal like the check table (columns left out, never a cell split)."""
    if not diagnostics:
        return

    def fan(x: dict, key: str) -> str:
        return f"{x[key + '_min']:,}/{x[key + '_median']:,}" if key + "_min" in x else "-"

    def dead(x: dict, key: str) -> str:
        return "-" if key not in x else f"[red]{x[key]:,}[/]" if x[key] else "0"

    rows = [{"factor": f"{d['factor']:g}", "method": d["method"], "mask": d["mask"], "layer": layer,
             "kept": f"{x['kept']:,}", "out units": f"{x['units_out']:,}", "fan-in": fan(x, "fan_in"),
             "no inputs": dead(x, "no_inputs"), "in units": f"{x['units_in']:,}", "fan-out": fan(x, "fan_out"),
             "no outputs": dead(x, "no_outputs")}
            for d in diagnostics for layer, x in d["layers"].items()]
    out.print(fitted(pd.DataFrame(rows), f"{name}: planned masks (first seed of each model; fan = kept weights "
                     f"per unit, min/median)", width(), keep=4, markup=True,
                     order=["in units", "out units", "fan-out", "no outputs", "mask"],
                     right=("factor", "kept", "out units", "fan-in", "no inputs", "in units", "fan-out", "no outputs")))
    if any(not d["drawn"] for d in diagnostics):
        out.print("-: masks chosen when the run starts (snip, synflow: from the initialized model) or too large "
                  "to draw here; counts are checked all the same")


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
    masks = result.get("masks") or {}
    if masks:  # counted on the trained masks (issue 29); SET/RigL: the share of kept positions that moved
        out.print("masks at the end: " + ", ".join(
            f"{n} kept {x['kept']:,}" + (f" (moved {100 * x['moved']:.0f}%)" if "moved" in x else "")
            for n, x in masks.items()))
    out.print(f"written to {path}")


# --------------------------------------------------------------------------- progress


class RunProgress:
    """THE progress component: overall progress with the time left and one bar per training group,
    driven by the Events of execute.run and execute.sweep (train, sweep, ablate and tune alike).

    The overall bar counts training work, not runs (execute.plan.work), credited epoch by epoch; the
    time left is the work left over the rate measured without each group's first epoch, which
    carries compilation and set-up (execute.eta), so it holds from the first group on."""

    def __init__(self, name: str, results: Path, lines: bool | None = None):
        """lines: also print a plain line per epoch interval per group (default: when stdout is not a
        terminal, e.g. a log file, nohup or a cluster job, where a live bar shows nothing)."""
        self.name, self.results = name, results
        self.lines = (not out.is_terminal) if lines is None else lines
        self.every = float(os.environ.get("WIDECLI_LOG_SECONDS", "60"))
        self.started: dict[tuple, float] = {}
        self.first_epoch: dict[tuple, float] = {}
        self.last_line: dict[tuple, float] = {}
        self.work: dict[str, float] = {}      # run_id -> work of the whole run
        self.credited: dict[str, float] = {}  # run_id -> work counted so far
        self.runs_done = self.runs_total = self.skipped = 0
        self.best: dict[str, float] = {}      # tune: the best value per cell so far
        self.eta: Eta | None = None
        self.begun = time.monotonic()
        self.first_estimate: float | None = None

    def __enter__(self):
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                                 TextColumn("{task.fields[left]}"), console=out, transient=True)
        self.progress.__enter__()
        self.overall, self.groups = None, {}
        return self

    def __exit__(self, *exc):
        done = self.progress.__exit__(*exc)
        if exc[0] is None and self.eta is not None and self.runs_total:
            took = time.monotonic() - self.begun
            first = f" (estimated after the first group: {duration(self.first_estimate)})" if self.first_estimate else ""
            out.print(f"{self.name}: {self.runs_total} runs trained in {duration(took)}{first}")
        return done

    def _credit(self, run_id: str, amount: float) -> float:
        """Count work of a run towards the overall bar (never more than the run's own work)."""
        if run_id not in self.work:
            return 0.0
        total = self.work[run_id]
        amount = max(0.0, min(amount, total - self.credited.get(run_id, 0.0)))
        self.credited[run_id] = self.credited.get(run_id, 0.0) + amount
        if self.overall is not None and amount:
            self.progress.advance(self.overall, amount)
        return amount

    def _left(self) -> None:
        if self.overall is None or self.eta is None:
            return
        left = self.eta.left()
        self.progress.update(self.overall, left="estimating" if left is None else f"~{duration(left)} left")

    def on_event(self, e: Event) -> None:
        p, key, now = self.progress, tuple(r[0] for r in e.runs), time.monotonic()
        if e.kind == "plan":
            self._plan(e)
        elif e.kind == "start":
            label = ", ".join(f"f={f:g} {m} s{s}" for _, f, m, s in e.runs)
            self.groups[key] = p.add_task(f"  {label[:60]}", total=None, info="", left="")
            self.started[key] = self.last_line[key] = now
            if self.eta is not None:
                self.eta.start(key, now)
        elif e.kind == "epoch" and key in self.groups:
            info = f"epoch {e.epoch}/{e.epochs} " + " · ".join(
                f"s{run[3]} test {pct(r['test_accuracy'])} train {pct(r['train_accuracy'])}"
                for run, r in zip(e.runs[:4], e.rows[:4]))
            p.update(self.groups[key], total=e.epochs, completed=e.epoch, info=info)
            if e.epoch == 1:
                self.first_epoch[key] = now
            # the share of each run's work its epochs so far stand for
            done = sum(self._credit(rid, self.work.get(rid, 1.0) * e.epoch / e.epochs - self.credited.get(rid, 0.0))
                       for rid in key)
            if self.eta is not None:
                self.eta.credit(key, done, e.epoch, now)
            if self.lines and self._line_due(key, e):
                p.console.print(self.epoch_line(e, now - self.started[key], self.first_epoch.get(key, now) -
                                                self.started[key]), markup=False)
        elif e.kind == "done":
            self._done(e, now)
        elif e.kind == "finished":  # a group ended and says so per trial (tune), not per run
            ids = {r[0] for r in e.runs}
            for k in [k for k in self.groups if ids & set(k)]:
                p.remove_task(self.groups.pop(k))
        elif e.kind == "trial":
            p.console.print(trial_line(e.status, e.rows[0], self.best), markup=False)
        elif e.kind == "note":
            p.console.print(f"[yellow]note:[/] {escape(e.error or '')}")
        elif e.kind == "wait":
            who = ", ".join(sorted({f"{h['host']} pid {h['pid']}" for h in e.holders})) or "another process"
            p.console.print(f"waiting for {len(e.runs)} runs another process is training ({who})")
        self._left()

    def _plan(self, e: Event) -> None:
        p = self.progress
        for run in e.planned:
            if run.error:
                p.console.print(f"[red]corrupt[/] {run.run_id}: {escape(run.error)}")
        where = self.results / self.name
        if e.total == 0:
            p.console.print(f"{self.name}: nothing to train, all {e.skipped} runs are finished in {where} "
                            f"(--force retrains)")
        else:
            guess = (f"estimated ~{duration(e.estimate)} from the times of the finished runs" if e.estimate
                     else "time estimate after the first group")
            p.console.print(f"{self.name}: {e.total} runs to train, {e.skipped} already finished; results in "
                            f"{where}; {guess}")
        todo = [r.run_id for r in e.planned if r.todo]
        self.work = {rid: float(e.work.get(rid, 1.0)) or 1.0 for rid in todo}
        self.runs_total, self.skipped = e.total, e.skipped
        self.eta = Eta(sum(self.work.values()))
        self.begun = time.monotonic()
        self.overall = p.add_task(f"runs {e.skipped}/{e.total + e.skipped}", total=sum(self.work.values()) or None,
                                  info="", left="")

    def _done(self, e: Event, now: float) -> None:
        p = self.progress
        run_id, f, m, s = e.runs[0]
        colour = {"ok": "green", "diverged": "yellow", "failed": "red", "lost-lease": "yellow"}.get(e.status, "dim")
        why = f": {e.error}" if e.error else (" (finished by another sweep)" if e.status == "elsewhere" else "")
        p.console.print(f"[{colour}]{e.status}[/] {run_id} f={f:g} {m} seed {s}{escape(why)}")
        rest = self._credit(run_id, float("inf"))  # the rest of its work (stopped early, or trained elsewhere)
        self.runs_done += 1
        if self.overall is not None:
            p.update(self.overall, description=f"runs {self.runs_done + self.skipped}/{self.runs_total + self.skipped}")
        for k in [k for k in self.groups if run_id in k]:
            if self.eta is not None:
                self.eta.finish(k, rest, now)
                rest = 0.0
            if all(self.credited.get(r, 0.0) >= self.work.get(r, 0.0) for r in k):
                p.remove_task(self.groups.pop(k))
                self._first_group_done(now)
        if rest and self.eta is not None:   # a run another process finished
            self.eta.finish(("elsewhere", run_id), rest, now)

    def _first_group_done(self, now: float) -> None:
        if self.first_estimate is not None or self.eta is None or self.runs_done >= self.runs_total:
            return
        left = self.eta.left()
        if left is not None:
            self.first_estimate = now - self.begun + left
            self.progress.console.print(
                f"{self.name}: estimated total ~{duration(self.first_estimate)} (~{duration(left)} left; rate "
                f"measured after each group's first epoch, which carries compilation)")

    def _line_due(self, key: tuple, e: Event) -> bool:
        """Epoch 1, the last, every tenth of the epochs when 5 s have passed since the group's last
        line, and at least every WIDECLI_LOG_SECONDS (60): a fast group prints two lines."""
        now, step = time.monotonic(), max(1, e.epochs // 10)
        since = now - self.last_line[key]
        if e.epoch in (1, e.epochs) or (e.epoch % step == 0 and since >= 5) or since >= self.every:
            self.last_line[key] = now
            return True
        return False

    @staticmethod
    def epoch_line(e: Event, elapsed: float, warmup: float = 0.0) -> str:
        """`f=2 sparse · epoch 10/100 · s0 test 55.20% train 60.00% · s1 ... · 3s elapsed, ~27s left`
        (the time left from the epochs after the first, which carries compilation and set-up)."""
        _, f, m, _ = e.runs[0]
        seeds = " · ".join(f"s{run[3]} test {pct(r['test_accuracy'])} train {pct(r['train_accuracy'])}"
                           for run, r in zip(e.runs, e.rows))
        per_epoch = (elapsed - warmup) / (e.epoch - 1) if e.epoch > 1 else elapsed
        left = per_epoch * (e.epochs - e.epoch)
        return f"f={f:g} {m} · epoch {e.epoch}/{e.epochs} · {seeds} · {duration(elapsed)} elapsed, ~{duration(left)} left"

    def count(self, description: str, total: int):
        """A plain counted task (e.g. the kernel's models): returns a function advancing it by one."""
        task = self.progress.add_task(description, total=total, info="", left="")
        return lambda: self.progress.advance(task)


# --------------------------------------------------------------------------- sweep


def runs_list(results: Path, runs) -> None:
    """`widecli runs`: one line per stored run."""
    colours = {"ok": "green", "diverged": "yellow", "failed": "red", "corrupt": "red", "partial": "dim"}
    records = []
    for r in runs:
        row = r.row
        records.append({"recipe": escape(r.recipe), "run_id": r.run_id, "status": f"[{colours[r.status]}]{r.status}[/]",
                        "factor": "-" if row.get("factor") is None else f"{row['factor']:g}",
                        "method": str(row.get("method", "-")), "seed": str(row.get("seed", "-")),
                        "test acc %": pct(row.get("test_accuracy"))[:-1] if row.get("test_accuracy") is not None
                        else "-", "epochs": str(row.get("epochs_run", "-")),
                        "written": time.strftime("%Y-%m-%d %H:%M", time.localtime(r.modified))})
    df = pd.DataFrame(records, columns=["recipe", "run_id", "status", "factor", "method", "seed", "test acc %",
                                        "epochs", "written"])
    out.print(fitted(df, f"{results}: {len(runs)} run(s)", width(), keep=2, markup=True,
                     order=["written", "epochs", "recipe", "seed", "method", "factor", "test acc %", "status"],
                     right=("factor", "seed", "test acc %", "epochs")))
    for r in runs:
        if r.error:
            out.print(f"[red]corrupt[/] {r.run_id}: {escape(r.error)}")


def run_details(recipe: str, run_id: str, details: dict) -> None:
    """`widecli runs --id`: where a run's code and recipe came from, and how it was executed."""
    out.print(f"[bold]{recipe}/{run_id}[/]")
    for line in provenance_lines(details.get("provenance")):
        out.print(f"  {escape(line)}")
    execution = details.get("execution") or {}
    if execution:
        out.print("  execution: " + escape(", ".join(f"{k} {v}" for k, v in execution.items())))


def provenance_lines(p: dict | None) -> list[str]:
    """`widecli: commit 1a2b3c4d5e6f (dirty, diff sha256 9f8e7d6c5b4a) in /src/widecli` ..."""
    if not p:
        return ["provenance: not recorded (a run from before widecli recorded it)"]

    def state(s: dict | None, what: str) -> str:
        if not s:
            return f"{what}: not a git checkout"
        tail = f"dirty, diff sha256 {s['diff_sha256'][:12]}" if s["dirty"] else "clean"
        return f"{what}: commit {s['commit'][:12]} ({tail}) in {s['root']}"
    recipe = f"recipe {p['recipe_file']}" if p.get("recipe_file") else "recipe folder"
    return [state(p.get("widecli"), "widecli"), state(p.get("recipe"), recipe),
            f"packages: sha256 {str(p.get('packages'))[:12]} (name==version of every installed distribution)"]


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
    colours = {"finished": "green", "failed": "red", "corrupt": "red", "partial": "yellow"}
    records = []
    for p in planned:
        s = p.spec
        records.append({"run_id": s.run_id, "factor": f"{s.factor:g}", "method": s.method, "seed": str(s.seed),
                        "axes": escape(", ".join(f"{k}={v}" for k, v in s.axes.items())),
                        "connectivity": f"{connectivity[p.run_id]:.4f}",
                        "status": f"[{colours[p.status]}]{p.status}[/]" if p.status in colours else p.status,
                        "train": "yes" if p.todo else "-"})
    df = pd.DataFrame(records, columns=["run_id", "factor", "method", "seed", "axes", "connectivity", "status", "train"])
    if not any(df["axes"]):
        df = df.drop(columns="axes")
    out.print(fitted(df, f"{name}: {len(planned)} runs, {todo} to train", width(), keep=1, markup=True,
                     order=[c for c in ("connectivity", "seed", "method", "factor", "axes", "status") if c in df],
                     right=("factor", "seed", "connectivity")))
    for p in planned:
        if p.error:
            out.print(f"[red]corrupt[/] {p.run_id}: {escape(p.error)}")


def sweep_summary(summary: SweepSummary) -> None:
    lost = f", [yellow]{summary.lost_lease} lost lease[/] (taken over by another host)" if summary.lost_lease else ""
    out.print(f"trained {summary.trained}: [green]{summary.ok} ok[/], [yellow]{summary.diverged} diverged[/], "
              f"[red]{summary.failed} failed[/]{lost}; {summary.skipped} skipped (already finished)")
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
    lines = [f"{study.name}: test accuracy vs widening factor (bars span {100 * lo:.2f}%..{100 * hi:.2f}%)"]
    order = [("dense", 1.0)] + [(m, f) for m in ("sparse", "dense", *bottlenecks())
                                for f in sorted(ok["factor"].unique()) if f > 1]
    for method, f in order:
        if (method, f) not in means:
            continue
        m = means[(method, f)]
        n = 1 + round((m - lo) / span * (bar_w - 1))
        tag = "baseline" if f == 1 else method
        mark = "" if f == 1 or pd.isna(base) else (" ▲" if m > base else " ▼")
        lines.append(f"{tag:>20} f={f:<5g} {'█' * n:<{bar_w}} {100 * m:6.2f}%{mark}")
    return "\n".join(lines)


def kernel_row(row: dict) -> None:
    out.print(f"factor {row['factor']:g} {row['method']} rule {row['rule']}: connectivity "
              f"{row['connectivity']:.4f}, distance {row['distance']:.4f} (expected "
              f"{row['expected_distance']:.4f}, one init {row['init_distance']:.4f})")


def written(paths, to_stderr: bool = False) -> None:
    (err if to_stderr else out).print("written: " + ", ".join(str(f) for f in paths), markup=False)

