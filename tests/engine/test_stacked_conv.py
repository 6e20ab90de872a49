"""Stacked convnets (grouped convolutions): K seeds trained as one model equal the same runs trained
alone — with masks, BatchNorm, augmentation, momentum and weight decay — for cnn and resnet18."""

from __future__ import annotations

import pytest
import torch
from helpers import CPU

from widecli.data.resident import load_dataset
from widecli.engine.loop import fit as train
from widecli.execute.worklist import should_stack
from widecli.methods import build, plan_weights
from widecli.models.layout import layer_shapes
from widecli.models.stacked_conv import stack_convnet
from widecli.recipes import load_recipe, make_spec


def conv_specs(make_recipe, arch, seeds, factor=2, method="sparse", **train_cfg):
    width = 2 if arch == "cnn" else 2
    r = load_recipe(make_recipe({"data": {"dataset": "digits", "subset": 96}, "model": {"arch": arch, "width": width},
                                 "widen": {"layers": "all", "factors": [1, factor], "methods": [method]},
                                 "seeds": list(seeds),
                                 "train": {"epochs": 2, "batch_size": 24, "lr": 0.05, **train_cfg}}))
    return [make_spec(r, factor, method, s) for s in seeds]


@pytest.mark.parametrize("arch", ["cnn", "resnet18"])
def test_stacked_convnet_equals_solo(make_recipe, arch):
    specs = conv_specs(make_recipe, arch, [0, 1, 2], optimizer="sgd", momentum=0.9, weight_decay=5e-4,
                       augment=True)
    ds = load_dataset(specs[0].data, CPU)
    stacked = train(specs, ds, CPU)
    assert all(o.final["stacked_with"] == 3 for o in stacked)
    for spec, st in zip(specs, stacked, strict=True):
        [solo] = train([spec], ds, CPU)
        assert solo.final["stacked_with"] == 1
        assert st.state.keys() == solo.state.keys()
        for key in solo.state:  # the solo layout: a stored stacked run loads into the solo model
            assert st.state[key].shape == solo.state[key].shape, key
            torch.testing.assert_close(st.state[key].float(), solo.state[key].float(), rtol=1e-3, atol=1e-4)
        for a, b in zip(st.metrics, solo.metrics, strict=True):
            for m in ("train_loss", "test_loss", "test_accuracy"):
                assert abs(a[m] - b[m]) < 1e-3, (m, a[m], b[m])
        assert st.masks.keys() == solo.masks.keys() and all(torch.equal(st.masks[n], solo.masks[n]) for n in solo.masks)
    first = "conv1"
    assert not torch.equal(stacked[0].state[f"{first}.weight"], stacked[1].state[f"{first}.weight"])
    # BatchNorm statistics stay per run.
    bn = next(k for k in stacked[0].state if k.endswith("running_mean"))
    assert not torch.equal(stacked[0].state[bn], stacked[1].state[bn])


def test_one_stacked_copy_computes_the_solo_forward(make_recipe):
    [spec] = conv_specs(make_recipe, "resnet18", [0])
    solo = build([spec], (1, 8, 8), 10).model.eval()
    stacked = build([spec], (1, 8, 8), 10).model.eval()
    stack_convnet(stacked, 1)
    with torch.no_grad():
        for (n, t), (_, s) in zip(solo.state_dict().items(), stacked.state_dict().items(), strict=True):
            s.copy_(t.view(s.shape))
        x = torch.randn(5, 1, 8, 8)
        torch.testing.assert_close(stacked(x[None])[0], solo(x), rtol=1e-5, atol=1e-6)
    assert layer_shapes(stacked) == layer_shapes(solo)  # per-run shapes: plans and masks unchanged


def test_nonzeros_of_each_stacked_run_equal_the_budget(make_recipe):
    specs = conv_specs(make_recipe, "cnn", [0, 1, 2], factor=4)
    b = build(specs, (1, 8, 8), 10)
    p = plan_weights(specs[0], (1, 8, 8), 10)
    for j in range(3):
        nz = sum(int((m.weight[j] != 0).sum()) for n, m in b.model.named_modules() if n in p.counts)
        assert nz == p.budget


def test_when_convnets_stack(make_recipe):
    specs = conv_specs(make_recipe, "cnn", [0, 1])
    assert should_stack(specs, CPU, (1, 8, 8), 10)
    assert should_stack(specs, torch.device("cuda"), (1, 8, 8), 10)
    bottleneck = conv_specs(make_recipe, "cnn", [0, 1], method="linear_bottleneck")
    assert not should_stack(bottleneck, CPU, (1, 8, 8), 10)       # factorized layers are not stacked
    big = [s.model_copy(update={"model": s.model.model_copy(update={"width": 512})}) for s in specs]
    assert not should_stack(big, CPU, (3, 32, 32), 10)             # a large step keeps the cores busy alone
    assert should_stack(big, torch.device("cuda"), (3, 32, 32), 10)
