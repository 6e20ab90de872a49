"""ResNet-18 and the small CNN: layer names, widening shapes (shortcuts included), forward/backward
on CPU, the `layers` command, and a short real training of the CNN on digits."""

from __future__ import annotations

import pytest
from helpers import invoke
import torch

from widecli.config.schema import ModelConfig
from widecli.errors import RecipeError
from widecli.methods import build, layer_table
from widecli.models import layout
from widecli.models import registry as models
from widecli.models.layout import count_weights, layer_shapes
from widecli.recipes import load_recipe, make_spec, validate

CIFAR = ((3, 32, 32), 10)


def cfg(**kw):
    return ModelConfig(**kw)


def make(arch="resnet18", width=4, layers="all", factor=1.0, shape=CIFAR):
    c = cfg(arch=arch, width=width)
    return models.build(c, layout.widths(c, layers, factor), *shape)


def test_resnet18_layer_names_and_stage_widths():
    shapes = layer_shapes(make(width=8))
    names = list(shapes)
    assert names[0] == "conv1" and names[-1] == "fc" and len(names) == 21
    assert "layer1.0.conv1" in names and "layer4.1.conv2" in names
    assert [n for n in names if "shortcut" in n] == ["layer2.0.shortcut.0", "layer3.0.shortcut.0",
                                                    "layer4.0.shortcut.0"]
    assert shapes["conv1"] == (8, 3, 3, 3)
    assert [shapes[f"layer{i}.1.conv2"][0] for i in (1, 2, 3, 4)] == [8, 16, 32, 64]
    assert shapes["fc"] == (10, 64)
    assert models.widenable_layers(cfg(arch="resnet18")) == ["layer1", "layer2", "layer3", "layer4"]


def test_widening_all_equals_a_wider_baseline():
    # Widening every stage by f is the width f*k ResNet-18 (the paper's "width").
    assert layer_shapes(make(width=8, factor=4)) == layer_shapes(make(width=32))


@pytest.mark.parametrize("layers", [["layer1"], ["layer2"], ["layer3"], ["layer2", "layer4"],
                                    "first", "last"])
def test_widening_named_stages_keeps_shapes_consistent(layers):
    model = make(width=4, layers=layers, factor=3)
    shapes = layer_shapes(model)
    chosen = layout.selected_layers(cfg(arch="resnet18"), layers)
    for i, stage in enumerate(("layer1", "layer2", "layer3", "layer4"), 1):
        expected = 4 * 2 ** (i - 1) * (3 if stage in chosen else 1)
        assert shapes[f"{stage}.1.conv2"][0] == expected
    assert shapes["conv1"][0] == shapes["layer1.0.conv1"][1]    # stem tied to layer1
    out = model(torch.randn(2, 3, 32, 32))                          # shortcuts add up
    assert out.shape == (2, 10)


@pytest.mark.parametrize("width", [4, 8])
def test_resnet18_forward_backward_on_cpu(width):
    torch.manual_seed(0)
    model = make(width=width)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [m.weight.grad for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(grads) == 20 and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_cnn_layers_and_inputs():
    c = cfg(arch="cnn", width=8)
    shapes = layer_shapes(models.build(c, models.base_widths(c), (1, 8, 8), 10))
    assert shapes == {"conv1": (8, 1, 3, 3), "conv2": (16, 8, 3, 3), "conv3": (32, 16, 3, 3),
                      "fc": (10, 32)}
    model = models.build(c, layout.widths(c, "last", 2), (3, 32, 32), 100)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    with pytest.raises(RecipeError, match="needs image inputs"):
        models.build(c, models.base_widths(c), (40,), 10)


def test_layer_table_says_what_widens_and_what_is_masked(make_recipe):
    path = make_recipe({"data": {"dataset": "cifar10"}, "model": {"arch": "resnet18", "width": 4},
                        "widen": {"layers": ["layer3"], "factors": [1, 2], "methods": ["sparse"]},
                        "sparsity": {"scope": "widened"}})
    r = load_recipe(path)
    rows = {row["name"]: row for row in layer_table(make_spec(r, 2.0, "sparse", 0), *CIFAR)}
    assert rows["conv1"]["widens_with"] == "layer1" and rows["fc"]["widens_with"] is None
    assert rows["layer3.0.shortcut.0"]["widens_with"] == "layer3"
    assert rows["layer3.0.conv1"]["masked"] and rows["layer4.0.conv1"]["masked"]  # input grew
    assert not rows["layer2.1.conv2"]["masked"] and not rows["layer4.1.conv1"]["masked"]
    assert sum(row["nonzeros"] for row in rows.values()) == count_weights(make(width=4))

    result = invoke(*["layers", str(path), "--factor", "2"])
    assert result.exit_code == 0, result.output
    assert "layer3.0.shortcut.0" in result.output and "32x8x1x1" in result.output
    assert "layer1, layer2, layer3, layer4" in result.output
    bad = invoke(*["layers", str(path), "--factor", "0.5"])
    assert bad.exit_code == 2 and "--factor" in bad.output


def test_small_cnn_trains_on_digits(tmp_path, data_root, run_stored):
    """Real training: 3 epochs of the width-4 CNN, sparse at factor 2, far above 10% chance."""
    raw = {"name": "cnn", "data": {"dataset": "digits", "root": str(data_root)},
           "model": {"arch": "cnn", "width": 4},
           "widen": {"layers": "all", "factors": [2], "methods": ["sparse"]},
           "train": {"epochs": 3, "batch_size": 64, "lr": 0.05}}
    r = validate(raw, "test")
    spec = make_spec(r, 2.0, "sparse", 0)
    [(outcome, path)] = run_stored([spec], tmp_path, torch.device("cpu"))
    assert outcome.status == "ok"
    assert outcome.final["test_accuracy"] > 0.7
    b = build([spec], (1, 8, 8), 10)
    assert sum(int(m.sum()) for m in b.masks.values()) == b.plan.budget   # scope all: every layer
    state = outcome.state
    for n in b.plan.masked:                                                # masks held in training:
        assert torch.equal(state[f"{n}.weight"] != 0, b.masks[n]), n       # nonzero exactly where kept
    assert sum(int((state[f"{n}.weight"] != 0).sum()) for n in b.plan.masked) == b.plan.budget
