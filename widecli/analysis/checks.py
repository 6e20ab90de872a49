"""What `widecli check`, `widecli layers` and `widecli sweep --dry-run` show before anything trains:
every planned run's weight plan, the memory its model needs to train and the masks it will draw; a
model's weight layers; a sweep's runs against the store. Computed here, printed by cli.render.previews.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from widecli.recipes import expand, make_spec
from widecli.config.schema import Recipe, RunSpec
from widecli.data.registry import shape_of
from widecli.engine.device import resolve_device
from widecli.execute import preflight
from widecli.execute.worklist import RunStatus, run_statuses
from widecli.execute.preflight import MemoryEstimate
from widecli.methods import METHODS, WeightPlan, layer_table, plan_weights
from widecli.models.registry import widenable_layers


@dataclass
class RecipeCheck:
    """A recipe's planned runs with their weight accounting, memory and masks (`widecli check`)."""

    name: str
    shape: tuple
    classes: int
    runs: list[tuple[RunSpec, WeightPlan, bool]]   # per run: its weight plan, whether its method holds the budget
    memory: dict[str, int]                         # run id -> bytes its model needs to train (estimated)
    unfit: list[tuple[RunSpec, MemoryEstimate]]    # models larger than the device's memory, largest first
    free: int                                      # bytes the device has, and what they are (available RAM, ...)
    what: str
    masks: list[dict]                              # per masked model: its masks' diagnostics (preflight)
    device: torch.device

    def refusal(self) -> str:
        """Why the largest model that does not fit is refused, and how many such models there are."""
        n = len(self.unfit)
        return (preflight.refusal(*self.unfit[0], self.device, self.free, self.what)
                + f" ({n} such model{'s' if n > 1 else ''}; the largest shown)")


def check_recipe(r: Recipe, device: str | torch.device = "auto") -> RecipeCheck:
    """Every planned run of a recipe: widths, nonzeros and connectivity, its model's training memory
    against what `device` has, and the planned masks' diagnostics."""
    shape, classes = shape_of(r.data)
    specs = expand(r)
    runs = [(s, plan_weights(s, shape, classes), METHODS.get(s.method).holds_budget) for s in specs]
    device = device if isinstance(device, torch.device) else resolve_device(device)
    found = preflight.memory_estimates(specs)   # one estimate per distinct model, for both uses below
    too_big, free, what = preflight.unfit_of(found, device)
    per_model = {s.stack_key(): e.total for s, e in found}
    memory = {s.run_id: per_model[s.stack_key()] for s in specs}
    masks = preflight.mask_diagnostics(specs, shape, classes)
    return RecipeCheck(r.name, shape, classes, runs, memory, too_big, free, what, masks, device)


@dataclass
class LayerListing:
    """A model's weight layers at one factor and method (`widecli layers`)."""

    spec: RunSpec
    layers: list[dict]     # methods.layer_table: name, shape, weights, nonzeros, widens_with, masked
    widenable: list[str]   # the names widen.layers may give


def layer_listing(r: Recipe, factor: float, method: str) -> LayerListing:
    shape, classes = shape_of(r.data)
    spec = make_spec(r, factor, method, r.seeds[0])
    return LayerListing(spec, layer_table(spec, shape, classes), widenable_layers(r.model))


def dry_run(r: Recipe, specs: list[RunSpec], results: str | Path, force: bool = False,
            retry_failed: bool = False) -> list[tuple[RunStatus, WeightPlan]]:
    """A sweep's runs with their status in the store, whether it would train them, and their weight
    plans (`widecli sweep --dry-run`); the results directory is checked, nothing is written."""
    preflight.results_dir(results, [r.name], write=False)
    shape, classes = shape_of(r.data)
    return [(p, plan_weights(p.spec, shape, classes)) for p in run_statuses(specs, results, force, retry_failed)]
