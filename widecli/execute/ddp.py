"""Launching a data-parallel run (`train.gpus` > 1) on several GPUs, or CPU processes.

`launch` spawns `train.gpus` processes (torch.multiprocessing); each joins a process group (nccl on
CUDA, gloo on CPU) and trains the same run with engine.loop.fit, which takes its slice of every global
batch through the distributed context (engine.dist). Rank 0 sends the outcome back; the caller
alone writes the store. Every rank builds the same model and masks from the run's seeds, and the
step enforces the masks after every update on every rank, so they stay identical.
"""

from __future__ import annotations

import io
import queue
import socket
from typing import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from widecli.config.schema import RunSpec
from widecli.data.resident import load_dataset
from widecli.engine.dist import active
from widecli.engine.loop import fit
from widecli.errors import DeviceError, RecipeError


def devices(device: torch.device, gpus: int) -> list[str]:
    """The device of each rank: CPU processes, or N consecutive GPUs from the requested one."""
    if device.type == "cpu":
        return ["cpu"] * gpus
    first = device.index or 0
    if first + gpus > torch.cuda.device_count():
        raise DeviceError(f"train.gpus: {gpus} GPUs from cuda:{first} requested but this machine has "
                          f"{torch.cuda.device_count()}; lower --gpus or train.gpus")
    return [f"cuda:{first + r}" for r in range(gpus)]


def check(specs: list[RunSpec]) -> list:
    """Specs fit for data parallelism: the sparse (CSR) backend holds one process's weights."""
    out = []
    for s in specs:
        if s.train.backend == "sparse":
            raise RecipeError(f"train.backend: sparse cannot run data-parallel (train.gpus = "
                              f"{s.train.gpus}); use dense or auto")
        if s.train.batch_size < s.train.gpus:
            raise RecipeError(f"train.batch_size: {s.train.batch_size} is smaller than train.gpus = "
                              f"{s.train.gpus}; every rank needs examples")
        # auto would pick CSR layers on CPU; dense is an execution key, so the run id is unchanged.
        out.append(s.model_copy(update={"train": s.train.model_copy(update={"backend": "dense"})}))
    return out


def wanted(specs: list[RunSpec]) -> bool:
    """Whether a group should be launched on several processes (not when already one of them)."""
    return specs[0].train.gpus > 1 and not active()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(specs: list[RunSpec], device: torch.device, on_epoch: Callable | None = None, checkpoint_dir=None) -> list:
    """Train a group on train.gpus processes; rank 0's outcomes (nothing written but checkpoints)."""
    specs = check(specs)
    gpus = specs[0].train.gpus
    ranks = devices(device, gpus)
    events = mp.get_context("spawn").Queue()
    threads = max(1, torch.get_num_threads() // gpus)
    procs = mp.spawn(_worker, args=(ranks, _free_port(), specs, checkpoint_dir, events, threads),
                     nprocs=gpus, join=False)
    result = None
    while True:
        # Drain while waiting: a child cannot exit before its queued result has been read.
        result = _drain(events, on_epoch, result)
        if procs.join(timeout=0.2):
            break
    result = _drain(events, on_epoch, result)
    if result is None:
        raise RuntimeError("distributed run ended without a result from rank 0")
    return torch.load(io.BytesIO(result), weights_only=False)


def _drain(events, on_epoch, result):
    while True:
        try:
            kind, payload = events.get_nowait()
        except queue.Empty:
            return result
        if kind == "epoch" and on_epoch:
            on_epoch(*payload)
        elif kind == "result":
            result = payload


def _worker(r: int, ranks: list[str], port: int, specs: list[RunSpec], checkpoint_dir, events, threads: int) -> None:
    device = torch.device(ranks[r])
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(threads)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            init_method=f"tcp://127.0.0.1:{port}", rank=r, world_size=len(ranks))
    try:
        def on_epoch(*args):
            if r == 0:
                events.put(("epoch", args))
        outcomes = fit(specs, load_dataset(specs[0].data, device, specs[0].seed), device, on_epoch, checkpoint_dir)
        if r == 0:
            # As bytes: tensors put on a queue would be shared-memory handles of an exiting process.
            buf = io.BytesIO()
            torch.save(outcomes, buf)
            events.put(("result", buf.getvalue()))
    finally:
        dist.destroy_process_group()
