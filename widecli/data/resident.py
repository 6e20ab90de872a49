"""Resident data: the whole data set as tensors on the training device, and its batch source.

Each training step gathers X[perm[i:i+B]] with one index_select (no per-sample DataLoader on the
hot path, as airbench); augmentation runs on the device on whole batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from widecli.config.schema import DataConfig
from widecli.data import normalize, stream
from widecli.data.registry import DATASETS, folder_datasets, load_arrays, num_classes
from widecli.rng import generator

RESIDENT_EVAL_BATCH = 4096  # examples per evaluation batch: slices of the resident tensors


@dataclass
class DeviceDataset:
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    per_batch: str | None = None          # data.normalize pixelwise_batch_*: each batch by its own statistics
    x_val: torch.Tensor | None = None     # data.validation
    y_val: torch.Tensor | None = None
    flip: bool = True                     # random horizontal flips keep the label (data.registry.DataSet)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of "train", "val" or "test"."""
        return {"train": (self.x_train, self.y_train), "val": (self.x_val, self.y_val),
                "test": (self.x_test, self.y_test)}[name]


def load_dataset(cfg: DataConfig, device: str | torch.device = "cpu", seed: int | None = None
                 ) -> DeviceDataset | stream.StreamDataset:
    """Load a data set and put it on the device, whole (or a StreamDataset: data.pipeline); `seed`
    (the run's) draws the training subset where data.subset_draw is `seed`, else is ignored."""
    if stream.streamed(cfg, device, folder_datasets()):
        return stream.load_stream(cfg)
    record = DATASETS.get(cfg.dataset)
    s = load_arrays(cfg, seed)
    classes = max(num_classes(s.y_train, s.y_test), record.num_classes or 0)

    def put(a):
        return None if a is None else torch.from_numpy(np.ascontiguousarray(a)).to(device)
    return DeviceDataset(cfg.dataset, put(s.x_train), put(s.y_train), put(s.x_test), put(s.y_test), classes,
                         cfg.normalize if cfg.normalize in normalize.PER_BATCH else None,
                         put(s.x_val), put(s.y_val), record.flip)


def augment(x: torch.Tensor, g: torch.Generator, flip: bool = True, pad: int = 4) -> torch.Tensor:
    """Random crop (zero padding `pad`) and horizontal flip of a whole image batch [..., C, H, W],
    on the batch's device (airbench style: one gather, no per-sample Python)."""
    lead, (c, h, w) = x.shape[:-3], x.shape[-3:]
    x = x.reshape(-1, c, h, w)
    n = x.shape[0]
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n, 1, 1), generator=g, device="cpu").to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n, 1, 1), generator=g, device="cpu").to(x.device)
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy).expand(n, h, w)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx).expand(n, h, w)
    if flip:
        mirror = torch.rand(n, generator=g, device="cpu").to(x.device) < 0.5
        cols = torch.where(mirror.view(n, 1, 1), (w - 1 + 2 * dx) - cols, cols)
    batch = torch.arange(n, device=x.device).view(n, 1, 1).expand(n, h, w)
    out = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    return out.reshape(*lead, c, h, w)


class ResidentBatches:
    """The batch source of resident data: K runs' batches ([K, b, ...], [K, b]) per step, each run
    with its own data order (generator (seed, "data")); evaluation batches of the test or train split.

    shard: this rank's columns of a global batch of indices (engine.dist.shard; identity alone)."""

    def __init__(self, data: DeviceDataset, seeds: list[int], batch_size: int, augment_: bool,
                 shard: Callable[[torch.Tensor], torch.Tensor]):
        self.data, self.batch_size, self.shard = data, batch_size, shard
        self.input_shape, self.num_classes, self.train_size = data.input_shape, data.num_classes, len(data.y_train)
        self.order = [generator(s, "data") for s in seeds]
        self.augment_gens = [generator(s, "augment") for s in seeds]  # each run augments as it would alone
        self.generators = [*self.order, *self.augment_gens]  # what a checkpoint saves and restores
        self.augment = augment_ and data.x_train.dim() >= 4
        self.flip = data.flip

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        d, k, n, bs = self.data, len(self.order), self.train_size, self.batch_size
        perms = torch.stack([torch.randperm(n, generator=g) for g in self.order]).to(d.x_train.device)
        labels = d.y_train[perms]                          # [K, n]: one gather per epoch
        for i in range(0, n, bs):
            idx = self.shard(perms[:, i:i + bs])           # this rank's slice of the global batch
            # index_select on the flat indices: ~3x cheaper than advanced indexing X[idx] on CPU.
            x = d.x_train.index_select(0, idx.reshape(-1)).view(k, idx.shape[1], *self.input_shape)
            if self.augment:
                x = torch.cat([augment(x[j:j + 1], g, flip=self.flip) for j, g in enumerate(self.augment_gens)])
            if d.per_batch:
                x = normalize.per_batch(d.per_batch, x, dim=1)  # each run's batch by its own statistics
            yield x, self.shard(labels[:, i:i + bs])

    def eval_batches(self, split: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's share of a split ("train", "val" or "test"), in large batches (x [B, ...], y [B]).

        Per-batch normalization: the test and validation splits in batches of 1,000 (the official
        test_batch_size), the training split in training-sized batches (as training saw it)."""
        x, y = self.data.split(split)
        index = self.shard(torch.arange(len(y), device=y.device).view(1, -1))[0]
        per_batch = self.data.per_batch
        size = (self.batch_size if split == "train" else normalize.EVAL_BATCH_PER_BATCH) if per_batch \
            else RESIDENT_EVAL_BATCH
        for chunk in index.split(size):
            lo, hi = int(chunk[0]), int(chunk[-1]) + 1      # contiguous: slices, no gather
            yield (normalize.per_batch(per_batch, x[lo:hi], dim=0) if per_batch else x[lo:hi]), y[lo:hi]

    def eval_size(self, split: str) -> int:
        return len(self.data.split(split)[1])

    @property
    def has_validation(self) -> bool:
        return self.data.y_val is not None
