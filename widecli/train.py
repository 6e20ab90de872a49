"""The training loop: one run, or K runs differing only in seed trained as one stacked model.

Data are resident on the device; each step gathers X[perm[i:i+B]] with one index_select (no
per-sample DataLoader on the hot path, as airbench). Masks are enforced after every optimizer step,
so neither momentum nor weight decay can revive a pruned weight. The hot loop never synchronizes
with the host: losses and hits accumulate on the device and are read once per epoch. Nothing here
prints: progress goes through a callback.
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

from widecli import __version__, distributed, models, sparse_backend, stream
from widecli.checkpoint import Checkpoint
from widecli.build import Built, build, plan
from widecli.data import NO_FLIP, DeviceDataset, augment, describe
from widecli.errors import DeviceError
from widecli.fused import FusedStep, usable as fused_usable
from widecli.recipe import RunSpec
from widecli.rng import generator
from widecli.sparsity import weight_modules

EVAL_BATCH = 4096
# Stacking pays on CPU only while one run leaves the cores idle between small matmuls: with the
# fused step, K = 8 stacked is 1.54x at 784-64-10, 1.18x at 784-256-10 (200k weights) and 0.92x at
# 784-1024-10 (800k) (benchmarks/results/stacked.txt).
CPU_STACK_MAX_WEIGHTS = 1 << 19


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


def should_stack(specs: list[RunSpec], device: torch.device, input_shape=None, num_classes=None) -> bool:
    """Whether these runs should train as one stacked model on `device` (`train.stack: auto`).

    Only runs that differ in seed alone, of an architecture with a stack dimension (MLPs), and not
    bound for the sparse backend (CSR weights hold one run). On CPU only small models (see
    CPU_STACK_MAX_WEIGHTS): at 784-1024-10 one run already keeps the cores busy.
    """
    if len(specs) < 2 or any(s.train.stack == "off" for s in specs):
        return False
    s = specs[0]
    if not getattr(models.arch(s.model), "STACKABLE", False):
        return False
    if len({x.seed for x in specs}) != len(specs) or len({x.stack_key() for x in specs}) != 1:
        return False
    if s.train.backend == "sparse":
        return False
    if device.type != "cpu":
        return True
    if input_shape is None:
        input_shape, num_classes = describe(s.data)
    p = plan(s, input_shape, num_classes)
    return p.dense_weights <= CPU_STACK_MAX_WEIGHTS and not sparse_backend.sparse_layers(s.train.backend, p, device)


def lr_at(cfg, epoch: int) -> float:
    """Learning rate for an epoch (schedules step once per epoch, as the official code)."""
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
    if cfg.schedule == "step":
        return cfg.lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    return cfg.lr


def make_optimizer(cfg, params, fused: bool | None = None) -> torch.optim.Optimizer:
    """The recipe's optimizer; fused (one kernel for all parameters) where PyTorch supports it,
    measured ~1.5x cheaper per step than the default per-parameter loop on CPU."""
    params = list(params)
    if fused is None:
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov and cfg.momentum > 0, fused=fused or None)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)


def autocast(cfg, device: torch.device):
    """bf16 autocast on CUDA when precision is auto (DESIGN: Training); fp32 on CPU."""
    name = "bf16" if cfg.precision == "auto" and device.type == "cuda" else cfg.precision
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(name)
    if dtype is None:
        return contextlib.nullcontext(), "fp32"
    return torch.autocast(device.type, dtype=dtype), name


class Masker:
    """Holds (weight, mask) pairs of the dense masked layers; zeroes masked entries in place.

    Zeroing the weights after every step suffices: SGD, Adam and AdamW update each entry from its
    own gradient and state only, so what they do to a masked entry is undone before any forward.
    """

    def __init__(self, built: Built):
        pairs = [(m.weight, built.masks[n].to(m.weight.dtype))
                 for n, m in weight_modules(built.model) if n in built.masks]
        self.weights_, self.masks = [w for w, _ in pairs], [m for _, m in pairs]

    @torch.no_grad()
    def weights(self) -> None:
        if self.weights_:
            torch._foreach_mul_(self.weights_, self.masks)  # one dispatch for all layers


@torch.no_grad()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, stack: int | None, amp) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss and accuracy per stacked run ([K] tensors), in eval mode, on large batches."""
    model.eval()
    k = stack or 1
    loss_sum = torch.zeros(k, device=x.device)
    correct = torch.zeros(k, device=x.device)
    for i in range(0, len(y), EVAL_BATCH):
        xb, yb = to_model_layout(model, x[i:i + EVAL_BATCH]), y[i:i + EVAL_BATCH]
        with amp:
            out = model(xb.unsqueeze(0).expand(k, *xb.shape)) if stack else model(xb)[None]
        out = out.float()
        yk = yb.unsqueeze(0).expand(k, -1)
        # Classes in dim 1: CPU log_softmax over a contiguous last dim of 10 is ~10x slower.
        loss_sum += F.cross_entropy(out.transpose(1, 2).contiguous(), yk, reduction="none").sum(1)
        correct += (out.argmax(-1) == yk).sum(1)
    return loss_sum / len(y), correct / len(y)


def to_model_layout(model, x: torch.Tensor) -> torch.Tensor:
    """Image batches in channels_last when the model was converted to it (CUDA convnets)."""
    if getattr(model, "_channels_last", False) and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def prepare(specs: list[RunSpec], data: DeviceDataset, device: torch.device) -> tuple[Built, list[str]]:
    """Build the model on the device and apply the execution choices: sparse layers, NHWC."""
    built = build(specs, data.input_shape, data.num_classes, device)
    model = built.model
    sparse = sparse_backend.sparse_layers(specs[0].train.backend, built.plan, device, len(specs))
    sparse_backend.sparsify(model, built.masks, sparse)
    if device.type == "cuda" and any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
        model.to(memory_format=torch.channels_last)  # NHWC: faster cuDNN convs (DESIGN: Training)
        model._channels_last = True
    return built, sparse


def train(specs: list[RunSpec], data: DeviceDataset, device: torch.device,
          on_epoch: Callable[[int, int, list[dict]], None] | None = None,
          checkpoint_dir=None) -> list[Outcome]:
    """Train one run, or several runs differing only in seed stacked into one model.

    With checkpoint_dir and train.checkpoint_every, resumes from and saves a checkpoint there."""
    spec, cfg, k = specs[0], specs[0].train, len(specs)
    start = time.perf_counter()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)
    built, sparse = prepare(specs, data, device)
    model = built.model
    stack = getattr(model, "stack", None)
    if k > 1 and not stack:
        raise ValueError(f"{spec.model.arch} cannot train stacked runs")
    forward = torch.compile(model) if cfg.compile else model
    forward = distributed.wrap(model, forward, device)  # DDP when torch.distributed is running
    opt = make_optimizer(cfg, model.parameters())
    masker = Masker(built)
    amp, precision = autocast(cfg, device)
    gens = [generator(s.seed, "data") for s in specs]
    aug_gen = generator(spec.seed, "augment")
    n, bs = len(data.y_train), cfg.batch_size
    flip = data.name not in NO_FLIP
    alive = torch.ones(k, dtype=torch.bool)
    diverged_at: list[int | None] = [None] * k
    rows: list[list[dict]] = [[] for _ in specs]
    streamed = stream.is_stream(data)  # a folder read by DataLoader workers (widecli.stream)
    # Plain fp32 MLPs: forward, backward and update as one no-autograd step (widecli.fused).
    step = (FusedStep(model, opt, masker) if cfg.fused == "auto"
            and fused_usable(model, opt, precision, cfg, streamed) else None)
    ckpt = Checkpoint(checkpoint_dir, [s.run_id for s in specs]) if checkpoint_dir and cfg.checkpoint_every else None
    state = (model, opt, built.masks, [*gens, aug_gen], rows, alive, diverged_at)
    first = ckpt.restore(*state) if ckpt else 0

    for epoch in range(first, cfg.epochs):
        t0 = time.perf_counter()
        lr = lr_at(cfg, epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        if streamed:  # the order comes from stream.batches' own per-epoch generator
            batches = stream.batches(data, spec.seed, epoch, bs, device)
        else:
            perms = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)
            labels = data.y_train[perms]                         # [K, n]: one gather per epoch
        model.train()
        loss_sum = torch.zeros(k, device=device)
        correct = torch.zeros(k, dtype=torch.long, device=device)
        for i in range(0, n, bs):
            if not streamed:
                idx = distributed.shard(perms[:, i:i + bs])  # this rank's slice of the global batch
                # index_select on the flat indices: ~3x cheaper than advanced indexing X[idx] on CPU.
                flat = idx.reshape(-1)
                x = data.x_train.index_select(0, flat).view(k, idx.shape[1], *data.input_shape)
                y = distributed.shard(labels[:, i:i + bs])
            else:
                x, y = next(batches)  # decoded and augmented by the DataLoader workers
            b = y.shape[1]
            if cfg.augment and x.dim() >= 4 and not streamed:
                x = augment(x, aug_gen, flip=flip)
            if step is not None:
                losses, out = step(x, y)  # includes the update and the masking
            else:
                with amp:
                    out = forward(x) if stack else forward(to_model_layout(model, x[0]))[None]
                losses = F.cross_entropy(out.float().flatten(0, 1), y.flatten(), reduction="none")
                losses = losses.view(k, b).mean(1)
                opt.zero_grad(set_to_none=True)
                # The sum's gradient w.r.t. each run's weights is that run's own gradient.
                (losses.sum() * distributed.grad_scale(b, min(bs, n - i))).backward()
                opt.step()
                masker.weights()
            with torch.no_grad():
                loss_sum.add_(losses, alpha=b)
                correct.add_((out.argmax(-1) == y).sum(1))
        distributed.all_reduce(loss_sum, correct)  # every rank's share of the epoch
        test_loss, test_acc = (stream.evaluate(model, data, "test", amp) if streamed
                               else evaluate(model, data.x_test, data.y_test, stack, amp))
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
        if ckpt and ((epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs):
            ckpt.save(epoch + 1, *state)
        if on_epoch:
            on_epoch(epoch + 1, cfg.epochs, [r[-1] for r in rows if r])
        if not alive.any():
            break

    # Train metrics above are running averages over the epoch; the final ones are a clean pass.
    final_train_loss, final_train_acc = (stream.evaluate(model, data, "train", amp) if streamed
                                         else evaluate(model, data.x_train, data.y_train, stack, amp))
    sparse_backend.densify(model)  # the stored state keeps the dense [K, out, in] layout
    wall = time.perf_counter() - start
    env = environment(device, precision)
    outcomes = []
    for j, s in enumerate(specs):
        last = rows[j][-1]
        final = {"test_accuracy": last["test_accuracy"], "test_loss": last["test_loss"],
                 "train_accuracy": float(final_train_acc[j]), "train_loss": float(final_train_loss[j]),
                 "best_test_accuracy": max(r["test_accuracy"] for r in rows[j]),
                 "epochs_run": len(rows[j]), "diverged_at_epoch": diverged_at[j],
                 "wall_time_s": wall / k, "stacked_with": k, "backend": "sparse" if sparse else "dense",
                 "sparse_layers": ",".join(sparse), "fused_step": step is not None, **env}
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
