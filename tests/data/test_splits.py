"""Training subset and validation split: fixed or seeded subsets, held-out images that training
never sees, and validation accuracy recorded per epoch by a real run."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import CPU

from widecli.config.schema import DataConfig
from widecli.data.registry import load_arrays
from widecli.data.splits import split
from widecli.errors import DataError, RecipeError
from widecli.execute.worklist import stack_groups
from widecli.recipes import expand, load_recipe


def arrays(n_train=100, n_test=30):
    """Images whose first feature is their index: which image went where can be read back."""
    x_train = np.arange(n_train, dtype=np.float32)[:, None].repeat(3, 1)
    x_test = (1000 + np.arange(n_test, dtype=np.float32))[:, None].repeat(3, 1)
    return x_train, np.arange(n_train) % 10, x_test, np.arange(n_test) % 10


def ids(x):
    return set(x[:, 0].astype(int).tolist())


def test_without_validation_the_subset_is_what_it_always_was():
    x, y, xt, yt = arrays()
    s = split(x, y, xt, yt, subset=20, validation=None)
    assert list(s.x_train[:, 0].astype(int)) == list(np.random.default_rng(0).permutation(100)[:20])
    assert s.x_val is None and s.x_test is xt
    whole = split(x, y, xt, yt, subset=None, validation=None)
    assert whole.x_train is x and whole.y_train is y


@pytest.mark.parametrize("subset", [None, 20, 70])
def test_validation_is_held_out_from_the_training_side(subset):
    x, y, xt, yt = arrays()
    s = split(x, y, xt, yt, subset=subset, validation=30)
    assert len(s.x_val) == 30 and len(s.y_val) == 30 and ids(s.x_test) == ids(xt)
    assert not ids(s.x_train) & ids(s.x_val)                  # training never sees them
    assert len(s.x_train) == (subset or 70)
    # A fixed subset keeps its images: the first of the same permutation, validation at its end.
    if subset:
        assert ids(s.x_train) == ids(split(x, y, xt, yt, subset=subset, validation=None).x_train)


def test_validation_from_the_test_side_leaves_the_training_set_as_it_is():
    x, y, xt, yt = arrays()
    s = split(x, y, xt, yt, subset=None, validation=10, validation_from_test=True)
    assert s.x_train is x and ids(s.x_val) | ids(s.x_test) == ids(xt) and not ids(s.x_val) & ids(s.x_test)
    assert len(s.x_val) == 10 and len(s.x_test) == 20


def test_a_seeded_subset_differs_by_seed_and_is_reproducible():
    x, y, xt, yt = arrays()
    a, b, a2 = (split(x, y, xt, yt, subset=20, validation=10, draw_seed=s) for s in (1, 2, 1))
    assert ids(a.x_train) != ids(b.x_train) and np.array_equal(a.x_train, a2.x_train)
    for s in (a, b):
        assert len(s.x_train) == 20 and not ids(s.x_train) & ids(s.x_val)
        assert ids(s.x_val) == ids(a.x_val)                    # validation is the same for every seed


@pytest.mark.parametrize("kw, words", [
    ({"subset": 80, "validation": 30}, ["data.validation: got 30", "needs 110 training images and has 100"]),
    ({"subset": None, "validation": 100}, ["data.validation: got 100", "at least one"]),
    ({"subset": None, "validation": 30, "validation_from_test": True}, ["data.validation: got 30", "30 non-training"]),
])
def test_an_impossible_split_is_a_one_line_data_error(kw, words):
    with pytest.raises(DataError) as e:
        split(*arrays(), **kw)
    assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)


def test_mnist5k_validation_comes_from_its_non_training_digits(tmp_path):
    root = str(tmp_path)
    plain = load_arrays(DataConfig(dataset="mnist5k", root=root, normalize="none"))
    held = load_arrays(DataConfig(dataset="mnist5k", root=root, normalize="none", validation=952))
    assert np.array_equal(held.x_train, plain.x_train)         # the official 2,048, untouched
    assert len(held.x_val) == 952 and len(held.x_test) == 2000
    assert np.array_equal(np.concatenate([held.x_val, held.x_test]), plain.x_test)
    # Training-set statistics come from the training set only and apply to validation too.
    norm = load_arrays(DataConfig(dataset="mnist5k", root=root, normalize="pixelwise", validation=952))
    mean, std = plain.x_train.mean(0), plain.x_train.std(0)
    np.testing.assert_allclose(norm.x_val, (held.x_val - mean) / np.where(std > 1e-8, std, 1.0), atol=1e-5)


def test_a_real_run_records_validation_accuracy_every_epoch(make_recipe, run_stored, tmp_path):
    r = load_recipe(make_recipe({"data": {"validation": 500}, "widen": {"factors": [1], "methods": ["dense"]},
                                 "train": {"epochs": 3}}))
    [(run, path)] = run_stored(expand(r), tmp_path / "results", CPU)
    assert [list(row) for row in run.metrics] == [["epoch", "lr", "train_loss", "train_accuracy", "test_loss",
                                                   "test_accuracy", "val_loss", "val_accuracy", "seconds"]] * 3
    assert all(0 < float(row["val_accuracy"]) <= 1 for row in run.metrics)
    assert run.final["val_accuracy"] == float(run.metrics[-1]["val_accuracy"])
    result = (path / "result.json").read_text()
    assert '"val_size": 500' in result and '"train_size": 3500' in result


def test_seeded_subsets_do_not_stack(make_recipe):
    r = load_recipe(make_recipe({"data": {"subset": 500, "subset_draw": "seed"},
                                 "widen": {"factors": [1], "methods": ["dense"]}, "seeds": [0, 1, 2]}))
    assert [len(g) for g in stack_groups(expand(r), CPU)] == [1, 1, 1]
    fixed = load_recipe(make_recipe({"data": {"subset": 500}, "widen": {"factors": [1], "methods": ["dense"]},
                                     "seeds": [0, 1, 2]}, name="fixed"))
    assert [len(g) for g in stack_groups(expand(fixed), CPU)] == [3]


@pytest.mark.parametrize("data, words", [
    ({"normalize": "pixelwise_batch"}, ["data.normalize", "pixelwise_batch_official", "pixelwise_batch_zero"]),
    ({"normalize": "pixelwise_batch_official"}, ["data.normalize", "mnist or mnist5k, not mnist1d"]),
    ({"subset_draw": "seed"}, ["data.subset_draw: has no effect", "data.subset is set"]),
    ({"validation": 0}, ["data.validation", "greater than or equal to 1"]),
])
def test_bad_data_settings_are_one_line_recipe_errors(make_recipe, data, words):
    with pytest.raises(RecipeError) as e:
        load_recipe(make_recipe({"data": data}))
    assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)
