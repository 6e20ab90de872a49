"""model.init: the MLP's weights at scale s (NTK: s = 1 times 1/sqrt(fan_in) in the forward;
standard: s = 1/sqrt(fan_in)), normal N(0, s^2) or uniform U(-s, s); and the sparse layers'
1/sqrt(connectivity) factor, as the official MLP/models.py: U(-1/sqrt(ctvt), 1/sqrt(ctvt))."""

from __future__ import annotations

import math

import pytest
import torch

from widecli.errors import RecipeError
from widecli.methods import build
from widecli.recipes import expand, validate


def _specs(model, factors=(1, 4), methods=("sparse",)):
    raw = {"name": "t", "data": {"dataset": "mnist1d"}, "model": {"hidden": [64], "bias": False, **model},
           "widen": {"factors": list(factors), "methods": list(methods)},
           "sparsity": {"rule": "custom", "connectivity": {"out": 1.0}}, "seeds": [0]}
    return expand(validate(raw, "x"))


def test_ntk_uniform_is_the_official_bound_at_each_layers_connectivity():
    base, sparse = _specs({"parameterization": "ntk", "init": "uniform"})
    w = build([base], (40,), 10).model.fc1.weight[0]
    assert w.abs().max() <= 1.0 and w.abs().max() > 0.99                      # U(-1, 1)
    assert abs(w.var().item() - 1 / 3) < 0.02                                 # variance s^2 / 3
    built = build([sparse], (40,), 10)
    fc1, kept = built.model.fc1.weight[0], built.plan.counts["fc1"]
    s = 1 / math.sqrt(kept / fc1.numel())                                      # official: 1/sqrt(ctvt)
    nz = fc1[fc1 != 0]
    assert len(nz) == kept and nz.abs().max() <= s + 1e-6 and nz.abs().max() > 0.98 * s
    assert (built.model.out.weight.abs().max() <= 1.0)                         # dense classifier: s = 1


@pytest.mark.parametrize("parameterization, init, var", [
    ("ntk", "normal", 1.0), ("ntk", "auto", 1.0),                     # N(0, 1); auto is normal for NTK
    ("standard", "normal", 1 / 256), ("standard", "uniform", 1 / (3 * 256)),
    ("standard", "auto", 1 / (3 * 256)),                              # PyTorch's default
])
def test_distribution_and_scale(parameterization, init, var):
    raw = {"name": "t", "data": {"dataset": "mnist1d"},
           "model": {"hidden": [512], "bias": False, "parameterization": parameterization, "init": init},
           "seeds": [0]}
    [spec] = expand(validate(raw, "x"))
    w = build([spec], (256,), 10).model.fc1.weight[0]     # fan_in 256
    assert abs(w.var().item() / var - 1) < 0.05
    bound = (1.0 if parameterization == "ntk" else 1 / 16)
    if init == "uniform" or (init == "auto" and parameterization == "standard"):
        assert w.abs().max() <= bound + 1e-7
    else:
        assert w.abs().max() > bound                       # a normal draw of 131k values exceeds s


def test_init_is_for_the_mlp_only():
    with pytest.raises(RecipeError, match="model.init"):
        validate({"name": "t", "data": {"dataset": "digits"}, "model": {"arch": "cnn", "init": "normal"}}, "x")


def test_default_init_leaves_run_ids_unchanged():
    auto = _specs({"parameterization": "ntk"})
    explicit = _specs({"parameterization": "ntk", "init": "auto"})
    uniform = _specs({"parameterization": "ntk", "init": "uniform"})
    assert [s.run_id for s in auto] == [s.run_id for s in explicit]
    assert {s.run_id for s in auto}.isdisjoint(s.run_id for s in uniform)
    assert torch.equal(build([auto[0]], (40,), 10).model.fc1.weight, build([explicit[0]], (40,), 10).model.fc1.weight)
