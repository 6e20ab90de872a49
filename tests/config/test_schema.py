"""Recipe schema, overrides, expansion and run identity."""

import pydantic
import pytest
import yaml

from widecli.errors import RecipeError
from widecli.recipes import expand, load_recipe, make_spec


def test_defaults_filled_and_grid_expanded(make_recipe):
    r = load_recipe(make_recipe({"seeds": [0, 1], "sweep": {"train.lr": [0.1, 0.01]}}))
    specs = expand(r)
    # factor 1 (dense baseline) + factor 2 x {sparse, dense}, x 2 seeds x 2 learning rates
    assert len(specs) == 3 * 2 * 2
    assert {s.train.lr for s in specs} == {0.1, 0.01}
    assert all(s.axes == {"train.lr": s.train.lr} for s in specs)
    assert specs[0].train.optimizer == "sgd" and specs[0].sparsity.rule == "proportional"


def test_factor_one_is_the_dense_baseline_whatever_the_method(make_recipe):
    r = load_recipe(make_recipe({"widen": {"methods": ["sparse"], "factors": [1, 4]}}))
    methods = sorted((s.factor, s.method) for s in expand(r))
    assert methods == [(1.0, "dense"), (4.0, "sparse")]


def test_run_id_stable_and_semantic(make_recipe):
    r = load_recipe(make_recipe())
    a = make_spec(r, 2, "sparse", 0)
    b = make_spec(load_recipe(make_recipe()), 2.0, "sparse", 0)
    assert a.run_id == b.run_id and len(a.run_id) == 12
    assert make_spec(r, 2, "sparse", 1).run_id != a.run_id
    lr = load_recipe(make_recipe(), ["train.lr=0.2"])
    assert make_spec(lr, 2, "sparse", 0).run_id != a.run_id
    # execution-only keys do not change what a run computes
    moved = load_recipe(make_recipe(), ["data.root=/elsewhere", "train.stack=off"])
    assert make_spec(moved, 2, "sparse", 0).run_id == a.run_id
    # dense runs do not depend on the sparsity rule; sparse runs do
    rule = load_recipe(make_recipe(), ["sparsity.rule=leveling"])
    assert make_spec(rule, 2, "dense", 0).run_id == make_spec(r, 2, "dense", 0).run_id
    assert make_spec(rule, 2, "sparse", 0).run_id != a.run_id


def test_overrides_parse_yaml_values(make_recipe):
    r = load_recipe(make_recipe(), ["widen.factors=[1, 3]", "model.hidden=[8, 8]", "train.augment=true"])
    assert r.widen.factors == [1.0, 3.0] and r.model.hidden == [8, 8] and r.train.augment is True


@pytest.mark.parametrize("overrides, key", [
    (["train.lrr=0.1"], "train.lrr"),
    (["train.epochs=many"], "train.epochs"),
    (["widen.factors=[0.5, 2]"], "widen.factors"),
    (["widen.factors=[]"], "widen.factors"),
    (["data.dataset=imagenet22k"], "data.dataset"),
    (["model.arch=transformer"], "model.arch"),
    (["widen.layers=[fc9]"], "widen.layers"),
    (["widen.methods=[pruned]"], "widen.methods"),
    (["seeds=[1, 1]"], "seeds"),
    (["sparsity.connectivity={fc1: 1.5}"], "sparsity.connectivity"),
])
def test_bad_values_name_the_key(make_recipe, overrides, key):
    """...and the --set that gave the value, not the recipe file (which holds nothing wrong)."""
    path = make_recipe()
    with pytest.raises(RecipeError) as e:
        load_recipe(path, overrides)
    msg = str(e.value)
    assert msg.startswith(f"--set {overrides[0]}: ") and key in msg and "\n" not in msg
    assert str(path) not in msg


def test_unknown_key_suggests_the_closest(make_recipe):
    with pytest.raises(RecipeError, match=r"did you mean 'epochs'"):
        load_recipe(make_recipe(), ["train.epoch=3"])


def test_malformed_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata: {dataset: mnist1d\n")
    with pytest.raises(RecipeError, match=r"malformed YAML \(line"):
        load_recipe(bad)
    bad.write_text("")
    with pytest.raises(RecipeError, match="empty"):
        load_recipe(bad)
    bad.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(RecipeError, match="mapping"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="no such recipe"):
        load_recipe(tmp_path / "missing.yaml")
    with pytest.raises(RecipeError, match="directory"):
        load_recipe(tmp_path)


@pytest.mark.parametrize("item", ["train.lr", "=3", "a..b=1", "train.lr=[1,"])
def test_bad_override_syntax(make_recipe, item):
    with pytest.raises(RecipeError, match="--set"):
        load_recipe(make_recipe(), [item])


def test_specs_are_frozen(make_recipe):
    spec = expand(load_recipe(make_recipe()))[0]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        spec.seed = 3
    assert spec.seed == 0
