"""The training loop: determinism, masks, schedules, optimizers, evaluation, devices."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import CPU

from widecli.data.resident import DeviceDataset, ResidentBatches, load_dataset
from widecli.engine.device import resolve_device
from widecli.engine.dist import SINGLE
from widecli.engine.evaluate import evaluate
from widecli.engine.loop import fit as train
from widecli.engine.optim import lr_at, make_optimizer
from widecli.engine.stack import Stack
from widecli.errors import DeviceError


def tiny(spec_of, factor=2, method="sparse", seed=0, **train_cfg):
    spec = spec_of({"data": {"subset": 384}, "train": {"epochs": 2, **train_cfg}},
                   factor=factor, method=method, seed=seed)
    return spec, load_dataset(spec.data, CPU)


def test_same_spec_same_metrics(spec_of):
    spec, ds = tiny(spec_of)
    [a], [b] = train([spec], ds, CPU), train([spec], ds, CPU)
    assert [r["test_loss"] for r in a.metrics] == [r["test_loss"] for r in b.metrics]
    assert a.final["train_loss"] == b.final["train_loss"]
    assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)


def test_masked_weights_stay_zero_and_training_learns(spec_of):
    spec, ds = tiny(spec_of, epochs=8, lr=0.1)
    [o] = train([spec], ds, CPU)
    for name, mask in o.masks.items():
        w = o.state[f"{name}.weight"]
        assert w.shape == mask.shape
        assert torch.count_nonzero(w[~mask]) == 0
        assert torch.count_nonzero(w[mask]) == mask.sum()   # kept weights did train (all nonzero)
    assert o.metrics[-1]["train_loss"] < o.metrics[0]["train_loss"]
    assert o.final["train_accuracy"] > 0.2 and o.final["test_accuracy"] > 0.15  # chance: 0.1
    assert o.final["peak_memory_bytes"] > 0 and o.final["stacked_with"] == 1


def test_lr_schedules(spec_of):
    spec, _ = tiny(spec_of)
    cos = spec.train.model_copy(update={"schedule": "cosine", "lr": 0.1, "epochs": 4})
    assert [round(lr_at(cos, e), 6) for e in range(4)] == [0.1, round(0.05 * (1 + math.cos(math.pi / 4)), 6),
                                                           0.05, round(0.05 * (1 + math.cos(3 * math.pi / 4)), 6)]
    step = spec.train.model_copy(update={"schedule": "step", "lr": 1.0, "milestones": [1, 3], "gamma": 0.5})
    assert [lr_at(step, e) for e in range(4)] == [1.0, 0.5, 0.5, 0.25]


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_fused_optimizer_matches_per_parameter_loop(spec_of, name):
    spec, _ = tiny(spec_of)
    cfg = spec.train.model_copy(update={"optimizer": name, "weight_decay": 0.01, "nesterov": True})
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(5, 7)), torch.nn.Parameter(torch.randn(7))]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    fused, plain = make_optimizer(cfg, a), make_optimizer(cfg, b, fused=False)
    assert fused.defaults["fused"] and not plain.defaults.get("fused")
    for step in range(5):
        for pa, pb in zip(a, b, strict=True):
            g = torch.randn(pa.shape, generator=torch.Generator().manual_seed(step))
            pa.grad, pb.grad = g.clone(), g.clone()
        fused.step()
        plain.step()
    for pa, pb in zip(a, b, strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def test_evaluate_matches_a_direct_computation():
    model = torch.nn.Sequential(torch.nn.Linear(6, 3))
    x, y = torch.randn(5000, 6), torch.randint(0, 3, (5000,))   # more than one RESIDENT_EVAL_BATCH
    data = DeviceDataset("t", x, y, x, y, 3)
    source = ResidentBatches(data, [0], batch_size=128, augment_=False, shard=SINGLE.shard)
    loss, acc = evaluate(model, source, "test", Stack(1, False), torch.autocast("cpu", enabled=False), SINGLE)
    out = model(x)
    assert loss.shape == (1,) and torch.allclose(loss, torch.nn.functional.cross_entropy(out, y)[None], atol=1e-5)
    assert acc.item() == pytest.approx((out.argmax(1) == y).float().mean().item())


def test_resolve_device():
    assert resolve_device("cpu") == CPU
    with pytest.raises(DeviceError, match="allowed: auto, cpu"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA GPU"):
            resolve_device("cuda")
        assert resolve_device("auto") == CPU


def test_bf16_autocast_trains(spec_of):
    """The autocast path (CUDA's default, bf16 on request elsewhere) runs the hand-written backward."""
    spec, ds = tiny(spec_of, precision="bf16", epochs=3, lr=0.1)
    [o] = train([spec], ds, CPU)
    assert o.final["precision"] == "bf16" and o.state["fc1.weight"].dtype == torch.float32
    assert o.metrics[-1]["train_loss"] < o.metrics[0]["train_loss"]
