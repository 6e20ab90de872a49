"""The Ray executor: each group a Ray task on a cluster (`--address auto|HOST:PORT`) or a local Ray.

The driver holds the runs' locks and writes what the tasks return, so a cluster needs no shared
file system. Ray is an optional extra (`pip install 'widecli[ray]'`).
"""

from __future__ import annotations

import io
from typing import Iterator

import torch

from widecli.config.schema import RunSpec
from widecli.engine.device import resolve_device
from widecli.errors import SweepError
from widecli.execute.run import Context, Event, GroupReport, claim, dataset, label, state_of, train_group
from widecli.store import lock, runs as store


def _task(spec_dicts: list[dict], device: str, threads: int) -> list[dict]:
    """A Ray task: train a group and return everything the driver needs to write it."""
    torch.set_num_threads(threads)
    dev = resolve_device(device)
    specs = [RunSpec.model_validate(d) for d in spec_dicts]
    out = []
    for o, result in train_group(specs, dev, dataset(specs[0], dev), record_failures=True):
        state = state_of(o)
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
        import ray  # optional extra: only `--executor ray` needs it
    except ImportError:
        raise SweepError("--executor ray: ray is not installed; pip install 'widecli[ray]'") from None
    if ray.is_initialized():
        return ray, False
    try:
        ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise SweepError(f"--address {address}: cannot join the Ray cluster ({str(e).splitlines()[0]})") from None
    return ray, True


def execute(groups: list[list[RunSpec]], ctx: Context) -> Iterator[tuple[list[RunSpec], GroupReport]]:
    """Each group a Ray task; the driver holds the locks and writes the returned results."""
    ray, started = _ray_init(ctx.address)
    num_gpus = ctx.num_gpus
    if num_gpus is None:
        num_gpus = 1 if ctx.requested_device != "cpu" and ray.cluster_resources().get("GPU", 0) > 0 else 0
    num_cpus = ctx.num_cpus or 1
    task = ray.remote(_task).options(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=1)
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
            run_task = task.options(num_gpus=max(num_gpus, mine[0].train.gpus)) if num_gpus else task
            ref = run_task.remote([s.model_dump(mode="json") for s in mine], device, max(1, int(num_cpus)))
            inflight[ref] = (group, mine, locks, GroupReport(busy=busy, elsewhere=elsewhere))
            ctx.emit(Event("start", [label(s) for s in mine]))
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


def _write_returned(payloads: list[dict], ctx: Context, report: GroupReport) -> None:
    for p in payloads:
        spec = RunSpec.model_validate(p["spec"])
        state = None if p["state"] is None else torch.load(io.BytesIO(p["state"]), weights_only=True)
        lock.journal(ctx.results, spec.recipe, "start", spec.run_id, "ray")
        store.write_run(ctx.results, spec, p["metrics"], p["result"], state)
        lock.journal(ctx.results, spec.recipe, "done", spec.run_id, p["status"])
        report.trained.append((spec.run_id, p["status"], p["error"]))
