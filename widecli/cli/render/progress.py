"""THE progress component: one for train, sweep, ablate, tune and kernel, driven by the Events of
execute.run and execute.sweep."""

from __future__ import annotations

import os
import time
from pathlib import Path

from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn

from widecli.cli.render import console
from widecli.cli.render.console import duration, pct
from widecli.cli.render.tuning import trial_line
from widecli.execute.eta import Eta
from widecli.execute.run import Event


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
        self.lines = (not console.out.is_terminal) if lines is None else lines
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
                                 TextColumn("{task.fields[left]}"), console=console.out, transient=True)
        self.progress.__enter__()
        self.overall, self.groups = None, {}
        return self

    def __exit__(self, *exc):
        done = self.progress.__exit__(*exc)
        if exc[0] is None and self.eta is not None and self.runs_total:
            took = time.monotonic() - self.begun
            first = f" (estimated after the first group: {duration(self.first_estimate)})" if self.first_estimate else ""
            console.out.print(f"{self.name}: {self.runs_total} runs trained in {duration(took)}{first}")
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
        if e.kind == "todo":
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
