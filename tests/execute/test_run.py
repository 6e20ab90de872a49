"""End to end: train real small runs on MNIST-1D and store them."""

import csv
import json
from types import SimpleNamespace

import pandas as pd
import torch
from helpers import CPU

from widecli.execute import run as execute_run
from widecli.execute.run import load_masks, load_model, run_group
from widecli.recipes import load_recipe, make_spec
from widecli.store import runs as store


def stored_outcome(path, status, error):
    """The outcome of a run as written to the store: status, final metrics, metrics rows, weights."""
    result = store.read_result(path)
    with open(path / store.METRICS, newline="") as f:
        metrics = list(csv.DictReader(f))
    saved = torch.load(path / store.MODEL, map_location="cpu", weights_only=True)
    assert result["status"] == status and result["error"] == error
    return SimpleNamespace(status=status, error=error, final=result["final"], metrics=metrics,
                           state=saved["state"], masks=saved["masks"])


def run_one(spec_of, tmp_path, factor, method="sparse", seed=0, overrides=()):
    spec = spec_of(None, *overrides, factor=factor, method=method, seed=seed)
    report = run_group([spec], tmp_path / "results", CPU, record_failures=False)
    [(run_id, status, error)], [path] = report.trained, report.written
    assert run_id == spec.run_id and path == store.run_dir(tmp_path / "results", spec)
    return spec, stored_outcome(path, status, error), path


def test_one_epoch_beats_chance_by_a_wide_margin(spec_of, tmp_path):
    _, outcome, path = run_one(spec_of, tmp_path, 4, overrides=["train.epochs=1", "model.hidden=[64]",
                                                                      "train.batch_size=32"])
    assert outcome.status == "ok"
    assert outcome.final["test_accuracy"] > 0.25  # chance is 0.10
    result = store.read_result(path)
    assert result["weights"]["nonzeros"] == result["weights"]["budget"]
    assert len(pd.read_csv(path / "metrics.csv")) == 1


def test_masked_weights_stay_zero_under_momentum_and_weight_decay(spec_of, tmp_path):
    # 4000 examples / batch 200 = 20 SGD steps with momentum 0.9 and weight decay
    over = ["train.epochs=1", "train.batch_size=200", "train.momentum=0.9", "train.weight_decay=0.01",
            "train.lr=0.5", "train.schedule=constant"]
    spec, outcome, path = run_one(spec_of, tmp_path, 8, overrides=over)
    for name in ("fc1", "out"):
        w, m = outcome.state[f"{name}.weight"], outcome.masks[name]
        assert (w[~m] == 0).all() and (w[m] != 0).float().mean() > 0.99
    model, masks = load_model(path), load_masks(path)
    nonzeros = sum(int((model.get_submodule(n).weight != 0).sum()) for n in ("fc1", "out"))
    assert nonzeros == store.read_result(path)["weights"]["budget"]
    assert all(torch.equal(masks[n], outcome.masks[n]) for n in ("fc1", "out"))


def test_adam_keeps_masks_too(spec_of, tmp_path):
    _, outcome, _ = run_one(spec_of, tmp_path, 8, overrides=["train.epochs=1", "train.optimizer=adam",
                                                                "train.lr=0.01", "train.weight_decay=0.1"])
    w, m = outcome.state["fc1.weight"], outcome.masks["fc1"]
    assert (w[~m] == 0).all()


def test_same_spec_same_metrics_on_cpu(spec_of, tmp_path):
    _, a, _ = run_one(spec_of, tmp_path / "a", 2)
    _, b, _ = run_one(spec_of, tmp_path / "b", 2)
    def untimed(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert untimed(a.metrics) == untimed(b.metrics)
    assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)


def test_divergence_is_a_recorded_status(spec_of, tmp_path):
    _, outcome, path = run_one(spec_of, tmp_path, 1, "dense",
                               overrides=["train.lr=1e6", "train.schedule=constant", "train.epochs=3"])
    assert outcome.status == "diverged"
    result = json.loads((path / "result.json").read_text())
    assert result["status"] == "diverged" and result["final"]["diverged_at_epoch"] >= 1


def test_result_records_environment_and_layers(spec_of, tmp_path):
    _, _, path = run_one(spec_of, tmp_path, 2, overrides=["train.epochs=1"])
    result = store.read_result(path)
    final = result["final"]
    assert final["peak_memory_bytes"] > 0 and final["device"] == "cpu" and "torch" in final["versions"]
    layers = result["weights"]["layers"]
    assert set(layers) == {"fc1", "out"} and layers["fc1"]["masked"]
    assert result["spec"]["factor"] == 2.0 and result["data"]["num_classes"] == 10


def test_stacked_dataset_loaded_once_is_reused(make_recipe, tmp_path, data_root, monkeypatch):
    r = load_recipe(make_recipe(), ["train.epochs=1"])
    specs = [make_spec(r, 2, "sparse", s) for s in (0, 1)]
    ds = execute_run.dataset(specs[0], CPU)  # loaded once per process and device

    loads = []
    real = execute_run.load_dataset
    monkeypatch.setattr(execute_run, "load_dataset", lambda *a, **k: loads.append(a) or real(*a, **k))
    assert execute_run.dataset(specs[1], CPU) is ds
    report = run_group(specs, tmp_path, CPU, record_failures=False)
    assert [store.is_finished(p) for p in report.written] == [True, True]
    assert loads == []  # both runs trained on the data set loaded before, not on a second copy
