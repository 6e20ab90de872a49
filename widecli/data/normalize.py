"""Input normalization (`data.normalize`): by training-set statistics, once at load, or each batch by
its own statistics, as the official MLP code's `--normalize_pixelwise` does.

Per-batch statistics come in two variants that differ in one place, the global step before them:
- `pixelwise_batch_official`: what the official code (google-research/wide-sparse-nets,
  MLP/utils.py) *computes*. Its loader applies `ToTensor()` and `Normalize((0.1307,), (0.3081,))`
  before `pixelwise_normalization`, so a pixel that is constant over a batch (the background) holds
  -0.42421296, not 0. numpy's float32 mean of n copies of that value is inexact, the std comes out
  ~1e-6 instead of 0, and `(x - mean) / std` is +-1 for every image: -1 in batches of 256, +1 in
  batches of 1,000 and 952. Training sees -1 on the background, testing +1 (PAPER.md).
- `pixelwise_batch_zero`: what the code *meant*: pixels as they are ([0, 1]) and a pixel constant
  over the batch becomes 0.
Both compute the statistics on the host with numpy in float32, exactly as the official function
does (`np.mean` / `np.std` over the batch axis, which numpy accumulates row by row), so the inputs
are the same bits on CPU, on CUDA and in stacked runs, whatever torch's reduction order.
"""

from __future__ import annotations

import numpy as np
import torch

# The official MLP loader's global step: transforms.Normalize((0.1307,), (0.3081,)) (MNIST's mean/std).
MNIST_MEAN, MNIST_STD = np.float32(0.1307), np.float32(0.3081)
PER_BATCH = ("pixelwise_batch_official", "pixelwise_batch_zero")
# The official code evaluates the test set in batches of 1,000 (its test_batch_size), each
# normalized by itself; widecli does the same for the test and validation splits.
EVAL_BATCH_PER_BATCH = 1000


def by_training_set(kind: str, x_train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """`x_train` and every other split normalized once at load time (float32 arrays).

    standard: per channel (images [N, C, ...]) or one scalar (flat features [N, D]) mean/std of the
    training set; pixelwise: per-pixel mean/std of the training set; pixelwise_batch_official:
    the official loader's global MNIST Normalize (each batch is then normalized by `per_batch`);
    none and pixelwise_batch_zero: unchanged."""
    arrays = [x_train, *others]
    if kind in ("none", "pixelwise_batch_zero"):
        return arrays
    if kind == "pixelwise_batch_official":
        # The same float32 operations as torchvision's ToTensor (u8 / 255) then Normalize
        # (sub_(mean).div_(std)): the loaders already hold fl32(u8 / 255).
        return [((x - MNIST_MEAN) / MNIST_STD).astype(np.float32) for x in arrays]
    if kind == "pixelwise":
        mean, std = x_train.mean(0, keepdims=True), x_train.std(0, keepdims=True)
    else:
        axes = (0, *range(2, x_train.ndim)) if x_train.ndim > 2 else (0, 1)
        mean, std = x_train.mean(axes, keepdims=True), x_train.std(axes, keepdims=True)
    std = np.where(std > 1e-8, std, 1.0)
    return [((x - mean) / std).astype(np.float32) for x in arrays]


def per_batch(kind: str, x: torch.Tensor, dim: int) -> torch.Tensor:
    """Each feature of a batch by the batch's own mean and population std over `dim` (the official
    `pixelwise_normalization`); `x` may hold K stacked runs' batches ([K, b, ...], dim 1).

    Computed with numpy on the host in float32, as the official code does: bit-identical on every
    device and for every K. pixelwise_batch_zero also sets features constant over the batch to 0."""
    if dim not in (0, 1):
        raise ValueError(f"per_batch: dim must be 0 ([b, ...]) or 1 ([K, b, ...]), got {dim}")
    host = x.detach().to("cpu", torch.float32)
    zero = kind == "pixelwise_batch_zero"
    if dim == 0:
        out = _numpy_pixelwise(host.reshape(host.shape[0], -1).contiguous().numpy(), zero)
    else:  # each run's batch on its own, as [b, features] (the official layout)
        runs = host.reshape(host.shape[0], host.shape[1], -1)
        out = np.stack([_numpy_pixelwise(runs[j].contiguous().numpy(), zero) for j in range(len(runs))])
    return torch.from_numpy(out).view(x.shape).to(x.device)


def _numpy_pixelwise(images: np.ndarray, constants_to_zero: bool) -> np.ndarray:
    """MLP/utils.py pixelwise_normalization on float32 images [n, features].

    The official function writes into a float64 `out` and then converts to float32 (torch.Tensor);
    dividing in float32 directly gives the same bits (a quotient of two float32 numbers rounded to
    float64 and then to float32 is the correctly rounded float32 quotient)."""
    mean = np.mean(images, axis=0)
    std = np.std(images, axis=0)
    a = images - mean
    keep = std != 0
    if constants_to_zero:
        keep &= images.max(axis=0) != images.min(axis=0)
    return np.divide(a, std, out=np.zeros(a.shape, dtype=np.float32), where=keep)
