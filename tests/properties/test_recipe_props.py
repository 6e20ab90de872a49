"""Property: whatever recipe file and `--set` strings a user gives `widecli check`, it exits 0, or
exits 2 with its error on exactly one line of stderr (warnings, one line each, may come first);
never a traceback, never another exit code.

Recipes are generated from a valid tiny one by setting, deleting and nesting keys - known dotted
keys and made-up ones - to values of every shape: wrong types, lists and mappings, unicode and
control characters, huge and tiny numbers, NaN and inf, registry names and dotted import paths.
The YAML text may get a line repeated (duplicated keys) and `--set` strings are structured or
random. In process, through the CLI's own entry point (tests/helpers.invoke: typer's CliRunner), so each case costs ms.
"""

from __future__ import annotations

import copy
import re

import pytest
from helpers import invoke
import yaml
from hypothesis import event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from widecli.config.schema import Recipe
from widecli.registry import DOTTED

BASE = {"name": "prop", "data": {"dataset": "mnist1d", "root": "data"}, "model": {"arch": "mlp", "hidden": [8]},
        "widen": {"layers": "first", "factors": [1, 2], "methods": ["sparse", "dense"]},
        "train": {"epochs": 1}, "seeds": [0]}


def _schema_keys() -> list[str]:
    """Every dotted key of the recipe schema (sections and their fields)."""
    keys = []
    for section, field in Recipe.model_fields.items():
        keys.append(section)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            keys += [f"{section}.{name}" for name in field.annotation.model_fields]
    return keys


KEYS = _schema_keys() + ["sparsity.connectivity.fc1", "sparsity.connectivity.layer1", "widen.per_factor.train.lr",
                         "widen.per_method_factor.sparse.train.lr", "sweep.train.lr", "sweep.model.hidden"]
# Names the registries know, near misses, and dotted paths: importable but not a loader/model/rule
# (math:pi, json:dumps) and not importable. Never arbitrary `module:attr` text: that would import
# whatever module a generator spells.
DOTTED_NAMES = ["math:pi", "json:dumps", "widecli_no_such_module:thing", "widecli.errors:WidecliError",
                "widecli.methods:no_such_thing"]
NAMES = ["mnist1d", "digits", "mnist5k", "npz", "image_folder", "imagenet", "mlp", "cnn", "resnet18",
         "resnet18_imagenet", "proportional", "leveling", "erk", "uniform", "custom", "sparse", "dense",
         "linear_bottleneck", "nonlinear_bottleneck", "mnist1", "resnet", "erk ", "Dense", *DOTTED_NAMES]

# Words of the schema's closed sets, so that most edits keep the recipe close to valid and the
# case reaches the later checks (planning, budgets, memory) as well as the schema's.
WORDS = ["first", "last", "all", "widened", "kernel", "weight", "fan_in", "standard", "cosine", "step",
         "constant", "sgd", "adam", "adamw", "auto", "off", "stream", "device", "ntk", "relu", "linear",
         "fc1", "fc2", "out", "conv1", "conv3", "layer1", "layer4", "fc", "train.lr", "train.epochs"]

safe_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12).filter(
    lambda s: not DOTTED.search(s))
numbers = st.one_of(st.integers(-3, 3), st.integers(min_value=2**31 - 2, max_value=2**64),
                    st.integers(max_value=-2**31), st.floats(), st.floats(min_value=-1e-300, max_value=1e-300),
                    st.sampled_from([0.5, 1.0, 1e300, -0.0, 2.0**31]))
scalars = st.one_of(st.none(), st.booleans(), numbers, safe_text, st.sampled_from(NAMES))
nasty = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.one_of(safe_text, st.sampled_from(NAMES), numbers), inner,
                                                 max_size=3)), max_leaves=6)
plain = st.one_of(st.integers(0, 64), st.floats(0, 64), st.sampled_from(WORDS + NAMES))
plausible = st.one_of(plain, st.lists(plain, min_size=1, max_size=3),
                      st.dictionaries(st.sampled_from(WORDS), st.one_of(st.floats(0, 1), st.lists(plain, max_size=3),
                                                                        st.dictionaries(st.integers(1, 4), plain)),
                                      max_size=2))
values = st.one_of(plausible, plausible, nasty)
key_parts = st.one_of(st.sampled_from(["data", "model", "train", "widen", "sparsity", "hidden", "lr", "fc1"]),
                      safe_text.filter(lambda s: s and "." not in s))
paths = st.one_of(st.sampled_from(KEYS), st.lists(key_parts, min_size=1, max_size=3).map(".".join))


def set_path(tree: dict, path: str, value) -> None:
    node = tree
    *parents, last = path.split(".")
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value


def delete_path(tree: dict, path: str) -> None:
    node = tree
    *parents, last = path.split(".")
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(last, None)


# Keys whose values name a registry entry: given names (or lists of them) more often than other keys,
# so that a wrong name or a dotted path to something that is not a loader/model/rule/method is tried
# with the rest of the recipe valid.
names = st.one_of(st.sampled_from(NAMES), st.sampled_from(DOTTED_NAMES))
NAMED = {"data.dataset": names, "model.arch": names, "sparsity.rule": names,
         "widen.methods": st.lists(names, min_size=1, max_size=2, unique=True)}


def value_for(path: str):
    return st.one_of(NAMED[path], values) if path in NAMED else values


edit = st.one_of(paths.flatmap(lambda path: st.tuples(st.just("set"), st.just(path), value_for(path))),
                 st.sampled_from(sorted(NAMED)).flatmap(lambda path: st.tuples(st.just("set"), st.just(path),
                                                                               NAMED[path])),
                 st.tuples(st.just("delete"), paths, st.none()))
edits = st.lists(edit, min_size=1, max_size=3)
def flow(value) -> str:
    """A value as `--set` takes it: one line of YAML."""
    return yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10**6).strip().removesuffix(
        "...").strip()


set_strings = st.one_of(
    st.sampled_from(KEYS).flatmap(lambda key: value_for(key).map(lambda value: f"{key}={flow(value)}")),
    st.tuples(paths, safe_text).map("=".join),
    safe_text)


@st.composite
def recipe_texts(draw) -> str:
    """A recipe's YAML text: the base recipe edited, maybe a line repeated (a duplicated key)."""
    tree = copy.deepcopy(BASE)
    for op, path, value in draw(edits):
        set_path(tree, path, value) if op == "set" else delete_path(tree, path)
    text = yaml.safe_dump(tree, allow_unicode=True, sort_keys=False)
    lines = text.splitlines(keepends=True)
    if draw(st.integers(0, 3)) == 3:   # (Hypothesis draws small integers more often)
        i = draw(st.integers(0, len(lines) - 1))
        lines.insert(i, lines[i])
    return "".join(lines)


def assert_one_line_or_ok(res) -> str:
    """The property; what the case came to (for Hypothesis' statistics)."""
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert "Traceback" not in res.output, res.output
    assert res.exit_code in (0, 2), f"exit {res.exit_code}: {res.exception!r}\n{res.output}"
    if res.exit_code == 0:
        return "exit 0"
    assert lines and lines[-1].startswith("error: "), res.stderr
    assert all(line.startswith("warning: ") for line in lines[:-1]), res.stderr   # one line: the error
    error = lines[-1]
    return "exit 2: " + ("YAML" if "YAML" in error else "--set" if "--set" in error else
                         error.split(": ")[2].split()[0] if error.count(": ") > 1 else "other")


@settings(max_examples=settings.default.max_examples * 2)
@given(text=recipe_texts(), overrides=st.one_of(st.just([]), st.lists(set_strings, max_size=3)))
def test_check_exits_0_or_2_with_one_line(tmp_path_factory, text, overrides):
    path = tmp_path_factory.mktemp("recipe") / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    res = invoke(*["check", str(path), *[f"--set={o}" for o in overrides]])
    event(assert_one_line_or_ok(res))


def test_the_generator_reaches_both_outcomes(tmp_path):
    """The base recipe passes; a repeated line is a duplicated key (one line)."""
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(BASE, sort_keys=False))
    ok = invoke(*["check", str(path)])
    assert ok.exit_code == 0, ok.output
    path.write_text("name: a\n" + yaml.safe_dump(BASE, sort_keys=False))
    bad = invoke(*["check", str(path)])
    assert bad.exit_code == 2 and re.search(r"'name' is given twice", bad.stderr), bad.output


@pytest.mark.parametrize("key, value, words", [
    # Found by the property: each was a traceback (TypeError, AttributeError, ValueError on unpacking).
    ("data.dataset", "math:pi", ["data.dataset", "'math:pi' is a float, not a data set loader"]),
    ("data.dataset", "widecli.errors:WidecliError", ["data.dataset", "returned a WidecliError"]),
    ("data.dataset", "json:dumps", ["data.dataset", "'json:dumps' failed: TypeError", "--debug"]),
    ("sparsity.rule", "math:pi", ["sparsity.rule", "not a rule"]),
    ("sparsity.rule", "json:dumps", ["sparsity.rule", "'json:dumps' failed: TypeError"]),
    ("widen.methods", "[math:pi]", ["widen.methods", "not a method"]),
])
def test_a_dotted_path_to_the_wrong_kind_of_object_is_one_line(tmp_path, key, value, words):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(BASE, sort_keys=False))
    res = invoke(*["check", str(path), f"--set={key}={value}"])
    assert_one_line_or_ok(res)
    assert res.exit_code == 2 and all(w in res.stderr for w in words), res.stderr
