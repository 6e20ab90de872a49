"""Linear / non-linear bottlenecks: counted weights never exceed the budget, the inner width is
the largest that fits, the factors are built as documented, and a bottleneck run trains."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from widecli.errors import BudgetError
from widecli.methods import build, rank_bounds, scaled
from widecli.methods import plan_weights as plan
from widecli.models import registry as models
from widecli.models.layers import Factorized
from widecli.models.layout import count_weights
from widecli.recipes import make_spec, validate
from widecli.store.runs import read_result

CIFAR = ((3, 32, 32), 10)
MNIST1D = ((40,), 10)
ARCHS = {"mlp": ({"arch": "mlp", "hidden": [32, 16]}, MNIST1D),
         "resnet18": ({"arch": "resnet18", "width": 8}, CIFAR),
         "cnn": ({"arch": "cnn", "width": 8}, ((1, 8, 8), 10))}


def spec(model, layers="all", factor=2.0, method="linear_bottleneck"):
    r = validate({"name": "t", "data": {"dataset": "digits"}, "model": model,
                         "widen": {"layers": layers, "factors": [factor], "methods": [method]}}, "t")
    return make_spec(r, factor, method, 0)


def counted(s, shape, ranks) -> int:
    with torch.device("meta"):
        return count_weights(models.build(s.model, plan(s, *shape).widths, *shape, ranks=ranks,
                                          rank_nonlinear=s.method == "nonlinear_bottleneck"))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", ["linear_bottleneck", "nonlinear_bottleneck"])
def test_bottleneck_fits_the_budget_with_the_largest_inner_width(arch, method):
    model, shape = ARCHS[arch]
    for layers in ("all", "first", "last"):
        for f in (1.5, 2, 4, 8):
            s = spec(model, layers, f, method)
            p = plan(s, *shape)
            assert p.ranks and p.nonzeros <= p.budget, (arch, layers, f)
            assert p.nonzeros == counted(s, shape, p.ranks) == p.dense_weights
            # One more step of the common knob R (the largest layer's inner width) no longer fits.
            bound = rank_bounds(s.model, p.widths, *shape)
            R = max(p.ranks.values())
            assert scaled(bound, R) == p.ranks
            assert counted(s, shape, scaled(bound, R + 1)) > p.budget


def test_one_hidden_layer_mlp_has_one_common_rank_and_exact_count():
    # hidden 32 on MNIST-1D: budget 40*32 + 32*10 = 1600. At f=4 fc1 is 128x40 and out 10x128;
    # bounds: fc1 min(32, 40) = 32, out min(10, 32) = 10 -> r_fc1 = R, r_out = R*10//32.
    s = spec({"arch": "mlp", "hidden": [32]}, "first", 4.0)
    p = plan(s, *MNIST1D)
    R = p.ranks["fc1"]
    r_out = R * 10 // 32
    assert p.ranks == {"fc1": R, "out": r_out}
    assert p.nonzeros == R * (40 + 128) + r_out * (128 + 10) <= 1600
    assert (R + 1) * (40 + 128) + (R + 1) * 10 // 32 * (128 + 10) > 1600


def test_conv_bottleneck_construction():
    s = spec({"arch": "resnet18", "width": 4}, "all", 4.0, "nonlinear_bottleneck")
    b = build([s], *CIFAR)
    layer = b.model.layer2[0].conv1
    r = b.plan.ranks["layer2.0.conv1"]
    assert isinstance(layer, Factorized) and isinstance(layer.act, nn.ReLU)
    assert tuple(layer.V.weight.shape) == (r, 16, 3, 3) and layer.V.stride == (2, 2)  # kxk, stride
    assert tuple(layer.U.weight.shape) == (32, r, 1, 1)                              # 1x1 mix
    assert count_weights(b.model) == b.plan.nonzeros <= b.plan.budget
    with torch.device("meta"):
        lin = models.build(s.model, b.plan.widths, *CIFAR, ranks=b.plan.ranks).layer2[0].conv1
    assert isinstance(lin.act, nn.Identity)
    out = b.model(torch.randn(2, 3, 16, 16))
    out.sum().backward()
    assert out.shape == (2, 10) and layer.V.weight.grad is not None


def test_impossible_bottleneck_is_a_one_line_budget_error():
    # MLP hidden [2]: budget 2*40 + 10*2 = 100; at f=64 even inner width 1 needs 1*(40+128)+...
    s = spec({"arch": "mlp", "hidden": [2]}, "first", 64.0)
    with pytest.raises(BudgetError, match="cannot fit the budget of 100 weights") as e:
        plan(s, *MNIST1D)
    assert "\n" not in str(e.value)


def test_bottleneck_run_trains_and_records_the_gap(tmp_path, data_root, run_stored):
    r = validate({"name": "bn", "data": {"dataset": "mnist1d", "root": str(data_root)},
                         "model": {"arch": "mlp", "hidden": [32, 32]},
                         "widen": {"factors": [4], "methods": ["nonlinear_bottleneck"]},
                         "train": {"epochs": 3, "lr": 0.1}}, "t")
    [(outcome, path)] = run_stored([make_spec(r, 4.0, "nonlinear_bottleneck", 0)], tmp_path,
                            torch.device("cpu"))
    w = read_result(path)["weights"]
    assert outcome.status == "ok" and outcome.final["train_accuracy"] > 0.25   # chance: 0.1
    assert w["budget"] == 40 * 32 + 32 * 32 + 32 * 10
    assert 0 <= w["budget_gap"] == w["budget"] - w["nonzeros"]
    assert set(w["ranks"]) == {"fc1", "fc2"} and math.isclose(w["connectivity"], 1.0)
