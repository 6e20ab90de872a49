"""Sweeps: plan a recipe's runs against the store, then train what is left with an executor.

Resumable (a run is finished only when its result.json is valid, so a restarted sweep skips it),
crash-safe (half-written run directories are redone) and safe to run twice at once (a per-run O_EXCL
lock is taken by whichever process trains the run). Executors share one interface - a function
(groups, Context) -> iterator of (group, GroupReport) - and one registry (`--executor`, entry point
group `widecli.executors`): `local` (this process, or `--jobs N` worker processes) and `ray`.
Nothing here prints: progress goes through the `on_event` callback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from widecli.config.schema import RunSpec
from widecli.engine import threads as threads_mod
from widecli.engine.device import resolve_device
from widecli.errors import RecipeError, SweepError
from widecli.execute import local, ray, slurm
from widecli.execute.worklist import run_statuses, seconds_per_work, stack_groups, work
from widecli.execute.run import Context, Event, GroupReport, label, wait_unlocked
from widecli.registry import Registry
from widecli.store import runs as store

# Columns of runs.csv that measure the machine, not the computation (ignored when comparing sweeps).
TIMING_COLUMNS = ("wall_time_s", "seconds", "epoch_seconds", "peak_memory_bytes", "threads", "threads_rule")

Executor = Callable[[list[list[RunSpec]], Context], Iterator[tuple[list[RunSpec], GroupReport]]]
EXECUTORS: Registry[Executor] = Registry("executors", "--executor")
EXECUTORS.add("local", local.execute)
EXECUTORS.add("ray", ray.execute)
EXECUTORS.add("slurm", slurm.execute)


@dataclass
class SweepSummary:
    planned: int = 0
    ok: int = 0
    diverged: int = 0
    failed: int = 0
    lost_lease: int = 0         # trained here, but another host took its lease over: not written here
    skipped: int = 0            # finished before this sweep, or by another sweep meanwhile
    runs_csv: Path | None = None
    index_paths: list[Path] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)     # runs.csv rows of this sweep's runs
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def trained(self) -> int:
        return self.ok + self.diverged + self.failed + self.lost_lease


def sweep(specs: list[RunSpec], results: str | Path, *, jobs: int = 1, executor: str = "local",
          address: str | None = None, device: str = "auto", force: bool = False,
          retry_failed: bool = False, on_event: Callable[[Event], None] | None = None,
          num_cpus: float | None = None, num_gpus: float | None = None,
          wait_timeout: float | None = None, options: dict | None = None,
          fail_fast: bool = False, threads: int | None = None, provenance: dict | None = None) -> SweepSummary:
    """Train every run of `specs` not yet finished in `results`; runs.csv is rebuilt after each.

    options: executor-specific settings (slurm: partition, gpus_per_run, time_min, array_parallelism,
    no_wait, cluster). fail_fast: stop at the first failed run (SweepError naming it; the runs
    stored so far are kept and the same command resumes) instead of recording it and going on.
    provenance: what every run records about its code and recipe (execute.provenance.collect)."""
    try:
        execute = EXECUTORS.get(executor)
    except RecipeError as e:
        raise SweepError(str(e)) from None
    if jobs < 1:
        raise SweepError(f"--jobs: got {jobs}; must be >= 1")
    emit = on_event or (lambda e: None)
    ctx = Context(Path(results), resolve_device(device), device, jobs, force, retry_failed, emit,
                  address, num_cpus, num_gpus, options or {}, threads, provenance)
    threads_mod.configure(threads, jobs if executor == "local" else 1)
    planned = run_statuses(specs, results, force, retry_failed)
    todo = [p.spec for p in planned if p.todo]
    summary = SweepSummary(planned=len(planned), skipped=len(planned) - len(todo))
    first = stack_groups(todo, ctx.device)
    todo_work = work(todo, {s.run_id: len(g) for g in first for s in g})
    rate = seconds_per_work(results, planned) if todo else None
    # in parallel: --jobs local processes at once, however many groups they have to share
    estimate = (sum(todo_work.values()) * rate / min(jobs, len(first)) if rate and executor == "local" else None)
    emit(Event("todo", total=len(todo), skipped=summary.skipped, planned=planned, work=todo_work, estimate=estimate))
    recipes = sorted({s.recipe for s in specs})
    pending = todo
    while pending:
        busy = []
        groups = execute(first if pending is todo else stack_groups(pending, ctx.device), ctx)
        for group, report in groups:
            _tally(summary, report, group, emit)
            busy += report.busy
            if report.trained:
                for r in {s.recipe for s in group}:
                    store.rebuild_index(results, r, verify_files=False)
            if fail_fast and summary.failures:
                groups.close()  # the executor stops its workers
                run_id, error = summary.failures[0]
                done = summary.trained
                raise SweepError(f"--fail-fast: run {run_id} failed ({error}); stopped with {len(todo) - done} "
                                 f"of {len(todo)} runs not trained; fix the cause and run the same command "
                                 f"again (finished runs are kept; --retry-failed retrains the failed one)")
        if busy:
            # Another sweep is training these: wait for it, then take over whatever it did not finish.
            wait_unlocked(busy, results, emit, wait_timeout)
            ctx.force = False  # what the other sweep finished is finished
        pending = busy
    finished = {r: store.finished_runs(results, r) for r in recipes}  # read and verified once
    summary.index_paths = [store.write_index(results, r, runs) for r, runs in finished.items()]
    summary.runs_csv = summary.index_paths[0] if summary.index_paths else None
    ids = {p.run_id for p in planned}
    mine = {rid: r for runs in finished.values() for rid, r in runs.items() if rid in ids}
    summary.rows = [store.flatten(r) for r in mine.values()]
    return summary


def _tally(summary: SweepSummary, report: GroupReport, group: list[RunSpec], emit) -> None:
    labels = {s.run_id: label(s) for s in group}
    for run_id, status, error in report.trained:
        field_ = status.replace("-", "_")  # lost-lease -> lost_lease
        setattr(summary, field_, getattr(summary, field_) + 1)
        if status == "failed":
            summary.failures.append((run_id, error or ""))
        emit(Event("done", [labels[run_id]], status=status, error=error))
    for s in report.elsewhere:
        summary.skipped += 1
        emit(Event("done", [labels[s.run_id]], status="elsewhere"))
