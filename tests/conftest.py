"""Shared fixtures: tiny real recipes on offline data, a session-wide data cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import settings

# One thread: tiny models gain nothing from two, and spin-waiting threads cost up to 10x CPU when
# subprocess tests (concurrent sweeps) share the two cores.
torch.set_num_threads(1)

# Hypothesis profiles (tests/properties), registered here because the profile given on the command
# line is loaded before deeper conftests are read: `ci` (the default) keeps the property suites to
# well under a minute on two cores; `pytest --hypothesis-profile=long tests/properties` runs 25x more
# examples. Each suite takes its share of the profile's max_examples (settings.default), so both
# profiles scale every suite. No deadline: timings on a shared machine vary.
settings.register_profile("ci", max_examples=40, deadline=None, print_blob=True)
settings.register_profile("long", max_examples=1000, deadline=None, print_blob=True)
settings.load_profile("ci")


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """One data cache for the whole session (MNIST-1D is generated once)."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def make_recipe(tmp_path, data_root):
    """Write a small recipe (dict merged over a tiny MNIST-1D MLP study) and return its path."""
    def make(overrides: dict | None = None, name: str = "tiny") -> Path:
        raw = {"name": name,
               "data": {"dataset": "mnist1d", "root": str(data_root)},
               "model": {"arch": "mlp", "hidden": [16]},
               "widen": {"layers": "first", "factors": [1, 2], "methods": ["sparse", "dense"]},
               "train": {"epochs": 2, "batch_size": 128, "lr": 0.05},
               "seeds": [0]}
        for key, value in (overrides or {}).items():
            if isinstance(value, dict) and isinstance(raw.get(key), dict):
                raw[key] = {**raw[key], **value}
            else:
                raw[key] = value
        if raw["model"].get("arch") != "mlp":  # a convnet has no hidden widths (they would have no effect)
            raw["model"].pop("hidden", None)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path
    return make


@pytest.fixture
def recipe_of(make_recipe):
    """A loaded tiny recipe: recipe_of(overrides dict merged as in make_recipe, *sets as --set strings)."""
    from widecli.recipes import load_recipe

    def load(overrides: dict | None = None, *sets: str, name: str = "tiny"):
        return load_recipe(make_recipe(overrides, name=name), list(sets))
    return load


@pytest.fixture
def specs_of(recipe_of):
    """Every run of a tiny recipe (config.expand), optionally only one factor and/or method."""
    from widecli.recipes import expand

    def specs(overrides: dict | None = None, *sets: str, factor: float | None = None,
              method: str | None = None) -> list:
        return [s for s in expand(recipe_of(overrides, *sets))
                if (factor is None or s.factor == factor) and (method is None or s.method == method)]
    return specs


@pytest.fixture
def spec_of(recipe_of):
    """One run of a tiny recipe: spec_of(overrides, *sets, factor=, method=, seed=) (make_spec)."""
    from widecli.recipes import make_spec

    def spec(overrides: dict | None = None, *sets: str, factor: float = 2, method: str = "sparse", seed: int = 0):
        return make_spec(recipe_of(overrides, *sets), factor, method, seed)
    return spec


@pytest.fixture
def run_stored():
    """Train runs through the one run path (execute.run.run_group: lock, train, write) and read each
    back from the store: [(run, run directory)], run.status/.final/.metrics/.error from its files.

    on_epoch(epoch, epochs, rows) sees the same progress events a sweep's progress bar sees."""
    import json
    from types import SimpleNamespace

    from widecli.execute.run import run_group

    def run(specs, results, device, on_epoch=None):
        def emit(event):
            if on_epoch and event.kind == "epoch":
                on_epoch(event.epoch, event.epochs, event.rows)
        report = run_group(list(specs), results, device, emit=emit, record_failures=False)
        out = []
        for path in report.written:
            result = json.loads((path / "result.json").read_text())
            saved = torch.load(path / "model.pt", weights_only=True) if (path / "model.pt").exists() else {}
            out.append((SimpleNamespace(status=result["status"], final=result["final"], error=result["error"],
                                        spec=result["spec"], run_id=result["run_id"], state=saved.get("state"),
                                        masks=saved.get("masks"), metrics=_rows(path / "metrics.csv")),
                        path))
        return out
    return run


def _rows(path: Path) -> list[dict]:
    """metrics.csv as a list of dicts with numbers as floats."""
    import csv

    def num(v):
        try:
            return float(v)
        except ValueError:
            return v
    with open(path) as f:
        return [{k: num(v) for k, v in row.items()} for row in csv.DictReader(f)]
