"""Small VGG-style CNN: three blocks conv3x3 -> BatchNorm -> ReLU -> 2x2 max-pool with k, 2k, 4k
channels (k = model.width), global average pooling and a linear classifier.

Layer names: `conv1`, `conv2`, `conv3` (the widenable units; `first` = conv1, `last` = conv3) and
`fc` (never widens; its input side follows conv3). Pooling stops once the feature map is 1x1, so
8x8 `digits` and 32x32 CIFAR both work.
"""

from __future__ import annotations

from torch import nn

from widecli.config.schema import ModelConfig
from widecli.models.layers import conv, image_shape, linear

LAYERS = ("conv1", "conv2", "conv3")


class CNN(nn.Module):
    def __init__(self, widths: dict[str, int], input_shape, num_classes: int, batchnorm: bool = True,
                 ranks=None, nonlinear: bool = False):
        super().__init__()
        n_in, size = input_shape[0], min(input_shape[1:])
        self.pools = []
        for i, name in enumerate(LAYERS, 1):
            n_out = widths[name]
            setattr(self, name, conv(name, n_in, n_out, 3, 1, ranks, nonlinear))
            setattr(self, f"bn{i}", nn.BatchNorm2d(n_out) if batchnorm else nn.Identity())
            self.pools.append(size >= 2)
            size = size // 2 if size >= 2 else size
            n_in = n_out
        self.relu, self.maxpool, self.pool = nn.ReLU(), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1)
        self.fc = linear("fc", n_in, num_classes, ranks, nonlinear)

    def forward(self, x):
        for i, (name, pool) in enumerate(zip(LAYERS, self.pools), 1):
            x = self.relu(getattr(self, f"bn{i}")(getattr(self, name)(x)))
            x = self.maxpool(x) if pool else x
        return self.fc(self.pool(x).flatten(1))


def base_widths(cfg: ModelConfig) -> dict[str, int]:
    return {name: cfg.width * 2 ** i for i, name in enumerate(LAYERS)}


def build(cfg: ModelConfig, widths: dict[str, int], input_shape, num_classes: int, ranks=None,
          rank_nonlinear: bool = False) -> CNN:
    return CNN(widths, image_shape("cnn", input_shape), num_classes, cfg.batchnorm, ranks,
               rank_nonlinear)
