"""Recipe composition (config.compose): `base:` recipes deep-merged under a recipe, `--set` last; the
run id depends on the resolved recipe only; errors name the file in the chain (or the --set) that
holds the bad key; the committed study recipes, rewritten over shared bases, expand to exactly the
run ids they had as whole recipes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from widecli.errors import RecipeError
from widecli.recipes import expand, load_recipe

ROOT = Path(__file__).resolve().parents[2]
BEFORE = json.loads((Path(__file__).with_name("studies_before_composition.json")).read_text())


def write(path: Path, doc: dict | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def base(tmp_path, data_root) -> Path:
    return write(tmp_path / "bases" / "common.yaml", {
        "name": "common", "data": {"dataset": "mnist1d", "root": str(data_root)},
        "model": {"arch": "mlp", "hidden": [16]},
        "widen": {"factors": [1, 2], "methods": ["sparse", "dense"]},
        "sparsity": {"rule": "leveling"},
        "train": {"epochs": 2, "lr": 0.05, "momentum": 0.9}, "seeds": [0, 1],
        "sweep": {"train.batch_size": [64, 128]}})


def test_a_recipe_over_its_base_resolves_as_the_whole_recipe(tmp_path, base):
    child = write(tmp_path / "child.yaml", {"base": "bases/common.yaml", "name": "child",
                                            "train": {"lr": 0.1}, "seeds": [3]})
    whole = yaml.safe_load(base.read_text())
    whole.update(name="child", seeds=[3])
    whole["train"] = {**whole["train"], "lr": 0.1}   # merged key by key: epochs and momentum stay
    flat = write(tmp_path / "flat.yaml", whole)
    composed, resolved = load_recipe(child), load_recipe(flat)
    assert composed == resolved
    assert [s.run_id for s in expand(composed)] == [s.run_id for s in expand(resolved)]
    assert composed.train.epochs == 2 and composed.train.lr == 0.1 and composed.seeds == [3]


def test_bases_in_a_list_merge_in_order_and_set_applies_last(tmp_path, base):
    write(tmp_path / "longer.yaml", {"train": {"epochs": 5, "lr": 0.2}, "seeds": [7, 8]})
    child = write(tmp_path / "child.yaml", {"base": ["bases/common.yaml", "longer.yaml"], "train": {"lr": 0.3}})
    r = load_recipe(child, ["train.epochs=9"])
    assert (r.name, r.train.epochs, r.train.lr, r.train.momentum, r.seeds) == ("common", 9, 0.3, 0.9, [7, 8])


def test_lists_are_replaced_and_null_drops_a_base_key(tmp_path, base):
    child = write(tmp_path / "child.yaml", {"base": "bases/common.yaml", "widen": {"factors": [1, 4]},
                                            "sweep": None, "sparsity": None})
    r = load_recipe(child)
    assert r.widen.factors == [1.0, 4.0] and r.widen.methods == ["sparse", "dense"]
    assert r.sweep == {} and r.sparsity.rule == "proportional"   # the schema's defaults again


def test_bases_chain_relative_to_each_file(tmp_path, base):
    write(tmp_path / "bases" / "middle.yaml", {"base": "common.yaml", "seeds": [4]})
    child = write(tmp_path / "deep" / "child.yaml", {"base": "../bases/middle.yaml", "name": "deep"})
    r = load_recipe(child)
    assert (r.name, r.seeds, r.model.hidden) == ("deep", [4], [16])


@pytest.mark.parametrize("where, bad, blamed", [
    ("base", {"train": {"lrr": 1}}, "common.yaml (base of"),
    ("child", {"train": {"lrr": 1}}, "child.yaml"),
    ("base", {"train": {"epochs": "many"}}, "common.yaml (base of"),
    ("child", {"sparsity": {"connectivity": {"fc1": 0.5}}}, "child.yaml"),   # no effect: the child's key
])
def test_errors_name_the_file_that_holds_the_bad_key(tmp_path, base, where, bad, blamed):
    if where == "base":
        doc = yaml.safe_load(base.read_text())
        for k, v in bad.items():
            doc[k] = {**doc.get(k, {}), **v}
        write(base, doc)
        bad = {}
    child = write(tmp_path / "child.yaml", {"base": "bases/common.yaml", "name": "child", **bad})
    with pytest.raises(RecipeError) as e:
        load_recipe(child)
    msg = str(e.value)
    first = msg.split(": ")[0]
    assert blamed in first and "\n" not in msg, msg
    if where == "child":
        assert "common.yaml" not in first


def test_an_error_in_a_set_value_names_the_set(tmp_path, base):
    child = write(tmp_path / "child.yaml", {"base": "bases/common.yaml"})
    with pytest.raises(RecipeError, match=r"^--set train.epochs=0: train.epochs: got 0"):
        load_recipe(child, ["train.epochs=0"])


@pytest.mark.parametrize("doc, words", [
    ({"base": "nowhere.yaml", "name": "x"}, ["base 'nowhere.yaml'", "no such recipe file"]),
    ({"base": [], "name": "x"}, ["base: got []", "non-empty list"]),
    ({"base": "child.yaml", "name": "x"}, ["cycle", "child.yaml -> child.yaml"]),
])
def test_bad_bases_are_one_line(tmp_path, doc, words):
    child = write(tmp_path / "child.yaml", doc)
    with pytest.raises(RecipeError) as e:
        load_recipe(child)
    assert all(w in str(e.value) for w in words) and "\n" not in str(e.value), str(e.value)


def test_malformed_yaml_in_a_base_names_the_base_and_the_parser_reason(tmp_path):
    write(tmp_path / "b.yaml", "name: [oops\n")
    child = write(tmp_path / "child.yaml", {"base": "b.yaml"})
    with pytest.raises(RecipeError, match=r"b\.yaml \(base of .*child\.yaml\): malformed YAML \(line 2"):
        load_recipe(child)


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_study_recipes_over_bases_keep_their_run_ids(name):
    """The committed studies were whole recipes; rewritten as a few lines over a base, each expands
    to exactly the run ids recorded from the whole recipes (tests/config/studies_before_composition.json)."""
    r = load_recipe(ROOT / "recipes" / "studies" / name)
    assert r.name == BEFORE[name]["name"]
    assert sorted(s.run_id for s in expand(r)) == BEFORE[name]["run_ids"]


def test_the_mnist5k_variants_are_a_few_lines_over_one_base():
    variants = ("mnist5k_official", "mnist5k_constants_zero", "mnist5k_train_stats", "mnist5k_train_stats_normal")
    for path in (ROOT / "recipes" / "studies" / f"{v}.yaml" for v in variants):
        keys = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
        assert keys[0].startswith("base: ") and len(keys) <= 4, (path.name, keys)
