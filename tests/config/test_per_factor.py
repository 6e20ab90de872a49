"""Values tied to the widening factor (widen.per_factor, widen.per_method_factor): the official
per-width learning rates, resolved into each run's spec and validated against the grid."""

from __future__ import annotations

from pathlib import Path

import pytest

from widecli.errors import RecipeError
from widecli.recipes import expand, load_recipe, validate

ROOT = Path(__file__).resolve().parents[2]
# MLP/optimized_LR_for_NTK_style_MLP1.pt of the official code, keyed "<base>_<width>" (all 13 keys).
OFFICIAL_LR = {"8_8": 5.0, "8_32": 136.0, "8_128": 260.0, "8_216": 361.0, "8_328": 491.0, "8_512": 736.0,
               "8_635": 875.0, "32_32": 80.0, "128_128": 173.0, "216_216": 228.0, "328_328": 306.0,
               "512_512": 445.0, "635_635": 460.0}


def test_the_paper_recipe_runs_the_official_learning_rate_of_each_width():
    specs = expand(load_recipe(ROOT / "recipes" / "paper" / "mlp_mnist.yaml"))
    assert len(specs) == 5 * (1 + 6 * 2)
    for s in specs:
        width = round(s.factor * 8)
        # The official dense run at width w has base_width w (generate_args.py: cur_base_width).
        base = width if s.method == "dense" else 8
        assert s.train.lr == OFFICIAL_LR[f"{base}_{width}"], (s.factor, s.method)
        assert s.train.epochs == 299 and s.train.batch_size == 256 and s.train.momentum == 0
        assert s.model.init == "uniform" and s.data.normalize == "pixelwise_batch_official"


def _raw(**widen):
    return {"name": "t", "data": {"dataset": "mnist1d"}, "model": {"hidden": [8]},
            "widen": {"factors": [1, 2], "methods": ["sparse", "dense"], **widen}}


def test_values_enter_the_spec_and_the_run_id():
    a = expand(validate(_raw(per_factor={"train.lr": {1: 0.1, 2: 0.2}}), "x"))
    b = expand(validate(_raw(per_factor={"train.lr": {1: 0.1, 2: 0.3}}), "x"))
    lr = {(s.factor, s.method): s.train.lr for s in a}
    assert lr == {(1.0, "dense"): 0.1, (2.0, "sparse"): 0.2, (2.0, "dense"): 0.2}
    ids_a, ids_b = {s.factor: s.run_id for s in a if s.method == "sparse" or s.factor == 1}, \
        {s.factor: s.run_id for s in b if s.method == "sparse" or s.factor == 1}
    assert ids_a[1.0] == ids_b[1.0] and ids_a[2.0] != ids_b[2.0]
    m = expand(validate(_raw(per_factor={"train.lr": {1: 0.1, 2: 0.2}},
                             per_method_factor={"dense": {"train.lr": {2: 0.5}}}), "x"))
    assert {(s.factor, s.method): s.train.lr for s in m}[(2.0, "dense")] == 0.5


@pytest.mark.parametrize("widen, words", [
    ({"per_factor": {"train.lr": {1: 0.1}}}, ["widen.per_factor.train.lr", "factor 2"]),
    ({"per_factor": {"widen.layers": {1: "first", 2: "all"}}}, ["widen.per_factor.widen.layers", "cannot depend"]),
    ({"per_factor": {"train.lr": {1: 0.1, 2: -1}}}, ["train.lr", "-1"]),
    ({"per_method_factor": {"sprase": {"train.lr": {2: 0.1}}}},
     ["widen.per_method_factor.sprase", "unknown method", "did you mean 'sparse'"]),
    ({"per_method_factor": {"dense": {"train.lr": {4: 0.1}}}}, ["widen.per_method_factor.dense.train.lr", "factor 2"]),
])
def test_bad_tables_are_one_line_errors(widen, words):
    with pytest.raises(RecipeError) as e:
        expand(validate(_raw(**widen), "recipe.yaml"))
    message = str(e.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_narrowing_the_grid_to_fewer_methods_is_legal_and_warns(tmp_path):
    """--set widen.methods=[sparse] on the paper recipe: the dense table becomes unused, a warning."""
    warnings = []
    r = load_recipe(ROOT / "recipes" / "paper" / "mlp_mnist.yaml",
                    ["widen.methods=[sparse]", "widen.factors=[1,4,16]", "seeds=[0,1,2]"], warn=warnings.append)
    assert [s.method for s in expand(r)].count("sparse") == 6
    assert len(warnings) == 1 and "widen.per_method_factor.dense: has no effect" in warnings[0]
    assert "dense is not in widen.methods (sparse)" in warnings[0]
