"""Training subset and validation split (`data.subset`, `data.subset_draw`, `data.validation`).

Pure functions on arrays. Without a validation split and with a fixed subset the arrays are what
widecli always used: the first `subset` images of numpy's default_rng(0) permutation of the
training set (part of the data, the same for every run).
- `data.subset_draw: seed` draws the subset with the run's seed instead (generator (seed,
  "subset")), as the official MLP code draws its 2,048 images with its seed.
- `data.validation: N` holds N images out that training never sees, for choosing settings (the
  best widening factor, the learning rate) without looking at the test set. They come from the
  training side: the last N of the same fixed permutation (a fixed subset is its first images, so
  the two never overlap), or, for data sets whose training set is itself a fixed selection
  (mnist5k: the official 2,048), the first N of the shuffled non-training images, which leaves
  the training set as it is and the rest as the test set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from widecli.errors import DataError
from widecli.rng import generator


@dataclass
class Splits:
    """The arrays of one data config: training, test, and the validation split (None without one)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None


def split(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, *,
          subset: int | None, validation: int | None, draw_seed: int | None = None,
          validation_from_test: bool = False, dataset: str = "the data set") -> Splits:
    """Apply data.subset (fixed, or drawn with `draw_seed`) and data.validation (see the module)."""
    n, n_val = len(y_train), validation or 0
    x_val = y_val = None
    if n_val and validation_from_test:
        if n_val >= len(y_test):
            raise DataError(f"data.validation: got {n_val}; {dataset} has {len(y_test):,} non-training images "
                            f"to hold out from (validation comes from them, and the rest is the test set)")
        x_val, y_val, x_test, y_test = x_test[:n_val], y_test[:n_val], x_test[n_val:], y_test[n_val:]
        n_val = 0
    if subset is None and not n_val and draw_seed is None:
        return Splits(x_train, y_train, x_test, y_test, x_val, y_val)
    perm = np.random.default_rng(0).permutation(n)
    pool = perm[:n - n_val]
    if n_val:
        if subset is not None and subset > len(pool):
            raise DataError(f"data.validation: got {n_val}; with data.subset {subset} {dataset} needs "
                            f"{subset + n_val:,} training images and has {n:,}")
        if not len(pool):
            raise DataError(f"data.validation: got {n_val}; {dataset} has {n:,} training images and "
                            f"training needs at least one")
        x_val, y_val = x_train[perm[n - n_val:]], y_train[perm[n - n_val:]]
    if subset is None:
        index = np.sort(pool)                                  # every other image, in its order
    elif draw_seed is None:
        index = pool[:subset]
    else:
        index = pool[torch.randperm(len(pool), generator=generator(draw_seed, "subset")).numpy()[:subset]]
    return Splits(x_train[index], y_train[index], x_test, y_test, x_val, y_val)
