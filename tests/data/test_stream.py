"""Streaming ImageFolder pipeline: a tiny JPEG folder written here, trained through DataLoader workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from widecli.config.schema import DataConfig, ModelConfig, Recipe
from widecli.data import stream
from widecli.data.registry import folder_datasets, shape_of
from widecli.data.resident import load_dataset
from widecli.data.stream import StreamBatches, StreamDataset
from widecli.engine.dist import SINGLE
from widecli.errors import DataError
from widecli.execute.run import load_model
from widecli.models import registry as models
from widecli.models.layout import weight_modules
from widecli.recipes import make_spec
from widecli.store import runs as store


def write_folder(root, classes=("cat", "dog", "eel"), train=4, val=2, size=(40, 52)):
    """train/<class>/*.JPEG and val/<class>/*.JPEG with a colour per class plus noise."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("val", val)):
        for c, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                base = np.zeros((size[1], size[0], 3), np.uint8)
                base[..., c % 3] = 180
                img = np.clip(base + rng.integers(0, 60, base.shape), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{name}_{i}.JPEG", quality=90)
    return root


@pytest.fixture
def folder(tmp_path):
    return write_folder(tmp_path / "imgs")


def batches(ds, seed, epoch, batch_size, device):
    """One epoch of training batches of the streamed folder (one process)."""
    return StreamBatches(ds, seed, batch_size, device, SINGLE.shard).epoch(epoch)


def spec_for(folder, **train):
    raw = {"name": "folder", "data": {"dataset": "image_folder", "root": str(folder), "pipeline": "stream",
                                      "workers": 2},
           "model": {"arch": "resnet18_imagenet", "width": 2},
           "widen": {"layers": "all", "factors": [2], "methods": ["sparse"]},
           "train": {"epochs": 1, "batch_size": 5, "lr": 0.05, **train}}
    return make_spec(Recipe.model_validate(raw), 2.0, "sparse", 0)


def test_one_epoch_through_the_stream(folder, tmp_path, run_stored):
    spec = spec_for(folder)
    ds = load_dataset(spec.data, "cpu")
    assert isinstance(ds, StreamDataset) and ds.num_classes == 3 and ds.input_shape == (3, 224, 224)
    assert len(ds.y_train) == 12 and len(ds.y_test) == 6
    [(outcome, path)] = run_stored([spec], tmp_path / "results", torch.device("cpu"))
    assert outcome.status == "ok" and len(outcome.metrics) == 1
    f = outcome.final
    assert np.isfinite(f["train_loss"])
    # The recorded test accuracy is the stored model's, recomputed here image by image on the 6 val images.
    model = load_model(path)
    with torch.no_grad():
        correct = sum(int((model(x).argmax(-1) == y).sum())
                      for x, y in StreamBatches(ds, 0, 5, torch.device("cpu"), SINGLE.shard).eval_batches("test"))
    assert f["test_accuracy"] == pytest.approx(correct / 6)
    assert round(f["train_accuracy"] * 12, 6) == round(f["train_accuracy"] * 12)  # a count over 12 images
    result = store.read_result(path)
    assert result["data"]["train_size"] == 12 and result["weights"]["nonzeros"] == result["weights"]["budget"]
    model = load_model(path)
    masks = torch.load(path / "model.pt", weights_only=True)["masks"]
    for name, m in weight_modules(model):
        if name in masks:
            assert not m.weight[~masks[name].bool()].any()  # masked weights stayed zero


def test_epoch_batches_are_seeded_by_epoch(folder):
    ds = stream.load_stream(DataConfig(dataset="image_folder", root=str(folder), workers=1))
    first = [(x.clone(), y.clone()) for x, y in batches(ds, 0, 3, 5, torch.device("cpu"))]
    again = list(batches(ds, 0, 3, 5, torch.device("cpu")))
    other = list(batches(ds, 0, 4, 5, torch.device("cpu")))
    ds.workers = 0  # in this process: seeded the same way, and the global generator is left alone
    before = torch.get_rng_state()
    assert all(torch.equal(a[0], b[0]) for a, b in zip(list(batches(ds, 0, 3, 5, torch.device("cpu"))),
                                                        list(batches(ds, 0, 3, 5, torch.device("cpu"))), strict=True))
    assert torch.equal(before, torch.get_rng_state())
    assert [y.shape[1] for _, y in first] == [5, 5, 2]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other, strict=True))
    assert sorted(torch.cat([y[0] for _, y in first]).tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    x = first[0][0]
    assert x.shape == (1, 5, 3, 224, 224) and x.dtype == torch.float32
    assert abs(float(x.mean())) < 3 and float(x.std()) > 0.1  # normalized, not raw 0..255


def test_auto_pipeline_keeps_a_small_folder_on_the_device(folder, monkeypatch):
    cfg = DataConfig(dataset="image_folder", root=str(folder))
    ds = load_dataset(cfg, "cpu")
    assert not isinstance(ds, StreamDataset)
    assert tuple(ds.x_train.shape) == (12, 3, 224, 224) and tuple(ds.x_test.shape) == (6, 3, 224, 224)
    assert shape_of(cfg) == ((3, 224, 224), 3)
    folders = folder_datasets()
    assert folders == ["imagenet", "image_folder"]
    assert stream.streamed(cfg.model_copy(update={"pipeline": "stream"}), "cpu", folders)
    monkeypatch.setattr(stream, "CPU_RESIDENT_LIMIT", 11 * 3 * 224 * 224 * 4)  # room for 11 of 12 images
    assert stream.streamed(cfg, "cpu", folders) and not stream.streamed(cfg.model_copy(update={"subset": 11}), "cpu",
                                                                         folders)


def test_imagenet_under_root_and_errors(tmp_path):
    write_folder(tmp_path / "imagenet", classes=("a", "b"), train=1, val=1)
    cfg = DataConfig(dataset="imagenet", root=str(tmp_path), pipeline="stream", workers=0)
    assert stream.folder(cfg) == tmp_path / "imagenet"
    assert shape_of(cfg) == ((3, 224, 224), 1000)
    with pytest.raises(DataError, match="data.pipeline: stream reads image folders"):
        load_dataset(DataConfig(dataset="cifar10", pipeline="stream"))
    with pytest.raises(DataError, match="no train/ folder"):
        load_dataset(DataConfig(dataset="image_folder", root=str(tmp_path / "none")))
    (tmp_path / "imagenet" / "val" / "zzz").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "imagenet" / "val" / "zzz" / "z.JPEG")
    with pytest.raises(DataError, match="other class folders"):
        stream.load_stream(cfg)


def test_resnet18_imagenet_matches_torchvision_size():
    import torchvision

    cfg = ModelConfig(arch="resnet18_imagenet", width=64)
    ours = models.build(cfg, models.base_widths(cfg), (3, 224, 224), 1000)
    ref = torchvision.models.resnet18()
    assert [p.shape for p in ours.parameters()] == [p.shape for p in ref.parameters()]
    assert ours(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)
    assert models.widenable_layers(cfg) == ["layer1", "layer2", "layer3", "layer4"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_stream_to_cuda_pinned(folder, tmp_path, run_stored):
    """The same run streamed to a GPU (fp32) computes what it computes on the CPU."""
    spec = spec_for(folder, precision="fp32")
    [(gpu, _)] = run_stored([spec], tmp_path / "gpu", torch.device("cuda"))
    [(cpu, _)] = run_stored([spec], tmp_path / "cpu", torch.device("cpu"))
    assert gpu.status == "ok" and gpu.final["device"].startswith("cuda")
    for key in ("train_loss", "test_loss"):
        assert gpu.final[key] == pytest.approx(cpu.final[key], rel=1e-3), key
    assert abs(gpu.final["test_accuracy"] - cpu.final["test_accuracy"]) <= 1 / 6 + 1e-9  # at most one image


def test_streamed_run_resumes_identical(folder, tmp_path, run_stored):
    class Stop(BaseException):
        pass

    def stop(epoch, epochs, rows):
        if epoch == 1:
            raise Stop
    spec = spec_for(folder, epochs=2, checkpoint_every=1)
    cpu = torch.device("cpu")
    [(whole, _)] = run_stored([spec], tmp_path / "a", cpu)
    with pytest.raises(Stop):
        run_stored([spec], tmp_path / "b", cpu, on_epoch=stop)
    [(resumed, _)] = run_stored([spec], tmp_path / "b", cpu)
    assert all(torch.equal(t, resumed.state[n]) for n, t in whole.state.items())
    assert [r["test_loss"] for r in whole.metrics] == [r["test_loss"] for r in resumed.metrics]
