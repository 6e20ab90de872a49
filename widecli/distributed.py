"""Data-parallel runs over several GPUs (or CPU processes) with torch.distributed.

`train_group` spawns `train.gpus` processes (torch.multiprocessing, or joins a torchrun launch
when its environment is set), each trains the same run on its slice of every global batch with
DistributedDataParallel (nccl on CUDA, gloo on CPU), and rank 0 sends the outcome back; the caller
alone writes the store. Every rank builds the same model and masks from the run's seeds, and the
trainer enforces the masks after every step on every rank, so they stay identical.

A run on N processes computes what it computes on one: each rank's loss is scaled so that DDP's
gradient average equals the mean over the global batch (also when the last batch splits
unevenly), and BatchNorm is synchronized across GPUs (SyncBatchNorm; on CPU, gloo has none, so
BatchNorm statistics are per rank there).
"""

from __future__ import annotations

import io
import os
import queue
import socket
from typing import Callable

import torch
import torch.distributed as dist

from widecli.errors import DeviceError, RecipeError


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Only rank 0 writes files (checkpoints, the store)."""
    return rank() == 0


def shard(idx: torch.Tensor) -> torch.Tensor:
    """This rank's columns of a global batch of indices [K, B] (contiguous, sizes differ by <= 1)."""
    return torch.tensor_split(idx, world_size(), dim=1)[rank()] if active() else idx


def grad_scale(local: int, full: int) -> float:
    """Loss factor making DDP's gradient average (over ranks) the mean over the global batch."""
    return local * world_size() / full if active() else 1.0


def all_reduce(*tensors: torch.Tensor) -> None:
    """Sum tensors over ranks, in place (no-op in a single process)."""
    if active():
        for t in tensors:
            dist.all_reduce(t)


def wrap(model: torch.nn.Module, forward: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The forward module DDP-wrapped when distributed (BatchNorm synchronized on CUDA)."""
    if not active():
        return forward
    if device.type == "cuda":
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # swaps the BN children in place
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(forward, device_ids=ids)


def devices(device: torch.device, gpus: int) -> list[str]:
    """The device of each rank: CPU processes, or N consecutive GPUs from the requested one."""
    if device.type == "cpu":
        return ["cpu"] * gpus
    first = device.index or 0
    if first + gpus > torch.cuda.device_count():
        raise DeviceError(f"train.gpus: {gpus} GPUs from cuda:{first} requested but this machine has "
                          f"{torch.cuda.device_count()}; lower --gpus or train.gpus")
    return [f"cuda:{first + r}" for r in range(gpus)]


def check(specs) -> list:
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wanted(specs) -> bool:
    """Whether a group should be launched on several processes (not when already one of them)."""
    return specs[0].train.gpus > 1 and not active()


def train(specs, device: torch.device, on_epoch: Callable | None = None, checkpoint_dir=None) -> list:
    """Train a group on train.gpus processes; rank 0's outcomes (nothing written but checkpoints)."""
    import torch.multiprocessing as mp

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


def _worker(r: int, ranks: list[str], port: int, specs, checkpoint_dir, events, threads: int) -> None:
    from widecli import data as data_mod
    from widecli.train import train as train_one

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
        outcomes = train_one(specs, data_mod.load(specs[0].data, device), device, on_epoch, checkpoint_dir)
        if r == 0:
            # As bytes: tensors put on a queue would be shared-memory handles of an exiting process.
            buf = io.BytesIO()
            torch.save(outcomes, buf)
            events.put(("result", buf.getvalue()))
    finally:
        dist.destroy_process_group()


def init_from_env(device: torch.device) -> torch.device:
    """Join a torchrun launch (RANK, WORLD_SIZE, LOCAL_RANK set): the device of this rank."""
    if active() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device(f"cuda:{local}")
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device
