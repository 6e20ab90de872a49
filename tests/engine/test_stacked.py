"""Stacked seeds: K runs trained as one model equal the same runs trained alone; when to stack."""

from __future__ import annotations

import torch
from helpers import CPU

from widecli.data.resident import load_dataset
from widecli.engine.loop import fit as train
from widecli.execute.worklist import should_stack


def specs_for(spec_of, seeds, factor=2, method="sparse", **train_cfg):
    over = {"data": {"subset": 384}, "seeds": seeds, "train": {"epochs": 2, "backend": "dense", **train_cfg}}
    return [spec_of(over, factor=factor, method=method, seed=s) for s in seeds]


def test_stacked_equals_solo(spec_of):
    specs = specs_for(spec_of, [0, 1, 2], optimizer="sgd", momentum=0.9, weight_decay=5e-4)
    ds = load_dataset(specs[0].data, CPU)
    stacked = train(specs, ds, CPU)
    for spec, st in zip(specs, stacked, strict=True):
        [solo] = train([spec], ds, CPU)
        assert st.final["stacked_with"] == 3 and solo.final["stacked_with"] == 1
        for key in solo.state:
            torch.testing.assert_close(st.state[key], solo.state[key], rtol=1e-4, atol=1e-5)
        for a, b in zip(st.metrics, solo.metrics, strict=True):
            for m in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
                assert abs(a[m] - b[m]) < 1e-4, (m, a[m], b[m])
        assert all(torch.equal(st.masks[n], solo.masks[n]) for n in solo.masks)
    # Each seed kept its own init, masks and data order: the runs differ from each other.
    assert not torch.equal(stacked[0].state["fc1.weight"], stacked[1].state["fc1.weight"])
    assert not torch.equal(stacked[0].masks["fc1"], stacked[1].masks["fc1"])


def test_should_stack(spec_of):
    specs = specs_for(spec_of, [0, 1, 2])
    assert should_stack(specs, CPU)
    assert not should_stack(specs[:1], CPU)                       # nothing to stack
    off = specs_for(spec_of, [0, 1], stack="off")
    assert not should_stack(off, CPU)
    other_factor = specs_for(spec_of, [1], factor=4)
    assert not should_stack(specs[:1] + other_factor, CPU)         # different shapes
    sparse = specs_for(spec_of, [0, 1], backend="sparse")
    assert not should_stack(sparse, CPU)                          # CSR weights hold one run
    # auto on CPU: a large layer at low connectivity goes sparse, so its seeds train one by one.
    low = specs_for(spec_of, [0, 1], factor=32, backend="auto", **{})
    wide = [s.model_copy(update={"model": s.model.model_copy(update={"hidden": [64]})}) for s in low]
    assert not should_stack(wide, CPU, (40,), 10)
    assert should_stack(wide, torch.device("cuda"), (40,), 10)
    # Large models run one by one on CPU (stacking measured slower there), stacked on GPUs.
    big = [s.model_copy(update={"model": s.model.model_copy(update={"hidden": [16384]})}) for s in specs]
    assert not should_stack(big, CPU, (40,), 10)
    assert should_stack(big, torch.device("cuda"), (40,), 10)


def test_stacked_linear_backward_matches_autograd():
    from widecli.models.mlp import StackedLinear

    for ntk, bias in ((False, True), (True, False)):
        layer = StackedLinear(7, 5, 3, bias=bias, ntk=ntk)
        layer.reset_parameters([torch.Generator().manual_seed(i) for i in range(3)])
        x = torch.randn(3, 4, 7, requires_grad=True)
        g = torch.randn(3, 4, 5)
        layer(x).backward(g)
        mine = [x.grad.clone(), layer.weight.grad.clone()] + ([layer.bias.grad.clone()] if bias else [])
        x.grad, layer.weight.grad = None, None
        if bias:
            layer.bias.grad = None
        wt = layer.weight.transpose(1, 2)
        ref = (torch.baddbmm(layer.bias.unsqueeze(1), x, wt, alpha=layer.scale) if bias
               else torch.bmm(x, wt) * layer.scale)
        ref.backward(g)
        with torch.no_grad():
            torch.testing.assert_close(layer(x), ref)   # the no-grad path computes the same
        for a, b in zip(mine, [x.grad, layer.weight.grad] + ([layer.bias.grad] if bias else []), strict=True):
            torch.testing.assert_close(a, b)
