"""Results leave widecli: load_metrics joins every epoch of every run; TensorBoard, MLflow and W&B
exports are read back with each library's own reader (W&B: its offline log, parsed here) and must
hold exactly the values of metrics.csv and the run's spec."""

from __future__ import annotations

import csv
import json
import struct

import pytest
from typer.testing import CliRunner

from widecli.analysis.export import load_metrics
from widecli.cli.app import app


@pytest.fixture(scope="module")
def results(tmp_path_factory, data_root):
    import yaml

    folder = tmp_path_factory.mktemp("export")
    recipe = folder / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "tiny", "data": {"dataset": "mnist1d", "root": str(data_root)},
        "model": {"arch": "mlp", "hidden": [16]}, "widen": {"factors": [1, 2], "methods": ["sparse"]},
        "train": {"epochs": 3, "lr": 0.05}, "seeds": [0]}))
    res = CliRunner().invoke(app, ["sweep", str(recipe), "--results", str(folder / "results"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    return folder / "results"


def metrics_csv(results, run_id) -> list[dict]:
    with open(results / "tiny" / run_id / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_load_metrics_joins_every_epoch_with_the_spec(results):
    df = load_metrics(results)
    assert len(df) == 2 * 3 and list(df.columns[:3]) == ["recipe", "run_id", "epoch"]
    assert {"train.lr", "model.hidden", "factor", "method", "test_accuracy", "nonzeros"} <= set(df.columns)
    for run_id, g in df.groupby("run_id"):
        assert list(g["test_accuracy"]) == [float(r["test_accuracy"]) for r in metrics_csv(results, run_id)]


def export(results, to, out):
    res = CliRunner().invoke(app, ["export", str(results), "--to", to, "--out", str(out)])
    assert res.exit_code == 0, res.output
    return res


def test_tensorboard_scalars_and_hparams(results, tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    export(results, "tensorboard", tmp_path)
    for run_dir in (tmp_path / "tiny").iterdir():
        acc = event_accumulator.EventAccumulator(str(run_dir))
        acc.Reload()
        got = [e.value for e in acc.Scalars("test/accuracy")]
        assert got == pytest.approx([float(r["test_accuracy"]) for r in metrics_csv(results, run_dir.name)])
        assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3]
        assert "_hparams_/session_start_info" in acc.summary_metadata  # the spec as HParams


def test_mlflow_file_store(results, tmp_path):
    mlflow = pytest.importorskip("mlflow")
    export(results, "mlflow", tmp_path)
    client = mlflow.tracking.MlflowClient(tracking_uri=tmp_path.resolve().as_uri())
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(p.name for p in (results / "tiny").iterdir()
                                                           if (p / "result.json").exists())
    for r in runs:
        history = client.get_metric_history(r.info.run_id, "test_accuracy")
        expected = [float(x["test_accuracy"]) for x in metrics_csv(results, r.info.run_name)]
        assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(expected)
        assert r.data.params["train.lr"] == "0.05" and r.data.tags["recipe"] == "tiny"


def wandb_records(path):
    """The records of a W&B offline log: a 7-byte header, then LevelDB log blocks of 32 KiB whose
    records are checksum(4) length(2) type(1) + payload (types 1 full, 2 first, 3 middle, 4 last)."""
    raw, pos, block, part = path.read_bytes(), 7, 32768, b""
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        data, pos = raw[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            yield data
        elif kind in (2, 3):
            part = (part if kind == 3 else b"") + data
        elif kind == 4:
            yield part + data


def test_wandb_offline_runs(results, tmp_path):
    pytest.importorskip("wandb")
    from wandb.proto import wandb_internal_pb2 as pb

    export(results, "wandb", tmp_path)
    logs = sorted((tmp_path / "wandb").glob("offline-run-*/*.wandb"))
    assert len(logs) == 2
    for log in logs:
        run_id = log.stem.removeprefix("run-")
        history, config = [], {}
        for data in wandb_records(log):
            record = pb.Record()
            record.ParseFromString(data)
            kind = record.WhichOneof("record_type")
            if kind == "history":
                history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                for item in record.history.item})
            elif kind == "run":
                config = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                          for item in record.run.config.update}
        history = [h for h in history if "test_accuracy" in h]  # (W&B adds rows of its own, e.g. _runtime)
        assert len(history) == 3 and [h["test_accuracy"] for h in history] == pytest.approx(
            [float(r["test_accuracy"]) for r in metrics_csv(results, run_id)])
        value = {k: v["value"] if isinstance(v, dict) and "value" in v else v for k, v in config.items()}
        assert value["run_id"] == run_id and value["train.lr"] == 0.05


def test_bad_target_is_one_line(results):
    res = CliRunner().invoke(app, ["export", str(results), "--to", "excel"])
    assert res.exit_code == 2 and "tensorboard, mlflow, wandb" in res.output and len(res.output.strip().splitlines()) == 1
