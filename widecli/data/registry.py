"""Data set registry: `data.dataset` -> a DataSet record (its loader, and what planning needs to
know without loading it: input shape, classes, whether flips preserve labels, where a validation
split comes from). Adding a data set is one loader function (data.loaders) and one record here;
from a user's package, an entry point in the group `widecli.datasets` naming a DataSet or a loader
function, or `data.dataset: module:function`.

`load_arrays` applies the recipe's subset, validation split and normalization (data.splits,
data.normalize); `shape_of` gives (input_shape, num_classes) for planning without loading.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from widecli.config.schema import DataConfig
from widecli.data import loaders, normalize, splits, stream
from widecli.data.loaders import Loader
from widecli.data.npz import load_npz
from widecli.data.splits import Splits
from widecli.registry import Registry, user_function


@dataclass(frozen=True)
class DataSet:
    """One data set: its loader and the facts about it that need no loading."""

    loader: Loader
    input_shape: tuple[int, ...] | None = None   # None: read from the arrays (`shape_of` loads them)
    num_classes: int | None = None               # the full classifier, even for a subset missing a class
    flip: bool = True                            # random horizontal flips keep the label (train.augment)
    # data.validation comes from the non-training images (mnist5k: its 2,952 test-side digits hold
    # the validation images, so the training set stays the official 2,048); else from the training
    # images not used for training.
    validation_from_test: bool = False
    folder: bool = False                         # an image folder: streamed when it does not fit (data.stream)


_BUILTIN = {
    "mnist1d": DataSet(loaders.mnist1d, (40,), 10),
    "digits": DataSet(loaders.digits, (1, 8, 8), 10),
    "mnist5k": DataSet(loaders.mnist5k, (1, 28, 28), 10, validation_from_test=True),
    "mnist": DataSet(loaders.torchvision_idx("MNIST"), (1, 28, 28), 10),
    "fashion_mnist": DataSet(loaders.torchvision_idx("FashionMNIST"), (1, 28, 28), 10),
    "kmnist": DataSet(loaders.torchvision_idx("KMNIST"), (1, 28, 28), 10),
    "cifar10": DataSet(loaders.cifar("cifar10"), (3, 32, 32), 10),
    "cifar100": DataSet(loaders.cifar("cifar100"), (3, 32, 32), 100),
    "svhn": DataSet(loaders.svhn, (3, 32, 32), 10, flip=False),   # digits are not mirror symmetric
    "npz": DataSet(load_npz),
    # Image folders (train/<class>/*.JPEG, val/<class>/*.JPEG): decoded whole when they fit, else
    # streamed (data.stream; data.pipeline); image_folder's classes are its class folders.
    "imagenet": DataSet(loaders.image_folder, (3, 224, 224), 1000, folder=True),
    "image_folder": DataSet(loaders.image_folder, folder=True),
}

_user_loader = user_function(
    "data.dataset", "data set loader", "loader(data config) -> (x_train, y_train, x_test, y_test) arrays",
    returns=lambda r: isinstance(r, (tuple, list)) and len(r) == 4 and all(hasattr(a, "shape") for a in r))


def _adapt(name: str, obj: Any) -> DataSet:
    """A user's DataSet as it is; a user's loader function as a DataSet whose facts are read from its arrays."""
    return obj if isinstance(obj, DataSet) else DataSet(_user_loader(name, obj))


DATASETS: Registry[DataSet] = Registry("datasets", "data.dataset", _adapt)
for _name, _record in _BUILTIN.items():
    DATASETS.add(_name, _record)


def load_arrays(cfg: DataConfig, seed: int | None = None) -> Splits:
    """The training, validation (data.validation) and test arrays of a data config, on the CPU,
    subset and normalized; `seed` draws the training subset when data.subset_draw is `seed`."""
    record = DATASETS.get(cfg.dataset)
    x_train, y_train, x_test, y_test = record.loader(cfg)
    s = splits.split(x_train, y_train, x_test, y_test, subset=cfg.subset, validation=cfg.validation,
                     draw_seed=seed if cfg.subset_draw == "seed" else None,
                     validation_from_test=record.validation_from_test, dataset=cfg.dataset)
    s.x_train, s.x_test, *val = normalize.by_training_set(cfg.normalize, s.x_train, s.x_test,
                                                          *([s.x_val] if s.x_val is not None else []))
    if val:
        s.x_val = val[0]
    return s


def num_classes(y_train: np.ndarray, y_test: np.ndarray) -> int:
    """Classes 0..max label of either split."""
    return int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1


def folder_datasets() -> list[str]:
    """Names of the image-folder data sets (read by the streaming pipeline when they do not fit)."""
    return [name for name in DATASETS.names() if DATASETS.get(name).folder]


def shape_of(cfg: DataConfig) -> tuple[tuple[int, ...], int]:
    """(input_shape, num_classes) of a data set, for planning without training: from its record,
    from the class folders of an image folder (no image decoded), else from its arrays."""
    record = DATASETS.get(cfg.dataset)
    if record.input_shape is not None and record.num_classes is not None:
        return record.input_shape, record.num_classes
    if record.folder:
        return stream.folder_shape(cfg)
    s = load_arrays(cfg)
    return tuple(s.x_train.shape[1:]), num_classes(s.y_train, s.y_test)
