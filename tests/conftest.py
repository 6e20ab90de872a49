"""Shared fixtures: tiny real recipes on offline data, a session-wide data cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

# One thread: tiny models gain nothing from two, and spin-waiting threads cost up to 10x CPU when
# subprocess tests (concurrent sweeps) share the two cores.
torch.set_num_threads(1)


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
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path
    return make
