"""mnist5k: 5,000 real MNIST digits offline, with a fixed, documented, class-balanced split; and the
official per-batch pixelwise normalization (data.normalize: pixelwise_batch), computed here again
independently with numpy exactly as the official MLP/utils.py does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from widecli.config.schema import DataConfig
from widecli.data.registry import describe, load_arrays
from widecli.data.resident import (
    EVAL_BATCH_PER_BATCH_NORM,
    ResidentBatches,
    load_dataset,
)


@pytest.fixture(scope="module")
def arrays(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist5k")
    return load_arrays(DataConfig(dataset="mnist5k", root=str(root), normalize="none")), root


def test_split_is_fixed_real_and_class_balanced(arrays):
    (x_train, y_train, x_test, y_test), root = arrays
    assert x_train.shape == (2048, 1, 28, 28) and x_test.shape == (2952, 1, 28, 28)
    assert x_train.min() == 0.0 and x_train.max() == 1.0            # pixels in [0, 1]
    assert list(np.bincount(y_train)) == [205] * 8 + [204] * 2      # as documented
    assert list(np.bincount(y_test)) == [295] * 8 + [296] * 2
    # The same split again from scratch (another cache folder): identical arrays.
    again = load_arrays(DataConfig(dataset="mnist5k", root=str(root / "again"), normalize="none"))
    assert all(np.array_equal(a, b) for a, b in zip((x_train, y_train, x_test, y_test), again))
    # Train and test are disjoint images (no digit appears in both).
    flat_train = {row.tobytes() for row in x_train.reshape(len(x_train), -1)}
    assert not any(row.tobytes() in flat_train for row in x_test.reshape(len(x_test), -1))
    assert describe(DataConfig(dataset="mnist5k")) == ((1, 28, 28), 10)


def official_pixelwise_normalization(images: np.ndarray) -> np.ndarray:
    """MLP/utils.py pixelwise_normalization, restated: per-pixel mean and np.std over the batch;
    pixels with std 0 become 0."""
    mean, std = images.mean(0), images.std(0)
    a = images - mean
    return np.divide(a, std, out=np.zeros(a.shape, dtype=float), where=std != 0)


def test_pixelwise_batch_normalizes_each_batch_by_itself(arrays):
    _, root = arrays
    cfg = DataConfig(dataset="mnist5k", root=str(root), normalize="pixelwise_batch")
    data = load_dataset(cfg)
    assert data.per_batch_normalize and float(data.x_train.max()) == 1.0  # stored raw
    source = ResidentBatches(data, [1, 2], batch_size=256, augment_=False, shard=lambda i: i)
    x, y = next(source.epoch(0))
    assert x.shape == (2, 256, 1, 28, 28)
    # Each run's first batch is the first 256 of its own data order (generator (seed, "data")):
    # normalize those raw images the official way and compare.
    raw = data.x_train.reshape(2048, -1).numpy()
    for k in range(2):
        got = x[k].reshape(256, -1).numpy()
        order = ResidentBatches(data, [1, 2][k:k + 1], 256, False, lambda i: i).order[0]
        idx = torch.randperm(2048, generator=order)[:256].numpy()
        expect = official_pixelwise_normalization(raw[idx].astype(np.float64))
        np.testing.assert_allclose(got, expect, atol=2e-5)
        assert (got[:, raw[idx].std(0) == 0] == 0).all()   # constant pixels (the border) are 0
    # Evaluation: batches of 1,000, each normalized by itself.
    batches = list(source.eval_batches("test"))
    assert [len(b[1]) for b in batches] == [1000, 1000, 952] and EVAL_BATCH_PER_BATCH_NORM == 1000
    raw_test = data.x_test.reshape(len(data.y_test), -1).numpy()
    np.testing.assert_allclose(batches[2][0].reshape(952, -1).numpy(),
                               official_pixelwise_normalization(raw_test[2000:].astype(np.float64)), atol=2e-5)


def test_training_set_statistics_are_the_other_choice(arrays):
    _, root = arrays
    x_train, _, x_test, _ = load_arrays(DataConfig(dataset="mnist5k", root=str(root), normalize="pixelwise"))
    raw_train, _, raw_test, _ = load_arrays(DataConfig(dataset="mnist5k", root=str(root), normalize="none"))
    mean, std = raw_train.mean(0), raw_train.std(0)
    std = np.where(std > 1e-8, std, 1.0)
    np.testing.assert_allclose(x_test, (raw_test - mean) / std, atol=1e-5)
    np.testing.assert_allclose(x_train.mean(0)[raw_train.std(0) > 1e-8], 0.0, atol=1e-5)
