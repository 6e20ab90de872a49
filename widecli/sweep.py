"""Sweeps: plan a recipe's runs against the store, then train what is left.

Resumable (a run is finished only when its result.json is valid, so a restarted sweep skips it),
crash-safe (half-written run directories are redone) and safe to run twice at once (a per-run O_EXCL
lock is taken by whichever process trains the run). Executors: `local` (this process, or N worker
processes) and `ray` (each stacked group a Ray task; the driver writes the results). Nothing here
prints: progress goes through the `on_event` callback.
"""

from __future__ import annotations

import inspect
import io
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd
import torch

from widecli import data as data_mod
from widecli import models, runner, store
from widecli.errors import WidecliError
from widecli.recipe import RunSpec
from widecli.train import resolve_device, should_stack

STATUSES = ("new", "finished", "failed", "partial", "corrupt")
# Columns of runs.csv that measure the machine, not the computation (ignored when comparing sweeps).
TIMING_COLUMNS = ("wall_time_s", "seconds", "peak_memory_bytes", "threads")


class SweepError(WidecliError):
    """A sweep cannot start or go on (executor, Ray cluster)."""


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class PlannedRun:
    spec: RunSpec
    run_id: str
    status: str                 # new | finished | failed | partial | corrupt
    todo: bool                  # whether this sweep trains it
    error: str | None = None    # why a corrupt result.json was rejected


def run_status(results: str | Path, spec: RunSpec) -> tuple[str, str | None]:
    """(status, reason) of one run in the store."""
    d = store.run_dir(results, spec)
    if not (d / store.RESULT).exists():
        return ("partial" if d.is_dir() and any(d.iterdir()) else "new"), None
    try:
        result = store.read_result(d)
    except WidecliError as e:
        return "corrupt", str(e)
    return ("failed" if result.get("status") == "failed" else "finished"), None


def _todo(status: str, force: bool, retry_failed: bool) -> bool:
    """Whether a run of this status is (still) to be trained."""
    return force or status in ("new", "partial", "corrupt") or (status == "failed" and retry_failed)


def plan(specs: list[RunSpec], results: str | Path, force: bool = False,
         retry_failed: bool = False) -> list[PlannedRun]:
    """Every distinct run with its status in the store and whether this sweep should train it."""
    out, seen = [], set()
    for spec in specs:
        if spec.run_id in seen:
            continue
        seen.add(spec.run_id)
        status, error = run_status(results, spec)
        out.append(PlannedRun(spec, spec.run_id, status, _todo(status, force, retry_failed), error))
    return out


def stackable(spec: RunSpec) -> bool:
    """Whether the model of a run can train stacked with other seeds (its builder takes `stack`)."""
    return spec.train.stack == "auto" and "stack" in inspect.signature(models.arch(spec.model).build).parameters


def stack_groups(specs: list[RunSpec], device: torch.device) -> list[list[RunSpec]]:
    """Units of work: runs differing only in seed train as one stacked model where the model allows.

    The one place that decides stacking (the performance work may refine it per device).
    """
    groups: dict[str, list[RunSpec]] = {}
    for s in specs:
        key = s.stack_key() if stackable(s) else s.run_id
        groups.setdefault(key, []).append(s)
    # should_stack decides per device: e.g. CSR-backend runs train one by one.
    return [g for group in groups.values()
            for g in ([group] if len(group) == 1 or should_stack(group, device) else [[s] for s in group])]


# --------------------------------------------------------------------------- events and summary


@dataclass
class Event:
    """Progress for the CLI. kind: plan | start | epoch | done | wait."""

    kind: str
    runs: list[tuple] = field(default_factory=list)   # (run_id, factor, method, seed) of the group
    total: int = 0              # plan: runs to train
    skipped: int = 0            # plan: runs already finished
    planned: list = field(default_factory=list)       # plan: [PlannedRun]
    epoch: int = 0
    epochs: int = 0
    rows: list[dict] = field(default_factory=list)    # epoch: last metrics row of each run
    status: str | None = None   # done: ok | diverged | failed | elsewhere
    error: str | None = None


def _label(s: RunSpec) -> tuple:
    return (s.run_id, s.factor, s.method, s.seed)


@dataclass
class Report:
    """What one unit of work did: runs trained (run_id, status, error), busy elsewhere, done elsewhere."""

    trained: list[tuple[str, str, str | None]] = field(default_factory=list)
    busy: list[RunSpec] = field(default_factory=list)
    elsewhere: list[RunSpec] = field(default_factory=list)


@dataclass
class SweepSummary:
    planned: int = 0
    ok: int = 0
    diverged: int = 0
    failed: int = 0
    skipped: int = 0            # finished before this sweep, or by another sweep meanwhile
    runs_csv: Path | None = None
    index_paths: list[Path] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)     # runs.csv rows of this sweep's runs
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def trained(self) -> int:
        return self.ok + self.diverged + self.failed


def best_table(rows: list[dict]) -> pd.DataFrame:
    """Per method and factor: runs, statuses and best / mean test accuracy."""
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    g = df.groupby(["method", "factor"], sort=True)
    out = g.agg(runs=("run_id", "size"), ok=("status", lambda s: int((s == "ok").sum())))
    if "test_accuracy" in df:
        out["mean_test_accuracy"] = g["test_accuracy"].mean()
        out["best_test_accuracy"] = g["test_accuracy"].max()
    return out.reset_index()


# --------------------------------------------------------------------------- one unit of work

_datasets: dict[tuple[str, str], data_mod.DeviceDataset] = {}


def dataset(spec: RunSpec, device: torch.device) -> data_mod.DeviceDataset:
    """The data set of a run, loaded once per process and device."""
    key = (spec.data.model_dump_json(), str(device))
    if key not in _datasets:
        _datasets.clear()  # keep one: a process sweeping several data sets must not hoard them on the GPU
        _datasets[key] = data_mod.load(spec.data, device)
    return _datasets[key]


def claim(group: list[RunSpec], results: str | Path, force: bool, retry_failed: bool):
    """Lock the group's runs this process should train: (mine, locks, busy, done elsewhere)."""
    mine, locks, busy, elsewhere = [], [], [], []
    for s in group:
        lock = store.try_lock(results, s)
        if lock is None:
            busy.append(s)
            continue
        # Checked under the lock: another sweep may have finished it since we planned.
        if not _todo(run_status(results, s)[0], force, retry_failed):
            lock.release()
            elsewhere.append(s)
            continue
        mine.append(s)
        locks.append(lock)
    return mine, locks, busy, elsewhere


def work(group: list[RunSpec], results: str | Path, device: torch.device, force: bool,
         retry_failed: bool, emit: Callable[[Event], None]) -> Report:
    """Claim, train and store a group in this process; the locks are ours while we train."""
    mine, locks, busy, elsewhere = claim(group, results, force, retry_failed)
    report = Report(busy=busy, elsewhere=elsewhere)
    try:
        if mine:
            for s in mine:
                store.remove_partial(results, s)  # files of a run that died half-written
                store.journal(results, s.recipe, "start", s.run_id)
            ds = dataset(mine[0], device)
            runs = [_label(s) for s in mine]
            emit(Event("start", runs))

            def on_epoch(epoch: int, epochs: int, rows: list[dict]) -> None:
                emit(Event("epoch", runs, epoch=epoch, epochs=epochs, rows=rows))
            for o, _ in runner.run(mine, results, device, ds, on_epoch, record_failures=True):
                store.journal(results, o.spec.recipe, "done", o.spec.run_id, o.status)
                report.trained.append((o.spec.run_id, o.status, o.error))
    finally:
        for lock in locks:
            lock.release()
    return report


# --------------------------------------------------------------------------- local executor


def execute_local(groups: list[list[RunSpec]], ctx: "Context") -> Iterator[tuple[list[RunSpec], Report]]:
    """Train the groups one after the other in this process."""
    for group in groups:
        yield group, work(group, ctx.results, ctx.device, ctx.force, ctx.retry_failed, ctx.emit)


# Worker-process state, set by _init_worker.
_worker: dict = {}


def _init_worker(threads: int, devices, events, parent: int) -> None:
    torch.set_num_threads(threads)
    _worker.update(device=torch.device(devices.get()), events=events, busy=False)
    # Ctrl-C reaches the whole process group: only the driver handles it and stops us by SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _worker_sigterm)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _worker_sigterm(signum, frame) -> None:
    if _worker.get("busy"):
        raise KeyboardInterrupt  # unwinds the run: its partial files are removed, its locks freed
    os._exit(0)


def _watch_parent(parent: int) -> None:
    # A driver killed by SIGKILL cannot stop us; without it we would train on as an orphan.
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _worker_task(group: list[RunSpec], results: str, force: bool, retry_failed: bool) -> Report:
    _worker["busy"] = True
    try:
        return work(group, results, _worker["device"], force, retry_failed, _worker["events"].put)
    finally:
        _worker["busy"] = False


def worker_devices(device: torch.device, requested: str, jobs: int, per_run: int = 1) -> list[str]:
    """One device per worker: with several GPUs and device auto, one GPU each, or the first of a
    block of `per_run` GPUs (train.gpus: a data-parallel run uses cuda:i..cuda:i+per_run-1)."""
    if requested == "auto" and device.type == "cuda" and torch.cuda.device_count() > 1:
        blocks = max(1, torch.cuda.device_count() // per_run)
        return [f"cuda:{(i % blocks) * per_run}" for i in range(jobs)]
    return [str(device)] * jobs


def execute_pool(groups: list[list[RunSpec]], ctx: "Context") -> Iterator[tuple[list[RunSpec], Report]]:
    """Train the groups in ctx.jobs worker processes (spawned: safe with CUDA and threads)."""
    import multiprocessing as mp

    mpc = mp.get_context("spawn")
    devices, events = mpc.Queue(), mpc.Queue()
    workers = min(ctx.jobs, len(groups))
    for d in worker_devices(ctx.device, ctx.requested_device, workers,
                            max(s.train.gpus for g in groups for s in g)):
        devices.put(d)
    threads = max(1, (os.cpu_count() or 1) // ctx.jobs)
    pool = ProcessPoolExecutor(workers, mp_context=mpc, initializer=_init_worker,
                               initargs=(threads, devices, events, os.getpid()))
    futures = {pool.submit(_worker_task, g, str(ctx.results), ctx.force, ctx.retry_failed): g for g in groups}
    try:
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(events, ctx.emit)
            for f in done:
                yield futures[f], f.result()
        _drain(events, ctx.emit)
        pool.shutdown(wait=True)
    except BaseException:
        _stop(pool)
        raise


def _drain(events, emit) -> None:
    import queue

    while True:
        try:
            emit(events.get_nowait())
        except queue.Empty:
            return


def _stop(pool: ProcessPoolExecutor) -> None:
    """Stop the workers: SIGTERM lets each clean its current run's partial files first."""
    procs = list(getattr(pool, "_processes", {}).values())  # no public API before Python 3.14
    for p in procs:
        p.terminate()
    for p in procs:
        p.join(timeout=30)
    try:
        pool.shutdown(wait=False, cancel_futures=True)
    except Exception:
        pass


# --------------------------------------------------------------------------- ray executor


def _ray_train(spec_dicts: list[dict], device: str, threads: int) -> list[dict]:
    """A Ray task: train a group and return everything the driver needs to write it."""
    torch.set_num_threads(threads)
    dev = resolve_device(device)
    specs = [RunSpec.model_validate(d) for d in spec_dicts]
    out = []
    for o, result in runner.train_group(specs, dev, dataset(specs[0], dev), record_failures=True):
        state = runner.state_of(o)
        buf = None
        if state is not None:
            b = io.BytesIO()
            torch.save(state, b)
            buf = b.getvalue()
        out.append({"spec": o.spec.model_dump(mode="json"), "status": o.status, "error": o.error,
                    "metrics": o.metrics, "result": result, "state": buf})
    return out


def _ray_init(address: str | None):
    """The ray module, connected; and whether we started it (then we shut it down)."""
    try:
        import ray
    except ImportError:
        raise SweepError("--executor ray: ray is not installed; pip install 'widecli[ray]'") from None
    if ray.is_initialized():
        return ray, False
    try:
        ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise SweepError(f"--address {address}: cannot join the Ray cluster ({str(e).splitlines()[0]})") from None
    return ray, True


def execute_ray(groups: list[list[RunSpec]], ctx: "Context") -> Iterator[tuple[list[RunSpec], Report]]:
    """Each group a Ray task; the driver holds the locks and writes the returned results."""
    ray, started = _ray_init(ctx.address)
    num_gpus = ctx.num_gpus
    if num_gpus is None:
        num_gpus = 1 if ctx.requested_device != "cpu" and ray.cluster_resources().get("GPU", 0) > 0 else 0
    num_cpus = ctx.num_cpus or 1
    task = ray.remote(_ray_train).options(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=1)
    device = "cuda" if num_gpus else ("cpu" if ctx.requested_device == "auto" else ctx.requested_device)
    inflight, held = {}, []
    try:
        for group in groups:
            mine, locks, busy, elsewhere = claim(group, ctx.results, ctx.force, ctx.retry_failed)
            held += locks
            if not mine:
                yield group, Report(busy=busy, elsewhere=elsewhere)
                continue
            # A data-parallel run (train.gpus = N) reserves N GPUs of the cluster.
            run_task = task.options(num_gpus=max(num_gpus, mine[0].train.gpus)) if num_gpus else task
            ref = run_task.remote([s.model_dump(mode="json") for s in mine], device, max(1, int(num_cpus)))
            inflight[ref] = (group, mine, locks, Report(busy=busy, elsewhere=elsewhere))
            ctx.emit(Event("start", [_label(s) for s in mine]))
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1)
            group, mine, locks, report = inflight.pop(ready[0])
            try:
                _write_returned(ray.get(ready[0]), ctx, report)
            except BaseException:
                for s in mine:
                    store.remove_partial(ctx.results, s)
                raise
            finally:
                for lock in locks:
                    lock.release()
            yield group, report
    finally:
        for ref in inflight:
            ray.cancel(ref, force=True)
        for lock in held:
            lock.release()
        if started:
            ray.shutdown()


def _write_returned(payloads: list[dict], ctx: "Context", report: Report) -> None:
    for p in payloads:
        spec = RunSpec.model_validate(p["spec"])
        state = None if p["state"] is None else torch.load(io.BytesIO(p["state"]), weights_only=True)
        store.journal(ctx.results, spec.recipe, "start", spec.run_id, "ray")
        store.write_run(ctx.results, spec, p["metrics"], p["result"], state)
        store.journal(ctx.results, spec.recipe, "done", spec.run_id, p["status"])
        report.trained.append((spec.run_id, p["status"], p["error"]))


EXECUTORS = ("local", "ray")


# --------------------------------------------------------------------------- driver


@dataclass
class Context:
    results: Path
    device: torch.device
    requested_device: str
    jobs: int
    force: bool
    retry_failed: bool
    emit: Callable[[Event], None]
    address: str | None = None
    num_cpus: float | None = None
    num_gpus: float | None = None


def run(specs: list[RunSpec], results: str | Path, *, jobs: int = 1, executor: str = "local",
        address: str | None = None, device: str = "auto", force: bool = False,
        retry_failed: bool = False, on_event: Callable[[Event], None] | None = None,
        num_cpus: float | None = None, num_gpus: float | None = None) -> SweepSummary:
    """Train every run of `specs` not yet finished in `results`; runs.csv is rebuilt after each."""
    if executor not in EXECUTORS:
        raise SweepError(f"--executor: unknown executor {executor!r}; allowed: {', '.join(EXECUTORS)}")
    if jobs < 1:
        raise SweepError(f"--jobs: got {jobs}; must be >= 1")
    emit = on_event or (lambda e: None)
    ctx = Context(Path(results), resolve_device(device), device, jobs, force, retry_failed, emit,
                  address, num_cpus, num_gpus)
    planned = plan(specs, results, force, retry_failed)
    todo = [p.spec for p in planned if p.todo]
    summary = SweepSummary(planned=len(planned), skipped=len(planned) - len(todo))
    emit(Event("plan", total=len(todo), skipped=summary.skipped, planned=planned))
    recipes = sorted({s.recipe for s in specs})
    pending = todo
    while pending:
        busy = []
        for group, report in _executor(ctx, executor)(stack_groups(pending, ctx.device), ctx):
            _tally(summary, report, group, emit)
            busy += report.busy
            if report.trained:
                for r in {s.recipe for s in group}:
                    store.rebuild_index(results, r, verify_files=False)
        if busy:
            # Another sweep is training these: wait for it, then take over whatever it did not finish.
            emit(Event("wait", [_label(s) for s in busy]))
            _wait_unlocked(busy, results)
            ctx.force = False  # what the other sweep finished is finished
        pending = busy
    finished = {r: store.finished_runs(results, r) for r in recipes}  # read and verified once
    summary.index_paths = [store.write_index(results, r, runs) for r, runs in finished.items()]
    summary.runs_csv = summary.index_paths[0] if summary.index_paths else None
    ids = {p.run_id for p in planned}
    mine = {rid: r for runs in finished.values() for rid, r in runs.items() if rid in ids}
    summary.rows = [store.flatten(r) for r in mine.values()]
    return summary


def _executor(ctx: Context, name: str):
    if name == "ray":
        return execute_ray
    return execute_pool if ctx.jobs > 1 else execute_local


def _tally(summary: SweepSummary, report: Report, group: list[RunSpec], emit) -> None:
    labels = {s.run_id: _label(s) for s in group}
    for run_id, status, error in report.trained:
        setattr(summary, status, getattr(summary, status) + 1)
        if status == "failed":
            summary.failures.append((run_id, error or ""))
        emit(Event("done", [labels[run_id]], status=status, error=error))
    for s in report.elsewhere:
        summary.skipped += 1
        emit(Event("done", [labels[s.run_id]], status="elsewhere"))


def _wait_unlocked(specs: list[RunSpec], results: str | Path, poll: float = 0.5) -> None:
    while any(store.lock_owner(results, s) for s in specs):
        time.sleep(poll)
