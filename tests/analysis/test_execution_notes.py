"""A report says when the seeds of one cell ran with different execution choices (issue 28: one run
id gave 59.60% with the CSR backend, 61.50% with the dense one and 62.30% stacked): their spread then
mixes float-order effects into what reads as seed spread."""

from __future__ import annotations

from helpers import invoke


def train(recipe, results, *args):
    r = invoke("train", recipe, "--results", results, "--device", "cpu", *args)
    assert r.exit_code == 0, r.output


def test_a_cell_whose_seeds_ran_on_different_backends_is_noted(make_recipe, tmp_path):
    recipe = make_recipe({"widen": {"factors": [1, 2], "methods": ["sparse"]}, "seeds": [0, 1]})
    for seed in (0, 1):
        train(recipe, tmp_path, "--factor", "1", "--seed", str(seed))
    train(recipe, tmp_path, "--factor", "2", "--seed", "0", "--set", "train.backend=dense")
    train(recipe, tmp_path, "--factor", "2", "--seed", "1", "--set", "train.backend=sparse")
    r = invoke("report", tmp_path, "--table1")
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "note: tiny-first-proportional: the seeds of f=2 sparse ran with different execution choices " \
           "(backend dense / sparse)" in text, r.output


def test_uniform_cells_get_no_note(make_recipe, tmp_path):
    recipe = make_recipe({"widen": {"factors": [1, 2], "methods": ["sparse"]}, "seeds": [0, 1]})
    r = invoke("sweep", recipe, "--results", tmp_path, "--device", "cpu")
    assert r.exit_code == 0, r.output
    r = invoke("report", tmp_path, "--table1")
    assert r.exit_code == 0 and "execution choices" not in r.output, r.output
