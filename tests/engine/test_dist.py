"""Data parallelism on CPU (gloo): two processes train what one process trains on the same global batch."""

from __future__ import annotations

import os

import pytest
from helpers import invoke
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from widecli.config.schema import Recipe
from widecli.data.resident import load_dataset
from widecli.engine.dist import SINGLE
from widecli.engine.loop import fit as train
from widecli.errors import RecipeError
from widecli.execute import ddp
from widecli.recipes import make_spec as run_spec
from widecli.store import runs as store


def make_spec(data_root, gpus=1, **train):
    # 301 examples in batches of 64: the last global batch (45) splits 23/22; an MLP (no BatchNorm:
    # gloo has no SyncBatchNorm) with a sparse wide layer, so masks matter.
    raw = {"name": "ddp", "data": {"dataset": "mnist1d", "root": str(data_root), "subset": 301},
           "model": {"arch": "mlp", "hidden": [16]},
           "widen": {"layers": "first", "factors": [2], "methods": ["sparse"]},
           "train": {"epochs": 2, "batch_size": 64, "lr": 0.1, "backend": "dense", "gpus": gpus, **train}}
    return run_spec(Recipe.model_validate(raw), 2.0, "sparse", 0)


def _rank(r: int, port: int, spec, out: str) -> None:
    """One rank of a hand-made gloo group: train, then save this rank's weights and masks."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=r, world_size=2)
    try:
        [o] = train([spec], load_dataset(spec.data, "cpu"), torch.device("cpu"))
        torch.save({"state": o.state, "masks": o.masks, "metrics": o.metrics}, os.path.join(out, f"{r}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def single(data_root):
    spec = make_spec(data_root)
    [o] = train([spec], load_dataset(spec.data, "cpu"), torch.device("cpu"))
    return o


def test_every_rank_ends_with_the_single_process_weights(tmp_path, data_root, single):
    spec = ddp.check([make_spec(data_root, gpus=2)])[0]
    mp.spawn(_rank, args=(ddp._free_port(), spec, str(tmp_path)), nprocs=2)
    for r in (0, 1):
        got = torch.load(tmp_path / f"{r}.pt", weights_only=False)
        for name, t in single.state.items():
            torch.testing.assert_close(got["state"][name], t, rtol=1e-5, atol=1e-6)
        assert all(torch.equal(got["masks"][n], single.masks[n]) for n in single.masks)
        w = got["state"]["fc1.weight"]
        assert not w[~got["masks"]["fc1"].bool()].any() and (w != 0).sum() == got["masks"]["fc1"].sum()
        # Metrics are reduced over ranks: the same epoch averages as one process.
        for a, b in zip(got["metrics"], single.metrics, strict=True):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
            assert a["train_accuracy"] == pytest.approx(b["train_accuracy"], abs=1e-9)
            assert a["test_accuracy"] == pytest.approx(b["test_accuracy"], abs=1e-9)


def test_cli_gpus_spawns_and_rank0_writes(tmp_path, data_root, single):
    import yaml


    spec = make_spec(data_root, gpus=2)
    assert spec.run_id == make_spec(data_root).run_id  # gpus is an execution key
    recipe = tmp_path / "ddp.yaml"
    raw = {"name": "ddp", "data": spec.data.model_dump(), "model": {"arch": "mlp", "hidden": [16]},
           "widen": {"layers": "first", "factors": [2], "methods": ["sparse"]},
           "train": {"epochs": 2, "batch_size": 64, "lr": 0.1, "backend": "dense"}}
    recipe.write_text(yaml.safe_dump(raw))
    result = invoke(*["train", str(recipe), "--gpus", "2", "--device", "cpu",
                                      "--results", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    assert "on 2 x cpu" in result.output
    path = store.run_dir(tmp_path / "results", spec)
    assert store.read_result(path)["final"]["epochs_run"] == 2
    state = torch.load(path / "model.pt", weights_only=True)["state"]
    for name, t in single.state.items():
        torch.testing.assert_close(state[name], t, rtol=1e-5, atol=1e-6)


def test_refusals(data_root):
    with pytest.raises(RecipeError, match="train.backend: sparse cannot run data-parallel"):
        ddp.check([make_spec(data_root, gpus=2, backend="sparse")])
    with pytest.raises(RecipeError, match="train.batch_size: 1 is smaller than train.gpus = 2"):
        ddp.check([make_spec(data_root, gpus=2, batch_size=1)])
    assert SINGLE.shard(torch.arange(5).view(1, 5)).tolist() == [[0, 1, 2, 3, 4]]  # one process
    assert ddp.devices(torch.device("cpu"), 3) == ["cpu"] * 3


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_two_gpus_nccl(tmp_path, data_root, run_stored):
    """Two GPUs (NCCL, fp32) compute what one process computes on the CPU."""
    spec = make_spec(data_root, gpus=2, precision="fp32")
    [(o, _)] = run_stored([spec], tmp_path / "gpu", torch.device("cuda"))
    [(ref, _)] = run_stored([make_spec(data_root, gpus=1, precision="fp32")], tmp_path / "cpu", torch.device("cpu"))
    assert o.status == "ok" and o.final["device"].startswith("cuda")
    for key in ("train_loss", "test_loss", "test_accuracy", "train_accuracy"):
        assert o.final[key] == pytest.approx(ref.final[key], rel=1e-3, abs=2e-3), key


def test_sweep_workers_get_blocks_of_gpus(monkeypatch):
    from widecli.execute.local import worker_devices

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    cuda = torch.device("cuda")
    assert worker_devices(cuda, "auto", 2, per_run=2) == ["cuda:0", "cuda:2"]
    assert worker_devices(cuda, "auto", 3, per_run=2) == ["cuda:0", "cuda:2", "cuda:0"]
    assert worker_devices(cuda, "auto", 4) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
