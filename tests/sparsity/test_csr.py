"""The sparse (CSR) backend gives the dense masked path's results and stores the dense layout."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import CPU

from widecli.data.resident import load_dataset
from widecli.engine.loop import fit as train
from widecli.execute.run import load_model
from widecli.methods import plan_weights as plan
from widecli.models.mlp import StackedLinear
from widecli.recipes import load_recipe, make_spec
from widecli.sparsity.csr import SparseLinear, sparse_layers


@pytest.mark.parametrize("ntk,bias", [(False, True), (True, False)])
def test_sparse_linear_forward_and_gradients_match_dense(ntk, bias):
    g = torch.Generator().manual_seed(0)
    dense = StackedLinear(30, 20, 1, bias=bias, ntk=ntk)
    dense.reset_parameters([g])
    mask = torch.rand(1, 20, 30, generator=g) < 0.2
    with torch.no_grad():
        dense.weight.mul_(mask)
    sparse = SparseLinear(dense, mask)
    assert sparse.values.numel() == mask.sum()
    x = torch.randn(1, 8, 30, generator=g, requires_grad=True)
    xs = x.detach().clone().requires_grad_(True)
    w = torch.randn(1, 8, 20, generator=g)
    (dense(x) * w).sum().backward()
    out = sparse(xs)
    (out * w).sum().backward()
    torch.testing.assert_close(out, dense(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xs.grad, x.grad, rtol=1e-5, atol=1e-5)   # transposed-pattern SpMM
    torch.testing.assert_close(sparse.values.grad, dense.weight.grad[mask], rtol=1e-5, atol=1e-5)
    if bias:
        torch.testing.assert_close(sparse.bias.grad, dense.bias.grad[0], rtol=1e-5, atol=1e-5)
    back = sparse.to_dense()
    assert torch.equal(back.weight, dense.weight) and back.weight.shape == (1, 20, 30)


def spec_for(make_recipe, backend, hidden=16, factor=4):
    r = load_recipe(make_recipe({"data": {"subset": 384}, "model": {"hidden": [hidden]},
                                     "train": {"epochs": 2, "backend": backend, "optimizer": "sgd",
                                               "momentum": 0.9, "weight_decay": 5e-4}}))
    return make_spec(r, factor, "sparse", 0)


def test_sparse_training_equals_dense_training(make_recipe, tmp_path, run_stored):
    dense_spec, sparse_spec = spec_for(make_recipe, "dense"), spec_for(make_recipe, "sparse")
    assert dense_spec.run_id == sparse_spec.run_id          # the backend is how, not what
    ds = load_dataset(dense_spec.data, CPU)
    [d] = train([dense_spec], ds, CPU)
    [(s, path)] = run_stored([sparse_spec], tmp_path, CPU)
    assert s.final["backend"] == "sparse" and s.final["sparse_layers"] == "fc1,out"
    assert d.final["backend"] == "dense"
    assert set(s.state) == set(d.state)
    for key in d.state:
        assert s.state[key].shape == d.state[key].shape
        torch.testing.assert_close(s.state[key], d.state[key], rtol=1e-4, atol=1e-5)
    for a, b in zip(s.metrics, d.metrics, strict=True):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-4 and abs(a["test_accuracy"] - b["test_accuracy"]) < 2e-3
    model = load_model(path)                             # dense layout, masked entries zero
    assert torch.equal(model.fc1.weight, s.state["fc1.weight"])
    assert torch.count_nonzero(model.fc1.weight[~s.masks["fc1"]]) == 0


def test_auto_picks_sparse_only_where_it_pays(make_recipe):
    low = spec_for(make_recipe, "auto", hidden=64, factor=32)     # fc1: 2048 x 40, out 10 x 2048, ~3%
    p = plan(low, (40,), 10)
    assert sparse_layers("auto", p, CPU) == ["fc1", "out"]
    assert sparse_layers("auto", p, torch.device("cuda")) == []
    assert sparse_layers("auto", p, CPU, stack=2) == []
    assert sparse_layers("dense", p, CPU) == []
    small = plan(spec_for(make_recipe, "auto", hidden=16, factor=8), (40,), 10)
    assert small.shapes["out"] == (10, 128) and sparse_layers("auto", small, CPU) == ["fc1"]  # out: too small
    assert sparse_layers("sparse", small, CPU) == ["fc1", "out"]
    high = spec_for(make_recipe, "auto", hidden=64, factor=2)     # connectivity ~0.5
    assert sparse_layers("auto", plan(high, (40,), 10), CPU) == []


def test_only_widecli_linear_layers_become_csr(make_recipe):
    """A convnet's masked classifier (an nn.Linear) stays dense even under backend: sparse."""
    from widecli.methods import build

    r = load_recipe(make_recipe({"data": {"dataset": "digits", "subset": 96}, "model": {"arch": "cnn", "width": 4},
                                 "widen": {"layers": "all", "factors": [8], "methods": ["sparse"]},
                                 "train": {"backend": "sparse"}}))
    spec = make_spec(r, 8, "sparse", 0)
    built = build([spec], (1, 8, 8), 10, CPU)
    assert "fc" in built.plan.masked and len(built.plan.shapes["fc"]) == 2
    assert "fc" in sparse_layers("sparse", built.plan, CPU)            # by the plan alone
    assert sparse_layers("sparse", built.plan, CPU, model=built.model) == []
    [out] = train([spec.model_copy(update={"train": spec.train.model_copy(update={"epochs": 1})})],
                  load_dataset(spec.data, CPU), CPU)
    assert out.final["backend"] == "dense"


@pytest.mark.parametrize("backend, fused", [("dense", "auto"), ("dense", "off"), ("sparse", "auto"), ("sparse", "off")])
@pytest.mark.parametrize("cause", ["overflow", "nan-input"])
def test_a_nan_loss_is_divergence_on_either_backend(make_recipe, backend, fused, cause):
    """Divergence is seen on the dense masked path and on the CSR path (fused step or autograd):
    weights overflowing under a huge learning rate, or a training example of NaNs (reaching every
    output that keeps a weight from it) make the loss non-finite and stop the run as `diverged`."""
    lr = 1e8 if cause == "overflow" else 0.05
    r = load_recipe(make_recipe({"data": {"subset": 384}, "model": {"hidden": [16]},
                                 "train": {"epochs": 4, "backend": backend, "fused": fused, "lr": lr,
                                           "schedule": "constant"}}))
    spec = make_spec(r, 4, "sparse", 0)
    ds = load_dataset(spec.data, CPU)
    if cause == "nan-input":
        ds.x_train[0] = float("nan")
    [out] = train([spec], ds, CPU)
    assert out.final["backend"] == backend and out.final["fused_step"] == (fused == "auto")
    assert out.status == "diverged" and out.final["diverged_at_epoch"] == out.final["epochs_run"] < 4
    last = out.metrics[-1]   # the epoch whose loss was not finite, and the last one trained
    assert not (math.isfinite(last["train_loss"]) and math.isfinite(last["test_loss"]))
