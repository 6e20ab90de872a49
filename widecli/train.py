"""The training loop: one run, or K runs differing only in seed trained as one stacked model.

Data are resident on the device; each step gathers X[perm[i:i+B]] (no per-sample DataLoader on the
hot path, as airbench). Masks are enforced on gradients and after every optimizer step, so neither
momentum nor weight decay can revive a pruned weight. Nothing here prints: progress goes through a
callback.
"""

from __future__ import annotations

import contextlib
import math
import platform
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from widecli import __version__
from widecli.build import Built, build
from widecli.data import NO_FLIP, DeviceDataset, augment
from widecli.errors import DeviceError
from widecli.recipe import RunSpec
from widecli.rng import generator
from widecli.sparsity import weight_modules

EVAL_BATCH = 4096


@dataclass
class Outcome:
    """What one run produced: per-epoch metrics, final metrics, the trained state and its masks."""

    spec: RunSpec
    status: str                                  # ok | diverged | failed
    metrics: list[dict] = field(default_factory=list)
    final: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)    # model state_dict of this run alone
    masks: dict = field(default_factory=dict)
    error: str | None = None


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


def lr_at(cfg, epoch: int) -> float:
    """Learning rate for an epoch (schedules step once per epoch, as the official code)."""
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
    if cfg.schedule == "step":
        return cfg.lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    return cfg.lr


def make_optimizer(cfg, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov and cfg.momentum > 0)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def autocast(cfg, device: torch.device):
    """bf16 autocast on CUDA when precision is auto (DESIGN: Training); fp32 on CPU."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
    if cfg.precision == "auto" and device.type == "cuda":
        dtype = torch.bfloat16
    if dtype is None:
        return contextlib.nullcontext(), "fp32"
    return torch.autocast(device.type, dtype=dtype), str(dtype).removeprefix("torch.").replace("bfloat16", "bf16").replace("float16", "fp16")


class Masker:
    """Holds (weight, mask) pairs; zeroes masked gradients and weights in place."""

    def __init__(self, built: Built):
        self.pairs = [(m.weight, built.masks[n].to(m.weight.dtype))
                      for n, m in weight_modules(built.model) if n in built.masks]

    @torch.no_grad()
    def grads(self) -> None:
        for w, m in self.pairs:
            if w.grad is not None:
                w.grad.mul_(m)

    @torch.no_grad()
    def weights(self) -> None:
        for w, m in self.pairs:
            w.mul_(m)


@torch.no_grad()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, stack: int | None, amp) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss and accuracy per stacked run ([K] tensors), in eval mode, on large batches."""
    model.eval()
    k = stack or 1
    loss_sum = torch.zeros(k, device=x.device)
    correct = torch.zeros(k, device=x.device)
    for i in range(0, len(y), EVAL_BATCH):
        xb, yb = x[i:i + EVAL_BATCH], y[i:i + EVAL_BATCH]
        with amp:
            out = model(xb.unsqueeze(0).expand(k, *xb.shape)) if stack else model(xb)[None]
        out = out.float()
        yk = yb.unsqueeze(0).expand(k, -1)
        loss_sum += F.cross_entropy(out.flatten(0, 1), yk.flatten(), reduction="none").view(k, -1).sum(1)
        correct += (out.argmax(-1) == yk).sum(1)
    return loss_sum / len(y), correct / len(y)


def train(specs: list[RunSpec], data: DeviceDataset, device: torch.device,
          on_epoch: Callable[[int, int, list[dict]], None] | None = None) -> list[Outcome]:
    """Train one run, or several runs differing only in seed stacked into one model."""
    spec, cfg, k = specs[0], specs[0].train, len(specs)
    start = time.perf_counter()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)
    built = build(specs, data.input_shape, data.num_classes, device)
    model = built.model
    if device.type == "cuda" and any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
        model.to(memory_format=torch.channels_last)  # NHWC: faster cuDNN convs (DESIGN: Training)
    stack = getattr(model, "stack", None)
    if k > 1 and not stack:
        raise ValueError(f"{spec.model.arch} cannot train stacked runs")
    opt = make_optimizer(cfg, model.parameters())
    masker = Masker(built)
    amp, precision = autocast(cfg, device)
    gens = [generator(s.seed, "data") for s in specs]
    aug_gen = generator(spec.seed, "augment")
    n, bs = len(data.y_train), cfg.batch_size
    alive = torch.ones(k, dtype=torch.bool)
    diverged_at: list[int | None] = [None] * k
    rows: list[list[dict]] = [[] for _ in specs]

    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        lr = lr_at(cfg, epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        perms = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)
        model.train()
        loss_sum = torch.zeros(k, device=device)
        correct = torch.zeros(k, device=device)
        for i in range(0, n, bs):
            idx = perms[:, i:i + bs]
            x, y = data.x_train[idx], data.y_train[idx]          # [K, b, ...], [K, b]
            if cfg.augment and x.dim() >= 4:
                x = augment(x, aug_gen, flip=data.name not in NO_FLIP)
            with amp:
                out = model(x) if stack else model(x[0])[None]
            losses = F.cross_entropy(out.float().flatten(0, 1), y.flatten(), reduction="none")
            losses = losses.view(k, -1).mean(1)
            opt.zero_grad(set_to_none=True)
            # The sum's gradient w.r.t. each run's weights is that run's own gradient.
            losses.sum().backward()
            masker.grads()
            opt.step()
            masker.weights()
            with torch.no_grad():
                loss_sum += losses.detach() * y.shape[1]
                correct += (out.argmax(-1) == y).sum(1)
        test_loss, test_acc = evaluate(model, data.x_test, data.y_test, stack, amp)
        train_loss, train_acc = (loss_sum / n).cpu(), (correct / n).cpu()
        test_loss, test_acc = test_loss.cpu(), test_acc.cpu()
        seconds = time.perf_counter() - t0
        for j in range(k):
            if not alive[j]:
                continue
            if not (math.isfinite(train_loss[j]) and math.isfinite(test_loss[j])):
                alive[j], diverged_at[j] = False, epoch + 1
            rows[j].append({"epoch": epoch + 1, "lr": lr, "train_loss": float(train_loss[j]),
                            "train_accuracy": float(train_acc[j]), "test_loss": float(test_loss[j]),
                            "test_accuracy": float(test_acc[j]), "seconds": seconds})
        if on_epoch:
            on_epoch(epoch + 1, cfg.epochs, [r[-1] for r in rows if r])
        if not alive.any():
            break

    # Train metrics above are running averages over the epoch; the final ones are a clean pass.
    final_train_loss, final_train_acc = evaluate(model, data.x_train, data.y_train, stack, amp)
    wall = time.perf_counter() - start
    env = environment(device, precision)
    outcomes = []
    for j, s in enumerate(specs):
        last = rows[j][-1]
        final = {"test_accuracy": last["test_accuracy"], "test_loss": last["test_loss"],
                 "train_accuracy": float(final_train_acc[j]), "train_loss": float(final_train_loss[j]),
                 "best_test_accuracy": max(r["test_accuracy"] for r in rows[j]),
                 "epochs_run": len(rows[j]), "diverged_at_epoch": diverged_at[j],
                 "wall_time_s": wall / k, "stacked_with": k, **env}
        outcomes.append(Outcome(s, "ok" if alive[j] else "diverged", rows[j], final,
                                slice_state(model, j, stack), {n: m[j:j + 1].cpu() if stack else m.cpu()
                                                               for n, m in built.masks.items()}))
    return outcomes


def slice_state(model, j: int, stack: int | None) -> dict:
    """State dict of run j alone (stacked tensors keep a leading dimension of 1)."""
    return {n: (t[j:j + 1] if stack else t).detach().cpu().clone() for n, t in model.state_dict().items()}


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def environment(device: torch.device, precision: str) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"device": str(device), "device_name": name, "precision": precision,
            "peak_memory_bytes": peak_memory_bytes(device), "threads": torch.get_num_threads(),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "widecli": __version__}}
