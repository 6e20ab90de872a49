"""widecli report: Table 1 against hand computations, every format parsed back, plots written."""

from __future__ import annotations

import io
import json
import re
import statistics

import pandas as pd
import pytest
from helpers import CPU, invoke

from widecli.analysis import report
from widecli.analysis.frame import load_frame, studies
from widecli.analysis.table1 import table1
from widecli.config.schema import RunSpec
from widecli.execute.run import run_group
from widecli.recipes import expand, load_recipe, make_spec
from widecli.store import runs as store

# Known test accuracies: {(method, factor): [seed 0, seed 1, seed 2]}
BASE = [0.80, 0.82, 0.81]
ACC = {("sparse", 2): [0.83, 0.85, 0.84], ("sparse", 4): [0.86, 0.87, 0.85],
       ("dense", 2): [0.85, 0.86, 0.87], ("dense", 4): [0.90, 0.91, 0.89],
       ("linear_bottleneck", 2): [0.82, 0.83, 0.84], ("linear_bottleneck", 4): [0.81, 0.81, 0.81]}
ERK = {2: [0.84, 0.84, 0.84], 4: [0.80, 0.80, 0.80]}  # erk: best at f=2 and one seed of f=4 missing


def _write(results, spec, test_acc, connectivity=0.5, status="ok", val_acc=None):
    final = {"test_accuracy": test_acc, "train_accuracy": min(1.0, test_acc + 0.1), "epochs_run": 1,
             **({"val_accuracy": val_acc} if val_acc is not None else {})}
    weights = {"budget": 100, "dense_weights": 200, "nonzeros": 100, "connectivity": connectivity}
    store.write_run(results, spec, [{"epoch": 1, "test_accuracy": test_acc}],
                    {"status": status, "final": final, "weights": weights})


@pytest.fixture
def synthetic(tmp_path, make_recipe):
    """A results directory of known numbers: a proportional and an erk study sharing baseline/dense."""
    r = load_recipe(make_recipe({"widen": {"factors": [1, 2, 4],
                                           "methods": ["sparse", "dense", "linear_bottleneck"]},
                                 "seeds": [0, 1, 2]}, name="syn"))
    results = tmp_path / "results"
    for seed, acc in enumerate(BASE):
        _write(results, make_spec(r, 1, "dense", seed), acc, 1.0)
    for (method, f), accs in ACC.items():
        for seed, acc in enumerate(accs):
            _write(results, make_spec(r, f, method, seed), acc, 1.0 if method == "dense" else 1 / f)
    erk = r.model_copy(update={"sparsity": r.sparsity.model_copy(update={"rule": "erk"})})
    for f, accs in ERK.items():
        for seed, acc in enumerate(accs):
            if (f, seed) != (4, 2):
                _write(results, make_spec(erk, f, "sparse", seed), acc, 1 / f)
    return results, r


def test_the_best_sparse_width_is_chosen_by_validation_and_reported_at_test(tmp_path, make_recipe):
    """Test accuracy favours f=4, validation f=2: with a validation split Table 1 picks f=2 and
    reports its test accuracy; dense wide and the fraction follow the pick."""
    r = load_recipe(make_recipe({"data": {"validation": 100}, "widen": {"factors": [1, 2, 4]},
                                 "seeds": [0, 1]}, name="val"))
    results = tmp_path / "results"
    cells = {(1, "dense"): ((0.80, 0.81), 0.80), (2, "sparse"): ((0.84, 0.85), 0.90),
             (4, "sparse"): ((0.86, 0.87), 0.85), (2, "dense"): ((0.88, 0.89), 0.88),
             (4, "dense"): ((0.90, 0.91), 0.90)}
    for (f, method), (tests, val) in cells.items():
        for seed, test in enumerate(tests):
            _write(results, make_spec(r, f, method, seed), test, val_acc=val)
    row = table1(studies(load_frame(results))).iloc[0]
    assert (row["selected_by"], row["sparse_factor"]) == ("validation", 2)
    assert row["sparse"] == pytest.approx(0.845) and row["dense"] == pytest.approx(0.885)
    assert row["fraction"] == pytest.approx((0.845 - 0.805) / (0.885 - 0.805))
    # One run without a validation accuracy (trained before data.validation existed): by test.
    _write(results, make_spec(r, 4, "sparse", 1), 0.87)
    row = table1(studies(load_frame(results))).iloc[0]
    assert (row["selected_by"], row["sparse_factor"]) == ("test", 4)


def test_table1_matches_hand_computation(synthetic):
    results, _ = synthetic
    df = load_frame(results)
    t = table1(studies(df)).set_index("rule")
    assert list(t.index) == ["erk", "proportional"]  # studies sorted by their labels
    prop = t.loc["proportional"]
    assert prop["baseline"] == pytest.approx(0.81) and prop["baseline_std"] == pytest.approx(0.01)
    # best sparse: f=4 (mean 0.86 > 0.84), its connectivity, dense at the same factor
    assert (prop["sparse"], prop["sparse_factor"], prop["sparse_connectivity"]) == pytest.approx((0.86, 4, 0.25))
    assert prop["sparse_std"] == pytest.approx(0.01)
    assert (prop["dense"], prop["dense_factor"], prop["dense_at"]) == (pytest.approx(0.90), 4, "same f")
    # fraction: ratio of the means; ± pairs seeds: (0.86-0.80)/(0.90-0.80), (0.87-0.82)/(0.91-0.82), ...
    assert prop["fraction"] == pytest.approx((0.86 - 0.81) / (0.90 - 0.81))
    per_seed = [0.06 / 0.10, 0.05 / 0.09, 0.04 / 0.08]
    assert prop["fraction_std"] == pytest.approx(statistics.stdev(per_seed))
    assert prop["fraction_seeds"] == 3
    # Paired bootstrap over 3 seeds: every resample's mean lies between the per-seed extremes, and
    # each extreme (all three draws the same seed) has probability 1/27 > 2.5%: the 95% intervals are
    # [min, max] of the per-seed values. Δ sparse: 0.06, 0.05, 0.04; Δ dense: 0.10, 0.09, 0.08;
    # fraction (a ratio of means lies between the per-seed ratios): 0.6, 0.556, 0.5.
    assert prop["selected_by"] == "test"  # no validation split
    assert prop["delta"] == pytest.approx(0.05) and json.loads(prop["delta_ci95"]) == pytest.approx([0.04, 0.06])
    assert json.loads(prop["dense_delta_ci95"]) == pytest.approx([0.08, 0.10])
    assert json.loads(prop["fraction_ci95"]) == pytest.approx([0.5, 0.6])
    assert (prop["linear_bottleneck"], prop["linear_bottleneck_factor"]) == pytest.approx((0.83, 2))
    assert prop["missing"] == 0 and prop["note"] == ""

    erk = t.loc["erk"]  # shares the baseline and dense runs; its best factor is 2
    assert erk["baseline"] == pytest.approx(0.81)
    assert (erk["sparse"], erk["sparse_factor"], erk["dense"], erk["dense_factor"]) == pytest.approx((0.84, 2, 0.86, 2))
    assert erk["fraction"] == pytest.approx((0.84 - 0.81) / (0.86 - 0.81))
    assert erk["fraction_std"] == pytest.approx(statistics.stdev([0.04 / 0.05, 0.02 / 0.04, 0.03 / 0.06]))
    assert erk["missing"] == 1 and "1 run(s) missing" in erk["note"]
    # a single recipe's folder works too
    assert len(load_frame(results / "syn")) == len(load_frame(results))


def test_missing_pieces_give_notes(tmp_path, make_recipe):
    r = load_recipe(make_recipe({"widen": {"factors": [1, 2, 4], "methods": ["sparse", "dense"]}}, name="gaps"))
    results = tmp_path / "results"
    _write(results, make_spec(r, 4, "sparse", 0), 0.7, 0.25)   # no baseline
    _write(results, make_spec(r, 2, "dense", 0), 0.9, 1.0)     # dense only at f=2: the widest
    [row] = table1(studies(load_frame(results))).to_dict("records")
    assert "no baseline" in row["note"] and pd.isna(row["baseline"]) and pd.isna(row["fraction"])
    assert (row["dense"], row["dense_factor"], row["dense_at"]) == (0.9, 2, "widest")

    only_sparse = tmp_path / "only_sparse"
    _write(only_sparse, make_spec(r, 1, "dense", 0), 0.6, 1.0)
    _write(only_sparse, make_spec(r, 2, "sparse", 0), 0.7, 0.5)
    [row] = table1(studies(load_frame(only_sparse))).to_dict("records")
    assert "no dense-wide runs" in row["note"] and row["sparse"] == 0.7 and pd.isna(row["fraction"])


def test_expected_runs_from_recipe(synthetic):
    results, r = synthetic
    specs = expand(r)  # the proportional recipe: all finished
    t = table1(studies(load_frame(results, ["syn"], specs)))
    assert t.set_index("rule").loc["proportional", "missing"] == 0
    more = r.model_copy(update={"seeds": [0, 1, 2, 3]})
    t = table1(studies(load_frame(results, ["syn"], expand(more))))
    # seed 3: baseline + 2 factors x 3 methods
    assert t.set_index("rule").loc["proportional", "missing"] == 7


def _parse_md(text: str) -> list[list[str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    assert re.fullmatch(r"\|[-|: ]+\|", lines[1])
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[:1] + lines[2:]]


def test_formats_parse_back(synthetic, tmp_path):
    results, _ = synthetic
    res = invoke("report", results, "--table1", "--format", "csv", "--out", tmp_path / "o")
    assert res.exit_code == 0, res.output
    csv = pd.read_csv(tmp_path / "o" / "report-table1.csv")
    assert csv.loc[csv["rule"] == "proportional", "fraction"].item() == pytest.approx(0.05 / 0.09, abs=1e-12)
    assert pd.read_csv(io.StringIO(res.stdout)).shape == csv.shape

    md = _parse_md((tmp_path / "o" / "report.md").read_text().split("## Runs")[0])
    header, rows = md[0], md[1:]
    assert header[:5] == ["recipe", "dataset", "model", "widened", "rule"] and len(rows) == 2
    assert all(len(r) == len(header) for r in rows)
    prop = dict(zip(header, rows[1], strict=True))
    assert prop["baseline"] == "81.00 ± 1.00" and prop["fraction [95% CI]"] == "0.56 [0.50, 0.60]"
    assert prop["Δ sparse [95% CI]"] == "+5.00 [+4.00, +6.00]" and prop["selected by"] == "test"
    assert prop["best sparse wide (f, connectivity)"] == "86.00 ± 1.00 (f=4, 0.25)"

    res = invoke("report", results, "--table1", "--format", "latex", "--out", tmp_path / "o")
    tex = (tmp_path / "o" / "report-table1.tex").read_text()
    assert res.exit_code == 0 and tex.startswith("\\begin{tabular}") and tex.rstrip().endswith("\\end{tabular}")
    assert all(k in tex for k in ("\\toprule", "\\midrule", "\\bottomrule", "$\\pm$"))
    body = tex.split("\\midrule")[1].split("\\bottomrule")[0].strip().splitlines()
    assert len(body) == 2 and all(ln.count("&") == tex.splitlines()[2].count("&") for ln in body)

    res = invoke("report", results, "--runs", "--format", "txt", "--out", tmp_path / "o")
    assert res.exit_code == 0 and "linear_bottleneck" in res.stdout and "86.00 ± 1.00" in res.stdout
    txt = (tmp_path / "o" / "report.txt").read_text()
    assert txt.startswith("Runs") and "2*" in txt  # erk f=4 has 2 of 3 seeds: marked incomplete


def test_errors_are_one_line(tmp_path):
    res = invoke("report", tmp_path / "nope")
    assert res.exit_code == 2 and "no such results directory" in res.output
    (tmp_path / "empty").mkdir()
    res = invoke("report", tmp_path / "empty")
    assert res.exit_code == 2 and "no finished runs" in res.output and len(res.output.strip().splitlines()) == 1
    res = invoke("report", tmp_path, "--format", "pdf")
    assert res.exit_code == 2 and "allowed: md, txt, csv, latex" in res.output


def test_real_tiny_sweep_report(tmp_path, make_recipe):
    """Real runs (MNIST-1D, 1 epoch, 2 seeds): Table 1 equals the numbers in the result files."""
    r = load_recipe(make_recipe({"model": {"hidden": [16, 16]}, "train": {"epochs": 1},
                                 "seeds": [0, 1]}, name="real"))
    results = tmp_path / "results"
    by_stack: dict[str, list] = {}
    for spec in expand(r):
        by_stack.setdefault(spec.stack_key(), []).append(spec)
    for specs in by_stack.values():
        run_group(specs, results, CPU, record_failures=False)
    acc = {}
    for res in store.finished_runs(results).values():
        s = res["spec"]
        acc.setdefault((s["method"], s["factor"]), {})[s["seed"]] = res["final"]["test_accuracy"]
    base, sp, de = acc[("dense", 1.0)], acc[("sparse", 2.0)], acc[("dense", 2.0)]

    out = tmp_path / "report"
    res = invoke("report", results, "--table1", "--plot", "--out", out)
    assert res.exit_code == 0, res.output
    [row] = table1(studies(load_frame(results))).to_dict("records")
    mean = lambda d: sum(d.values()) / len(d)  # noqa: E731
    assert row["baseline"] == pytest.approx(mean(base)) and row["sparse"] == pytest.approx(mean(sp))
    assert row["dense"] == pytest.approx(mean(de)) and row["sparse_factor"] == 2
    assert row["fraction"] == pytest.approx((mean(sp) - mean(base)) / (mean(de) - mean(base)))
    assert row["fraction_std"] == pytest.approx(statistics.stdev(
        [(sp[s] - base[s]) / (de[s] - base[s]) for s in (0, 1)]), nan_ok=True)
    pngs = [p for p in (out / "plots").glob("*.png") if not p.name.endswith("-pareto.png")]  # issue 29: + Pareto
    assert len(pngs) == 1 and pngs[0].stat().st_size > 10_000
    assert pngs[0].name == "real-first-proportional.png" and str(pngs[0]) in res.output.replace("\n", "")
    assert (out / "report.md").read_text().count("| real ") == 1


def test_connectivity_heatmap(tmp_path, make_recipe):
    """A 2-D sweep over custom connectivities gives one heat map per factor."""
    r = load_recipe(make_recipe({"sparsity": {"rule": "custom"}, "widen": {"factors": [1, 4]},
                                 "sweep": {"sparsity.connectivity.fc1": [0.2, 0.3],
                                           "sparsity.connectivity.out": [0.5, 1.0]}}, name="grid"))
    results = tmp_path / "results"
    for i, spec in enumerate(expand(r)):
        _write(results, spec, 0.5 + 0.01 * i, 0.3)
    rep = report.build(results, plot=True, out=tmp_path / "o")
    maps = [f for f in rep.files if "connectivity-f4" in f.name]
    assert len(maps) == 1 and maps[0].stat().st_size > 5_000
    assert len(rep.tables["table1"]) == 4  # one study per connectivity pair
    assert {"sparsity.connectivity"} <= set(rep.tables["table1"].columns)
    json.dumps(rep.tables["table1"]["sparsity.connectivity"].tolist())


def test_runs_under_outdated_ids_are_noted(tmp_path, make_recipe, monkeypatch):
    r = load_recipe(make_recipe({}, name="old"))
    results = tmp_path / "results"
    _write(results, make_spec(r, 1, "dense", 0), 0.5, 1.0)
    with monkeypatch.context() as m:  # as if written by a widecli that hashed specs differently
        m.setattr(RunSpec, "run_id", property(lambda self: "0123456789ab"))
        _write(results, make_spec(r, 2, "sparse", 0), 0.6, 0.5)
    [row] = table1(studies(load_frame(results))).to_dict("records")
    assert "1 run(s) under outdated run ids" in row["note"] and row["sparse"] == 0.6


def test_study_names_are_stable_when_another_recipe_is_added(synthetic, make_recipe):
    results, _ = synthetic
    before = sorted(s.name for s in studies(load_frame(results)))
    assert before == ["syn-first-erk", "syn-first-proportional"]
    other = load_recipe(make_recipe({"train": {"epochs": 7, "lr": 0.3}, "data": {"subset": 50}}, name="other"))
    _write(results, make_spec(other, 1, "dense", 0), 0.5, 1.0)
    _write(results, make_spec(other, 2, "sparse", 0), 0.6, 0.5)
    names = sorted(s.name for s in studies(load_frame(results)))
    assert [n for n in names if n.startswith("syn")] == before
    assert all("nan" not in n for n in names)


def test_two_recipes_holding_the_same_runs_each_keep_them(synthetic, make_recipe):
    results, r = synthetic
    twin = r.model_copy(update={"name": "twin"})  # same specs, so the same run ids, another folder
    for seed, acc in enumerate(BASE):
        _write(results, make_spec(twin, 1, "dense", seed), acc, 1.0)
    df = load_frame(results)
    assert (df["recipe"] == "syn").sum() == 3 + sum(map(len, ACC.values())) + 5
    assert (df["recipe"] == "twin").sum() == 3
    assert len(store.finished_runs(results)) == len(df)
