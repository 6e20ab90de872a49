"""Input classes fenced once, in the schema (issue 19): non-finite numbers anywhere a number is
expected, sizes no machine can build, settings without effect under the chosen options, seeds.

The numeric keys are enumerated from the schema itself, so a number field added later is covered
without touching this file."""

from __future__ import annotations

import types
import typing

import pytest
import yaml
from pydantic import BaseModel

from widecli.config.schema import MAX_WIDTH, Recipe
from widecli.errors import RecipeError
from widecli.recipes import expand, load_recipe


def _numeric_keys() -> list[tuple[str, str]]:
    """(dotted key, how to write a non-finite value there) for every number in the recipe schema."""
    keys = []
    for section, field in Recipe.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            for name, sub in ann.model_fields.items():
                keys += _shapes(f"{section}.{name}", sub.annotation)
        else:
            keys += _shapes(section, ann)
    return keys


def _shapes(key: str, ann) -> list[tuple[str, str]]:
    args = [a for a in typing.get_args(ann) if a is not type(None)] or [ann]
    origin = typing.get_origin(ann)
    if ann in (int, float) or set(args) <= {int, float} and origin in (typing.Union, types.UnionType):
        return [(key, "scalar")]
    if origin is list and typing.get_args(ann)[0] in (int, float):
        return [(key, "list")]
    if origin is dict and typing.get_args(ann)[1] in (int, float):
        return [(key, "dict")]
    return []


NUMERIC = _numeric_keys()


def test_the_schema_walk_finds_the_numbers():
    keys = {k for k, _ in NUMERIC}
    assert {"train.lr", "train.epochs", "widen.factors", "seeds", "sparsity.connectivity", "model.hidden",
            "model.width", "train.momentum", "train.gamma", "data.subset", "data.workers"} <= keys


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "nan", "inf"])
@pytest.mark.parametrize("key, shape", NUMERIC, ids=[k for k, _ in NUMERIC])
def test_non_finite_numbers_are_one_line_naming_the_key(make_recipe, key, shape, value):
    written = {"scalar": value, "list": f"[{value}]", "dict": f"{{fc1: {value}}}"}[shape]
    with pytest.raises(RecipeError) as e:
        load_recipe(make_recipe({"sparsity": {"rule": "custom"}} if key.startswith("sparsity") else {}),
                    [f"{key}={written}"])
    msg = str(e.value)
    assert "\n" not in msg and key in msg, msg
    assert "finite" in msg or "integer" in msg or "number" in msg, msg


@pytest.mark.parametrize("overrides, needle", [
    (["widen.per_factor={train.lr: {1: .nan, 2: 0.1}}"], "widen.per_factor.train.lr.1: got nan"),
    (["widen.per_method_factor={sparse: {train.lr: {2: .inf}}}"], "widen.per_method_factor.sparse.train.lr.2"),
    (["sweep={train.lr: [0.1, .inf]}"], "train.lr: got Infinity"),
    (["widen.factors=[1, 1e300]"], "no layer can be built wider than"),
    (["model.hidden=[3000000000]"], "model.hidden"),
    (["model.arch=cnn", "model.width=3000000000"], "model.width"),
])
def test_non_finite_and_unbuildable_values_elsewhere(make_recipe, overrides, needle):
    with pytest.raises(RecipeError) as e:
        expand(load_recipe(make_recipe(), overrides))
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_the_largest_buildable_width_still_loads(make_recipe):
    r = load_recipe(make_recipe(), [f"widen.factors=[1, {MAX_WIDTH // 16}]"])
    assert r.widen.factors[-1] * 16 <= MAX_WIDTH


# ---------------------------------------------------------------- settings without effect

NO_EFFECT = [
    (["train.momentum=0", "train.nesterov=true"], "train.nesterov", "needs momentum"),
    (["train.optimizer=adam", "train.momentum=0.5"], "train.momentum", "adam"),
    (["train.optimizer=adamw", "train.nesterov=true"], "train.nesterov", "sgd only"),
    (["train.gamma=0.5"], "train.gamma", "step schedule"),
    (["train.milestones=[1]"], "train.milestones", "step schedule"),
    (["train.schedule=step", "train.milestones=[5]"], "train.milestones", "not before train.epochs"),
    (["train.checkpoint_every=2"], "train.checkpoint_every", "no checkpoint"),
    (["sparsity.granularity=kernel"], "sparsity.granularity", "an mlp has none"),
    (["model.width=8"], "model.width", "convnets only"),
    (["model.batchnorm=false"], "model.batchnorm", "convnets only"),
    (["model.arch=cnn", "model.hidden=[8]"], "model.hidden", "mlp only"),
    (["model.arch=resnet18", "model.batchnorm=false"], "model.batchnorm", "always has BatchNorm"),
    (["sparsity.connectivity={fc1: 0.5}"], "sparsity.connectivity", "rule custom"),
    (["data.pipeline=device", "data.workers=2"], "data.workers", "pipeline stream"),
    (["data.path=x.npz"], "data.path", "npz only"),
]


def _recipe_for(make_recipe, overrides: list[str]):
    """The tiny recipe; for a convnet (model.arch in the overrides) without the mlp's hidden widths."""
    path = make_recipe()
    if any(o.startswith("model.arch=") for o in overrides):
        raw = yaml.safe_load(path.read_text())
        del raw["model"]["hidden"]
        path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("overrides, key, why", NO_EFFECT, ids=[c[1] + "-" + c[0][-1] for c in NO_EFFECT])
def test_a_setting_without_effect_is_an_error_naming_the_key(make_recipe, overrides, key, why):
    with pytest.raises(RecipeError) as e:
        load_recipe(_recipe_for(make_recipe, overrides), overrides)
    msg = str(e.value)
    assert f"{key}: has no effect" in msg and why in msg and "\n" not in msg, msg


@pytest.mark.parametrize("overrides, key, why", [
    (["widen.methods=[dense]", "sparsity.rule=erk"], "sparsity.rule", "uses sparsity"),
    (["widen.factors=[1]", "sparsity.scope=widened"], "sparsity.scope", "every factor is 1"),
    (["widen.factors=[1]", "widen.layers=all"], "widen.layers", "every factor is 1"),
])
def test_settings_a_narrowed_grid_leaves_unused_are_a_warning(make_recipe, overrides, key, why):
    """`--set widen.factors=[1]` (train the baselines only) is legitimate: a warning, not an error."""
    warnings = []
    load_recipe(make_recipe(), overrides, warn=warnings.append)
    [line] = [w for w in warnings if f"{key}: has no effect" in w]
    assert why in line and "grid leaves it unused" in line, warnings


def test_a_flag_that_narrows_the_grid_is_not_judged(make_recipe):
    warnings = []
    load_recipe(make_recipe({"sparsity": {"rule": "erk"}}), flags={"--factor": ("widen.factors", [1.0])},
                warn=warnings.append)
    assert warnings == []


def test_defaults_that_do_not_apply_are_not_mistakes(make_recipe):
    """momentum 0.9 and gamma 0.1 are defaults: an adam recipe that does not give them is fine."""
    load_recipe(make_recipe(), ["train.optimizer=adam", "train.schedule=constant"])
    load_recipe(_recipe_for(make_recipe, ["model.arch=cnn"]), ["model.arch=cnn", "model.width=4"])


def test_without_effect_at_some_sweep_points_is_one_warning(make_recipe):
    warnings = []
    r = load_recipe(make_recipe(), ["train.nesterov=true", "sweep={train.momentum: [0, 0.9]}"],
                    warn=warnings.append)
    assert len(expand(r)) == 6
    assert len(warnings) == 1 and "train.nesterov: has no effect at 1 of 2 sweep points" in warnings[0]
    with pytest.raises(RecipeError, match="train.nesterov: has no effect"):  # at every point: an error
        load_recipe(make_recipe(), ["train.nesterov=true", "sweep={train.momentum: [0.0, 0]}"])


def test_every_shipped_recipe_is_free_of_settings_without_effect():
    from pathlib import Path

    root = Path(__file__).parents[2] / "recipes"
    for path in sorted(root.rglob("*.yaml")):
        warnings = []
        load_recipe(path, warn=warnings.append)
        assert not warnings, (path, warnings)


# ---------------------------------------------------------------- seeds, sizes and counts


def test_any_integer_seed_is_defined_and_distinct(make_recipe):
    """Seeds are hashed with the stream's tag (widecli.rng): negative and huge ones are as valid as 0."""
    from widecli.rng import generator

    r = load_recipe(make_recipe({"seeds": [-1, 1, 2**70]}))
    assert sorted(s.seed for s in expand(r) if s.factor == 1) == [-1, 1, 2**70]
    draws = {torch_draw(generator(s, "init")) for s in (-1, 1, 2**70)}
    assert len(draws) == 3


def torch_draw(g) -> float:
    import torch

    return float(torch.rand(1, generator=g))


@pytest.mark.parametrize("override, key", [
    ("data.workers=-1", "data.workers"), ("train.batch_size=0", "train.batch_size"),
    ("train.epochs=0", "train.epochs"), ("data.subset=0", "data.subset"), ("train.gpus=0", "train.gpus"),
    ("train.epochs=2.5", "train.epochs"), ("seeds=[0.5]", "seeds"),
])
def test_counts_outside_what_the_libraries_accept(make_recipe, override, key):
    with pytest.raises(RecipeError, match=key.replace(".", r"\.")):
        load_recipe(make_recipe(), [override])


def test_a_batch_larger_than_the_training_set_is_one_step_on_the_whole_set(make_recipe, tmp_path, run_stored):
    import math

    import torch

    r = load_recipe(make_recipe({"data": {"subset": 10}, "widen": {"factors": [1]},
                                 "train": {"batch_size": 128, "epochs": 3}}))
    [(o, _)] = run_stored(expand(r), tmp_path, torch.device("cpu"))
    assert o.status == "ok" and o.final["epochs_run"] == 3 and math.isfinite(o.final["train_loss"])
    assert round(o.final["train_accuracy"] * 10, 6) == round(o.final["train_accuracy"] * 10)  # out of 10
    assert len({row["train_loss"] for row in o.metrics}) == 3  # it trained: one step per epoch
