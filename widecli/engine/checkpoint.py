"""Resumable checkpoints within a run: `<run dir>/checkpoint.pt`, written atomically by rank 0.

A checkpoint holds everything the next epoch depends on: model state (weights, BatchNorm
statistics), optimizer state (momentum), masks (as they are now: SET/RigL change them), the
mask updater's state (its step count and the masks at step 0), the data-order and augmentation
generators, the global RNG, the epoch and the metrics so far. Restoring it and training on gives the same numbers
as never stopping (on CPU). It is kept when a run is interrupted and removed once the run is stored.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from widecli.engine.dist import is_main
from widecli.errors import StoreError
from widecli.store.runs import CHECKPOINT, atomic_write


class Checkpoint:
    """The checkpoint file of a run (or of a stacked group: it names the runs it belongs to)."""

    def __init__(self, run_dir: str | Path, run_ids: list[str]):
        self.path, self.run_ids = Path(run_dir) / CHECKPOINT, list(run_ids)

    def save(self, epoch: int, model, opt, masks: dict, gens: list[torch.Generator], rows, alive,
             diverged_at, dynamic=None) -> None:
        """Write the state after `epoch` epochs (rank 0 only; other ranks hold the same state)."""
        if not is_main():
            return
        body = {"run_ids": self.run_ids, "epoch": epoch, "model": model.state_dict(),
                "optimizer": opt.state_dict(), "masks": {n: m.cpu() for n, m in masks.items()},
                "generators": [g.get_state() for g in gens], "rng": torch.get_rng_state(),
                "rows": rows, "alive": alive.clone(), "diverged_at": list(diverged_at)}
        if dynamic is not None:
            body["dynamic"] = dynamic.state_dict()
        buf = io.BytesIO()
        torch.save(body, buf)
        try:
            atomic_write(self.path, buf.getvalue())
        except OSError as e:
            raise StoreError(f"{self.path}: cannot write checkpoint ({e.strerror or e})") from None

    def restore(self, model, opt, masks: dict, gens: list[torch.Generator], rows, alive,
                diverged_at, dynamic=None) -> int:
        """Load a matching checkpoint into the given objects (in place); the epoch to start at.

        dynamic (a sparsity.dynamic.MaskUpdater): the saved masks replace the run's, whose masks at
        step 0 must be the saved ones at step 0."""
        if not self.path.is_file():
            return 0
        try:
            body = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception:
            return 0  # an unreadable checkpoint only costs the epochs it held
        if body.get("run_ids") != self.run_ids:
            return 0  # another group composition (runs finished since): start afresh
        model.load_state_dict(body["model"])
        opt.load_state_dict(body["optimizer"])
        start = body["dynamic"]["initial"] if dynamic is not None and "dynamic" in body else body["masks"]
        for n, m in masks.items():
            saved = start.get(n)
            if saved is None or not torch.equal(saved.to(m.device), m):
                raise StoreError(f"{self.path}: its mask of {n} differs from the run's; delete the file")
        if dynamic is not None and "dynamic" in body:
            dynamic.load_state_dict(body["dynamic"], body["masks"])
        for g, state in zip(gens, body["generators"]):
            g.set_state(state)
        torch.set_rng_state(body["rng"])
        for mine, saved in zip(rows, body["rows"]):
            mine[:] = saved
        alive.copy_(body["alive"])
        diverged_at[:] = body["diverged_at"]
        return int(body["epoch"])


def remove(run_dir: str | Path) -> None:
    """Delete a run's checkpoint once the finished run is stored."""
    (Path(run_dir) / CHECKPOINT).unlink(missing_ok=True)
