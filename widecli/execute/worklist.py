"""A sweep's work list: each run's status in the store (RUN_STATUSES), which runs are to train,
which train together (stacked seeds) and how much work each group is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from widecli.config.schema import RunSpec
from widecli.data.registry import shape_of
from widecli.engine import threads
from widecli.errors import WidecliError
from widecli.methods import distinct_models, plan_weights
from widecli.models.registry import arch
from widecli.sparsity import csr
from widecli.store import runs as store

RUN_STATUSES = ("new", "finished", "failed", "partial", "corrupt")
# Stacking pays on CPU only while one run leaves the cores idle between small matmuls: the MLP
# threshold sits where stacked steps stop beating solo ones in benchmarks/results/stacked.txt.
CPU_STACK_MAX_WEIGHTS = 1 << 19
# Convnets on CPU: between the small convnet where stacking pays and the ResNet-18 where it gains
# nothing (benchmarks/results/stacked_conv.txt).
CPU_STACK_MAX_CONV_MACS = 1e8


@dataclass(frozen=True)
class RunStatus:
    spec: RunSpec
    run_id: str
    status: str                 # new | finished | failed | partial | corrupt
    todo: bool                  # whether this sweep trains it
    error: str | None = None    # why a corrupt result.json was rejected


def status_of(results: str | Path, spec: RunSpec) -> tuple[str, str | None]:
    """(status, reason) of one run in the store."""
    d = store.run_dir(results, spec)
    if not (d / store.RESULT).exists():
        return ("partial" if d.is_dir() and any(d.iterdir()) else "new"), None
    try:
        result = store.read_result(d)
    except WidecliError as e:
        return "corrupt", str(e)
    return ("failed" if result.get("status") == "failed" else "finished"), None


def is_todo(status: str, force: bool, retry_failed: bool) -> bool:
    """Whether a run of this status is (still) to be trained."""
    return force or status in ("new", "partial", "corrupt") or (status == "failed" and retry_failed)


def run_statuses(specs: list[RunSpec], results: str | Path, force: bool = False, retry_failed: bool = False) -> list[RunStatus]:
    """Every distinct run with its status in the store and whether this sweep should train it."""
    out, seen = [], set()
    for spec in specs:
        if spec.run_id in seen:
            continue
        seen.add(spec.run_id)
        status, error = status_of(results, spec)
        out.append(RunStatus(spec, spec.run_id, status, is_todo(status, force, retry_failed), error))
    return out


# A training step's fixed cost (Python, kernel launches, its share of the per-epoch evaluation) in
# multiply-adds of compute: the intercept of step time against multiply-adds per step
# (benchmarks/results/threads.txt). Without it a small model 8x wider would count 8x the time,
# though its steps take far less than 8x as long.
STEP_OVERHEAD_MACS = 1e7


def work(specs: list, stacked: dict[str, int] | None = None) -> dict[str, float]:
    """run_id -> the run's training work, in multiply-adds per training example over all epochs:
    epochs x (forward MACs of one example + its share of a step's fixed cost, STEP_OVERHEAD_MACS
    over the batch and the runs stacked with it; `stacked`: run_id -> runs in its group, default 1).
    What progress estimates the time left from: a 1000-epoch group weighs 10x a 100-epoch one, a
    wide model more than a narrow one, and a run alone more than its share of a stacked group."""
    def per_example(s, shape, classes) -> float:
        try:
            if shape is not None:
                return threads.step_macs([s], shape, classes) / s.train.batch_size
        except WidecliError:
            pass
        return 1.0  # not plannable here (a worker reports why): weigh by epochs alone

    macs = {s.stack_key(): per_example(s, shape, classes)
            for s, shape, classes in distinct_models(specs, skip_undescribed=True)}
    k = stacked or {}
    return {s.run_id: s.train.epochs * (macs[s.stack_key()] + STEP_OVERHEAD_MACS / (s.train.batch_size *
                                                                                    k.get(s.run_id, 1)))
            for s in specs}


def seconds_per_work(results: str | Path, planned: list) -> float | None:
    """This machine's seconds per unit of work (see `work`), from the recorded wall times of the
    planned runs already finished (their recipes' runs.csv: wall_time_s, stacked_with); None
    without any. What a sweep's first estimate of its total time rests on."""
    done = [p.spec for p in planned if p.status == "finished"]
    walls, stacked = {}, {}
    for recipe in sorted({s.recipe for s in done}):
        try:
            index = pd.read_csv(Path(results) / recipe / store.INDEX)
        except (OSError, ValueError):
            continue
        if {"run_id", "wall_time_s"} <= set(index.columns):
            walls.update(zip(index["run_id"], index["wall_time_s"]))
            if "stacked_with" in index:
                stacked.update(zip(index["run_id"], index["stacked_with"].fillna(1).astype(int)))
    known = [s for s in done if s.run_id in walls and walls[s.run_id] == walls[s.run_id]]
    if not known:
        return None
    w = work(known, stacked)
    total = sum(w.values())
    return sum(float(walls[s.run_id]) for s in known) / total if total else None


def should_stack(specs: list, device: torch.device, input_shape=None, num_classes=None) -> bool:
    """Whether these runs should train as one stacked model on `device` (`train.stack: auto`).

    Only runs that differ in seed alone, of an architecture that stacks (MLPs: a stack dimension;
    built-in convnets: grouped convolutions, not with bottleneck layers), and not bound for the sparse
    backend (CSR weights hold one run). On GPUs always; on CPU only small models (MLPs up to
    CPU_STACK_MAX_WEIGHTS, convnets up to CPU_STACK_MAX_CONV_MACS per step): beyond, one run
    already keeps the cores busy.
    """
    if len(specs) < 2 or any(s.train.stack == "off" for s in specs):
        return False
    s = specs[0]
    if not arch(s.model).stackable:
        return False
    if len({x.seed for x in specs}) != len(specs) or len({x.stack_key() for x in specs}) != 1:
        return False
    if s.train.backend == "sparse" or s.data.subset_draw == "seed":
        return False  # CSR weights hold one run; each run its own training subset
    if input_shape is None:
        input_shape, num_classes = shape_of(s.data)
    p = plan_weights(s, input_shape, num_classes)
    if s.model.arch != "mlp":  # convnets stack through grouped convs (models.stacked_conv)
        if p.ranks:
            return False  # bottleneck layers are not stacked
        if device.type != "cpu":
            return True
        return threads.step_macs([s], input_shape, num_classes) <= CPU_STACK_MAX_CONV_MACS
    if device.type != "cpu":
        return True
    return p.dense_weights <= CPU_STACK_MAX_WEIGHTS and not csr.sparse_layers(s.train.backend, p, device)


def stack_groups(specs: list, device: torch.device) -> list[list]:
    """Units of work: runs differing only in seed train as one stacked model where the model allows.

    The one place that decides stacking."""
    groups: dict[str, list] = {}
    for s in specs:
        stackable = s.train.stack == "auto" and arch(s.model).stackable
        groups.setdefault(s.stack_key() if stackable else s.run_id, []).append(s)
    return [g for group in groups.values()
            for g in ([group] if len(group) == 1 or should_stack(group, device) else [[s] for s in group])]
