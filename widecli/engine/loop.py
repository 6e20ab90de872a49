"""The training loop: one run, or K runs differing only in seed trained as one stacked model.

`fit()` assembles the four choices once - the batch source (resident tensors or a streamed
folder), the step (autograd or the fused MLP step), the stacking dimension and the distributed
context - and hands them to `epoch_loop()`, which reads top to bottom: per epoch set the learning
rate, train on every batch, evaluate, and tell the callbacks (metrics rows, divergence,
checkpoints, progress). As open_lth's loop with callbacks and airbench's loader with `__iter__`.
The hot loop never synchronizes with the host: losses and hits accumulate on the device and are
read once per epoch. Nothing here prints: progress goes through a callback.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from widecli.config.schema import RunSpec, TrainConfig
from widecli.data.resident import DeviceDataset, ResidentBatches
from widecli.data.stream import StreamBatches, StreamDataset
from widecli.engine import dist as dist_mod
from widecli.engine import masking, threads
from widecli.engine.checkpoint import Checkpoint
from widecli.engine.device import autocast, environment
from widecli.engine.evaluate import evaluate
from widecli.engine.fused import fused_step, fused_usable
from widecli.engine.optim import lr_at, make_optimizer
from widecli.engine.stack import Stack
from widecli.engine.steps import AutogradStep, MaskUpdateStep
from widecli.methods import build
from widecli.models.layout import is_stacked
from widecli.models.registry import arch
from widecli.sparsity import csr
from widecli.sparsity.masks import MaskEnforcer

ProgressFn = Callable[[int, int, list[dict]], None]   # (epoch, epochs, last metrics row of each run)


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
    mask_layers: dict = field(default_factory=dict)  # layer -> {"kept": entries, "moved": fraction (SET/RigL)}


@dataclass
class LoopState:
    """What the epochs so far produced, per run; a checkpoint saves and restores it."""

    k: int
    epochs: int
    epoch: int = 0                               # epochs done
    rows: list[list[dict]] = field(default_factory=list)
    alive: torch.Tensor = None
    diverged_at: list = field(default_factory=list)

    def __post_init__(self):
        self.rows = self.rows or [[] for _ in range(self.k)]
        self.alive = torch.ones(self.k, dtype=torch.bool) if self.alive is None else self.alive
        self.diverged_at = self.diverged_at or [None] * self.k


@dataclass
class EpochResult:
    epoch: int                                   # 1-based
    lr: float
    train_loss: torch.Tensor                     # [K], running averages over the epoch
    train_accuracy: torch.Tensor
    test_loss: torch.Tensor
    test_accuracy: torch.Tensor
    seconds: float
    train_seconds: float = 0.0                   # the training steps alone (no evaluation)
    val_loss: torch.Tensor | None = None         # data.validation
    val_accuracy: torch.Tensor | None = None


def epoch_loop(state: LoopState, model, opt, source, step, test: Callable, callbacks: list, cfg: TrainConfig,
               dist) -> None:
    """Train from state.epoch to cfg.epochs, or until every run has diverged.

    test() gives {"test": (loss, accuracy)} per run, and "val" with a validation split."""
    k = state.k
    for epoch in range(state.epoch, cfg.epochs):
        t0 = time.perf_counter()
        lr = lr_at(cfg, epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        model.train()
        device = next(model.parameters()).device
        loss_sum = torch.zeros(k, device=device)
        correct = torch.zeros(k, dtype=torch.long, device=device)
        for x, y, global_batch in source.epoch(epoch):
            losses, out = step(x, y, global_batch)
            with torch.no_grad():
                loss_sum.add_(losses, alpha=y.shape[1])
                correct.add_((out.argmax(-1) == y).sum(1))
        train_seconds = now(device) - t0
        dist.all_reduce(loss_sum, correct)  # every rank's share of the epoch
        scores = test()
        n = source.train_size
        result = EpochResult(epoch + 1, lr, (loss_sum / n).cpu(), (correct / n).cpu(), *scores["test"],
                             time.perf_counter() - t0, train_seconds, *scores.get("val", (None, None)))
        state.epoch = epoch + 1
        for callback in callbacks:
            callback(state, result)
        if not state.alive.any():
            break


# --------------------------------------------------------------------------- callbacks


def record_rows(state: LoopState, r: EpochResult) -> None:
    """One metrics.csv row per epoch for every run still training."""
    for j in range(state.k):
        if state.alive[j]:
            row = {"epoch": r.epoch, "lr": r.lr, "train_loss": float(r.train_loss[j]),
                   "train_accuracy": float(r.train_accuracy[j]), "test_loss": float(r.test_loss[j]),
                   "test_accuracy": float(r.test_accuracy[j])}
            if r.val_loss is not None:
                row.update(val_loss=float(r.val_loss[j]), val_accuracy=float(r.val_accuracy[j]))
            state.rows[j].append({**row, "seconds": r.seconds})


def stop_diverged(state: LoopState, r: EpochResult) -> None:
    """A non-finite loss stops that run with status `diverged` (its stacked partners go on)."""
    for j in range(state.k):
        if state.alive[j] and not (math.isfinite(r.train_loss[j]) and math.isfinite(r.test_loss[j])):
            state.alive[j], state.diverged_at[j] = False, r.epoch


def save_checkpoints(ckpt: Checkpoint, every: int, model, opt, masks, generators, dynamic=None) -> Callable:
    def save(state: LoopState, r: EpochResult) -> None:
        if r.epoch % every == 0 or r.epoch == state.epochs:
            ckpt.save(r.epoch, model, opt, masks, generators, state.rows, state.alive, state.diverged_at, dynamic)
    return save


def report_progress(on_epoch: ProgressFn) -> Callable:
    def report(state: LoopState, r: EpochResult) -> None:
        on_epoch(r.epoch, state.epochs, [rows[-1] for rows in state.rows if rows])
    return report


def now(device: torch.device) -> float:
    """perf_counter after the device's queued work (a CUDA epoch is timed when it has run)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class EpochClock:
    """Callback: the training seconds of each epoch (train steps only, not evaluation), for the
    mean that result.json records as `epoch_seconds`: over the epochs after the first one this
    process trained (the first pays one-off costs: kernel compilation, allocator warm-up), divided
    by K when K runs train stacked (each run's share, as `wall_time_s`)."""

    def __init__(self):
        self.seconds: list[float] = []

    def __call__(self, state: LoopState, r: EpochResult) -> None:
        self.seconds.append(getattr(r, "train_seconds", r.seconds))

    def mean(self, k: int) -> float | None:
        timed = self.seconds[1:] or self.seconds
        return sum(timed) / len(timed) / k if timed else None


# --------------------------------------------------------------------------- assembly


class _Batches:
    """A batch source's training batches with the global batch size of each (for the loss scale)."""

    def __init__(self, source, batch_size: int):
        self.source, self.batch_size, self.train_size = source, batch_size, source.train_size

    def epoch(self, epoch: int):
        for i, (x, y) in zip(range(0, self.train_size, self.batch_size), self.source.epoch(epoch)):
            yield x, y, min(self.batch_size, self.train_size - i)


def batch_source(data: DeviceDataset | StreamDataset, specs: list[RunSpec], device: torch.device, dist):
    """Resident tensors (K seeds, each its own order) or a streamed folder (one run)."""
    cfg = specs[0].train
    if isinstance(data, StreamDataset):
        return StreamBatches(data, specs[0].seed, cfg.batch_size, device, dist.shard)
    return ResidentBatches(data, [s.seed for s in specs], cfg.batch_size, cfg.augment, dist.shard)


def fit(specs: list[RunSpec], data: DeviceDataset | StreamDataset, device: torch.device,
        on_epoch: ProgressFn | None = None, checkpoint_dir=None) -> list[Outcome]:
    """Train one run, or several runs differing only in seed stacked into one model.

    With checkpoint_dir and train.checkpoint_every, resumes from and saves a checkpoint there."""
    spec, cfg, k = specs[0], specs[0].train, len(specs)
    start, dist = time.perf_counter(), dist_mod.context()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)
    def batches(n: int) -> list:  # mask families scored on data (snip): the first training batches, unsharded
        return list(itertools.islice(batch_source(data, specs, device, dist_mod.Single()).epoch(0), n))
    built = build(specs, data.input_shape, data.num_classes, device, batches)
    model = built.model
    _, threads_rule = threads.apply(specs, data.input_shape, data.num_classes, device)
    sparse = csr.sparse_layers(cfg.backend, built.plan, device, k, model)
    csr.sparsify(model, built.masks, sparse)
    channels_last = device.type == "cuda" and any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    if channels_last:
        model.to(memory_format=torch.channels_last)  # NHWC: faster cuDNN convs (DESIGN: Training)
    stack = Stack(k, any(is_stacked(m) for m in model.modules()), arch(spec.model).grouped, channels_last)
    if k > 1 and not stack.stacked:
        raise ValueError(f"{spec.model.arch} cannot train stacked runs")
    forward = dist.wrap(model, torch.compile(model) if cfg.compile else model, device)
    opt = make_optimizer(cfg, model.parameters())
    enforcer = MaskEnforcer(model, built.masks)
    amp, precision = autocast(cfg, device)
    source = batch_source(data, specs, device, dist)
    fused = cfg.fused == "auto" and fused_usable(model, opt, precision, cfg, dist.world > 1)
    step = fused_step(model, opt, enforcer) if fused else AutogradStep(model, forward, opt, enforcer, stack, amp, dist)
    dynamic = masking.updater(specs, built, model, opt, enforcer, math.ceil(source.train_size / cfg.batch_size))
    step = MaskUpdateStep(step, dynamic) if dynamic else step
    state = LoopState(k, cfg.epochs)
    clock = EpochClock()
    callbacks = [record_rows, stop_diverged, clock]
    if checkpoint_dir and cfg.checkpoint_every:
        ckpt = Checkpoint(checkpoint_dir, [s.run_id for s in specs])
        state.epoch = ckpt.restore(model, opt, built.masks, source.generators, state.rows, state.alive,
                                   state.diverged_at, dynamic)
        callbacks.append(save_checkpoints(ckpt, cfg.checkpoint_every, model, opt, built.masks, source.generators,
                                          dynamic))
    if on_epoch:
        callbacks.append(report_progress(on_epoch))
    splits = ["test", *(["val"] if source.has_validation else [])]
    epoch_loop(state, model, opt, _Batches(source, cfg.batch_size), step,
               lambda: {s: evaluate(model, source, s, stack, amp, dist) for s in splits}, callbacks, cfg, dist)

    # Train metrics above are running averages over the epoch; the final ones are a clean pass.
    train_loss, train_acc = evaluate(model, source, "train", stack, amp, dist)
    csr.densify(model)  # the stored state keeps the dense [K, out, in] layout
    kept = masking.records(model, built.masks, built.plan, dynamic, k, state.alive)
    wall, env = time.perf_counter() - start, environment(device, precision)
    outcomes = []
    for j, s in enumerate(specs):
        rows = state.rows[j]
        final = {"test_accuracy": rows[-1]["test_accuracy"], "test_loss": rows[-1]["test_loss"],
                 "train_accuracy": float(train_acc[j]), "train_loss": float(train_loss[j]),
                 "best_test_accuracy": max(r["test_accuracy"] for r in rows),
                 **({"val_accuracy": rows[-1]["val_accuracy"], "val_loss": rows[-1]["val_loss"]}
                    if "val_accuracy" in rows[-1] else {}),
                 "epochs_run": len(rows), "diverged_at_epoch": state.diverged_at[j],
                 "wall_time_s": wall / k, "stacked_with": k, "backend": "sparse" if sparse else "dense",
                 "sparse_layers": ",".join(sparse), "fused_step": fused, **env, "threads_rule": threads_rule,
                 "epoch_seconds": clock.mean(k), **({"mask_updates": dynamic.updates} if dynamic else {})}
        outcomes.append(Outcome(s, "ok" if state.alive[j] else "diverged", rows, final,
                                stack.slice_state(model, j), stack.slice_masks(built.masks, j), mask_layers=kept[j]))
    return outcomes
