"""A user's model from a dotted path (and from an entry point) goes through every command: widened
at the exact budget, trained by `train`, `sweep` and `ablate`, and reported."""

from __future__ import annotations

import json
import math
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import torch
from helpers import invoke
from torch import nn

from widecli import registry as registry_mod
from widecli.data.registry import shape_of
from widecli.errors import RecipeError
from widecli.methods import plan_weights
from widecli.models.registry import user_model
from widecli.recipes import expand, load_recipe
from widecli.registry import Registry

HERE = Path(__file__).resolve().parent
ARCH = "test_user_model:TwoLayer"   # this very file, importable once HERE is on sys.path


class TwoLayer(nn.Module):
    """A user's model: two hidden layers of its own naming, no widecli code involved."""

    units = {"hidden": 16, "top": 8}

    def __init__(self, widths: dict[str, int], input_shape: tuple, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(math.prod(input_shape), widths["hidden"])
        self.mid = nn.Linear(widths["hidden"], widths["top"])
        self.head = nn.Linear(widths["top"], num_classes)

    def forward(self, x):
        return self.head(torch.relu(self.mid(torch.relu(self.fc(x.flatten(1))))))


@pytest.fixture
def user_recipe(make_recipe, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    return make_recipe({"model": {"arch": ARCH}, "widen": {"layers": ["hidden"], "factors": [1, 4],
                                                           "methods": ["sparse", "dense"]},
                        "train": {"epochs": 3, "batch_size": 128, "lr": 0.1}, "seeds": [0, 1]}, name="user")


def test_widening_a_user_unit_keeps_the_budget_exactly(user_recipe):
    r = load_recipe(user_recipe)
    shape, classes = shape_of(r.data)
    plans = {(s.factor, s.method): plan_weights(s, shape, classes) for s in expand(r)}
    base = plans[(1.0, "dense")]
    assert base.budget == 40 * 16 + 16 * 8 + 8 * 10
    sparse = plans[(4.0, "sparse")]
    assert sparse.widths == {"hidden": 64, "top": 8}
    assert sparse.nonzeros == base.budget and sparse.dense_weights == 40 * 64 + 64 * 8 + 8 * 10
    assert plans[(4.0, "dense")].nonzeros == sparse.dense_weights


def test_train_sweep_ablate_and_report_run_a_user_model(user_recipe, tmp_path):
    results = tmp_path / "results"
    res = invoke("train", user_recipe, "--factor", 4, "--method", "sparse", "--results", results, "--device", "cpu")
    assert res.exit_code == 0, res.output
    [done] = list((results / "user").glob("*/result.json"))
    result = json.loads(done.read_text())
    assert result["weights"]["nonzeros"] == result["weights"]["budget"] == 848
    assert result["final"]["test_accuracy"] > 0.2  # 10 classes: well above chance after 3 epochs

    res = invoke("sweep", user_recipe, "--results", results, "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert "trained 5" in res.output  # 6 runs, the one `train` made is finished

    res = invoke("ablate", user_recipe, "--widen-layers", "all", "--results", results, "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert "trained 4" in res.output  # widen=all: its sparse and dense runs at f=4, 2 seeds

    res = invoke("report", results, "--table1")
    assert res.exit_code == 0, res.output
    table = (results / "report.md").read_text()
    assert ARCH.split(":")[1] in table or ARCH in table


def test_bottlenecks_need_a_model_that_accepts_ranks(user_recipe, tmp_path):
    res = invoke("check", user_recipe, "--set", "widen.methods=[linear_bottleneck]")
    assert res.exit_code == 2
    assert "does not accept `ranks`" in res.output and len(res.output.strip().splitlines()) == 1


def test_not_a_model_is_one_line():
    with pytest.raises(RecipeError, match="units"):
        user_model("x:y", object())


def test_entry_points_register_short_names(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    ep = EntryPoint(name="twolayer", value=ARCH, group="widecli.models")
    monkeypatch.setattr(registry_mod, "entry_points", lambda group: [ep] if group == "widecli.models" else [])
    models = Registry("models", "model.arch", user_model)
    assert models.get("twolayer").units(None) == {"hidden": 16, "top": 8}
    assert "twolayer" in models.names()
    with pytest.raises(RecipeError, match="did you mean 'twolayer'"):
        models.get("twolayr")


class TinyConv(nn.Module):
    """A user's convnet that opts in to stacked seeds by naming its classifier (convs with biases)."""

    units = {"c1": 4}
    stack_classifier = "head"

    def __init__(self, widths: dict[str, int], input_shape: tuple, num_classes: int):
        super().__init__()
        self.c1 = nn.Conv2d(input_shape[0], widths["c1"], 3, padding=1)
        self.bn = nn.BatchNorm2d(widths["c1"])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(widths["c1"], num_classes)

    def forward(self, x):
        return self.head(self.pool(torch.relu(self.bn(self.c1(x)))).flatten(1))


def test_a_user_convnet_that_opts_in_trains_stacked_as_it_trains_alone(make_recipe, monkeypatch):
    from widecli.engine.loop import fit
    from widecli.execute.worklist import should_stack, stack_groups

    monkeypatch.syspath_prepend(str(HERE))
    r = load_recipe(make_recipe({"data": {"dataset": "digits", "subset": 96}, "model": {"arch": "test_user_model:TinyConv"},
                                 "widen": {"layers": ["c1"], "factors": [1, 2], "methods": ["sparse"]},
                                 "seeds": [0, 1], "train": {"epochs": 2, "batch_size": 24, "lr": 0.05}}))
    specs = [s for s in expand(r) if s.factor == 2]
    cpu = torch.device("cpu")
    assert should_stack(specs, cpu) and stack_groups(specs, cpu) == [specs]
    ds = __import__("widecli.data.resident", fromlist=["load_dataset"]).load_dataset(specs[0].data, cpu)
    stacked = fit(specs, ds, cpu)
    for spec, st in zip(specs, stacked, strict=True):
        [solo] = fit([spec], ds, cpu)
        assert st.final["stacked_with"] == 2
        for key in solo.state:
            torch.testing.assert_close(st.state[key].float(), solo.state[key].float(), rtol=1e-3, atol=1e-4)
    assert not should_stack([s for s in expand(load_recipe(make_recipe({
        "data": {"dataset": "digits"}, "model": {"arch": ARCH}, "seeds": [0, 1]}))) if s.factor == 2], cpu)
