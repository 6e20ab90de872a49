"""Files of the torchvision data sets on disk: where they go, fetching the missing ones, and the
diagnostics for files that are missing, truncated or corrupt (one line naming the file and what
the user can still do: download, or copy the files in on a machine without internet access)."""

from __future__ import annotations

import math
import struct
from pathlib import Path

from widecli.config.schema import DataConfig
from widecli.errors import DataError

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")
# Files of the torchvision layouts: folder, train files, test files (pickled CIFAR batches).
CIFAR = {"cifar10": ("CIFAR10", "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)],
                     ["test_batch"], "labels"),
         "cifar100": ("CIFAR100", "cifar-100-python", ["train"], ["test"], "fine_labels")}
SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


def root_of(cfg: DataConfig) -> Path:
    """data.root, with ~ expanded."""
    return Path(cfg.root).expanduser()


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


def bad_idx(raw: Path) -> Path | None:
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


def fetch(cfg: DataConfig, cls_name: str, missing: list[Path], splits: list[dict]) -> None:
    """Download through torchvision (which verifies the archive's md5) when files are missing."""
    root = root_of(cfg)
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
