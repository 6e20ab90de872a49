"""widecli ablate: arm expansion, a tiny real two-arm ablation, resumption, bad values."""

from __future__ import annotations

import json
import statistics

import pandas as pd
import pytest
from helpers import invoke

from widecli.analysis import ablate
from widecli.errors import RecipeError
from widecli.recipes import load_recipe
from widecli.store import runs as store


@pytest.fixture
def two_layer(make_recipe):
    return make_recipe({"model": {"hidden": [16, 16]}, "train": {"epochs": 1}, "seeds": [0, 1]}, name="abl")


def test_arms_cross_product_reference_and_dedup(two_layer, make_recipe):
    arms, notes = ablate.arms(two_layer, ["all", "last"], ["proportional", "erk"])
    names = [a.name for a in arms]
    # reference first; widen=last x rule=proportional etc.: 2 x 2 = 4 arms besides the reference
    assert names == ["reference", "widen=all rule=proportional", "widen=all rule=erk",
                     "widen=last rule=proportional", "widen=last rule=erk"] and notes == []
    by = {a.name: a for a in arms}
    assert by["widen=last rule=erk"].recipe.widen.layers == "last"
    assert by["widen=last rule=erk"].recipe.sparsity.rule == "erk"
    assert all(len(a.specs) == 6 for a in arms)  # factors {1, 2} x {sparse, dense} x 2 seeds, f=1 shared
    baseline = {s.run_id for s in arms[0].specs if s.factor == 1}
    assert all(baseline <= set(a.run_ids) for a in arms)

    # the reference's own setting and `fc1` (= first) are dropped as duplicates, with a note
    arms, notes = ablate.arms(two_layer, ["first", "fc1", "fc1,fc2"])
    assert [a.name for a in arms] == ["reference", "widen=fc1,fc2"]
    assert len(notes) == 2 and "same runs as 'reference'" in notes[0]
    assert arms[1].recipe.widen.layers == ["fc1", "fc2"]

    arms, _ = ablate.arms(two_layer, rules=["erk"], reference=False)
    assert [a.name for a in arms] == ["rule=erk"]
    arms, _ = ablate.arms(two_layer, methods=["linear_bottleneck"])
    assert arms[1].method == "linear_bottleneck"
    assert arms[1].recipe.widen.methods == ["linear_bottleneck", "dense"]

    one_layer = make_recipe({}, name="one")  # one hidden layer: widening all = widening first
    arms, notes = ablate.arms(one_layer, ["all"])
    assert len(arms) == 1 and "widens fc1" in notes[0]
    # ... so an `all` arm with another rule reuses the reference's dense runs (same run ids)
    arms, notes = ablate.arms(one_layer, ["all"], ["erk"])
    assert arms[1].recipe.widen.layers == "first" and "same layers" in notes[0]
    dense = lambda a: {s.run_id for s in a.specs if s.method == "dense"}  # noqa: E731
    assert dense(arms[0]) == dense(arms[1])


def test_bad_values_exit_2_with_one_line(two_layer):
    for args, words in [(["--rule", "wide"], "--rule: unknown value 'wide'"),
                        (["--method", "sparse2"], "--method: unknown value 'sparse2'"),
                        (["--widen-layers", "fc9"], "unknown layer 'fc9'"),
                        (["--set", "train.lr=-1"], "train.lr"),
                        (["--no-reference"], "needs at least one")]:
        res = invoke("ablate", two_layer, *args, "--dry-run")
        assert res.exit_code == 2, res.output
        assert words in res.output and len(res.output.strip().splitlines()) == 1
    with pytest.raises(RecipeError):
        ablate.arms(two_layer, rules=["nope"])


def test_tiny_real_ablation_and_rerun(two_layer, tmp_path):
    results = tmp_path / "results"
    res = invoke("ablate", two_layer, "--widen-layers", "all", "--results", results, "--device", "cpu", "--dry-run")
    assert res.exit_code == 0, res.output
    assert "total (distinct runs)" in res.output and not (results / "abl").exists()

    res = invoke("ablate", two_layer, "--widen-layers", "all", "--results", results, "--device", "cpu")
    assert res.exit_code == 0, res.output
    finished = store.finished_runs(results, "abl")
    assert len(finished) == 10 and "trained 10" in res.output  # 2 arms x 6 runs, baseline shared

    [summary_csv] = (results / "abl").glob("ablate-*[0-9a-f].csv")
    summary = pd.read_csv(summary_csv).set_index("arm")
    acc = {(r["spec"]["widen_layers"], r["spec"]["method"], r["spec"]["factor"], r["spec"]["seed"]):
           r["final"]["test_accuracy"] for r in finished.values()}
    for arm, layers in (("reference", "first"), ("widen=all", "all")):
        sparse = [acc[(layers, "sparse", 2.0, s)] for s in (0, 1)]
        assert summary.loc[arm, "best"] == pytest.approx(statistics.mean(sparse))
        assert summary.loc[arm, "best_std"] == pytest.approx(statistics.stdev(sparse))
        assert summary.loc[arm, "baseline"] == pytest.approx(statistics.mean(acc[("first", "dense", 1.0, s)]
                                                                             for s in (0, 1)))
    delta = summary.loc["widen=all", "best"] - summary.loc["reference", "best"]
    assert summary.loc["widen=all", "delta"] == pytest.approx(delta)
    # The paired interval over 2 seeds: resample means are d0, (d0 + d1) / 2 or d1 (p = 1/4, 1/2, 1/4),
    # so the 95% interval is [min, max] of the per-seed differences of the arms' best cells.
    paired = sorted(acc[("all", "sparse", 2.0, s)] - acc[("first", "sparse", 2.0, s)] for s in (0, 1))
    assert json.loads(summary.loc["widen=all", "delta_ci95"]) == pytest.approx(paired)
    excludes = paired[0] > 0 or paired[1] < 0
    assert summary.loc["widen=all", "ci_excludes_0"] == ("yes" if excludes else "no")
    assert summary.loc["reference", "ci_excludes_0"] == "reference"
    assert (summary["selected_by"] == "test").all()

    factors = pd.read_csv(summary_csv.with_name(summary_csv.stem + "-factors.csv"))
    assert set(factors["arm"]) == {"reference", "widen=all"} and (factors["seeds"] == 2).all()
    md = summary_csv.with_suffix(".md").read_text()
    assert "| reference" in md and "| widen=all" in md and "f=2" in md
    assert summary_csv.with_suffix(".png").stat().st_size > 10_000

    # re-running trains nothing and leaves every result file untouched
    mtimes = {rid: (results / "abl" / rid / "result.json").stat().st_mtime_ns for rid in finished}
    res = invoke("ablate", two_layer, "--widen-layers", "all", "--results", results, "--device", "cpu")
    assert res.exit_code == 0 and "trained 0, 10 already finished" in res.output
    assert mtimes == {rid: (results / "abl" / rid / "result.json").stat().st_mtime_ns for rid in finished}
    dry = ablate.dry_run(ablate.arms(two_layer, ["all"])[0], results).set_index("arm")
    assert dry.loc["total (distinct runs)", "new"] == 0 and dry.loc["widen=all", "finished"] == 6


def test_default_recipe_is_the_offline_quickstart():
    r = load_recipe(ablate.default_recipe())
    assert r.name == "quickstart" and r.data.dataset == "mnist1d"
