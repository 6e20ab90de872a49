"""Train RunSpecs and write them to the store: the one place `train`, `sweep` and `ablate` share."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Callable

import torch

from widecli import data as data_mod
from widecli import checkpoint, distributed, store
from widecli.build import Plan, plan
from widecli.recipe import RunSpec
from widecli.train import Outcome, train


def weights_summary(p: Plan) -> dict:
    """The weight accounting that result.json records and `check` prints."""
    return {"budget": p.budget, "dense_weights": p.dense_weights, "nonzeros": p.nonzeros,
            "connectivity": p.connectivity, "budget_gap": p.budget - p.nonzeros,
            "other_params": p.other_params, "widths": p.widths, "ranks": p.ranks, "layers": p.layers()}


def train_group(specs: list[RunSpec], device: torch.device, ds: data_mod.DeviceDataset,
                on_epoch: Callable[[int, int, list[dict]], None] | None = None,
                record_failures: bool = False, checkpoint_dir=None) -> list[tuple[Outcome, dict]]:
    """Train one run (or K stacked seeds); (outcome, result.json body) per run, nothing written
    (but checkpoints in checkpoint_dir). train.gpus > 1 trains data-parallel (widecli.distributed).

    With record_failures, an exception in training becomes status `failed` with its error for
    every run of the group (a sweep goes on); interrupts (KeyboardInterrupt) always propagate.
    """
    try:
        outcomes = (distributed.train(specs, device, on_epoch, checkpoint_dir) if distributed.wanted(specs)
                    else train(specs, ds, device, on_epoch, checkpoint_dir))
    except Exception as e:
        if not record_failures:
            raise
        error, trace = f"{type(e).__name__}: {e}".splitlines()[0], traceback.format_exc()
        outcomes = [Outcome(s, "failed", error=error) for s in specs]
    else:
        trace = None
    try:
        weights = weights_summary(plan(specs[0], ds.input_shape, ds.num_classes))
    except Exception:
        if not record_failures:
            raise
        weights = {}
    written = []
    for o in outcomes:
        result = {"status": o.status, "error": o.error, "final": o.final, "weights": weights,
                  "data": {"input_shape": list(ds.input_shape), "num_classes": ds.num_classes,
                           "train_size": len(ds.y_train), "test_size": len(ds.y_test)}}
        if trace:
            result["traceback"] = trace
        written.append((o, result))
    return written


def state_of(o: Outcome) -> dict | None:
    """What model.pt holds: the trained state and masks (nothing for a failed run)."""
    return None if o.status == "failed" else {"state": o.state, "masks": o.masks}


def run(specs: list[RunSpec], results: str | Path, device: torch.device,
        dataset: data_mod.DeviceDataset | None = None,
        on_epoch: Callable[[int, int, list[dict]], None] | None = None,
        record_failures: bool = False) -> list[tuple[Outcome, Path]]:
    """Train one run (or K stacked seeds) and store each; returns (outcome, run directory) pairs.

    On an interrupt the runs' half-written directories are removed (finished runs are kept), so
    re-running the same command resumes cleanly.
    """
    ds = dataset or data_mod.load(specs[0].data, device)
    # A checkpoint (train.checkpoint_every) lives in the first run's directory and survives an
    # interrupt (store.remove_partial keeps it): the next attempt resumes from it.
    if distributed.active():  # launched by torchrun: every rank trains, only rank 0 writes
        specs = distributed.check(specs)
        if not distributed.is_main():
            train_group(specs, device, ds, on_epoch, checkpoint_dir=store.run_dir(results, specs[0]))
            return []
    ckpt = store.run_dir(results, specs[0])
    try:
        written = [(o, store.write_run(results, o.spec, o.metrics, result, state_of(o)))
                   for o, result in train_group(specs, device, ds, on_epoch, record_failures, ckpt)]
        if all(o.status != "failed" for o, _ in written):  # a failed run retries from its checkpoint
            checkpoint.remove(ckpt)
        return written
    except BaseException:
        for s in specs:
            store.remove_partial(results, s)
        raise
