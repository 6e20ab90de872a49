"""The optimizer and the learning-rate schedule of a run (`train.optimizer`, `train.schedule`)."""

from __future__ import annotations

import math

import torch

from widecli.config.schema import TrainConfig


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """Learning rate for an epoch (schedules step once per epoch, as the official code)."""
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
    if cfg.schedule == "step":
        return cfg.lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    return cfg.lr


FUSED_KERNELS = {"sgd": "_fused_sgd_", "adam": "_fused_adam_", "adamw": "_fused_adamw_"}


def make_optimizer(cfg: TrainConfig, params, fused: bool | None = None) -> torch.optim.Optimizer:
    """The recipe's optimizer; fused (one kernel for all parameters) where PyTorch supports it,
    cheaper per step than the default per-parameter loop on CPU (benchmarks/results/peak.txt)."""
    params = list(params)
    if fused is None:
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    # fused=True runs torch's private fused kernel; a torch build without it gets the default loop.
    fused = fused and callable(getattr(torch, FUSED_KERNELS[cfg.optimizer], None))
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov and cfg.momentum > 0, fused=fused or None)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)
