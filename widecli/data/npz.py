"""`data.dataset: npz`: a user's file of arrays x_train, y_train, x_test, y_test, checked before
use (one line naming the file and what is wrong: not an npz, a missing array, labels that are not
0..C-1 integers, mismatched lengths, NaN or infinite features, no training rows)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from widecli.config.schema import DataConfig
from widecli.errors import DataError

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_npz(cfg: DataConfig) -> Arrays:
    """The four arrays of data.path (any feature shape), as float32 features and int64 labels."""
    if not cfg.path:
        raise DataError("data.path: dataset npz needs data.path: FILE.npz with x_train, y_train, "
                        "x_test, y_test")
    path = Path(cfg.path).expanduser()
    if not path.is_file():
        raise DataError(f"data.path: {path} is not a file")
    if not zipfile.is_zipfile(path):  # np.load would call it "pickled data", which misleads
        raise DataError(f"{path}: not a readable npz file (not the zip archive np.savez writes); "
                        f"data.path needs arrays x_train, y_train, x_test, y_test")
    try:
        z = np.load(path, allow_pickle=False)
        missing = [k for k in KEYS if k not in z.files]
        if missing:
            raise DataError(f"{path}: missing array {missing[0]!r}; an npz data set needs x_train, "
                            f"y_train, x_test, y_test")
        x_train, y_train, x_test, y_test = (z[k] for k in KEYS)
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a readable npz file ({e})") from None
    check(path, x_train, y_train, x_test, y_test)
    return (x_train.astype(np.float32), y_train.astype(np.int64), x_test.astype(np.float32),
            y_test.astype(np.int64))


def check(path: Path, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> None:
    """DataError naming `path` where the arrays cannot be a classification data set."""
    for name, y in (("y_train", y_train), ("y_test", y_test)):
        if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
            raise DataError(f"{path}: {name} must be a 1-D integer array of class labels, got "
                            f"{y.dtype} {y.shape}")
        if len(y) and y.min() < 0:
            raise DataError(f"{path}: {name} has a negative label {y.min()}; labels must be 0..C-1")
    for name, x, y in (("x_train", x_train, y_train), ("x_test", x_test, y_test)):
        if len(x) != len(y):
            raise DataError(f"{path}: {name} has {len(x)} rows but its labels have {len(y)}")
        if not np.isfinite(x.astype(np.float64)).all():
            raise DataError(f"{path}: {name} contains NaN or infinite values")
    if not len(y_train):
        raise DataError(f"{path}: x_train and y_train have no rows; an npz data set needs training examples")
    if y_test.max(initial=0) > y_train.max():
        raise DataError(f"{path}: y_test has label {y_test.max()} that never occurs in y_train "
                        f"(classes are 0..{y_train.max()})")
