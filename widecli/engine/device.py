"""The training device: resolving `--device`, autocast precision, and what a run records about it."""

from __future__ import annotations

import contextlib
import platform
import resource
import sys

import torch

from widecli import __version__
from widecli.config.schema import TrainConfig
from widecli.errors import DeviceError


def resolve_device(name: str = "auto") -> torch.device:
    """auto | cpu | cuda | cuda:N -> torch.device, refusing devices this machine does not have."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"--device: unknown device {name!r}; allowed: auto, cpu, cuda, cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name}: no CUDA GPU is available on this machine; use cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s) "
                              f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    elif dev.type != "cpu":
        raise DeviceError(f"--device: unsupported device {name!r}; allowed: auto, cpu, cuda, cuda:N")
    return dev


def autocast(cfg: TrainConfig, device: torch.device):
    """(context, name): bf16 autocast on CUDA when precision is auto (DESIGN: Training); fp32 on CPU."""
    name = "bf16" if cfg.precision == "auto" and device.type == "cuda" else cfg.precision
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(name)
    if dtype is None:
        return contextlib.nullcontext(), "fp32"
    return torch.autocast(device.type, dtype=dtype), name


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def environment(device: torch.device, precision: str) -> dict:
    """What result.json records about where a run trained."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"device": str(device), "device_name": name, "precision": precision,
            "peak_memory_bytes": peak_memory_bytes(device), "threads": torch.get_num_threads(),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "widecli": __version__}}
