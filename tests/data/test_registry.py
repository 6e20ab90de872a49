"""Data loading through the real code paths: offline sets, torchvision IDX files, npz."""

import numpy as np
import pytest
import torch
from disk_formats import write_idx

from widecli.config.schema import DataConfig
from widecli.data.registry import shape_of
from widecli.data.resident import augment, load_dataset
from widecli.errors import DataError


def fake_mnist(root, folder="MNIST", n_train=64, n_test=32, seed=0):
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n))


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST"),
                                          ("kmnist", "KMNIST")])
def test_torchvision_idx_files_are_read(tmp_path, name, folder):
    fake_mnist(tmp_path, folder)
    ds = load_dataset(DataConfig(dataset=name, root=str(tmp_path), download=False))
    assert ds.x_train.shape == (64, 1, 28, 28) and ds.x_test.shape == (32, 1, 28, 28)
    assert ds.y_train.dtype == torch.int64 and ds.num_classes <= 10
    # standard normalisation: per-channel zero mean, unit variance on the training set
    assert abs(ds.x_train.mean().item()) < 1e-4 and abs(ds.x_train.std().item() - 1) < 1e-2
    assert shape_of(DataConfig(dataset=name)) == ((1, 28, 28), 10)


def test_missing_torchvision_data_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not found under .*data.download: true"):
        load_dataset(DataConfig(dataset="mnist", root=str(tmp_path), download=False))


def test_mnist1d_is_generated_once_and_cached(data_root):
    cfg = DataConfig(dataset="mnist1d", root=str(data_root))
    ds = load_dataset(cfg)
    assert ds.x_train.shape == (4000, 40) and ds.x_test.shape == (1000, 40) and ds.num_classes == 10
    assert (data_root / "mnist1d" / "mnist1d_default.npz").exists()
    again = load_dataset(cfg)
    assert torch.equal(ds.x_train, again.x_train)


def test_digits_subset_is_fixed(tmp_path):
    cfg = DataConfig(dataset="digits", subset=100)
    a, b = load_dataset(cfg), load_dataset(cfg)
    assert a.x_train.shape == (100, 1, 8, 8) and torch.equal(a.y_train, b.y_train)
    assert a.x_test.shape[0] == 360


def test_pixelwise_normalisation(tmp_path):
    ds = load_dataset(DataConfig(dataset="digits", normalize="pixelwise"))
    flat = ds.x_train.flatten(1)
    varying = flat.std(0) > 0
    assert torch.allclose(flat.mean(0)[varying], torch.zeros(int(varying.sum())), atol=1e-4)


def npz(tmp_path, **arrays):
    rng = np.random.default_rng(0)
    base = {"x_train": rng.normal(size=(20, 5)), "y_train": rng.integers(0, 3, 20),
            "x_test": rng.normal(size=(10, 5)), "y_test": rng.integers(0, 3, 10)}
    base.update(arrays)
    path = tmp_path / "d.npz"
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return DataConfig(dataset="npz", path=str(path))


def test_npz_roundtrip(tmp_path):
    ds = load_dataset(npz(tmp_path))
    assert ds.input_shape == (5,) and ds.num_classes == 3 and ds.x_train.dtype == torch.float32


@pytest.mark.parametrize("arrays, message", [
    ({"y_test": None}, "missing array 'y_test'"),
    ({"x_train": np.full((20, 5), np.nan)}, "NaN"),
    ({"y_train": np.full(20, -1)}, "negative label"),
    ({"y_train": np.zeros(20, dtype=np.float32)}, "integer"),
    ({"y_train": np.zeros(19, dtype=int)}, "rows"),
    ({"x_train": np.zeros((0, 5)), "y_train": np.zeros(0, dtype=int)}, "no rows"),
])
def test_bad_npz_files(tmp_path, arrays, message):
    with pytest.raises(DataError, match=message):
        load_dataset(npz(tmp_path, **arrays))


def test_npz_not_a_zip(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable npz"):
        load_dataset(DataConfig(dataset="npz", path=str(path)))


def test_augment_keeps_shape_and_content():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 3, 8, 8)
    y = augment(x, g)
    assert y.shape == x.shape
    # a crop of a zero-padded image keeps a subset of the pixel values (or zeros)
    values = set(x[0, 0].flatten().tolist()) | {0.0}
    assert set(y[0, 0].flatten().tolist()) <= values
