"""The fused MLP step (widecli.engine.fused) trains exactly what the autograd path trains."""

from __future__ import annotations

import pytest
import torch
from helpers import CPU

from widecli.data.resident import load_dataset
from widecli.engine.loop import fit as train
from widecli.recipes import load_recipe, make_spec

SGD = {"optimizer": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}


def specs_for(make_recipe, seeds=(0,), model=None, factor=2, method="sparse", fused="auto", **train_cfg):
    r = load_recipe(make_recipe({"data": {"subset": 512}, "seeds": list(seeds),
                                     "model": {"arch": "mlp", "hidden": [16], **(model or {})},
                                     "train": {"epochs": 3, "backend": "dense", "schedule": "cosine",
                                               "fused": fused, **train_cfg}}))
    return [make_spec(r, factor, method, s) for s in seeds]


def both(make_recipe, backend="dense", **kw):
    """(fused outcomes, autograd outcomes) of the same runs; the fused ones on `backend`, the
    autograd ones on the dense masked path."""
    fused_specs = specs_for(make_recipe, backend=backend, **kw)
    plain_specs = specs_for(make_recipe, fused="off", **kw)
    assert [s.run_id for s in fused_specs] == [s.run_id for s in plain_specs]  # an execution key
    ds = load_dataset(fused_specs[0].data, CPU)
    return train(fused_specs, ds, CPU), train(plain_specs, ds, CPU)


def assert_same(fused, plain):
    for f, p in zip(fused, plain, strict=True):
        assert f.final["fused_step"] is True and p.final["fused_step"] is False
        assert f.state.keys() == p.state.keys()
        for key in p.state:
            torch.testing.assert_close(f.state[key], p.state[key], rtol=1e-4, atol=1e-5)
        for a, b in zip(f.metrics, p.metrics, strict=True):
            for m in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
                assert abs(a[m] - b[m]) < 1e-4, (m, a[m], b[m])
        for name, mask in f.masks.items():  # masked weights stay exactly zero
            assert not mask.all()
            assert torch.all(f.state[f"{name}.weight"][~mask] == 0)
    # Training moved the weights: the comparison is not between two untouched inits.
    assert fused[0].metrics[-1]["train_loss"] < fused[0].metrics[0]["train_loss"]


@pytest.mark.parametrize("seeds", [(0,), (0, 1, 2)], ids=["solo", "stacked3"])
def test_fused_equals_autograd_sgd(make_recipe, seeds):
    assert_same(*both(make_recipe, seeds=seeds, **SGD))


def test_fused_ntk_no_bias_two_hidden(make_recipe):
    model = {"hidden": [16, 12], "parameterization": "ntk", "bias": False}
    assert_same(*both(make_recipe, seeds=(0, 1), model=model, lr=0.5, **SGD))


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_fused_other_optimizers_and_linear(make_recipe, optimizer):
    cfg = {"optimizer": optimizer, "lr": 1e-3 if optimizer != "sgd" else 0.05, "weight_decay": 1e-3}
    if optimizer == "sgd":
        cfg["momentum"] = 0.0  # plain SGD, no momentum buffer (adam has no momentum setting)
    assert_same(*both(make_recipe, model={"activation": "linear"}, **cfg))


@pytest.mark.parametrize("kw", [
    dict(seeds=(0,), factor=4, **SGD),
    dict(seeds=(0,), factor=4, model={"hidden": [16, 12], "parameterization": "ntk", "bias": False},
         lr=0.5, **SGD),
    dict(seeds=(0,), factor=4, model={"hidden": [16, 12], "parameterization": "ntk"}, lr=0.5, **SGD),
    dict(seeds=(0,), factor=4, model={"activation": "linear"}, optimizer="adam", lr=1e-3, weight_decay=1e-3),
], ids=["sgd", "ntk-two-hidden", "ntk-bias", "adam-linear"])
def test_sparse_fused_equals_dense_masked_autograd(make_recipe, kw):
    """The CSR fused step (SpMM forward, SDDMM weight gradient, transposed SpMM input gradient,
    update of the kept values) trains what the dense masked autograd path trains."""
    fused, plain = both(make_recipe, backend="sparse", **kw)
    assert fused[0].final["sparse_layers"] and plain[0].final["backend"] == "dense"
    assert_same(fused, plain)


@pytest.mark.parametrize("case", [
    {"model": {"activation": "tanh"}},
    {"method": "linear_bottleneck"},
    {"backend": "sparse", "model": {"activation": "tanh"}},
    {"precision": "bf16"},
], ids=["tanh", "bottleneck", "sparse-backend-tanh", "bf16"])
def test_fused_not_used_where_invalid(make_recipe, case):
    [spec] = specs_for(make_recipe, **case)
    ds = load_dataset(spec.data, CPU)
    cfg = spec.train.model_copy(update={"epochs": 1})
    [out] = train([spec.model_copy(update={"train": cfg})], ds, CPU)
    assert out.final["fused_step"] is False


def test_fused_checkpoint_has_the_optimizer_state_layout(make_recipe, tmp_path):
    """The optimizer state saved by a checkpoint (momentum buffers) is the torch optimizer's own."""
    bodies = []
    for fused in ("auto", "off"):
        [spec] = specs_for(make_recipe, fused=fused, checkpoint_every=1, **SGD)
        ckpt_dir = tmp_path / fused
        ckpt_dir.mkdir()
        train([spec], load_dataset(spec.data, CPU), CPU, checkpoint_dir=ckpt_dir)
        bodies.append(torch.load(ckpt_dir / "checkpoint.pt", weights_only=False)["optimizer"])
    fused_opt, plain_opt = bodies
    assert fused_opt["param_groups"] == plain_opt["param_groups"]
    assert fused_opt["state"].keys() == plain_opt["state"].keys()
    for i, s in plain_opt["state"].items():
        assert fused_opt["state"][i].keys() == s.keys() == {"momentum_buffer"}
        torch.testing.assert_close(fused_opt["state"][i]["momentum_buffer"], s["momentum_buffer"],
                                   rtol=1e-4, atol=1e-5)


def test_fused_off_is_an_execution_key(make_recipe):
    """YAML's bare `off` (read as false) means off, and the key leaves run ids unchanged."""
    off = load_recipe(make_recipe({"train": {"fused": False}}))
    assert off.train.fused == "off"
    on = load_recipe(make_recipe({}))
    assert make_spec(off, 1, "dense", 0).run_id == make_spec(on, 1, "dense", 0).run_id
