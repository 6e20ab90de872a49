"""CIFAR-10/100 and SVHN loaders on tiny files in the real on-disk formats (torchvision's pickled
python batches and .mat files), their errors, and the device-side augmentation they use."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.io
import torch

from widecli.config.schema import DataConfig
from widecli.data.registry import DATASETS, shape_of
from widecli.data.resident import augment, load_dataset
from widecli.errors import DataError
from widecli.execute.run import load_model
from widecli.recipes import make_spec, validate
from widecli.store.runs import read_result

RNG = np.random.default_rng(0)


def write_cifar(root, folder, files, label_key, n=6, classes=10):
    d = root / folder
    d.mkdir(parents=True)
    written = {}
    for f in files:
        x = RNG.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)
        y = [int(v) for v in RNG.integers(0, classes, n)]
        with open(d / f, "wb") as fh:        # the layout of cifar-10-python.tar.gz's members
            pickle.dump({"batch_label": f, label_key: y, "data": x, "filenames": [b"x.png"] * n}, fh)
        written[f] = (x, y)
    return written


def cfg(root, dataset, **kw):
    return DataConfig(dataset=dataset, root=str(root), download=False, **{"normalize": "none", **kw})


def test_cifar10_reads_the_python_batches(tmp_path):
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    written = write_cifar(tmp_path, "cifar-10-batches-py", files, "labels")
    ds = load_dataset(cfg(tmp_path, "cifar10"))
    assert ds.x_train.shape == (30, 3, 32, 32) and ds.x_test.shape == (6, 3, 32, 32)
    assert ds.num_classes == 10 and ds.x_train.dtype == torch.float32
    x, y = written["data_batch_2"]
    # Row 7 of the train set is row 1 of batch 2; 3072 bytes = R plane, G plane, B plane.
    expected = torch.from_numpy(x[1].reshape(3, 32, 32).astype(np.float32) / 255)
    assert torch.equal(ds.x_train[7], expected) and int(ds.y_train[7]) == y[1]
    assert ds.y_test.tolist() == written["test_batch"][1]


def test_cifar100_uses_fine_labels_and_100_classes(tmp_path):
    write_cifar(tmp_path, "cifar-100-python", ["train", "test"], "fine_labels", classes=5)
    ds = load_dataset(cfg(tmp_path, "cifar100", normalize="standard"))
    assert ds.num_classes == 100          # a tiny file misses classes; the classifier does not
    assert ds.x_train.shape == (6, 3, 32, 32)
    assert ds.x_train.mean(dim=(0, 2, 3)).abs().max() < 1e-5   # per-channel standardization
    assert shape_of(cfg(tmp_path, "cifar100")) == ((3, 32, 32), 100)


def test_svhn_reads_mat_files_and_maps_label_10_to_0(tmp_path):
    x = RNG.integers(0, 256, (32, 32, 3, 5), dtype=np.uint8)   # SVHN's [H, W, C, N] layout
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": x, "y": np.array([[10], [1], [2], [9], [10]])})
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": x[..., :2], "y": np.array([[3], [10]])})
    ds = load_dataset(cfg(tmp_path, "svhn"))
    assert ds.y_train.tolist() == [0, 1, 2, 9, 0] and ds.y_test.tolist() == [3, 0]
    assert ds.x_train.shape == (5, 3, 32, 32) and ds.num_classes == 10
    # torchvision's transpose (3, 2, 0, 1): pixel [c, h, w] of image n is X[h, w, c, n].
    assert ds.x_train[4, 2, 5, 7] == pytest.approx(x[5, 7, 2, 4] / 255)
    assert not DATASETS.get("svhn").flip and not ds.flip   # digits are not mirror symmetric


def test_missing_files_without_download_is_one_line(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py/data_batch_1 not found") as e:
        load_dataset(cfg(tmp_path, "cifar10"))
    assert "data.download" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(DataError, match="train_32x32.mat not found"):
        load_dataset(cfg(tmp_path, "svhn"))


def test_corrupt_files_are_data_errors(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    (d / "train").write_bytes(b"not a pickle")
    (d / "test").write_bytes(b"")
    with pytest.raises(DataError, match="not a readable CIFAR100 batch"):
        load_dataset(cfg(tmp_path, "cifar100"))
    (tmp_path / "train_32x32.mat").write_bytes(b"garbage")
    (tmp_path / "test_32x32.mat").write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a readable SVHN .mat file"):
        load_dataset(cfg(tmp_path, "svhn"))


def test_augment_crops_and_flips_whole_batches():
    from widecli.rng import generator

    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).view(2, 3, 32, 32)
    out = augment(x[None], generator(0, "augment"))[0]
    assert out.shape == x.shape
    # Every output pixel is an input pixel of the same image and channel, or zero padding.
    for n in range(2):
        for c in range(3):
            values = set(out[n, c].flatten().tolist()) - {0.0}
            assert values <= set(x[n, c].flatten().tolist())
    unflipped = augment(x, generator(0, "augment"), flip=False)
    # Without flip, rows stay increasing left to right wherever no padding intervenes.
    row = unflipped[0, 0, 16]
    nz = row[row != 0]
    assert bool((nz[1:] > nz[:-1]).all())


def test_resnet18_trains_on_cifar_files_end_to_end(tmp_path, run_stored):
    """Tiny CIFAR files -> augmented training of a sparse ResNet-18 -> stored -> reloaded."""
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    write_cifar(tmp_path / "data", "cifar-10-batches-py", files, "labels", n=4)
    r = validate({"name": "r18", "data": {"dataset": "cifar10", "root": str(tmp_path / "data"),
                                                  "download": False},
                         "model": {"arch": "resnet18", "width": 2},
                         "widen": {"factors": [2], "methods": ["sparse"], "layers": "all"},
                         "sparsity": {"rule": "erk"},
                         "train": {"epochs": 1, "batch_size": 8, "augment": True}}, "t")
    spec = make_spec(r, 2.0, "sparse", 0)
    [(outcome, path)] = run_stored([spec], tmp_path / "results", torch.device("cpu"))
    assert outcome.status == "ok"
    w = read_result(path)["weights"]
    assert w["nonzeros"] == w["budget"] and w["budget_gap"] == 0 and w["other_params"] > 0
    model = load_model(path)
    conv = model.layer3[1].conv2.weight
    assert int((conv != 0).sum()) == w["layers"]["layer3.1.conv2"]["nonzeros"]
    x = load_dataset(r.data).x_test
    assert model(x).shape == (4, 10)
