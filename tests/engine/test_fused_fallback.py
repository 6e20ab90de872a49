"""The fused MLP step calls the private kernel torch._fused_sgd_ (what torch.optim.SGD(fused=True)
itself calls); where a torch build lacks it, the step falls back to the public opt.step() and
computes the same update."""

from __future__ import annotations

import torch

from widecli.engine.fused import FusedStep
from widecli.engine.optim import make_optimizer
from widecli.methods import build
from widecli.recipes import expand, validate
from widecli.sparsity.masks import MaskEnforcer


def _train(steps: int = 5):
    raw = {"name": "t", "data": {"dataset": "mnist1d"}, "model": {"hidden": [32]},
           "widen": {"factors": [4], "methods": ["sparse"]},
           "train": {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3}, "seeds": [0, 1]}
    specs = expand(validate(raw, "x"))
    built = build(specs, (40,), 10)
    opt = make_optimizer(specs[0].train, built.model.parameters())
    step = FusedStep(built.model, opt, MaskEnforcer(built.model, built.masks))
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x, y = torch.randn(2, 64, 40, generator=g), torch.randint(0, 10, (2, 64), generator=g)
        losses, _ = step(x, y, 64)
    return step, built, losses


def test_fallback_without_the_private_kernel_gives_the_same_update(monkeypatch):
    fused, built_fused, loss_fused = _train()
    assert fused.sgd  # this torch has the kernel: the first run used it
    monkeypatch.setattr(torch, "_fused_sgd_", None, raising=False)  # as if this torch had none
    plain, built_plain, loss_plain = _train()
    assert not plain.sgd  # hidden: the step uses opt.step()
    torch.testing.assert_close(loss_plain, loss_fused)
    for (name, a), (_, b) in zip(built_fused.model.named_parameters(), built_plain.model.named_parameters(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    mask = built_plain.masks["fc1"]
    assert (built_plain.model.fc1.weight[~mask] == 0).all()   # masks still enforced after the update
