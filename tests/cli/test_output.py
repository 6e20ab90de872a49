"""What a researcher reads (issue 21): reports that never write an empty file, Table 1 that fits the
terminal without splitting a number, one unit for accuracies, plain progress lines when stdout is
not a terminal, an estimate of the time left that follows the work left, switches without values,
`widecli runs`, and the layers title."""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path

import pytest
from helpers import invoke
from rich.console import Console

from widecli.analysis.formats import display_table1
from widecli.analysis.frame import load_frame, studies
from widecli.analysis.table1 import table1
from widecli.cli.render import console, progress
from widecli.cli.render.progress import RunProgress
from widecli.cli.render.table1 import table1_compact, table1_groups
from widecli.execute.worklist import RunStatus
from widecli.execute.run import Event

ROOT = Path(__file__).resolve().parents[2]
STUDIES = ROOT / "results" / "studies"


@pytest.fixture(scope="module")
def committed_table1():
    return table1(studies(load_frame(STUDIES)))


# ---------------------------------------------------------------- report files


def test_plots_only_never_write_an_empty_report_over_an_existing_one(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("the committed report\n")
    r = invoke("report", STUDIES, "--recipe", "digits_cnn", "--plot", "--out", out)
    assert r.exit_code == 0, r.output
    assert (out / "report.md").read_text() == "the committed report\n"
    assert not (out / "report.txt").exists()
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["digits_cnn-all-leveling.png",
                                                                 "digits_cnn-all-proportional.png"]


def test_a_filtered_report_in_the_results_folder_does_not_replace_the_full_one(tmp_path, run_stored, make_recipe):
    import shutil

    results = tmp_path / "results"
    shutil.copytree(STUDIES / "digits_cnn", results / "digits_cnn")
    shutil.copytree(STUDIES / "mnist1d_mlp", results / "mnist1d_mlp")
    assert invoke("report", results, "--table1").exit_code == 0
    full = (results / "report.md").read_text()
    assert "digits_cnn" in full and "mnist1d_mlp" in full
    r = invoke("report", results, "--table1", "--recipe", "digits_cnn")
    assert r.exit_code == 0, r.output
    assert (results / "report.md").read_text() == full
    only = (results / "report-digits_cnn.md").read_text()
    assert "digits_cnn" in only and "mnist1d_mlp" not in only and only.strip()


def test_curves_write_a_learning_curve_per_study(tmp_path):
    r = invoke("report", STUDIES, "--recipe", "digits_cnn", "--curves", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "digits_cnn-all-leveling-curves.png", "digits_cnn-all-proportional-curves.png"]


def test_table1_flag_prints_table1_only(tmp_path):
    r = invoke("report", STUDIES, "--table1", "--out", tmp_path)
    assert r.exit_code == 0
    assert "Table 1" in r.output and "Runs:" not in r.output and "█" not in r.output  # no charts
    r = invoke("report", STUDIES, "--recipe", "digits_cnn", "--charts", "--out", tmp_path)
    assert "█" in r.output


# ---------------------------------------------------------------- terminal Table 1


def _whole_figures(table, text: str) -> None:
    """Every baseline and best-sparse figure (mean±std, two decimals) printed in one piece."""
    words = " ".join(text.split())
    for col in ("baseline", "sparse"):
        for mean, std in zip(table[col], table[f"{col}_std"], strict=True):
            if mean == mean:
                figure = f"{100 * mean:.2f}" + (f"±{100 * std:.2f}" if std == std else "")
                assert figure in words, (col, figure)


def _row_labels(groups) -> list[tuple[str, str]]:
    return [(head, label) for head, rows in groups for label, _ in rows]


@pytest.mark.parametrize("width", [120, 100])
def test_terminal_table1_fits_the_width_and_never_splits_a_number(committed_table1, width):
    console = Console(width=width, file=io.StringIO(), record=True)
    console.print(table1_compact(committed_table1, width))
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    _whole_figures(committed_table1, text)
    assert not re.search(r"\d…|…\d|…", text), "a number or a label was cut"


def test_terminal_table1_tells_every_row_apart(committed_table1):
    """Issue 28: at 100 columns seven groups of rows of mnist1d_ablation looked identical (the recipe
    cut to `mnist1d_ablatio…` and the settings that differ dropped). Every row's visible label (its
    recipe group and its settings) is unique, each setting whole, and rows are grouped per recipe."""
    groups = table1_groups(committed_table1)
    labels = _row_labels(groups)
    assert len(set(labels)) == len(labels) == len(committed_table1)
    assert [head.split(" ")[0] for head, _ in groups] == list(dict.fromkeys(committed_table1["recipe"]))
    console = Console(width=100, file=io.StringIO(), record=True)
    console.print(table1_compact(committed_table1, 100))
    words = console.export_text().split()
    for head, label in labels:   # each setting of each label printed whole (wrapped only between settings)
        assert all(w in words for w in label.split()), label
    ablation = [label for head, label in labels if head.startswith("mnist1d_ablation")]
    assert "first leveling ep=100 scope=widened" in ablation and "first leveling ep=100 scope=all" in ablation


@pytest.mark.parametrize("width", [80, 50])
def test_a_narrow_terminal_keeps_every_row_whole(committed_table1, width):
    console = Console(width=width, file=io.StringIO(), record=True)
    console.print(table1_compact(committed_table1, width))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= width
    assert not re.search(r"\d…|…\d", text)
    _whole_figures(committed_table1, text)
    words = text.split()
    for _, label in _row_labels(table1_groups(committed_table1)):
        assert all(w in words for w in label.split()), label


def test_report_of_a_folder_with_only_the_studies_says_where_they_are(tmp_path):
    (tmp_path / "studies").mkdir()
    import shutil

    shutil.copytree(STUDIES / "digits_cnn", tmp_path / "studies" / "digits_cnn")
    r = invoke("report", tmp_path, "--table1")
    assert r.exit_code == 2
    assert len(r.output.strip().splitlines()) == 1
    assert f"widecli report {tmp_path / 'studies'}" in " ".join(r.output.split())


def test_report_files_keep_the_full_table(committed_table1):
    d = display_table1(committed_table1)
    assert {"baseline", "best sparse wide (f, connectivity)", "selected by", "Δ sparse [95% CI]", "dense wide",
            "fraction [95% CI]", "note"} <= set(d.columns)


# ---------------------------------------------------------------- units


def test_accuracies_are_percent_with_two_decimals_everywhere(make_recipe, tmp_path):
    recipe = make_recipe({"widen": {"factors": [1]}})
    r = invoke("train", recipe, "--results", tmp_path, "--device", "cpu")
    assert r.exit_code == 0, r.output
    [trained] = re.findall(r"test accuracy (\d+\.\d\d)%", r.output)
    r = invoke("sweep", recipe, "--results", tmp_path, "--device", "cpu", "--force")
    assert r.exit_code == 0, r.output
    assert "test acc %" in r.output and trained in r.output  # the sweep's table, same run, same figure
    r = invoke("report", tmp_path, "--runs", "--format", "md")
    assert f"{trained}" in r.output and "test acc %" in r.output
    assert not re.search(r"\b0\.\d{4}\b", r.output.split("Runs:")[-1].split("|")[-3])  # no fractions


# ---------------------------------------------------------------- progress


def _event(kind, runs=(("a", 2.0, "sparse", 0), ("b", 2.0, "sparse", 1)), **kw):
    return Event(kind, list(runs), **kw)


def test_progress_prints_plain_lines_when_not_a_terminal(monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr(console, "out", Console(file=buf, width=200, force_terminal=False))
    rows = [{"test_accuracy": 0.5512, "train_accuracy": 0.61}, {"test_accuracy": 0.5, "train_accuracy": 0.6}]
    with RunProgress("tiny", Path("results")) as p:
        assert p.lines
        p.on_event(_event("start"))
        for epoch in range(1, 101):
            p.on_event(_event("epoch", epoch=epoch, epochs=100, rows=rows))
    lines = [line for line in buf.getvalue().splitlines() if "epoch" in line]
    # seeds labelled, each with its own test and train accuracy (issue 28: `test … train … test …`)
    assert lines[0].startswith("f=2 sparse · epoch 1/100 · s0 test 55.12% train 61.00% · s1 test 50.00% train 60.00%")
    assert lines[-1].startswith("f=2 sparse · epoch 100/100") and "elapsed" in lines[-1] and "left" in lines[-1]
    assert len(lines) == 2  # a fast group: its first and last epoch (more only every 5 s / 60 s)


def test_no_plain_lines_in_a_terminal(monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr(console, "out", Console(file=buf, width=120, force_terminal=True))
    with RunProgress("tiny", Path("results")) as p:
        assert not p.lines


def test_overall_progress_counts_work_not_runs(monkeypatch):
    monkeypatch.setattr(console, "out", Console(file=io.StringIO(), width=120))
    long_, short = ("a", 2.0, "sparse", 0), ("b", 2.0, "dense", 0)
    planned = [RunStatus(None, "a", "new", True), RunStatus(None, "b", "new", True)]
    with RunProgress("tiny", Path("results")) as p:
        p.on_event(Event("todo", total=2, planned=planned, work={"a": 1000.0, "b": 100.0}))
        task = p.progress.tasks[0]
        assert task.total == 1100
        p.on_event(_event("start", [short]))
        p.on_event(_event("epoch", [short], epoch=100, epochs=100, rows=[{"test_accuracy": 0.1, "train_accuracy": 0.1}]))
        p.on_event(_event("done", [short], status="ok"))
        assert task.completed == 100  # one of two runs done, but a tenth of the work
        p.on_event(_event("start", [long_]))
        p.on_event(_event("epoch", [long_], epoch=500, epochs=1000, rows=[{"test_accuracy": 0.1, "train_accuracy": 0.1}]))
        assert task.completed == 600
        p.on_event(_event("done", [long_], status="diverged"))  # stopped early: the rest of its work
        assert task.completed == 1100 and task.description == "runs 2/2"


def test_sweep_work_weighs_epochs_width_and_each_step(make_recipe):
    from widecli.execute.worklist import STEP_OVERHEAD_MACS, work
    from widecli.recipes import expand, load_recipe

    specs = expand(load_recipe(make_recipe({"widen": {"factors": [1, 4], "methods": ["dense"]}})))
    w = work(specs)
    base, wide = (w[s.run_id] for s in sorted(specs, key=lambda s: s.factor))
    step = STEP_OVERHEAD_MACS / 128   # a step's fixed cost over its batch of 128
    assert wide / base == pytest.approx((40 * 64 + 64 * 10 + step) / (40 * 16 + 16 * 10 + step))
    longer = expand(load_recipe(make_recipe({"widen": {"factors": [1]}, "train": {"epochs": 20}})))
    assert work(longer)[longer[0].run_id] == pytest.approx(10 * base)  # 20 epochs vs 2
    stacked = work(longer, {longer[0].run_id: 4})[longer[0].run_id]   # a quarter of each step's fixed cost
    assert stacked == pytest.approx(10 * (base - 2 * step) + 20 * step / 4)


# ---------------------------------------------------------------- flags, layers, runs


def test_switches_show_no_value_placeholder_and_refuse_a_value(tmp_path):
    r = invoke("sweep", "--help")
    assert "<bool>" not in r.output and "--dry-run" in r.output
    r = invoke("sweep", ROOT / "recipes" / "quickstart.yaml", "--dry-run", "true")
    assert r.exit_code == 2
    assert "--dry-run is a switch and takes no value (got 'true')" in r.stderr


def _resnet18_layers(k: int, classes: int = 10) -> dict[str, list[int]]:
    """The weight layers of the CIFAR ResNet-18 of width k (stages k, 2k, 4k, 8k) and their shapes."""
    shapes = {"conv1": [k, 3, 3, 3]}
    for stage in range(1, 5):
        c, before = k * 2 ** (stage - 1), k * 2 ** max(stage - 2, 0)
        shapes[f"layer{stage}.0.conv1"] = [c, before, 3, 3]
        shapes[f"layer{stage}.0.conv2"] = [c, c, 3, 3]
        if stage > 1:
            shapes[f"layer{stage}.0.shortcut.0"] = [c, before, 1, 1]
        shapes[f"layer{stage}.1.conv1"] = [c, c, 3, 3]
        shapes[f"layer{stage}.1.conv2"] = [c, c, 3, 3]
    shapes["fc"] = [classes, 8 * k]
    return shapes


def test_layers_json_gives_every_layer_its_shape_weights_and_nonzeros():
    """The paper's ResNet-18 recipe: width 8 (stages 8..64), widening `all`, scope all; its comment
    gives the budget, 175,192 weights. At factor 1 every layer is dense; at factor 4 (width 32) every
    layer is masked and the nonzeros add up to the budget."""
    recipe = ROOT / "recipes" / "paper" / "resnet18_cifar10.yaml"
    r = invoke("layers", recipe, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert (doc["recipe"], doc["factor"], doc["method"]) == ("resnet18_cifar10", 1.0, "dense")
    assert doc["widenable"] == ["layer1", "layer2", "layer3", "layer4"]
    expected = _resnet18_layers(8)
    assert [x["name"] for x in doc["layers"]] == list(expected)
    for x in doc["layers"]:
        assert x["shape"] == expected[x["name"]], x["name"]
        assert x["weights"] == x["nonzeros"] == math.prod(x["shape"]) and not x["masked"], x["name"]
        stage = {"conv1": "layer1", "fc": None}.get(x["name"], x["name"].split(".")[0])  # conv1 feeds layer1
        assert x["widens_with"] == stage, x["name"]
    assert sum(x["weights"] for x in doc["layers"]) == 175_192
    wide = json.loads(invoke("layers", recipe, "--json", "--factor", 4).stdout)
    assert (wide["factor"], wide["method"], wide["widen_layers"]) == (4.0, "sparse", "all")
    expected = _resnet18_layers(32)
    assert [(x["name"], x["shape"], x["weights"]) for x in wide["layers"]] == \
        [(name, shape, math.prod(shape)) for name, shape in expected.items()]
    assert all(x["masked"] and 0 < x["nonzeros"] <= x["weights"] for x in wide["layers"])
    assert sum(x["nonzeros"] for x in wide["layers"]) == 175_192


def test_layers_title_says_what_the_recipe_widens():
    r = invoke("layers", ROOT / "recipes" / "paper" / "resnet18_cifar10.yaml", terminal_width=200)
    title = " ".join(r.output.split("┏")[0].split())
    assert "widen.layers all" in title and "factor 1: the dense baseline" in title
    r = invoke("layers", ROOT / "recipes" / "paper" / "resnet18_cifar10.yaml", "--factor", 2, terminal_width=200)
    assert "widen.layers all" in r.output and "factor 2, sparse" in r.output


def test_runs_lists_filters_and_removes_a_one_off(make_recipe, tmp_path):
    recipe = make_recipe({"widen": {"factors": [1]}})
    for extra in ([], ["--set", "train.epochs=3"]):
        assert invoke("train", recipe, "--results", tmp_path, "--device", "cpu", *extra).exit_code == 0
    r = invoke("runs", tmp_path, "--json")
    assert r.exit_code == 0 and r.output.count('"run_id"') == 2
    r = invoke("runs", tmp_path, "--where", "train.epochs=3", "--remove", "--yes")
    assert r.exit_code == 0 and "removed: 1 run(s)" in r.output, r.output
    r = invoke("runs", tmp_path, "--json")
    assert r.output.count('"run_id"') == 1 and '"epochs_run": 2' in r.output
    import pandas as pd
    assert len(pd.read_csv(tmp_path / "tiny" / "runs.csv")) == 1  # the index follows
    r = invoke("runs", tmp_path, "--archive", tmp_path / "attic", "--yes")
    assert r.exit_code == 0 and len(list((tmp_path / "attic" / "tiny").iterdir())) == 1
    r = invoke("runs", tmp_path, "--status", "wrong")
    assert r.exit_code == 2 and "--status: unknown status 'wrong'" in r.stderr


def test_runs_asks_before_removing(make_recipe, tmp_path):
    recipe = make_recipe({"widen": {"factors": [1]}})
    assert invoke("train", recipe, "--results", tmp_path, "--device", "cpu").exit_code == 0
    r = invoke("runs", tmp_path, "--remove", input="n\n")
    assert r.exit_code == 0 and "nothing changed" in r.output
    assert invoke("runs", tmp_path, "--json").output.count('"run_id"') == 1


def test_check_shows_each_runs_memory_and_marks_what_cannot_fit(make_recipe, monkeypatch):
    from widecli.execute import preflight

    recipe = make_recipe()
    r = invoke("check", recipe, "--json")
    runs = json.loads(r.stdout)["runs"]
    assert all(run["memory_bytes"] > 0 for run in runs)
    wide = max(runs, key=lambda run: run["factor"])
    assert wide["memory_bytes"] > min(run["memory_bytes"] for run in runs)  # the wide model needs more
    monkeypatch.setattr(preflight, "available_memory", lambda device: (min(x["memory_bytes"] for x in runs) + 1,
                                                                       "available RAM"))
    r = invoke("check", recipe, "--device", "cpu", terminal_width=200)
    assert r.exit_code == 2 and "needs about" in r.stderr and "(2 such models; the largest shown)" in r.stderr
    assert "KiB" in r.stdout and "memory" in r.stdout


def test_a_resumed_sweep_counts_its_finished_runs_and_estimates_after_the_first_group(monkeypatch):
    """Issue 28: a resumed sweep said `runs 0/56` instead of 9/65, printed its results folder only at
    the end, and its first estimate included the first epoch's compilation."""
    buf, clock = io.StringIO(), {"now": 0.0}
    monkeypatch.setattr(console, "out", Console(file=buf, width=200))
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock["now"])
    runs = [(f"r{i}", 2.0, "sparse", 0) for i in range(2)]
    planned = [RunStatus(None, f"f{i}", "finished", False) for i in range(9)] + \
              [RunStatus(None, r[0], "new", True) for r in runs]
    row = [{"test_accuracy": 0.5, "train_accuracy": 0.5}]
    with RunProgress("tiny", Path("results")) as p:
        p.on_event(Event("todo", total=2, skipped=9, planned=planned, work={"r0": 100.0, "r1": 100.0}))
        assert p.progress.tasks[0].description == "runs 9/11"
        for run in runs:
            p.on_event(_event("start", [run]))
            clock["now"] += 30.0   # the first epoch: 29 s of compilation
            for epoch in range(1, 11):
                p.on_event(_event("epoch", [run], epoch=epoch, epochs=10, rows=row))
                clock["now"] += 1.0
            p.on_event(_event("done", [run], status="ok"))
        assert p.progress.tasks[0].description == "runs 11/11"
    text = buf.getvalue()
    assert "tiny: 2 runs to train, 9 already finished; results in results/tiny; time estimate after the first" in text
    # after the first group: 40 s so far, and 100 work left at 90 work per 10 s measured after its first epoch
    assert "tiny: estimated total ~51s (~11s left;" in text
    assert "tiny: 2 runs trained in 1m20s (estimated after the first group: 51s)" in text


def test_set_without_equals_says_how_to_write_it(make_recipe):
    r = invoke("check", make_recipe(), "--set", "train.lr", "0.1")
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1
    assert "did you mean --set train.lr=0.1?" in " ".join(r.output.split())
    r = invoke("check", make_recipe(), "--set", "train.lr")   # the last argument: the recipe's hint
    assert r.exit_code == 2 and "did you mean --set train.lr=VALUE?" in " ".join(r.output.split())


def test_an_unparsable_set_value_gives_the_parser_reason(make_recipe):
    r = invoke("check", make_recipe(), "--set", "widen.factors=[1, 2")
    out = " ".join(r.output.split())
    assert r.exit_code == 2 and "not valid YAML" in out and "expected ',' or ']'" in out


def test_a_second_sweep_estimates_its_time_from_the_finished_runs(make_recipe, tmp_path):
    recipe = make_recipe({"widen": {"factors": [1]}})
    r = invoke("sweep", recipe, "--results", tmp_path, "--device", "cpu")
    assert r.exit_code == 0 and "time estimate after the first group" in r.output, r.output
    assert f"results in {tmp_path / 'tiny'}" in " ".join(r.output.split())
    r = invoke("sweep", recipe, "--results", tmp_path, "--device", "cpu", "--set", "widen.factors=[1,2]")
    assert r.exit_code == 0, r.output
    assert re.search(r"estimated ~\d+s from the times of the finished runs", " ".join(r.output.split())), r.output
