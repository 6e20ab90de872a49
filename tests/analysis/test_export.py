"""Results leave widecli: the store's read_metrics joins every epoch of every run with its spec; TensorBoard,
MLflow and W&B exports are read back with each library's own reader (W&B: its offline log, parsed
here with its own protobuf records) and must hold exactly the values of metrics.csv and the run's
spec. Exports print nothing, replace an earlier export instead of duplicating it, and a missing
library is one line naming the extra."""

from __future__ import annotations

import csv
import shutil
import sys

import pytest
import yaml
from helpers import invoke
from wandb_logs import read_wandb

from widecli.analysis import export as export_mod
from widecli.analysis.export import export
from widecli.config.schema import RunSpec
from widecli.errors import WidecliError
from widecli.store import runs as store

EPOCHS = 3


@pytest.fixture(scope="module")
def results(tmp_path_factory, data_root):
    """Two recipes trained for real: "tiny" (factors 1 and 2, two runs) and "other" (factor 1 only:
    the same spec, so the same run id as tiny's factor-1 run, stored under another recipe)."""
    folder = tmp_path_factory.mktemp("export")
    for name, factors in (("tiny", [1, 2]), ("other", [1])):
        recipe = folder / f"{name}.yaml"
        recipe.write_text(yaml.safe_dump({
            "name": name, "data": {"dataset": "mnist1d", "root": str(data_root)},
            "model": {"arch": "mlp", "hidden": [16]}, "widen": {"factors": factors, "methods": ["sparse"]},
            "train": {"epochs": EPOCHS, "lr": 0.05}, "seeds": [0]}))
        res = invoke("sweep", recipe, "--results", folder / "results", "--device", "cpu")
        assert res.exit_code == 0, res.output
    return folder / "results"


def stored(results) -> dict[tuple[str, str], tuple[dict, list[dict]]]:
    """(recipe, run_id) -> (result.json, metrics.csv rows with float values), read directly."""
    out = {}
    for result in store.finished_runs(results).values():
        with open(results / result["recipe"] / result["run_id"] / "metrics.csv") as f:
            rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
        out[(result["recipe"], result["run_id"])] = (result, rows)
    return out


def column(rows: list[dict], name: str) -> list[float]:
    return [r[name] for r in rows]


def test_fixture_shares_a_run_id_between_recipes(results):
    runs = stored(results)
    assert len(runs) == 3 and len({run_id for _, run_id in runs}) == 2
    assert all(len(rows) == EPOCHS for _, rows in runs.values())


def test_read_metrics_joins_every_epoch_with_its_runs_spec(results):
    runs = stored(results)
    df = store.read_metrics(results)
    assert len(df) == sum(len(rows) for _, rows in runs.values())
    assert list(df.columns[:3]) == ["recipe", "run_id", "epoch"]
    assert {"train.lr", "model.hidden", "data.dataset", "factor", "method", "seed", "nonzeros", "seconds",
            "test_accuracy"} <= set(df.columns)
    for (recipe, run_id), g in df.groupby(["recipe", "run_id"]):
        result, rows = runs[(recipe, run_id)]
        assert list(g["epoch"]) == [1, 2, 3]
        for m in ("test_accuracy", "train_loss", "lr", "seconds"):  # per epoch, not the final value
            assert list(g[m]) == column(rows, m)
        flat = store.flatten(result)
        for key in ("factor", "method", "train.lr", "model.hidden", "nonzeros", "best_test_accuracy"):
            assert set(g[key]) == {flat[key]}, key
    only = store.read_metrics(results, ["other"])
    assert set(only["recipe"]) == {"other"} and len(only) == EPOCHS


def test_read_metrics_of_no_runs_is_one_line(tmp_path):
    with pytest.raises(WidecliError, match="no finished runs"):
        store.read_metrics(tmp_path)


def test_tensorboard_scalars_and_hparams(results, tmp_path, capfd):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    from tensorboard.plugins.hparams import plugin_data_pb2

    runs = stored(results)
    written = export(results, "tensorboard", tmp_path)
    written = export(results, "tensorboard", tmp_path)  # again: replaces, does not add
    assert capfd.readouterr() == ("", "")
    assert sorted(written) == sorted(tmp_path / recipe / run_id for recipe, run_id in runs)
    for (recipe, run_id), (result, rows) in runs.items():
        acc = event_accumulator.EventAccumulator(str(tmp_path / recipe / run_id))
        acc.Reload()
        for tag, name in (("test/accuracy", "test_accuracy"), ("train/loss", "train_loss"), ("lr", "lr"),
                          ("seconds", "seconds")):
            events = acc.Scalars(tag)
            assert [e.step for e in events] == [1, 2, 3]
            assert [e.value for e in events] == pytest.approx(column(rows, name))
        assert acc.Scalars("hparam/test_accuracy")[0].value == pytest.approx(result["final"]["test_accuracy"])
        start = plugin_data_pb2.HParamsPluginData.FromString(
            acc.summary_metadata["_hparams_/session_start_info"].plugin_data.content).session_start_info
        assert start.hparams["run_id"].string_value == run_id
        assert start.hparams["recipe"].string_value == recipe
        assert start.hparams["train.lr"].number_value == pytest.approx(0.05)
        assert start.hparams["factor"].number_value == result["spec"]["factor"]
        experiment = plugin_data_pb2.HParamsPluginData.FromString(
            acc.summary_metadata["_hparams_/experiment"].plugin_data.content).experiment
        assert "hparam/best_test_accuracy" in {m.name.tag for m in experiment.metric_infos}


def test_mlflow_file_store(results, tmp_path, capfd):
    mlflow = pytest.importorskip("mlflow")
    runs = stored(results)
    export(results, "mlflow", tmp_path)
    written = export(results, "mlflow", tmp_path)  # again: replaces, does not add
    assert capfd.readouterr() == ("", "")
    assert len(written) == 3 and all(p.is_dir() and p.parent.parent == tmp_path for p in written)
    client = mlflow.tracking.MlflowClient(tracking_uri="file:" + str(tmp_path.resolve()))
    for recipe in ("tiny", "other"):  # one experiment per recipe, one MLflow run per widecli run
        found = client.search_runs([client.get_experiment_by_name(recipe).experiment_id])
        assert sorted(r.info.run_name for r in found) == sorted(run_id for rec, run_id in runs if rec == recipe)
        for r in found:
            result, rows = runs[(recipe, r.info.run_name)]
            assert r.data.tags["recipe"] == recipe and r.data.tags["run_id"] == r.info.run_name
            assert r.data.tags["status"] == "ok" and r.info.status == "FINISHED"
            assert r.data.params["train.lr"] == "0.05" and r.data.params["method"] == result["spec"]["method"]
            assert r.data.params["factor"] == str(result["spec"]["factor"])
            for name in ("test_accuracy", "train_loss", "seconds"):
                history = sorted(client.get_metric_history(r.info.run_id, name), key=lambda m: m.step)
                assert [m.step for m in history] == [1, 2, 3]
                assert [m.value for m in history] == pytest.approx(column(rows, name))


def test_mlflow_cuts_long_param_values(results, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    flatten = store.flatten
    monkeypatch.setattr(store, "flatten", lambda r: {**flatten(r), "model.hidden": "x" * 7000})
    export(results, "mlflow", tmp_path, ["other"])
    client = mlflow.tracking.MlflowClient(tracking_uri="file:" + str(tmp_path.resolve()))
    (run,) = client.search_runs([client.get_experiment_by_name("other").experiment_id])
    assert run.data.params["model.hidden"] == "x" * export_mod.PARAM_CHARS


def test_wandb_offline_runs(results, tmp_path, capfd, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # a server that is never there
    runs = stored(results)
    export(results, "wandb", tmp_path)
    written = export(results, "wandb", tmp_path)  # again: replaces, does not add
    assert capfd.readouterr() == ("", "")
    # W&B's service process writes the logs; its teardown returns once they are closed (a log read
    # before it lacked its run record once, on a loaded machine).
    wandb.teardown()
    folders = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert sorted(written) == folders and len(folders) == 3
    seen = set()
    for folder in folders:
        (log,) = folder.glob("*.wandb")
        run, config, history, summary = read_wandb(log)
        result, rows = runs[(run["project"], run["name"])]
        seen.add((run["project"], run["name"]))
        assert config["run_id"] == result["run_id"] and config["recipe"] == result["recipe"]
        assert config["train.lr"] == 0.05 and config["factor"] == result["spec"]["factor"]
        assert [h["_step"] for h in history] == [1, 2, 3]
        for name in ("test_accuracy", "train_loss", "seconds"):
            assert [h[name] for h in history] == pytest.approx(column(rows, name))
        # The run summary (W&B's run table) holds exactly the final values of result.json: the
        # clean-pass train accuracy, not the last epoch's running average.
        final = result["final"]
        assert {k for k in summary if not k.startswith("_")} == {
            k for k, v in final.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for name in ("test_accuracy", "best_test_accuracy", "train_accuracy", "train_loss", "wall_time_s"):
            assert summary[name] == pytest.approx(final[name]), name
    assert seen == set(runs)


def test_a_run_without_epochs_is_exported_with_its_spec(results, tmp_path):
    """A failed run that stopped before its first epoch has an empty metrics.csv: no rows in
    read_metrics, and still one (FAILED) run with its params in an export."""
    mlflow = pytest.importorskip("mlflow")
    copy = tmp_path / "results"
    shutil.copytree(results / "tiny", copy / "tiny")
    result = next(iter(store.finished_runs(copy, "tiny").values()))
    spec = RunSpec.model_validate({**result["spec"], "recipe": "broken"})
    store.write_run(copy, spec, [], {"status": "failed", "error": "boom", "final": {}})
    df = store.read_metrics(copy)
    assert set(df["recipe"]) == {"tiny"} and len(df) == 2 * EPOCHS
    written = export(copy, "mlflow", tmp_path / "mlruns", ["broken"])
    client = mlflow.tracking.MlflowClient(tracking_uri="file:" + str((tmp_path / "mlruns").resolve()))
    (run,) = client.search_runs([client.get_experiment_by_name("broken").experiment_id])
    assert len(written) == 1 and run.info.status == "FAILED" and run.data.tags["status"] == "failed"
    assert run.data.params["run_id"] == spec.run_id and run.data.metrics == {}


@pytest.mark.parametrize("to, module", [("tensorboard", "torch.utils.tensorboard"), ("mlflow", "mlflow"),
                                        ("wandb", "wandb")])
def test_a_missing_library_is_one_line(results, tmp_path, monkeypatch, to, module):
    monkeypatch.setitem(sys.modules, module, None)  # `import` of it now raises ImportError
    with pytest.raises(WidecliError) as e:
        export(results, to, tmp_path / "out")
    assert str(e.value) == f"export: {to} is not installed; pip install 'widecli[export]'"
    assert not (tmp_path / "out").exists()  # checked before anything is read or written


def test_cli_export_and_bad_target(results, tmp_path):
    pytest.importorskip("tensorboard")
    res = invoke("export", results, "--to", "tensorboard", "--out", tmp_path, "--recipe", "other")
    assert res.exit_code == 0, res.output
    assert [p.parent.name for p in (tmp_path / "other").iterdir()] == ["other"]
    assert not (tmp_path / "tiny").exists()
    res = invoke("export", results, "--to", "excel")
    assert res.exit_code == 2 and "tensorboard, mlflow, wandb" in res.output
    assert len(res.output.strip().splitlines()) == 1
