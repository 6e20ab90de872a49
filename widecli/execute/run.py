"""The one way a group of runs is trained: take the runs' locks, train, write, release.

`widecli train`, `sweep` and `ablate` all come through `run_group`, so every run gets the same
lock, journal lines and store writes whoever started it: `widecli train` twice trains once, and
beside a running sweep it waits for the sweep's lock instead of training the run a second time.
A group is one run or K runs differing only in seed (trained stacked). Nothing here prints:
progress goes through `emit` (Events).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from widecli.config.schema import RunSpec
from widecli.data.resident import load_dataset
from widecli.engine import checkpoint, dist
from widecli.engine.loop import Outcome, fit
from widecli.errors import StoreError, SweepError
from widecli.execute import ddp, provenance
from widecli.execute.worklist import is_todo, status_of
from widecli.methods import WeightPlan, build_model, macs, plan_weights
from widecli.store import lock
from widecli.store import runs as store


@dataclass
class Event:
    """Progress for the CLI. kind: plan | start | epoch | done | wait."""

    kind: str
    runs: list[tuple] = field(default_factory=list)   # (run_id, factor, method, seed) of the group
    total: int = 0              # plan: runs to train
    skipped: int = 0            # plan: runs already finished
    planned: list = field(default_factory=list)       # plan: [RunStatus]
    epoch: int = 0
    epochs: int = 0
    rows: list[dict] = field(default_factory=list)    # epoch: last metrics row of each run
    status: str | None = None   # done: ok | diverged | failed | lost-lease | elsewhere
    error: str | None = None
    holders: list[dict] = field(default_factory=list)  # wait: the leases (host, pid, renewed) waited for
    work: dict = field(default_factory=dict)  # plan: run_id -> training work (execute.plan.work) of runs to train
    estimate: float | None = None   # plan: seconds the sweep should take, from finished runs' times (or None)


@dataclass
class Context:
    """What every executor needs to run a sweep's groups."""

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
    options: dict = field(default_factory=dict)   # executor-specific (slurm: partition, time, ...)
    threads: int | None = None    # --threads per run; None: auto (engine.threads)
    provenance: dict | None = None  # execute.provenance.collect(recipe) of the driver; None: this process's


StopHook = Callable[[int, int, list[dict]], bool]   # (epoch, epochs, last row per run) -> stop now?


def label(s: RunSpec) -> tuple:
    return (s.run_id, s.factor, s.method, s.seed)


@dataclass
class GroupReport:
    """What one group did: runs trained (run_id, status, error; status lost-lease: trained here but
    taken over meanwhile, not written), busy elsewhere, done elsewhere."""

    trained: list[tuple[str, str, str | None]] = field(default_factory=list)
    busy: list[RunSpec] = field(default_factory=list)
    elsewhere: list[RunSpec] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)             # run directories written
    results: list[dict] = field(default_factory=list)             # and the result.json they hold
    stopped: list[RunSpec] = field(default_factory=list)          # stopped on request: nothing stored


class LeaseLost(BaseException):
    """Raised after an epoch when another process has taken over every run of the group (their
    leases expired while this process stalled): training them on here would be wasted, and their
    results would be refused at the write anyway (RunLock.commit). Reported as lost-lease."""


# How often (seconds) a training group checks that it still holds its runs' leases: at its first
# epoch, then at most once per interval (one small file read each time).
LEASE_CHECK_S = 1.0


class StopGroup(BaseException):
    """Raised by a run path's `stop` hook to end a group early (a pruned tuning trial): the group's
    partial files are removed, nothing is stored (a stopped run is not a finished run), the leases
    are released and run_group returns the runs in GroupReport.stopped. A BaseException, like
    KeyboardInterrupt, so that no `except Exception` on the way records it as a failed run."""


# --------------------------------------------------------------------------- training, no writes


def weights_summary(p: WeightPlan) -> dict:
    """The weight accounting that result.json records and `check` prints."""
    return {"budget": p.budget, "dense_weights": p.dense_weights, "nonzeros": p.nonzeros,
            "connectivity": p.connectivity, "budget_gap": p.budget - p.nonzeros,
            "other_params": p.other_params, "widths": p.widths, "ranks": p.ranks, "layers": p.layers()}


_datasets: dict[tuple[str, str], object] = {}


def dataset(spec: RunSpec, device: torch.device):
    """The data set of a run, loaded once per process and device (per seed where the run's seed
    draws its training subset: data.subset_draw seed)."""
    seed = spec.seed if spec.data.subset_draw == "seed" else None
    key = (spec.data.model_dump_json(), str(device), seed)
    if key not in _datasets:
        _datasets.clear()  # keep one: a process sweeping several data sets must not hoard them on the GPU
        _datasets[key] = load_dataset(spec.data, device, spec.seed)
    return _datasets[key]


def train_group(specs: list[RunSpec], device: torch.device, ds, on_epoch: Callable | None = None,
                record_failures: bool = False, checkpoint_dir=None) -> list[tuple[Outcome, dict]]:
    """Train one run (or K stacked seeds); (outcome, result.json body) per run, nothing written
    (but checkpoints in checkpoint_dir). train.gpus > 1 trains data-parallel (execute.ddp).

    With record_failures, an exception in training becomes status `failed` with its error for
    every run of the group (a sweep goes on); interrupts (KeyboardInterrupt) always propagate.
    """
    try:
        outcomes = (ddp.launch(specs, device, on_epoch, checkpoint_dir) if ddp.wanted(specs)
                    else fit(specs, ds, device, on_epoch, checkpoint_dir))
    except Exception as e:
        if not record_failures:
            raise
        error, trace = f"{type(e).__name__}: {e}".splitlines()[0], traceback.format_exc()
        outcomes = [Outcome(s, "failed", error=error) for s in specs]
    else:
        trace = None
    try:
        plan = plan_weights(specs[0], ds.input_shape, ds.num_classes)
        # Compute (issue 29): forward multiply-accumulates per example at the kept weights and dense.
        weights = {**weights_summary(plan), **macs(specs[0], plan, ds.input_shape, ds.num_classes)}
    except Exception:
        if not record_failures:
            raise
        weights = {}
    written = []
    for o in outcomes:
        result = {"status": o.status, "error": o.error, "final": o.final, "weights": weights, "masks": o.mask_layers,
                  "data": {"input_shape": list(ds.input_shape), "num_classes": ds.num_classes,
                           "train_size": len(ds.y_train), "test_size": len(ds.y_test),
                           **({"val_size": len(ds.y_val)} if getattr(ds, "y_val", None) is not None else {})}}
        if trace:
            result["traceback"] = trace
        written.append((o, result))
    return written


def state_of(o: Outcome) -> dict | None:
    """What model.pt holds: the trained state and masks (nothing for a failed run)."""
    return None if o.status == "failed" else {"state": o.state, "masks": o.masks}


# --------------------------------------------------------------------------- the run path


def claim(group: list[RunSpec], results: str | Path, force: bool, retry_failed: bool):
    """Lock the group's runs this process should train: (mine, locks, busy, done elsewhere)."""
    mine, locks, busy, elsewhere = [], [], [], []
    for s in group:
        held = lock.try_lock(results, s)
        if held is None:
            busy.append(s)
            continue
        # Checked under the lock: another sweep may have finished it since we planned.
        if not is_todo(status_of(results, s)[0], force, retry_failed):
            held.release()
            elsewhere.append(s)
            continue
        mine.append(s)
        locks.append(held)
    return mine, locks, busy, elsewhere


def run_group(group: list[RunSpec], results: str | Path, device: torch.device, *, force: bool = False,
              retry_failed: bool = False, emit: Callable[[Event], None] = lambda e: None,
              record_failures: bool = True, stop: StopHook | None = None,
              provenance: dict | None = None) -> GroupReport:
    """Lock, train and store a group in this process; the locks are ours while we train.

    On an interrupt the runs' half-written directories are removed (finished runs and resumable
    checkpoints are kept), so re-running the same command resumes cleanly. `stop(epoch, epochs,
    rows)` is asked after every epoch whether to end the group (GroupReport.stopped); `provenance`
    goes into each result.json (default: execute.provenance.collect() of this process)."""
    if not dist.is_main():  # a torchrun rank > 0 trains its share; rank 0 locks and writes
        train_group(ddp.check(group), device, dataset(group[0], device),
                    checkpoint_dir=store.run_dir(results, group[0]))
        return GroupReport()
    mine, locks, busy, elsewhere = claim(group, results, force, retry_failed)
    report = GroupReport(busy=busy, elsewhere=elsewhere)
    try:
        if mine:
            _train_and_write(mine, results, device, emit, record_failures, report, locks, stop,
                             provenance if provenance is not None else _provenance())
    finally:
        for held in locks:
            held.release()
    return report


def run_group_when_free(group: list[RunSpec], results: str | Path, device: torch.device, *,
                        force: bool = False, emit: Callable[[Event], None] = lambda e: None,
                        record_failures: bool = True, stop: StopHook | None = None,
                        provenance: dict | None = None) -> GroupReport:
    """run_group, then wait for the runs another process holds and take over what it left undone;
    one report for the whole group (what this process trained, and what others finished)."""
    kw = {"emit": emit, "record_failures": record_failures, "stop": stop, "provenance": provenance}
    report = run_group(group, results, device, force=force, **kw)
    while report.busy and not report.stopped:
        wait_unlocked(report.busy, results, emit)
        again = run_group(report.busy, results, device, **kw)
        report = GroupReport(trained=report.trained + again.trained, busy=again.busy,
                             elsewhere=report.elsewhere + again.elsewhere,
                             written=report.written + again.written, results=report.results + again.results,
                             stopped=again.stopped)
    return report


def _provenance() -> dict:
    return provenance.collect(None)


def _train_and_write(mine: list[RunSpec], results, device, emit, record_failures, report: GroupReport,
                     locks: list[lock.RunLock], stop: StopHook | None = None, origin: dict | None = None) -> None:
    held = {s.run_id: h for s, h in zip(mine, locks)}
    resumable = (store.run_dir(results, mine[0]) / store.CHECKPOINT).is_file()
    for s in mine:
        store.remove_partial(results, s)  # files of a run that died half-written (a checkpoint stays)
        lock.journal(results, s.recipe, "start", s.run_id, *(["from-checkpoint"] if resumable else []))
    runs = [label(s) for s in mine]
    emit(Event("start", runs))

    checked = [float("-inf")]  # when the leases were last checked

    def on_epoch(epoch: int, epochs: int, rows: list[dict]) -> None:
        emit(Event("epoch", runs, epoch=epoch, epochs=epochs, rows=rows))
        if stop is not None and stop(epoch, epochs, rows):
            raise StopGroup
        if time.monotonic() - checked[0] >= LEASE_CHECK_S:
            checked[0] = time.monotonic()
            if not any(h.held() for h in locks):
                raise LeaseLost
    # A checkpoint (train.checkpoint_every) lives in the first run's directory and survives an
    # interrupt (store.remove_partial keeps it): the next attempt resumes from it.
    ckpt = store.run_dir(results, mine[0])
    try:
        for o, result in train_group(mine, device, dataset(mine[0], device), on_epoch, record_failures, ckpt):
            result["provenance"] = origin
            path = _write(results, o, result, record_failures, held[o.spec.run_id])
            if o.status == LOST_LEASE:
                lock.journal(results, o.spec.recipe, LOST_LEASE, o.spec.run_id)
            else:
                lock.journal(results, o.spec.recipe, "done", o.spec.run_id, o.status)
            report.trained.append((o.spec.run_id, o.status, o.error))
            if path is not None:
                report.written.append(path)
                report.results.append(store.read_result(path, verify_files=False))
        # A failed run retries from the checkpoint; a run taken over leaves it to its new owner.
        if all(status != "failed" for _, status, _ in report.trained) and held[mine[0].run_id].held():
            checkpoint.remove(ckpt)
    except LeaseLost:  # every run is another process's now: its files, checkpoint and lease stay theirs
        for s in mine:
            record_lost_lease(results, s, held[s.run_id], report)
    except StopGroup:
        checkpoint.remove(ckpt)  # stopped on purpose: nothing to resume
        for s in mine:
            store.remove_partial(results, s)
            lock.journal(results, s.recipe, "done", s.run_id, "stopped")
        report.stopped += mine
    except BaseException:
        for s in mine:
            if held[s.run_id].held():  # never the files of a process that took the run over
                store.remove_partial(results, s)
        raise


LOST_LEASE = "lost-lease"  # a run status in reports and the journal, never stored: another process owns the run


def publish(results, spec: RunSpec, metrics: list[dict], result: dict, state: dict | None,
            held: lock.RunLock) -> Path | None:
    """Store a trained run if its lease is still ours: its files are staged outside the run directory,
    then renamed into it under the lease (RunLock.commit); None, with nothing written into the run
    directory, if another process has taken the run over (its lease expired)."""
    staged = store.stage_run(results, spec, metrics, result, state)
    try:
        if held.commit(staged.commit):
            return store.run_dir(results, spec)
    finally:
        staged.discard()
    return None


def lost_lease_error(held: lock.RunLock) -> str:
    owner = held.holder() or {}
    by = f"{owner.get('host', '?')} pid {owner.get('pid', '?')}" if owner else "no one (it was removed)"
    return (f"another process took this run over while it trained here (its lease is now held by {by}); "
            f"nothing was written, the run directory is the new owner's")


def record_lost_lease(results, spec: RunSpec, held: lock.RunLock, report: GroupReport) -> None:
    """Journal and report a run another process took over: nothing of it was written here."""
    lock.journal(results, spec.recipe, LOST_LEASE, spec.run_id)
    report.trained.append((spec.run_id, LOST_LEASE, lost_lease_error(held)))


def _write(results, o: Outcome, result: dict, record_failures: bool, held: lock.RunLock) -> Path | None:
    """Store a trained run, or nothing if its lease was taken over (status lost-lease). A write
    that fails (disk full, permissions) makes the run `failed` with the error line, stored without
    its metrics and weights if that much can be written, else left unstored (its partial files
    removed, so nothing half-written reads as finished); None then."""
    def publish_outcome(metrics: list[dict], result: dict, state: dict | None) -> Path | None:
        path = publish(results, o.spec, metrics, result, state, held)
        if path is None:
            o.status, o.error = LOST_LEASE, lost_lease_error(held)
        return path

    try:
        return publish_outcome(o.metrics, result, state_of(o))
    except StoreError as e:
        if not record_failures:
            raise
        o.status, o.error = "failed", str(e)
    if held.held():
        store.remove_partial(results, o.spec)
    try:
        return publish_outcome([], {**result, "status": "failed", "error": o.error, "final": {}}, None)
    except StoreError:
        if held.held():
            store.remove_partial(results, o.spec)
        return None


# --------------------------------------------------------------------------- reading a run back


def _saved(d: Path) -> dict:
    if not (d / store.MODEL).exists():
        raise StoreError(f"{d / store.MODEL}: the trained weights of this run were not kept (only its "
                         f"metrics were); re-train it with `widecli sweep --force` to get them")
    return torch.load(d / store.MODEL, map_location="cpu", weights_only=True)


def load_model(d: str | Path, device: str = "cpu") -> torch.nn.Module:
    """Rebuild the trained nn.Module of a finished run from its directory (in eval mode; pruned
    connections are zeros in its weights; their masks: load_masks)."""
    d = Path(d)
    result, saved = store.read_result(d), _saved(d)
    spec = RunSpec.model_validate(result["spec"])
    shape, classes = tuple(result["data"]["input_shape"]), result["data"]["num_classes"]
    model = build_model(spec, plan_weights(spec, shape, classes), shape, classes)
    model.load_state_dict(saved["state"])
    return model.to(device).eval()


def load_masks(d: str | Path) -> dict[str, torch.Tensor]:
    """The final masks of a finished run, {layer name: bool tensor shaped like its weight} (empty
    for a dense run)."""
    d = Path(d)
    store.read_result(d)  # a finished, verified run
    return _saved(d)["masks"]


def wait_unlocked(specs: list[RunSpec], results: str | Path, emit: Callable[[Event], None] = lambda e: None,
                  timeout: float | None = None, poll: float = 0.5) -> None:
    """Block until no live process holds a lease of these runs (a lease whose owner stops renewing
    it expires, so a dead machine never blocks for long); SweepError after `timeout` seconds."""
    start, said = time.monotonic(), None
    while True:
        held = [(s, owner) for s in specs if (owner := lock.lock_owner(results, s))]
        if not held:
            return
        holders = sorted({(o["host"], o["pid"]) for _, o in held})
        if holders != said:  # say who holds what whenever that changes
            emit(Event("wait", [label(s) for s, _ in held], holders=[o for _, o in held]))
            said = holders
        if timeout is not None and time.monotonic() - start > timeout:
            s, o = held[0]
            raise SweepError(f"--wait-timeout: {len(held)} run(s) still leased after {timeout:g} s, e.g. "
                             f"{s.run_id} by {o['host']} pid {o['pid']} (renewed {o['renewed']:.0f} s ago); "
                             f"rerun later, or `widecli sweep RECIPE --break-locks` if that machine is gone")
        time.sleep(poll)
