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
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from widecli.analysis.frame import Study, ok_runs, short_label
from widecli.execute.preflight import size
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


def check_table(name: str, shape, classes: int, rows: list[tuple], memory: dict[str, int] | None = None,
                available: int | None = None) -> None:
    """rows: (spec, weight plan, whether the method holds the budget) per planned run; memory: run id
    -> estimated training memory (bytes; red where over `available`)."""
    t = Table(title=f"{name}: {len(rows)} runs, input {shape}, {classes} classes")
    for col in ("run_id", "factor", "method", "seed", "widths", "budget", "nonzeros", "gap",
                "connectivity", "per-layer connectivity", *(["memory"] if memory else [])):
        t.add_column(col, overflow="fold")
    for s, p, budgeted in rows:
        gap = p.budget - p.nonzeros
        gap_s = "[green]0[/]" if gap == 0 else (f"{gap:+,}" if budgeted else "-")
        mem = []
        if memory:
            need = memory.get(s.run_id)
            over = available is not None and need is not None and need > available
            mem = ["-" if need is None else f"[red]{size(need)}[/]" if over else size(need)]
        t.add_row(s.run_id, f"{s.factor:g}", s.method, str(s.seed), ",".join(str(w) for w in p.widths.values()),
                  fmt_count(p.budget), fmt_count(p.nonzeros), gap_s, f"{p.connectivity:.4f}",
                  layer_summary(p.layers()), *mem)
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
    """THE progress component: overall progress with ETA and one bar per training group, driven by
    the Events of execute.run and execute.sweep (train, sweep and ablate alike).

    The overall bar counts training work, not runs (execute.plan.work: epochs x multiply-adds per
    example), credited epoch by epoch, so its estimate of the time left follows the work left: a
    1000-epoch group counts ten 100-epoch ones, and the estimate moves within a group."""

    def __init__(self, name: str, results: Path, lines: bool | None = None):
        """lines: also print a plain line per epoch interval per group (default: when stdout is not a
        terminal, e.g. a log file, nohup or a cluster job, where a live bar shows nothing)."""
        self.name, self.results = name, results
        self.lines = (not out.is_terminal) if lines is None else lines
        self.every = float(os.environ.get("WIDECLI_LOG_SECONDS", "60"))
        self.started: dict[tuple, float] = {}
        self.last_line: dict[tuple, float] = {}
        self.work: dict[str, float] = {}      # run_id -> work of the whole run
        self.credited: dict[str, float] = {}  # run_id -> work counted so far
        self.runs_done = self.runs_total = 0

    def __enter__(self):
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                                 TimeRemainingColumn(), console=out, transient=True)
        self.progress.__enter__()
        self.overall, self.groups = None, {}
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def _credit(self, run_id: str, amount: float) -> None:
        """Count work of a run towards the overall bar (never more than the run's own work)."""
        if run_id not in self.work:
            return
        total = self.work[run_id]
        amount = max(0.0, min(amount, total - self.credited.get(run_id, 0.0)))
        self.credited[run_id] = self.credited.get(run_id, 0.0) + amount
        if self.overall is not None and amount:
            self.progress.advance(self.overall, amount)

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
            todo = [r.run_id for r in e.planned if r.todo]
            self.work = {rid: float(e.work.get(rid, 1.0)) or 1.0 for rid in todo}
            self.runs_total = e.total
            self.overall = p.add_task(f"runs 0/{e.total}", total=sum(self.work.values()) or None, info="")
        elif e.kind == "start":
            label = ", ".join(f"f={f:g} {m} s{s}" for _, f, m, s in e.runs)
            self.groups[key] = p.add_task(f"  {label[:60]}", total=None, info="")
            self.started[key] = self.last_line[key] = time.monotonic()
        elif e.kind == "epoch" and key in self.groups:
            info = (f"epoch {e.epoch}/{e.epochs} " +
                    " ".join(f"test {pct(r['test_accuracy'])} train {pct(r['train_accuracy'])}" for r in e.rows[:4]))
            p.update(self.groups[key], total=e.epochs, completed=e.epoch, info=info)
            for rid in key:  # the share of each run's work its epochs so far stand for
                self._credit(rid, self.work.get(rid, 1.0) * e.epoch / e.epochs - self.credited.get(rid, 0.0))
            if self.lines and self._line_due(key, e):
                p.console.print(self.epoch_line(e, time.monotonic() - self.started[key]), markup=False)
        elif e.kind == "done":
            run_id, f, m, s = e.runs[0]
            colour = {"ok": "green", "diverged": "yellow", "failed": "red",
                      "lost-lease": "yellow"}.get(e.status, "dim")
            why = f": {e.error}" if e.error else (" (finished by another sweep)" if e.status == "elsewhere" else "")
            p.console.print(f"[{colour}]{e.status}[/] {run_id} f={f:g} {m} seed {s}{escape(why)}")
            self._credit(run_id, float("inf"))  # the rest of its work (stopped early, or trained elsewhere)
            self.runs_done += 1
            if self.overall is not None:
                p.update(self.overall, description=f"runs {self.runs_done}/{self.runs_total}")
            for k in [k for k in self.groups if run_id in k]:
                p.remove_task(self.groups.pop(k))
        elif e.kind == "note":
            p.console.print(f"[yellow]note:[/] {escape(e.error or '')}")
        elif e.kind == "wait":
            who = ", ".join(sorted({f"{h['host']} pid {h['pid']}" for h in e.holders})) or "another process"
            p.console.print(f"waiting for {len(e.runs)} runs another process is training ({who})")

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


def runs_list(results: Path, runs) -> None:
    """`widecli runs`: one line per stored run."""
    t = Table(title=f"{results}: {len(runs)} run(s)", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("recipe", "run_id", "status", "factor", "method", "seed", "test acc %", "epochs", "written"):
        t.add_column(col, no_wrap=True, justify="right" if col in ("factor", "seed", "test acc %", "epochs") else "left")
    colours = {"ok": "green", "diverged": "yellow", "failed": "red", "corrupt": "red", "partial": "dim"}
    for r in runs:
        row = r.row
        t.add_row(r.recipe, r.run_id, f"[{colours[r.status]}]{r.status}[/]",
                  "-" if row.get("factor") is None else f"{row['factor']:g}", str(row.get("method", "-")),
                  str(row.get("seed", "-")), pct(row.get("test_accuracy"))[:-1] if row.get("test_accuracy") is not None
                  else "-", str(row.get("epochs_run", "-")), time.strftime("%Y-%m-%d %H:%M", time.localtime(r.modified)))
    out.print(t)
    for r in runs:
        if r.error:
            out.print(f"[red]corrupt[/] {r.run_id}: {escape(r.error)}")


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


ABBREVIATIONS = {"epochs": "ep", "normalize": "norm", "scope": "scope", "batch_size": "bs", "weight_decay": "wd",
                 "parameterization": "param", "granularity": "gran", "optimizer": "opt", "schedule": "sched"}
# Columns a narrow terminal drops first (the files keep them all).
OPTIONAL = ("lin. bottl.", "nonlin. bottl.", "note", "model", "rule", "widened")


def _pm(mean, std, digits: int = 2) -> str:
    if mean is None or pd.isna(mean):
        return "-"
    return f"{100 * mean:.{digits}f}" + ("" if pd.isna(std) else f"±{100 * std:.{digits}f}")


def table1_compact(t: pd.DataFrame, width: int) -> Table | Text:
    """Table 1 for a terminal of `width` columns: one line per study (the recipe and the settings
    that vary within it, abbreviated), short column names; numbers never wrap or shrink (text
    columns end in … instead), and the optional columns go first when even that is too wide.
    The report files keep the full table."""
    settings = [c for c in t.columns if "." in c]
    varying = {rec: [c for c in settings if g[c].map(str).nunique() > 1] for rec, g in t.groupby("recipe")}
    rows = []
    for _, r in t.iterrows():
        extra = " ".join(f"{ABBREVIATIONS.get(c.split('.')[-1], c.split('.')[-1])}={short(r[c])}"
                         for c in varying[r["recipe"]] if str(r[c]) not in ("-", "nan", "None"))
        row = {"study": f"{r['recipe']} {extra}".strip(), "model": r.get("model", "-"),
               "widened": r.get("widened", "-"), "rule": r.get("rule", "-"),
               "base %": _pm(r["baseline"], r["baseline_std"]),
               "sparse % (f, conn.)": "-" if pd.isna(r["sparse"]) else
               f"{_pm(r['sparse'], r.get('sparse_std'))} (f{r['sparse_factor']:g}, {r['sparse_connectivity']:.2g})",
               "dense % (f)": "-" if pd.isna(r["dense"]) else f"{_pm(r['dense'], r.get('dense_std'))} "
                                                                   f"(f{r['dense_factor']:g})",
               "fraction": "-" if pd.isna(r["fraction"]) else
               f"{r['fraction']:.2f}" + ("" if pd.isna(r["fraction_std"]) else f"±{r['fraction_std']:.2f}")}
        for m, name in (("linear_bottleneck", "lin. bottl."), ("nonlinear_bottleneck", "nonlin. bottl.")):
            if m in t:
                row[name] = "-" if pd.isna(r[m]) else f"{_pm(r[m], r[f'{m}_std'], 1)} (f{r[f'{m}_factor']:g})"
        row["note"] = r.get("note") or "-"
        rows.append(row)
    d = pd.DataFrame(rows)
    d = d[[c for c in d.columns if c in ("study", "base %", "fraction") or (d[c] != "-").any()]]
    full = {c: int(max(d[c].map(len).max(), len(c))) for c in d.columns}
    text = ("study", "model", "note")

    def fixed(cols) -> int:  # every column but the study at full width (note and model at most 24)
        return sum(min(full[c], 24) if c in text else full[c] for c in cols if c != "study") + 3 * len(cols)
    cols = list(d.columns)
    for c in OPTIONAL:
        if fixed(cols) + 16 <= width:
            break
        if c in cols:
            cols.remove(c)
    if fixed(cols) + 12 > width:  # too narrow for columns: one block per study, wrapped between fields
        blocks = [f"{r['study']}\n  " + "; ".join(f"{c} {r[c]}" for c in cols if c != "study") for _, r in d.iterrows()]
        return Text("Table 1 (test accuracy in %, mean±std over seeds)\n" + "\n".join(blocks))
    tab = Table(title=f"Table 1: {len(d)} studies; test accuracy in %, mean±std over seeds (all columns: the "
                      f"report files)", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                show_edge=False)
    widths = {c: max(8, min(full[c], width - fixed(cols))) if c == "study" else min(full[c], 24) if c in text
              else full[c] for c in cols}
    for c in cols:
        tab.add_column(c, no_wrap=True, overflow="ellipsis", width=widths[c], justify="left" if c in text else "right")
    for _, r in d.iterrows():
        tab.add_row(*[escape(fit_words(str(r[c]), widths[c]) if c in text else str(r[c])) for c in cols])
    return tab


def fit_words(s: str, width: int) -> str:
    """`s` cut to `width` at a space (a trailing … says so), never inside a word or a number."""
    if len(s) <= width:
        return s
    words, kept = s.split(" "), ""
    for w in words:
        if len(kept) + len(w) + (1 if kept else 0) > width - 1:
            break
        kept += (" " if kept else "") + w
    return (kept or s[: width - 1].rsplit(" ", 1)[0][: width - 1]) + "…"


def short(v) -> str:
    s = short_label(v)
    return s if len(s) <= 14 else s[:13] + "…"


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

