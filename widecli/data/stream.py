"""Streaming input pipeline for image folders that do not fit on the device (ImageNet).

torchvision's ImageFolder (`train/<class>/*.JPEG`, `val/<class>/*.JPEG`) read by a DataLoader with
worker processes and pinned memory. Workers decode and augment (random resized crop 224 and flip;
val: resize 256, center crop 224) and hand over uint8 tensors: a quarter of the bytes of float32
through pinned memory; scaling and normalization run on the device on whole batches.

Determinism: each epoch's order comes from a generator seeded by (seed, epoch) and the workers'
augmentation seeds from it, so an epoch draws the same images and crops whether or not the run
was resumed from a checkpoint. (The crops depend on `data.workers`: each worker has its own seed.)
Under torch.distributed each rank takes its slice of every global batch (the `shard` it is handed).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from widecli.config.schema import DataConfig
from widecli.errors import DataError
from widecli.rng import generator

CROP, RESIZE = 224, 256
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet statistics (torchvision)
STREAM_EVAL_BATCH = 256  # images per evaluation batch (decoded by the workers)
CPU_RESIDENT_LIMIT = 4 * 2**30  # pipeline auto on CPU: stream when decoded float32 data exceed this


@dataclass
class StreamDataset:
    """A folder data set read batch by batch (no image is decoded until a batch is asked for)."""

    name: str
    train: object                     # torchvision ImageFolder with the training transform
    test: object                      # ImageFolder with the eval transform
    train_eval: object                # the training images with the eval transform (final metrics)
    train_index: np.ndarray           # the images of the training set used (data.subset)
    num_classes: int
    workers: int
    normalize: bool
    input_shape: tuple[int, ...] = (3, CROP, CROP)

    @property
    def y_train(self) -> torch.Tensor:
        return torch.as_tensor(self.train.targets)[torch.from_numpy(self.train_index)]

    @property
    def y_test(self) -> torch.Tensor:
        return torch.as_tensor(self.test.targets)


def folder(cfg: DataConfig) -> Path:
    """The folder holding train/ and val/: data.root itself, or data.root/<dataset>."""
    root = Path(cfg.root).expanduser()
    for candidate in (root, root / cfg.dataset):
        if (candidate / "train").is_dir():
            return candidate
    raise DataError(f"data.root: no train/ folder in {root} or {root / cfg.dataset}; {cfg.dataset} "
                    f"needs the ImageFolder layout train/<class>/*.JPEG and val/<class>/*.JPEG")


def train_transform():
    from torchvision import transforms as T  # lazy: torchvision takes ~1 s to import (keeps --help fast)

    return T.Compose([T.RandomResizedCrop(CROP), T.RandomHorizontalFlip(), T.PILToTensor()])


def eval_transform():
    from torchvision import transforms as T  # lazy, as in train_transform

    return T.Compose([T.Resize(RESIZE), T.CenterCrop(CROP), T.PILToTensor()])


def image_folder(path: Path, transform, classes: list[str] | None = None):
    """An ImageFolder, with one-line errors for a missing or empty folder or other class names."""
    from torchvision.datasets import ImageFolder  # lazy, as in train_transform

    if not path.is_dir():
        raise DataError(f"data.root: {path} is not a folder (expected {path}/<class>/*.JPEG)")
    try:
        ds = ImageFolder(str(path), transform=transform)
    except (FileNotFoundError, OSError) as e:
        raise DataError(f"data.root: {path}: {str(e).splitlines()[0]}") from None
    if classes is not None and ds.classes != classes:
        extra = sorted(set(ds.classes) ^ set(classes))
        raise DataError(f"data.root: {path} has other class folders than train/ (e.g. {extra[0]!r}); "
                        f"val/ must use train/'s class names")
    return ds


def class_names(cfg: DataConfig) -> list[str]:
    root = folder(cfg) / "train"
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not names:
        raise DataError(f"data.root: {root} has no class folders (expected train/<class>/*.JPEG)")
    return names


def folder_shape(cfg: DataConfig) -> tuple[tuple[int, ...], int]:
    """(input_shape, num_classes) from the class folders alone, without reading an image."""
    return (3, CROP, CROP), len(class_names(cfg))


def subset_index(n: int, subset: int | None) -> np.ndarray:
    # The same fixed subset rule as data.registry.load_arrays: part of the data, not of the run.
    return np.arange(n) if subset is None else np.random.default_rng(0).permutation(n)[:subset]


def streamed(cfg: DataConfig, device: torch.device | str, folders: Sequence[str]) -> bool:
    """Whether a data config is read by the streaming pipeline (data.pipeline; auto: by decoded size);
    `folders`: the image-folder data sets (data.registry.folder_datasets), the only ones it reads."""
    if cfg.pipeline == "device" or (cfg.pipeline == "auto" and cfg.dataset not in folders):
        return False
    if cfg.dataset not in folders:
        raise DataError(f"data.pipeline: stream reads image folders ({', '.join(folders)}); "
                        f"{cfg.dataset} fits on the device: use pipeline auto or device")
    if cfg.pipeline == "stream":
        return True
    fits = resident_limit(torch.device(device)) // (3 * CROP * CROP * 4)  # images that fit
    if cfg.subset is not None and cfg.subset <= fits:
        return False
    # Count only until the limit is passed: listing all of ImageNet's 1.28M files takes long.
    files = (p for p in (folder(cfg) / "train").rglob("*") if p.is_file())
    return sum(1 for _ in itertools.islice(files, fits + 1)) > fits


def resident_limit(device: torch.device) -> int:
    """Bytes of decoded data the device path may hold: a quarter of a GPU, or 4 GiB of host memory."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory // 4
    return CPU_RESIDENT_LIMIT


def load_stream(cfg: DataConfig) -> StreamDataset:
    """The streaming data set of a folder config (no image is decoded here)."""
    if cfg.validation or cfg.subset_draw != "fixed":
        key = "data.validation" if cfg.validation else "data.subset_draw"
        raise DataError(f"{key}: not supported for a streamed image folder (data.pipeline stream); "
                        f"put the held-out images in a folder of their own, or use pipeline device")
    root, classes = folder(cfg), class_names(cfg)
    train = image_folder(root / "train", train_transform())
    test = image_folder(root / "val", eval_transform(), train.classes)
    if not len(train.samples):
        raise DataError(f"data.root: {root / 'train'} holds no images")
    train_eval = image_folder(root / "train", eval_transform())
    return StreamDataset(cfg.dataset, train, test, train_eval, subset_index(len(train), cfg.subset),
                         len(classes), cfg.workers, cfg.normalize != "none")


def arrays(cfg: DataConfig):
    """The device path for a folder that fits: every image decoded once with the eval transform."""
    ds = load_stream(cfg)

    def decode(folder_ds, index):
        x = np.stack([folder_ds[int(i)][0].numpy() for i in index]) if len(index) else \
            np.zeros((0, 3, CROP, CROP), np.uint8)
        y = np.asarray(folder_ds.targets, dtype=np.int64)[index]
        return x.astype(np.float32) / 255.0, y
    # Decode all training images; load_arrays applies data.subset on the arrays itself.
    return (*decode(ds.train_eval, np.arange(len(ds.train_eval))), *decode(ds.test, np.arange(len(ds.test))))


def loader(ds, batches: list[list[int]], workers: int, device: torch.device, g: torch.Generator | None):
    """A DataLoader over explicit batches of indices: workers decode, pinned memory for CUDA."""
    return torch.utils.data.DataLoader(ds, batch_sampler=batches, num_workers=workers,
                                       pin_memory=device.type == "cuda", generator=g,
                                       prefetch_factor=4 if workers else None)


@functools.lru_cache(maxsize=None)
def _mean_std(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """MEAN and STD as [1, 3, 1, 1] tensors on the device, made once (a copy from a Python list
    to a GPU blocks the host: not once per batch)."""
    return (torch.tensor(MEAN, device=device).view(1, 3, 1, 1),
            torch.tensor(STD, device=device).view(1, 3, 1, 1))


def to_device(x: torch.Tensor, device: torch.device, normalize: bool) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float on the device, scaled to [0, 1] and normalized per channel."""
    x = x.to(device, non_blocking=True).float().div_(255)
    if normalize:
        mean, std = _mean_std(device)
        x = x.sub_(mean).div_(std)
    return x


class StreamBatches:
    """The batch source of a streamed folder (one run, K = 1): DataLoader workers decode and augment.

    shard: this rank's columns of a global batch of indices (engine.dist.shard; identity alone)."""

    generators: list = []  # the order comes from a generator per (seed, epoch): nothing to checkpoint
    has_validation = False  # data.validation is refused for streamed folders (load_stream)

    def __init__(self, data: StreamDataset, seed: int, batch_size: int, device: torch.device,
                 shard: Callable[[torch.Tensor], torch.Tensor]):
        self.data, self.seed, self.batch_size, self.device, self.shard = data, seed, batch_size, device, shard
        self.input_shape, self.num_classes = data.input_shape, data.num_classes
        self.train_size = len(data.train_index)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of this rank's training batches: (x [1, b, 3, 224, 224], y [1, b])."""
        data, device = self.data, self.device
        g = generator(self.seed, "data", "epoch", str(epoch))
        order = torch.from_numpy(data.train_index)[torch.randperm(len(data.train_index), generator=g)]
        full = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        mine = [self.shard(b.view(1, -1))[0].tolist() for b in full]
        seed = int(torch.randint(2**62, (1,), generator=g))
        it = iter(loader(data.train, mine, data.workers, device, g))
        for j in range(len(mine)):
            # Without workers the transforms draw from the global generator: seed it per batch, and
            # leave it as it was (workers are seeded by the DataLoader from g).
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + j)
                x, y = next(it)
            yield to_device(x, device, data.normalize)[None], y.to(device, non_blocking=True)[None]

    def eval_batches(self, split: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's share of the val (or train) images with the eval transform: (x [B, ...], y [B])."""
        data = self.data
        ds = data.test if split == "test" else data.train_eval
        index = torch.arange(len(ds)) if split == "test" else torch.from_numpy(data.train_index)
        index = self.shard(index.view(1, -1))[0]
        chunks = [c.tolist() for c in index.split(STREAM_EVAL_BATCH)]
        for x, y in loader(ds, chunks, data.workers, self.device, None):
            yield to_device(x, self.device, data.normalize), y.to(self.device, non_blocking=True)

    def eval_size(self, split: str) -> int:
        return len(self.data.test) if split == "test" else len(self.data.train_index)
