"""Checkpoint/resume within a run: an interrupted run resumes and ends identical to an uninterrupted one."""

from __future__ import annotations

import pytest
import torch

from widecli.config.schema import Recipe
from widecli.execute import sweep
from widecli.recipes import make_spec as run_spec
from widecli.store import runs as store
from widecli.store.runs import CHECKPOINT as NAME


class Stop(BaseException):  # like an interrupt: a sweep records Exceptions as failed runs
    pass


def make_spec(data_root, **train):
    # A convnet with BatchNorm (running statistics), augmentation (its generator) and momentum
    # (optimizer state): everything a resume must restore.
    raw = {"name": "ckpt", "data": {"dataset": "digits", "root": str(data_root)},
           "model": {"arch": "cnn", "width": 4},
           "widen": {"layers": "all", "factors": [2], "methods": ["sparse"]},
           "train": {"epochs": 4, "batch_size": 100, "lr": 0.05, "augment": True, "checkpoint_every": 1,
                     "backend": "dense", **train}}
    return run_spec(Recipe.model_validate(raw), 2.0, "sparse", 0)


def stop_after(epoch):
    def on_epoch(e, epochs, rows):
        if e == epoch:
            raise Stop
    return on_epoch


def test_interrupted_run_resumes_identical(tmp_path, data_root, run_stored):
    spec = make_spec(data_root)
    cpu = torch.device("cpu")
    [(whole, _)] = run_stored([spec], tmp_path / "a", cpu)

    with pytest.raises(Stop):
        run_stored([spec], tmp_path / "b", cpu, on_epoch=stop_after(2))
    d = store.run_dir(tmp_path / "b", spec)
    assert (d / NAME).is_file() and not store.is_finished(d)
    assert torch.load(d / NAME, weights_only=False)["epoch"] == 2
    seen = []
    [(resumed, path)] = run_stored([spec], tmp_path / "b", cpu, on_epoch=lambda e, n, r: seen.append(e))
    assert seen == [3, 4]                       # epochs 1-2 came from the checkpoint
    assert not (path / NAME).exists()           # removed once the run is stored
    assert resumed.metrics == [{**r, "seconds": s["seconds"]} for r, s in zip(whole.metrics, resumed.metrics, strict=True)]
    for name, t in whole.state.items():
        assert torch.equal(t, resumed.state[name]), name
    assert all(torch.equal(whole.masks[n], resumed.masks[n]) for n in whole.masks)
    assert store.read_result(path)["final"]["test_accuracy"] == whole.final["test_accuracy"]


def test_sweep_cleanup_keeps_the_checkpoint(tmp_path, data_root, run_stored):
    spec = make_spec(data_root, epochs=2)
    with pytest.raises(Stop):
        run_stored([spec], tmp_path, torch.device("cpu"), on_epoch=stop_after(1))
    d = store.run_dir(tmp_path, spec)
    (d / "metrics.csv").write_text("half")
    assert store.remove_partial(tmp_path, spec)
    assert sorted(p.name for p in d.iterdir()) == [NAME]


def test_checkpoint_of_other_runs_is_ignored(tmp_path, data_root, run_stored):
    spec = make_spec(data_root, epochs=2)
    with pytest.raises(Stop):
        run_stored([spec], tmp_path, torch.device("cpu"), on_epoch=stop_after(1))
    other = make_spec(data_root, epochs=2, lr=0.01)  # another run id, same folder
    d = store.run_dir(tmp_path, spec)
    (store.run_dir(tmp_path, other)).mkdir(parents=True)
    (d / NAME).rename(store.run_dir(tmp_path, other) / NAME)
    seen = []
    run_stored([other], tmp_path, torch.device("cpu"), on_epoch=lambda e, n, r: seen.append(e))
    assert seen == [1, 2]


def test_restarted_sweep_resumes_from_the_checkpoint(tmp_path, data_root, run_stored):
    spec = make_spec(data_root)
    [(whole, _)] = run_stored([spec], tmp_path / "a", torch.device("cpu"))

    def stop(event):
        if event.kind == "epoch" and event.epoch == 2:
            raise Stop
    with pytest.raises(Stop):
        sweep.sweep([spec], tmp_path / "b", device="cpu", on_event=stop)
    epochs = []
    summary = sweep.sweep([spec], tmp_path / "b", device="cpu",
                        on_event=lambda e: epochs.append(e.epoch) if e.kind == "epoch" else None)
    assert epochs == [3, 4] and summary.rows[0]["test_accuracy"] == whole.final["test_accuracy"]
    state = torch.load(store.run_dir(tmp_path / "b", spec) / "model.pt", weights_only=True)["state"]
    assert all(torch.equal(state[n], t) for n, t in whole.state.items())
