"""sparsity.mask and its settings in recipes (issue 29): run ids, canonical specs, one-line errors."""

from __future__ import annotations

import pytest

from widecli.errors import RecipeError
from widecli.recipes import expand, load_recipe


def ids(path, *overrides) -> dict:
    return {(s.factor, s.method, s.seed): s.run_id for s in expand(load_recipe(path, list(overrides)))}


def test_the_default_mask_keeps_every_run_id(make_recipe):
    path = make_recipe()
    assert ids(path) == ids(path, "sparsity.mask=random")


def test_other_families_are_other_runs_but_share_baseline_and_dense(make_recipe):
    path = make_recipe()
    plain, rigl = ids(path), ids(path, "sparsity.mask=rigl")
    assert plain[(2.0, "sparse", 0)] != rigl[(2.0, "sparse", 0)]
    assert plain[(1.0, "dense", 0)] == rigl[(1.0, "dense", 0)] and plain[(2.0, "dense", 0)] == rigl[(2.0, "dense", 0)]


def test_a_familys_own_settings_do_not_split_the_other_families_runs(make_recipe):
    """sparsity.update_every in a sweep over masks: random and snip runs keep their ids."""
    path = make_recipe({"sparsity": {"update_every": 7}, "sweep": {"sparsity.mask": ["random", "snip", "rigl"]}})
    specs = expand(load_recipe(path))
    by_mask = {s.sparsity.mask: s for s in specs if s.method == "sparse"}
    assert by_mask["random"].run_id == ids(make_recipe(name="plain"))[(2.0, "sparse", 0)]
    assert by_mask["random"].sparsity.update_every == 100 and by_mask["rigl"].sparsity.update_every == 7


@pytest.mark.parametrize("overrides, needles", [
    (["sparsity.drop_fraction=0.5"], ["sparsity.drop_fraction", "no effect", "set and rigl"]),
    (["sparsity.mask=snip", "sparsity.synflow_iterations=10"], ["sparsity.synflow_iterations", "synflow"]),
    (["sparsity.mask=rigl", "train.backend=sparse"], ["train.backend", "sparsity.mask", "rigl", "auto or dense"]),
    (["sparsity.mask=set", "train.backend=sparse"], ["train.backend", "set"]),
    (["model.arch=cnn", "data.dataset=digits", "sparsity.granularity=kernel", "sparsity.mask=snip"],
     ["sparsity.granularity", "random only"]),
    (["sparsity.mask=2:4"], ["sparsity.mask", "quoted", '"2:4"']),
    (["sparsity.mask=magic"], ["sparsity.mask", "magic", "random, snip, synflow, set, rigl", "N:M"]),
    (['sparsity.mask="4:2"'], ["sparsity.mask", "1 <= N < M"]),
    (["sparsity.update_end=0"], ["sparsity.update_end", "greater than 0"]),
    (["sparsity.drop_fraction=1.5"], ["sparsity.drop_fraction"]),
])
def test_bad_mask_settings_are_one_line_naming_the_key(make_recipe, overrides, needles):
    raw = {"model": {"arch": "cnn", "width": 2}} if any("cnn" in o for o in overrides) else {}
    overrides = [o for o in overrides if not o.startswith("model.arch")]
    with pytest.raises(RecipeError) as e:
        load_recipe(make_recipe(raw), overrides)
    msg = str(e.value)
    # The error names where the bad value came from: the --set that gave it (all values here do).
    assert "\n" not in msg and msg.startswith("--set "), msg
    for needle in needles:
        assert needle in msg, msg


def test_a_sweep_over_masks_may_give_one_familys_setting(make_recipe):
    warned = []
    load_recipe(make_recipe({"sparsity": {"update_every": 7}, "sweep": {"sparsity.mask": ["random", "rigl"]}}),
                warn=warned.append)
    assert not warned
    with pytest.raises(RecipeError, match="sparsity.update_every: has no effect"):
        load_recipe(make_recipe({"sparsity": {"update_every": 7}, "sweep": {"sparsity.mask": ["random", "snip"]}}))


def test_a_backend_conflict_at_one_sweep_point_is_an_error(make_recipe):
    with pytest.raises(RecipeError, match="train.backend"):
        load_recipe(make_recipe({"train": {"backend": "sparse"}, "sweep": {"sparsity.mask": ["random", "rigl"]}}))
