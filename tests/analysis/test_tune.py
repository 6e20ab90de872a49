"""`widecli tune` (analysis.tune, analysis.tune_report): per (factor, method) cell an Optuna search on
validation accuracy whose trials are ordinary stored runs (never trained twice), pruned trials that
leave no run behind, a budget per cell that a rerun or --jobs never exceeds, a resumable storage,
and an overlay that loads and whose runs are the best trials' runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import CPU, invoke

from widecli.analysis import tune, tune_report
from widecli.execute.worklist import status_of
from widecli.recipes import expand, load_recipe
from widecli.store import lock
from widecli.store import runs as store

pytest.importorskip("optuna")
ROOT = Path(__file__).resolve().parents[2]
TUNED = {"data": {"validation": 400}, "widen": {"factors": [1, 2], "methods": ["sparse"]},
         "train": {"epochs": 4}, "seeds": [0, 1]}


def starts(results: Path, recipe: str) -> list[str]:
    path = results / recipe / lock.LOCKS / "journal.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return [line.split()[4] for line in lines if line.split()[3] == "start"]


def test_a_recipe_without_validation_is_one_line(make_recipe, tmp_path):
    recipe = make_recipe()
    res = invoke("tune", recipe, "--results", tmp_path)
    assert res.exit_code == 2, res.output
    line = " ".join(res.output.split())
    assert str(recipe.name) in line and "data.validation" in line and "--set data.validation=" in line
    assert not (tmp_path / "tiny").exists()   # nothing written


@pytest.mark.parametrize("text, words", [
    ("train.lr", ["KEY=LOW:HIGH"]), ("train.lr=1:0.1", ["LOW must be below HIGH"]),
    ("train.lr=0:1", ["LOW > 0", ":linear"]), ("train.lr=a:b", ["KEY=LOW:HIGH"]),
    ("widen.factors=1:4", ["not a tunable key"]), ("train.lrr=0.1:1", ["train.lrr"]),
    ("train.momentum=0.5:1.5:linear", ["train.momentum", "less than 1"]),
])
def test_bad_ranges_are_one_line(make_recipe, tmp_path, text, words):
    res = invoke("tune", make_recipe(TUNED), "--range", text, "--results", tmp_path)
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and all(w in out for w in words), res.output
    assert "Traceback" not in res.output


def test_the_default_range_spans_the_recipe_values():
    r = load_recipe(ROOT / "recipes" / "paper" / "mlp_mnist.yaml")
    space = tune.default_space(r)
    assert (space.key, space.low, space.high, space.log) == ("train.lr", 5.0 / 100, 875.0 * 100, True)


def test_tune_stores_trials_as_runs_and_writes_a_working_overlay(make_recipe, tmp_path):
    recipe = make_recipe(TUNED)
    res = invoke("tune", recipe, "--range", "train.lr=0.01:1", "--trials", "3", "--results", tmp_path,
                 "--device", "cpu")
    assert res.exit_code == 0, res.output
    folder = tmp_path / "tiny" / "tune"
    assert {"optuna.db", "overlay.yaml", "tune.md", "tune.png"} <= {p.name for p in folder.iterdir()}
    assert (folder / "tune.png").read_bytes()[:4] == b"\x89PNG"
    r = load_recipe(recipe)
    s = tune.setup(r, str(recipe), [tune.parse_range("train.lr=0.01:1")], 3, tmp_path)
    sums = tune_report.summarize(s)
    assert [c.cell.name for c in sums] == ["f=1 baseline", "f=2 sparse"]
    for c in sums:
        assert len(c.trials) == 3 and c.best is not None
        for t in c.trials:
            specs = tune.cell_specs(s, c.cell, t["values"])
            status = {status_of(tmp_path, x)[0] for x in specs}
            # a trial's runs are ordinary finished runs; a pruned trial's are not stored at all
            assert status == ({"finished"} if t["state"] == "complete" else {"new"}), (t, status)
        best = [store.read_result(store.run_dir(tmp_path, x))["final"]["val_accuracy"]
                for x in tune.cell_specs(s, c.cell, c.best["values"])]
        assert c.best["value"] == pytest.approx(sum(best) / len(best))
        assert c.best["value"] == max(t["value"] for t in c.trials if t["state"] == "complete")
    # the overlay runs as it is: its runs are the best trials' runs, all finished
    overlay = load_recipe(folder / "overlay.yaml")
    ids = {x.run_id for x in expand(overlay)}
    assert ids == {x.run_id for c in sums for x in tune.cell_specs(s, c.cell, c.best["values"])}
    res = invoke("sweep", folder / "overlay.yaml", "--results", tmp_path, "--device", "cpu")
    assert res.exit_code == 0 and "nothing to train" in res.output, res.output
    report = (folder / "tune.md").read_text()
    assert "f=2 sparse: every trial" in report and f"{c.best['values']['train.lr']:.4g}" in report

    before = starts(tmp_path, "tiny")
    res = invoke("tune", recipe, "--range", "train.lr=0.01:1", "--trials", "3", "--results", tmp_path,
                 "--device", "cpu")
    assert res.exit_code == 0 and starts(tmp_path, "tiny") == before   # the budget is met: nothing new
    assert all(len(c.trials) == 3 for c in tune_report.summarize(s))


class FakeTrial:
    """A trial that always suggests `value` and prunes from epoch `prune_at` on."""

    def __init__(self, value: float, prune_at: int | None = None):
        self.value, self.prune_at, self.number, self.params, self.reported, self.attrs = value, prune_at, 0, {}, [], {}

    def suggest_float(self, key, low, high, log):
        self.params[key] = self.value
        return self.value

    def set_user_attr(self, k, v):
        self.attrs[k] = v

    def report(self, value, step):
        self.reported.append((step, value))

    def should_prune(self):
        return self.prune_at is not None and self.reported[-1][0] >= self.prune_at


def _setup(make_recipe, results, **extra):
    recipe = make_recipe({**TUNED, **extra})
    r = load_recipe(recipe)
    return tune.setup(r, str(recipe), [tune.Space("train.lr", 0.01, 1)], 3, results)


def test_identical_settings_are_never_trained_twice(make_recipe, tmp_path):
    s = _setup(make_recipe, tmp_path)
    cell = s.cells[1]
    events = []
    first = tune.objective(s, cell, FakeTrial(0.1), CPU, events.append)
    trained = starts(tmp_path, "tiny")
    again = tune.objective(s, cell, FakeTrial(0.1), CPU, events.append)
    assert again == first and starts(tmp_path, "tiny") == trained   # read back from the store
    assert len(trained) == 2   # one run per seed


def test_a_pruned_trial_stops_early_and_stores_nothing(make_recipe, tmp_path):
    optuna = pytest.importorskip("optuna")
    s = _setup(make_recipe, tmp_path)
    cell = s.cells[1]
    trial, events = FakeTrial(0.1, prune_at=2), []
    with pytest.raises(optuna.TrialPruned):
        tune.objective(s, cell, trial, CPU, events.append)
    assert [step for step, _ in trial.reported] == [1, 2]   # per-epoch validation accuracy, then stopped
    assert all(status_of(tmp_path, x)[0] == "new" for x in tune.cell_specs(s, cell, {"train.lr": 0.1}))
    assert [e.status for e in events if e.kind == "trial"] == ["pruned"]


def test_jobs_share_the_storage_and_keep_the_budget(make_recipe, tmp_path):
    recipe = make_recipe({**TUNED, "widen": {"factors": [1]}})
    res = invoke("tune", recipe, "--range", "train.lr=0.01:1", "--trials", "3", "--jobs", "2", "--no-prune",
                 "--results", tmp_path, "--device", "cpu")
    assert res.exit_code == 0, res.output
    s = tune.setup(load_recipe(recipe), str(recipe), [tune.parse_range("train.lr=0.01:1")], 3, tmp_path)
    [c] = tune_report.summarize(s)
    assert len(c.trials) == 3 and {t["state"] for t in c.trials} == {"complete"}
    assert len(starts(tmp_path, "tiny")) == 3 * 2   # 3 trials x 2 seeds, each run trained once


def test_an_interrupted_tune_resumes_without_redoing_finished_trials(make_recipe, tmp_path):
    recipe = make_recipe({**TUNED, "widen": {"factors": [1]}, "train": {"epochs": 30}})
    cmd = [sys.executable, "-m", "widecli.cli.app", "tune", str(recipe), "--range", "train.lr=0.01:1",
           "--trials", "3", "--no-prune", "--results", str(tmp_path), "--device", "cpu"]
    env = {**os.environ, "WIDECLI_LOG_SECONDS": "0", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    seen = []
    for line in proc.stdout:   # the event: the first trial finished and the second one is training
        seen.append(line)
        if "trial 1/3" in "".join(seen) and "epoch 2/30" in line:
            proc.send_signal(signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(seen) + rest
    done = starts(tmp_path, "tiny")
    s = tune.setup(load_recipe(recipe), str(recipe), [tune.parse_range("train.lr=0.01:1")], 3, tmp_path)
    [c] = tune_report.summarize(s)
    assert [t["state"] for t in c.trials] == ["complete", "fail", "waiting"]   # interrupted trial queued again
    assert c.trials[1]["values"] == c.trials[2]["values"]

    res = invoke("tune", recipe, "--range", "train.lr=0.01:1", "--trials", "3", "--no-prune", "--results", tmp_path,
                 "--device", "cpu")
    assert res.exit_code == 0, res.output
    [c] = tune_report.summarize(s)
    assert [t["state"] for t in c.trials] == ["complete", "fail", "complete", "complete"]
    again = starts(tmp_path, "tiny")
    first_trial = set(tune.cell_specs(s, c.cell, c.trials[0]["values"])[i].run_id for i in range(2))
    assert all(again.count(rid) == 1 for rid in first_trial)   # the finished trial was not redone
    assert len(again) == len(done) + 2 * 2    # only the last two trials trained now
