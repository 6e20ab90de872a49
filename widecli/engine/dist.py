"""torch.distributed helpers: the distributed context a training loop is handed.

`context()` is `SINGLE` in an ordinary process and a `Distributed` context inside a process group
(launched by execute.ddp or torchrun). A run on N processes computes what it computes on one: each
rank takes its slice of every global batch, its loss is scaled so that DDP's gradient average equals
the mean over the global batch (also when the last batch splits unevenly), and epoch sums are
all-reduced. BatchNorm is synchronized across GPUs (SyncBatchNorm; gloo on CPU has none).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def is_main() -> bool:
    """Only rank 0 writes files (checkpoints, the store)."""
    return context().rank == 0


class Single:
    """One process: every helper is the identity."""

    rank, world = 0, 1

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        return idx

    def grad_scale(self, local: int, global_batch: int) -> float:
        return 1.0

    def all_reduce(self, *tensors: torch.Tensor) -> None:
        pass

    def wrap(self, model: torch.nn.Module, forward: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        return forward


class Distributed(Single):
    """One rank of a process group."""

    def __init__(self):
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's columns of a global batch of indices [K, B] (contiguous, sizes differ by <= 1)."""
        return torch.tensor_split(idx, self.world, dim=1)[self.rank]

    def grad_scale(self, local: int, global_batch: int) -> float:
        """Loss factor making DDP's gradient average (over ranks) the mean over the global batch."""
        return local * self.world / global_batch

    def all_reduce(self, *tensors: torch.Tensor) -> None:
        """Sum tensors over ranks, in place."""
        for t in tensors:
            dist.all_reduce(t)

    def wrap(self, model, forward, device):
        """The forward module DDP-wrapped (BatchNorm synchronized on CUDA)."""
        if device.type == "cuda":
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # swaps the BN children in place
        ids = [device.index] if device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(forward, device_ids=ids)


SINGLE = Single()


def context() -> Single:
    return Distributed() if active() else SINGLE


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
