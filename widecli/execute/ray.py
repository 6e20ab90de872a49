"""The Ray executor: each group a Ray task on a cluster or a local Ray.

`--address auto` joins the Ray cluster this machine belongs to (as `ray start` set it up), and
starts a local Ray instance when there is none; `--address HOST:PORT` joins that cluster and fails
with one line if it cannot; no `--address` starts a local instance. The driver holds the runs'
leases and writes what the tasks return, so a cluster needs no shared file system. Where the
workers do see the results directory (a shared file system), each task checkpoints its runs there
every `train.checkpoint_every` epochs and a retried task resumes from the checkpoint; where they do
not, a retried task starts again from epoch 0, and the driver says so. Each task first checks that
its widecli and torch match the driver's and that the run fits its machine's memory (the memory
preflight runs where the run runs); its resources ask Ray for that memory. Worker failures come back
as failed runs with their error line. Ray is an optional extra (`pip install 'widecli[ray]'`).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterator

import torch

from widecli import __version__
from widecli.config.schema import RunSpec
from widecli.data.registry import shape_of
from widecli.engine import threads as threads_mod
from widecli.engine.device import resolve_device
from widecli.errors import SweepError, WidecliError
from widecli.execute import preflight, provenance
from widecli.execute.run import (
    Context,
    Event,
    GroupReport,
    claim,
    dataset,
    label,
    publish,
    record_lost_lease,
    state_of,
    train_group,
)
from widecli.store import lock
from widecli.store import runs as store

VERSIONS = {"widecli": __version__, "torch": torch.__version__}


class WorkerMismatch(WidecliError):
    """A Ray worker runs another widecli or torch than the driver."""


def shared_checkpoint_dir(results: str, spec: RunSpec) -> Path | None:
    """The run's directory in the results folder when this worker can write there (a shared file
    system), else None: no in-run checkpoints for this task."""
    d = store.run_dir(results, spec)
    try:
        d.mkdir(parents=True, exist_ok=True)
        return d if os.access(d, os.W_OK) else None
    except OSError:
        return None


def _task(spec_dicts: list[dict], device: str, threads: int, results: str, driver: dict,
          requested: int | None = None) -> dict:
    """A Ray task: check the worker, train a group, return everything the driver needs to write it."""
    if driver != VERSIONS:
        raise WorkerMismatch(f"a Ray worker runs widecli {VERSIONS['widecli']} with torch {VERSIONS['torch']} "
                             f"but the driver widecli {driver['widecli']} with torch {driver['torch']}; install "
                             f"the same versions on every node (or pass them in a Ray runtime_env)")
    threads_mod.configure(requested, 1, cap=threads)  # within the task's num_cpus
    dev = resolve_device(device)
    specs = [RunSpec.model_validate(d) for d in spec_dicts]
    preflight.memory(specs, dev)  # on the worker's own device and memory
    ckpt = shared_checkpoint_dir(results, specs[0]) if specs[0].train.checkpoint_every else None
    resumed = ckpt is not None and (ckpt / store.CHECKPOINT).is_file()
    out = []
    for o, result in train_group(specs, dev, dataset(specs[0], dev), record_failures=True, checkpoint_dir=ckpt):
        state = state_of(o)
        buf = None
        if state is not None:
            b = io.BytesIO()
            torch.save(state, b)
            buf = b.getvalue()
        out.append({"spec": o.spec.model_dump(mode="json"), "status": o.status, "error": o.error,
                    "metrics": o.metrics, "result": result, "state": buf})
    return {"runs": out, "checkpoints": ckpt is not None or not specs[0].train.checkpoint_every,
            "resumed": resumed}


def _ray_init(address: str | None):
    """The ray module, connected; and whether we started it (then we shut it down)."""
    try:
        import ray  # optional extra: only `--executor ray` needs it
    except ImportError:
        raise SweepError("--executor ray: ray is not installed; pip install 'widecli[ray]'") from None
    if ray.is_initialized():
        return ray, False
    try:
        ray.init(address=address, log_to_driver=True)  # worker output and errors reach this terminal
        if address == "auto":
            # `auto` also finds a cluster that is shutting down (its processes linger for seconds after
            # ray.shutdown()); one tiny task proves it can run ours.
            # (defined here, so it is pickled by value: workers need not import widecli for it)
            def ping() -> int:
                return 1
            ray.get(ray.remote(ping).remote(), timeout=60)
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as e:
        if address != "auto":
            raise SweepError(f"--address {address}: cannot join the Ray cluster ({str(e).splitlines()[0]})") from None
        if ray.is_initialized():
            ray.shutdown()
        ray.init(log_to_driver=True)  # auto and no (live) cluster running: a local instance
    return ray, True



def _memory(specs: list[RunSpec]) -> int:
    """Bytes to reserve for a group on a worker: the preflight estimate (a lower bound) of its runs;
    0 (no reservation) when the driver cannot describe the data: the worker will say why."""
    try:
        shape, classes = shape_of(specs[0].data)
        return int(preflight.memory_estimate(specs[0], shape, classes).total * len(specs))
    except WidecliError:
        return 0


def execute(groups: list[list[RunSpec]], ctx: Context) -> Iterator[tuple[list[RunSpec], GroupReport]]:
    """Each group a Ray task; the driver holds the locks and writes the returned results."""
    ray, started = _ray_init(ctx.address)
    num_gpus = ctx.num_gpus
    if num_gpus is None:
        num_gpus = 1 if ctx.requested_device != "cpu" and ray.cluster_resources().get("GPU", 0) > 0 else 0
    num_cpus = ctx.num_cpus or 1
    task = ray.remote(_task)
    device = "cuda" if num_gpus else ("cpu" if ctx.requested_device == "auto" else ctx.requested_device)
    inflight, held = {}, []
    try:
        for group in groups:
            mine, locks, busy, elsewhere = claim(group, ctx.results, ctx.force, ctx.retry_failed)
            held += locks
            if not mine:
                yield group, GroupReport(busy=busy, elsewhere=elsewhere)
                continue
            # A data-parallel run (train.gpus = N) reserves N GPUs of the cluster.
            opts = {"num_cpus": num_cpus, "max_retries": 1, "memory": _memory(mine),
                    "num_gpus": max(num_gpus, mine[0].train.gpus) if num_gpus else 0}
            ref = task.options(**opts).remote([s.model_dump(mode="json") for s in mine], device,
                                              max(1, int(num_cpus)), str(ctx.results.resolve()), VERSIONS,
                                              ctx.threads)
            inflight[ref] = (group, mine, locks, GroupReport(busy=busy, elsewhere=elsewhere))
            ctx.emit(Event("start", [label(s) for s in mine]))
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1)
            group, mine, locks, report = inflight.pop(ready[0])
            try:
                payload = _get(ray, ready[0])
                if payload is not None:
                    _write_returned(payload, ctx, report, dict(zip([s.run_id for s in mine], locks)))
                else:
                    report.trained += [(s.run_id, "failed", _worker_error(ray, ready[0])) for s in mine]
            except BaseException:
                for s, h in zip(mine, locks):
                    if h.held():  # never the files of a process that took the run over
                        store.remove_partial(ctx.results, s)
                raise
            finally:
                for h in locks:
                    h.release()
            yield group, report
    finally:
        for ref in inflight:
            ray.cancel(ref, force=True)
        for h in held:
            h.release()
        if started:
            ray.shutdown()


def _get(ray, ref):
    """The task's payload, or None when its worker failed (_worker_error says how); a version
    mismatch stops the sweep with one line."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, WorkerMismatch):
            raise SweepError(str(e.cause)) from None
        return None
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.OutOfMemoryError):
        return None


def _worker_error(ray, ref) -> str:
    """One line: the failing worker's exception."""
    try:
        ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        cause = e.cause if e.cause is not None else e
        text = str(cause).strip().splitlines()
        return f"ray worker: {type(cause).__name__}: {text[-1] if text else ''}"
    except Exception as e:
        text = str(e).strip().splitlines()
        return f"ray worker: {type(e).__name__}: {text[0] if text else ''}"
    return "ray worker failed"


def _write_returned(payload: dict, ctx: Context, report: GroupReport, locks: dict) -> None:
    if not payload["checkpoints"]:
        ctx.emit(Event("note", error="the Ray workers cannot write the results directory (no shared file "
                                     "system): a retried task restarts its runs from epoch 0"))
    for p in payload["runs"]:
        spec = RunSpec.model_validate(p["spec"])
        state = None if p["state"] is None else torch.load(io.BytesIO(p["state"]), weights_only=True)
        lock.journal(ctx.results, spec.recipe, "start", spec.run_id, "ray")
        held = locks[spec.run_id]
        result = {**p["result"], "provenance": ctx.provenance or provenance.collect(None)}
        if publish(ctx.results, spec, p["metrics"], result, state, held) is None:
            record_lost_lease(ctx.results, spec, held, report)
            continue
        lock.journal(ctx.results, spec.recipe, "done", spec.run_id, p["status"])
        report.trained.append((spec.run_id, p["status"], p["error"]))
