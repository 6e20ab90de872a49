"""Train RunSpecs and write them to the store: the one place `train`, `sweep` and `ablate` share."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from widecli import data as data_mod
from widecli import store
from widecli.build import Plan
from widecli.recipe import RunSpec
from widecli.train import Outcome, train


def weights_summary(p: Plan) -> dict:
    """The weight accounting that result.json records and `check` prints."""
    return {"budget": p.budget, "dense_weights": p.dense_weights, "nonzeros": p.nonzeros,
            "connectivity": p.connectivity, "budget_gap": p.budget - p.nonzeros,
            "other_params": p.other_params, "widths": p.widths, "ranks": p.ranks, "layers": p.layers()}


def run(specs: list[RunSpec], results: str | Path, device: torch.device,
        dataset: data_mod.DeviceDataset | None = None,
        on_epoch: Callable[[int, int, list[dict]], None] | None = None) -> list[tuple[Outcome, Path]]:
    """Train one run (or K stacked seeds) and store each; returns (outcome, run directory) pairs."""
    ds = dataset or data_mod.load(specs[0].data, device)
    outcomes = train(specs, ds, device, on_epoch)
    from widecli.build import plan

    p = plan(specs[0], ds.input_shape, ds.num_classes)
    written = []
    for o in outcomes:
        result = {"status": o.status, "error": o.error, "final": o.final, "weights": weights_summary(p),
                  "data": {"input_shape": list(ds.input_shape), "num_classes": ds.num_classes,
                           "train_size": len(ds.y_train), "test_size": len(ds.y_test)}}
        d = store.write_run(results, o.spec, o.metrics, result, {"state": o.state, "masks": o.masks})
        written.append((o, d))
    return written
