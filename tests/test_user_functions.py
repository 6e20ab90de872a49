"""Registries of plain functions (data set loaders, sparsity rules) take a user's function by dotted
path: it is called as itself, and what it gets wrong - not callable, raising, returning the wrong
kind of thing - is one RecipeError line naming the recipe key (the cause kept for --debug)."""

from __future__ import annotations

import numpy as np
import pytest

from widecli.config.schema import DataConfig
from widecli.data.registry import DATASETS, load_arrays
from widecli.errors import DataError, RecipeError
from widecli.registry import Registry, user_function
from widecli.sparsity.rules import RULES, allocate


def test_a_users_rule_and_loader_are_called_as_themselves(data_root):
    assert RULES.get("widecli.sparsity.rules:_leveling") is not RULES.get("leveling")   # wrapped
    sizes = {"a": (10, 10), "b": (5, 4)}
    assert allocate("widecli.sparsity.rules:_leveling", sizes, 60) == allocate("leveling", sizes, 60)
    cfg = DataConfig(dataset="widecli.data.loaders:digits", root=str(data_root))
    assert DATASETS.get(cfg.dataset).loader is not DATASETS.get("digits").loader             # wrapped
    mine, builtin = load_arrays(cfg), load_arrays(cfg.model_copy(update={"dataset": "digits"}))
    assert all(np.array_equal(getattr(mine, f), getattr(builtin, f)) for f in ("x_train", "y_train", "x_test", "y_test"))


def test_what_a_users_function_gets_wrong_is_one_recipe_error():
    registry = Registry("things", "thing.key", user_function("thing.key", "thing", "f(x) -> int",
                                                             returns=lambda r: isinstance(r, int)))
    with pytest.raises(RecipeError, match=r"^thing.key: 'math:pi' is a float, not a thing: widecli calls it as f"):
        registry.get("math:pi")
    with pytest.raises(RecipeError, match=r"^thing.key: thing 'math:sqrt' failed: TypeError: .*--debug") as e:
        registry.get("math:sqrt")("x")
    assert isinstance(e.value.__cause__, TypeError) and "\n" not in str(e.value)
    with pytest.raises(RecipeError, match=r"^thing.key: thing 'math:sqrt' returned a float; widecli calls it"):
        registry.get("math:sqrt")(4)
    assert registry.get("math:floor")(2.5) == 2


def test_a_widecli_error_or_an_interrupt_from_a_users_function_passes_as_it_is():
    def loader(cfg):
        raise DataError("data.path: no such file")
    adapted = user_function("data.dataset", "loader", "loader(cfg)")("x:y", loader)
    with pytest.raises(DataError, match="^data.path: no such file$"):
        adapted(None)

    def interrupted(cfg):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        user_function("data.dataset", "loader", "loader(cfg)")("x:y", interrupted)(None)
    assert DATASETS.get("digits").loader.__module__ == "widecli.data.loaders"   # built-ins are not wrapped
