"""mnist5k: 5,000 real MNIST digits offline, with a fixed, documented, class-balanced split; and the
official per-batch normalization (data.normalize: pixelwise_batch_official), compared BIT FOR BIT
with the official chain restated here from its source: torchvision's ToTensor and
Normalize((0.1307,), (0.3081,)) on each image, then MLP/utils.py's pixelwise_normalization
(numpy, verbatim) on each batch - on the tensors widecli's batch source hands the step and the
evaluation, in real (one-epoch) trainings, solo and stacked."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from disk_formats import write_idx
from helpers import CPU
from PIL import Image
from torchvision import transforms

from widecli.config.schema import DataConfig, Recipe
from widecli.data import normalize
from widecli.data.registry import load_arrays, shape_of
from widecli.data.resident import ResidentBatches, load_dataset
from widecli.engine.loop import fit
from widecli.recipes import expand
from widecli.rng import generator


@pytest.fixture(scope="module")
def arrays(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist5k")
    s = load_arrays(DataConfig(dataset="mnist5k", root=str(root), normalize="none"))
    return (s.x_train, s.y_train, s.x_test, s.y_test), root


def test_split_is_fixed_real_and_class_balanced(arrays):
    (x_train, y_train, x_test, y_test), root = arrays
    assert x_train.shape == (2048, 1, 28, 28) and x_test.shape == (2952, 1, 28, 28)
    assert x_train.min() == 0.0 and x_train.max() == 1.0            # pixels in [0, 1]
    assert list(np.bincount(y_train)) == [205] * 8 + [204] * 2      # as documented
    assert list(np.bincount(y_test)) == [295] * 8 + [296] * 2
    # The same split again from scratch (another cache folder): identical arrays.
    again = load_arrays(DataConfig(dataset="mnist5k", root=str(root / "again"), normalize="none"))
    assert all(np.array_equal(a, b) for a, b in zip((x_train, y_train, x_test, y_test),
                                                    (again.x_train, again.y_train, again.x_test, again.y_test),
                                                    strict=True))
    # Train and test are disjoint images (no digit appears in both).
    flat_train = {row.tobytes() for row in x_train.reshape(len(x_train), -1)}
    assert not any(row.tobytes() in flat_train for row in x_test.reshape(len(x_test), -1))
    assert shape_of(DataConfig(dataset="mnist5k")) == ((1, 28, 28), 10)


# --------------------------------------------------------------------------- the official chain


OFFICIAL_TRANSFORM = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])


def official_pixelwise_normalization(images):
    """MLP/utils.py of google-research/wide-sparse-nets, verbatim."""
    orig_type = type(images)
    if orig_type == torch.Tensor:
        images = images.numpy()
    pix_mean = np.mean(images, axis=0)
    pix_stdev = np.std(images, axis=0)
    a = (images - pix_mean)
    images = np.divide(a, pix_stdev, out=np.zeros(a.shape, dtype=float), where=pix_stdev != 0)
    if orig_type == torch.Tensor:
        images = torch.Tensor(images)
    return images


def official_images(u8: np.ndarray) -> torch.Tensor:
    """The official loader's images (PIL 'L' -> ToTensor -> Normalize), reshaped to [n, 784] as its
    training loop does."""
    return torch.stack([OFFICIAL_TRANSFORM(Image.fromarray(img, mode="L")) for img in u8]).reshape(-1, 784)


def official_batch(u8: np.ndarray) -> torch.Tensor:
    return official_pixelwise_normalization(official_images(u8))


def same_bits(got: torch.Tensor, expected: torch.Tensor) -> bool:
    got = got.reshape(expected.shape).contiguous()
    return got.dtype == expected.dtype == torch.float32 and torch.equal(got.view(torch.int32),
                                                                        expected.contiguous().view(torch.int32))


def as_u8(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """The digits' bytes back from fl32(u8 / 255) (exact: rounding to the nearest integer)."""
    x = np.asarray(x)
    u8 = np.rint(x.reshape(len(x), 28, 28) * 255).astype(np.uint8)
    assert np.array_equal(u8.astype(np.float32) / 255.0, x.reshape(len(x), 28, 28))
    return u8


@pytest.fixture
def fed(monkeypatch):
    """Every batch widecli's resident batch source hands the training step and the evaluation."""
    seen = {"train": [], "eval": []}
    epoch, eval_batches = ResidentBatches.epoch, ResidentBatches.eval_batches

    def record_epoch(self, e):
        for x, y in epoch(self, e):
            seen["train"].append(x.clone())
            yield x, y

    def record_eval(self, split):
        for x, y in eval_batches(self, split):
            seen["eval"].append((split, x.clone()))
            yield x, y
    monkeypatch.setattr(ResidentBatches, "epoch", record_epoch)
    monkeypatch.setattr(ResidentBatches, "eval_batches", record_eval)
    return seen


def train_one_epoch(data: dict, batch_size: int, seeds: list[int]):
    recipe = Recipe(name="official", data=data,
                    model={"arch": "mlp", "hidden": [8], "bias": False, "parameterization": "ntk", "init": "uniform"},
                    widen={"factors": [1], "methods": ["dense"]},
                    train={"epochs": 1, "batch_size": batch_size, "lr": 5.0, "momentum": 0.0, "schedule": "constant"},
                    seeds=seeds)
    specs = expand(recipe)
    ds = load_dataset(specs[0].data, CPU)
    fit(specs, ds, CPU)
    return specs, ds


def check_training_batches(seen: list[torch.Tensor], u8_train: np.ndarray, seeds: list[int], b: int) -> int:
    n = len(u8_train)
    perms = [torch.randperm(n, generator=generator(s, "data")).numpy() for s in seeds]  # epoch 1's order
    assert len(seen) == -(-n // b)
    for i, x in enumerate(seen):
        assert x.shape[0] == len(seeds)
        for j, perm in enumerate(perms):
            assert same_bits(x[j], official_batch(u8_train[perm[i * b:(i + 1) * b]]))
    return len(seen)


def test_official_numerics_bit_for_bit_in_stacked_training_and_evaluation(arrays, fed):
    (x_train, _, x_test, _), root = arrays
    u8_train, u8_test = as_u8(x_train), as_u8(x_test)
    _, ds = train_one_epoch({"dataset": "mnist5k", "root": str(root), "normalize": "pixelwise_batch_official"},
                            256, [1, 2])
    # The data stay as the official loader's global step leaves them (ToTensor + Normalize).
    assert same_bits(ds.x_train.reshape(2048, -1), official_images(u8_train))
    # Training: 8 batches of 256 per run, K = 2 stacked runs, each normalized by itself.
    assert check_training_batches(fed["train"], u8_train, [1, 2], 256) == 8
    # Evaluation: the test set in the official test_batch_size 1,000 (1,000 + 1,000 + 952), the
    # training set (final metrics) in training-sized batches, each normalized by itself.
    test = [x for split, x in fed["eval"] if split == "test"]
    assert [len(x) for x in test] == [1000, 1000, 952]
    for lo, x in zip((0, 1000, 2000), test, strict=True):
        assert same_bits(x, official_batch(u8_test[lo:lo + len(x)]))
    train = [x for split, x in fed["eval"] if split == "train"]
    assert [len(x) for x in train] == [256] * 8
    for i, x in enumerate(train):
        assert same_bits(x, official_batch(u8_train[256 * i:256 * (i + 1)]))
    # The artifact the official numbers rest on: a batch-constant (background) pixel is -1 in the
    # training batches of 256 and +1 in the test batches of 1,000 and 952, never 0.
    corner = 0  # pixel (0, 0) is background in every digit
    assert (u8_train[:, 0, 0] == 0).all() and (u8_test[:, 0, 0] == 0).all()
    assert (fed["train"][0][:, :, 0, 0, 0] == -1).all()
    assert all((x.reshape(len(x), -1)[:, corner] == 1).all() for x in test)


def test_official_numerics_bit_for_bit_at_2048_solo(arrays, fed):
    (x_train, _, _, _), root = arrays
    train_one_epoch({"dataset": "mnist5k", "root": str(root), "normalize": "pixelwise_batch_official"}, 2048, [3])
    assert check_training_batches(fed["train"], as_u8(x_train), [3], 2048) == 1


def test_official_numerics_bit_for_bit_at_10000_on_mnist_files(arrays, tmp_path, fed):
    """Full MNIST read from its IDX files (torchvision's loader): 10,000 training images (the real
    digits twice, the second copy shifted by a pixel) in one batch of 10,000."""
    (x_train, y_train, x_test, y_test), _ = arrays
    u8 = np.concatenate([as_u8(x_train), as_u8(x_test)])
    images = np.concatenate([u8, np.roll(u8, 1, axis=2)])
    labels = np.concatenate([y_train, y_test, y_train, y_test])
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / "train-images-idx3-ubyte", images)
    write_idx(raw / "train-labels-idx1-ubyte", labels)
    write_idx(raw / "t10k-images-idx3-ubyte", images[:1000])
    write_idx(raw / "t10k-labels-idx1-ubyte", labels[:1000])
    train_one_epoch({"dataset": "mnist", "root": str(tmp_path), "download": False,
                     "normalize": "pixelwise_batch_official"}, 10_000, [0])
    assert check_training_batches(fed["train"], images, [0], 10_000) == 1


def test_zero_variant_sets_batch_constant_pixels_to_0_and_is_the_official_function_elsewhere(arrays, fed):
    (x_train, _, _, _), root = arrays
    u8_train = as_u8(x_train)
    train_one_epoch({"dataset": "mnist5k", "root": str(root), "normalize": "pixelwise_batch_zero"}, 256, [1])
    perm = torch.randperm(2048, generator=generator(1, "data")).numpy()
    for i, x in enumerate(fed["train"]):
        raw = torch.from_numpy(u8_train[perm[256 * i:256 * (i + 1)]].reshape(256, -1).astype(np.float32) / 255)
        expected = official_pixelwise_normalization(raw.clone())
        constant = (raw == raw[0]).all(0)
        assert constant.any() and (x[0].reshape(256, -1)[:, constant] == 0).all()
        assert same_bits(x[0].reshape(256, -1)[:, ~constant], expected[:, ~constant].contiguous())


def test_per_batch_is_the_same_bits_solo_and_stacked_and_for_any_layout():
    g = torch.Generator().manual_seed(0)
    x = (torch.randint(0, 256, (3, 300, 1, 28, 28), generator=g).float() / 255 - 0.1307) / 0.3081
    x[:, :, :, :4] = x[0, 0, 0, 0, 0]                    # batch-constant rows of pixels
    stacked = normalize.per_batch("pixelwise_batch_official", x, dim=1)
    for j in range(3):
        solo = normalize.per_batch("pixelwise_batch_official", x[j], dim=0)
        assert same_bits(stacked[j], solo)
        assert same_bits(solo, official_pixelwise_normalization(x[j].reshape(300, -1).clone()))
    with pytest.raises(ValueError, match="dim must be 0"):
        normalize.per_batch("pixelwise_batch_official", x, dim=2)


def test_the_global_step_equals_torchvision_for_every_pixel_value():
    u8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
    ours = normalize.by_training_set("pixelwise_batch_official", u8.astype(np.float32)[None] / 255.0)[0]
    assert same_bits(torch.from_numpy(ours).reshape(1, -1), OFFICIAL_TRANSFORM(Image.fromarray(u8, mode="L")).reshape(1, -1))


def test_training_set_statistics_are_the_other_choice(arrays):
    _, root = arrays
    s = load_arrays(DataConfig(dataset="mnist5k", root=str(root), normalize="pixelwise"))
    raw = load_arrays(DataConfig(dataset="mnist5k", root=str(root), normalize="none"))
    mean, std = raw.x_train.mean(0), raw.x_train.std(0)
    std = np.where(std > 1e-8, std, 1.0)
    np.testing.assert_allclose(s.x_test, (raw.x_test - mean) / std, atol=1e-5)
    np.testing.assert_allclose(s.x_train.mean(0)[raw.x_train.std(0) > 1e-8], 0.0, atol=1e-5)
