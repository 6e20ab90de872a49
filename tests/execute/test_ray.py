"""The Ray executor: tasks resume from in-run checkpoints on a shared results directory, refuse a
worker whose widecli/torch differ from the driver's, surface worker failures as failed runs with
their error line, and `--address auto` starts a local Ray when no cluster is running."""

from __future__ import annotations

import importlib.util

import pytest
from helpers import invoke
import torch

from widecli.execute import ray as ray_executor
from widecli.execute.run import run_group
from widecli.execute.sweep import sweep
from widecli.recipes import expand, load_recipe
from widecli.store import runs as store

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")


class Stop(BaseException):
    pass


def test_a_task_resumes_from_the_shared_checkpoint(make_recipe, tmp_path):
    recipe = make_recipe({"widen": {"factors": [2], "methods": ["sparse"]},
                          "train": {"epochs": 4, "checkpoint_every": 1}})
    [spec] = expand(load_recipe(recipe))
    run_group([spec], tmp_path / "reference", torch.device("cpu"), record_failures=False)

    def stop(event):
        if event.kind == "epoch" and event.epoch == 2:
            raise Stop
    with pytest.raises(Stop):  # an attempt that died after 2 epochs, leaving its checkpoint
        run_group([spec], tmp_path / "results", torch.device("cpu"), emit=stop)
    payload = ray_executor._task([spec.model_dump(mode="json")], "cpu", 1, str(tmp_path / "results"),
                                 ray_executor.VERSIONS)
    assert payload["resumed"] and payload["checkpoints"]
    [run] = payload["runs"]
    reference = store.read_result(store.run_dir(tmp_path / "reference", spec))
    assert run["status"] == "ok" and run["result"]["final"]["test_loss"] == reference["final"]["test_loss"]
    assert [r["epoch"] for r in run["metrics"]] == [1, 2, 3, 4]


def test_a_worker_with_other_versions_is_refused(make_recipe, tmp_path):
    [spec] = expand(load_recipe(make_recipe({"widen": {"factors": [1], "methods": ["dense"]}})))
    with pytest.raises(ray_executor.WorkerMismatch, match="widecli 0.0.1"):
        ray_executor._task([spec.model_dump(mode="json")], "cpu", 1, str(tmp_path),
                           {**ray_executor.VERSIONS, "widecli": "0.0.1"})


@needs_ray
def test_address_auto_starts_a_local_ray_and_worker_errors_come_back(make_recipe, tmp_path):
    import ray

    good = make_recipe({"widen": {"factors": [1, 2], "methods": ["sparse"]}})
    res = invoke(*["sweep", str(good), "--results", str(tmp_path), "--executor", "ray",
                                   "--address", "auto", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "trained 2: 2 ok" in res.output and not ray.is_initialized()  # started, then shut down
    bad = make_recipe({"data": {"dataset": "npz", "path": str(tmp_path / "missing.npz")}}, name="bad")
    summary = sweep(expand(load_recipe(bad)), tmp_path, executor="ray", address="auto", device="cpu")
    assert summary.failed == 3  # the baseline and factor 2 sparse and dense
    assert all("ray worker: DataError: data.path" in why for _, why in summary.failures), summary.failures
