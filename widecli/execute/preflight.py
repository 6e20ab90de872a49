"""Checks made before any training starts, so a sweep fails in its first second, not its third hour:
the results directory can be listed and written, each run's model fits the device's memory, and
(`widecli check`) each planned mask leaves no unit dead.

The memory estimate is made on the meta device from `methods.plan_weights` (no allocation): fp32 weights,
gradients and optimizer state, masks, and the activations of one training batch (every leaf
module's output, kept for the backward). The data set and framework workspace are not counted, so
the estimate is a lower bound: a refused run could not have trained.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from widecli.config.schema import RunSpec
from widecli.engine.device import resolve_device
from widecli.errors import ResourceError, StoreError
from widecli.methods import WeightPlan, distinct_models, plan_weights, planned_masks, trace_meta
from widecli.sparsity.masks import fan_stats
from widecli.store import runs as store

FP32 = 4


# --------------------------------------------------------------------------- results directory


def results_dir(results: str | Path, recipes: list[str], write: bool = True) -> None:
    """Refuse, naming the directory, a results folder that cannot be listed (or written)."""
    for name in recipes:
        folder = Path(results) / name
        for p in (Path(results), folder):
            try:
                not_dir = p.exists() and not p.is_dir()
            except OSError as e:  # a parent that cannot be searched
                raise StoreError(f"--results: cannot read {p} ({e.strerror or e}); give a directory you "
                                 f"can read and write") from None
            if not_dir:
                raise StoreError(f"--results: {p} is not a directory; give a folder for the results")
        try:
            if write:
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"--results: cannot create {folder} ({e.strerror or e}); give a writable "
                             f"directory (--results DIR)") from None
        try:
            if folder.is_dir():
                os.listdir(folder)
        except OSError as e:
            raise StoreError(f"--results: cannot read {folder} ({e.strerror or e}); give a directory "
                             f"you can read and write") from None
        if write:
            try:
                with tempfile.TemporaryFile(dir=folder, prefix=".widecli-probe."):
                    pass
            except OSError as e:
                raise StoreError(f"--results: {folder} is not writable ({e.strerror or e}); give a "
                                 f"writable directory (--results DIR)") from None


# --------------------------------------------------------------------------- memory


@dataclass
class MemoryEstimate:
    weights: int        # bytes of fp32 parameters (weights, biases, BatchNorm)
    gradients: int
    optimizer: int      # momentum / Adam moments
    masks: int
    activations: int    # outputs of every leaf module for one training batch

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.masks + self.activations


def memory_estimate(spec: RunSpec, input_shape, num_classes: int) -> MemoryEstimate:
    """Bytes one run needs to train, from its plan and a forward pass on the meta device."""
    p = plan_weights(spec, input_shape, num_classes)
    params = p.dense_weights + p.other_params
    states = {"sgd": 1 if spec.train.momentum > 0 else 0, "adam": 2, "adamw": 2}[spec.train.optimizer]
    masks = sum(math.prod(p.shapes[n]) for n in p.masked)
    return MemoryEstimate(FP32 * params, FP32 * params, FP32 * states * params, FP32 * masks,
                    FP32 * _activation_elements(spec, p, input_shape, num_classes))


def _activation_elements(spec: RunSpec, p: WeightPlan, input_shape, num_classes: int) -> int:
    total = 0

    def count(module, output) -> None:
        nonlocal total
        total += output.numel()

    batch = spec.train.batch_size
    if not trace_meta(spec, p, input_shape, num_classes, batch, count):
        # An op without a meta kernel: count the weights' outputs only (a lower bound all the same).
        total = batch * sum(s[0] for s in p.shapes.values())
    return total


def available_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, what they are) that a run on `device` may use now."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free, f"free memory on {device}"
    try:
        import psutil  # optional: not a dependency; /proc/meminfo below is the fallback

        return psutil.virtual_memory().available, "available RAM"
    except ImportError:
        pass
    try:  # Linux's own estimate of what can be allocated without swapping (free + reclaimable cache)
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "available RAM"
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "physical RAM"


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024


def width_keys(spec: RunSpec) -> str:
    """The recipe keys that set a run's size, with their values (for the message)."""
    width = f"model.hidden {spec.model.hidden}" if spec.model.arch == "mlp" else f"model.width {spec.model.width}"
    return f"{width}, widen.factors {spec.factor:g}, train.batch_size {spec.train.batch_size}"


def memory_estimates(specs: list[RunSpec]) -> list[tuple[RunSpec, MemoryEstimate]]:
    """The memory estimate of each distinct model (one run per stack key) of `specs`."""
    return [(s, memory_estimate(s, shape, classes)) for s, shape, classes in distinct_models(specs)]


def unfit(specs: list[RunSpec], device: torch.device) -> tuple[list[tuple[RunSpec, MemoryEstimate]], int, str]:
    """The runs (one per stacked group) whose model cannot fit in the device's memory, largest
    first, with what the device has: (runs, bytes available, what they are)."""
    return unfit_of(memory_estimates(specs), device)


def unfit_of(found: list[tuple[RunSpec, MemoryEstimate]],
             device: torch.device) -> tuple[list[tuple[RunSpec, MemoryEstimate]], int, str]:
    """`unfit` of estimates already made (memory_estimates)."""
    if not found:
        return [], 0, ""
    free, what = available_memory(device)
    too_big = sorted(((s, e) for s, e in found if e.total > free), key=lambda se: -se[1].total)
    return too_big, free, what


def refusal(spec: RunSpec, e: MemoryEstimate, device: torch.device, free: int, what: str) -> str:
    return (f"{spec.recipe} run {spec.run_id} (factor {spec.factor:g}, {spec.method}) needs about "
            f"{size(e.total)} of memory to train (weights {size(e.weights)}, gradients {size(e.gradients)}, "
            f"optimizer {size(e.optimizer)}, masks {size(e.masks)}, activations of a batch "
            f"{size(e.activations)}) but {device.type} has {size(free)} {what}; reduce {width_keys(spec)}")


def memory(specs: list[RunSpec], device: torch.device) -> None:
    """Refuse, with the estimate, a run whose model cannot fit in the device's memory."""
    too_big, free, what = unfit(specs, device)
    if too_big:
        raise ResourceError(refusal(*too_big[0], device, free, what))


def before_training(specs: list[RunSpec], results: str | Path, device: str | torch.device,
                    force: bool = False) -> None:
    """Everything `train`, `sweep` and `ablate` check before the first run starts (force: stored
    runs will be trained again too)."""
    results_dir(results, sorted({s.recipe for s in specs}))
    # Runs already stored are not trained again: a finished study of a big model still resumes.
    todo = [s for s in specs if force or not (store.run_dir(results, s) / store.RESULT).exists()]
    memory(todo, device if isinstance(device, torch.device) else resolve_device(device))


# --------------------------------------------------------------------------- masks (issue 29)

# Fan statistics draw the planned masks; above this many masked weights per model, counts only.
MASK_STATS_MAX_WEIGHTS = 50_000_000


def mask_diagnostics(specs: list[RunSpec], input_shape, num_classes: int) -> list[dict]:
    """Per distinct masked model (its first seed's planned mask): per masked layer the kept weights,
    units, fan-in and fan-out (min / median) and the units with no inputs or no outputs; and the
    warnings: dead units (hidden or output units with no inputs; units a layer reads that have no
    outputs there, the data's own features excepted) and layers keeping fewer weights than units.

    snip and synflow masks are chosen when a run starts (from its initialized model): they get the
    count checks only."""
    out, by_key = [], {}
    for s in specs:
        by_key.setdefault(s.stack_key(), []).append(s)
    for group in by_key.values():
        s = group[0]
        p = plan_weights(s, input_shape, num_classes)
        if not p.masked:
            continue
        big = sum(math.prod(p.shapes[n]) for n in p.masked) > MASK_STATS_MAX_WEIGHTS
        masks = None if big else planned_masks(s, p)
        first = next(iter(p.shapes))  # the first weight layer reads the data's features
        layers, dead = {}, []
        for n in p.masked:
            shape, kept = p.shapes[n], p.counts[n]
            d = {"kept": kept, "weights": math.prod(shape), "units_out": shape[0], "units_in": shape[1]}
            if masks is not None:
                d.update(fan_stats(masks[n]))
            layers[n] = d
            few = [f"{u} {side} units" for u, side in ((shape[0], "output"), (shape[1], "input"))
                   if kept < u and (side == "output" or n != first)]
            if few:
                dead.append(f"{n} keeps {kept:,} weights for {' and '.join(few)}")
            if d.get("no_inputs"):
                dead.append(f"{d['no_inputs']:,} of {shape[0]:,} units of {n} have no inputs")
            if d.get("no_outputs") and n != first:
                dead.append(f"{d['no_outputs']:,} of {shape[1]:,} units {n} reads have no outputs there")
        warning = (f"factor {s.factor:g} {s.method} (mask {s.sparsity.mask}, seed {s.seed}): dead units: "
                   f"{'; '.join(dead)}") if dead else None
        out.append({"factor": s.factor, "method": s.method, "mask": s.sparsity.mask, "seed": s.seed,
                    "run_ids": [x.run_id for x in group], "drawn": masks is not None, "layers": layers,
                    "warning": warning})
    return out
