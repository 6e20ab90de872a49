"""The local executor: groups trained in this process, or in `--jobs N` worker processes.

Workers are spawned (safe with CUDA and threads), one device each; each trains its groups through
execute.run.run_group, exactly as the in-process path does, and sends progress Events back.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Iterator

import torch

from widecli.engine import threads as threads_mod
from widecli.execute.run import Context, GroupReport, run_group


def execute(groups: list[list], ctx: Context) -> Iterator[tuple[list, GroupReport]]:
    """Train the groups in this process (jobs 1) or in ctx.jobs worker processes."""
    if ctx.jobs > 1:
        yield from _pool(groups, ctx)
        return
    for group in groups:
        yield group, run_group(group, ctx.results, ctx.device, force=ctx.force,
                               retry_failed=ctx.retry_failed, emit=ctx.emit, provenance=ctx.provenance)


# Worker-process state, set by _init_worker.
_worker: dict = {}


def _init_worker(threads: int | None, jobs: int, devices, events, parent: int) -> None:
    threads_mod.configure(threads, jobs)  # each group picks its threads (engine.threads)
    _worker.update(device=torch.device(devices.get()), events=events, busy=False)
    # Ctrl-C reaches the whole process group: only the driver handles it and stops us by SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _worker_sigterm)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _worker_sigterm(signum, frame) -> None:
    if _worker.get("busy"):
        _worker["stopping"] = True
        raise KeyboardInterrupt  # unwinds the run: its partial files are removed, its locks freed
    os._exit(0)


def _watch_parent(parent: int) -> None:
    # A driver killed by SIGKILL cannot stop us; without it we would train on as an orphan.
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _worker_task(group: list, results: str, force: bool, retry_failed: bool,
                 provenance: dict | None = None) -> GroupReport:
    _worker["busy"] = True
    try:
        return run_group(group, results, _worker["device"], force=force, retry_failed=retry_failed,
                         emit=_worker["events"].put, provenance=provenance)
    finally:
        _worker["busy"] = False
        if _worker.get("stopping"):
            # Stopped by the driver, the run unwound: exit now. Returning would leave the worker
            # waiting for tasks, and the driver's join waiting for it (30 s per worker).
            os._exit(0)


def worker_devices(device: torch.device, requested: str, jobs: int, per_run: int = 1) -> list[str]:
    """One device per worker: with several GPUs and device auto, one GPU each, or the first of a
    block of `per_run` GPUs (train.gpus: a data-parallel run uses cuda:i..cuda:i+per_run-1)."""
    if requested == "auto" and device.type == "cuda" and torch.cuda.device_count() > 1:
        blocks = max(1, torch.cuda.device_count() // per_run)
        return [f"cuda:{(i % blocks) * per_run}" for i in range(jobs)]
    return [str(device)] * jobs


def _pool(groups: list[list], ctx: Context) -> Iterator[tuple[list, GroupReport]]:
    mpc = mp.get_context("spawn")
    devices, events = mpc.Queue(), mpc.Queue()
    workers = min(ctx.jobs, len(groups))
    for d in worker_devices(ctx.device, ctx.requested_device, workers,
                            max(s.train.gpus for g in groups for s in g)):
        devices.put(d)
    pool = ProcessPoolExecutor(workers, mp_context=mpc, initializer=_init_worker,
                               initargs=(ctx.threads, ctx.jobs, devices, events, os.getpid()))
    futures = {pool.submit(_worker_task, g, str(ctx.results), ctx.force, ctx.retry_failed, ctx.provenance): g
               for g in groups}
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
    while True:
        try:
            emit(events.get_nowait())
        except queue.Empty:
            return


def _stop(pool: ProcessPoolExecutor) -> None:
    """Stop the workers: SIGTERM lets each clean its current run's partial files first."""
    # ProcessPoolExecutor has no public API for its processes before Python 3.14; without
    # `_processes` we can only cancel what has not started (running workers finish their run).
    procs = list(getattr(pool, "_processes", {}).values())
    for p in procs:
        p.terminate()
    for p in procs:
        p.join(timeout=30)
    try:
        pool.shutdown(wait=False, cancel_futures=True)
    except Exception:
        pass
