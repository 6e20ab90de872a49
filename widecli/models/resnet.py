"""CIFAR ResNet-18 (kuangliu/pytorch-cifar, as the official ResNet18/ code): 3x3 stem, no max-pool,
four stages of two BasicBlocks with k, 2k, 4k, 8k channels, where the "width" k is the channels of
`conv1` (PAPER.md, Experiments).

Layer names: `conv1` (stem), `layer{s}.{b}.conv1`, `layer{s}.{b}.conv2`, `layer{s}.0.shortcut.0`
(1x1 projection where the shape changes), `fc`. The widenable units are the stages layer1..layer4;
the stem's output is layer1's input and the identity shortcuts of layer1 add it to layer1's
output, so the stem is tied to layer1's width. Projection shortcuts follow their stage.
"""

from __future__ import annotations

from torch import nn

from widecli.config.schema import ModelConfig
from widecli.models.layers import conv, image_shape, linear

STAGES = ("layer1", "layer2", "layer3", "layer4")


class BasicBlock(nn.Module):
    def __init__(self, name: str, n_in: int, n_out: int, stride: int, ranks, nonlinear: bool):
        super().__init__()
        self.conv1 = conv(f"{name}.conv1", n_in, n_out, 3, stride, ranks, nonlinear)
        self.bn1 = nn.BatchNorm2d(n_out)
        self.conv2 = conv(f"{name}.conv2", n_out, n_out, 3, 1, ranks, nonlinear)
        self.bn2 = nn.BatchNorm2d(n_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or n_in != n_out:
            self.shortcut = nn.Sequential(conv(f"{name}.shortcut.0", n_in, n_out, 1, stride, ranks,
                                               nonlinear), nn.BatchNorm2d(n_out))
        self.relu = nn.ReLU()

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, widths: dict[str, int], in_channels: int, num_classes: int, ranks=None,
                 nonlinear: bool = False, stem_kernel: int = 3, stem_stride: int = 1):
        super().__init__()
        stem = widths["layer1"]
        self.conv1 = conv("conv1", in_channels, stem, stem_kernel, stem_stride, ranks, nonlinear)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU()
        n_in = stem
        for i, stage in enumerate(STAGES):
            n_out = widths[stage]
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(f"{stage}.0", n_in, n_out, stride, ranks, nonlinear),
                      BasicBlock(f"{stage}.1", n_out, n_out, 1, ranks, nonlinear)]
            setattr(self, stage, nn.Sequential(*blocks))
            n_in = n_out
        self.pool = nn.AdaptiveAvgPool2d(1)  # = kuangliu's avg_pool2d(4) on 32x32 inputs
        self.fc = linear("fc", n_in, num_classes, ranks, nonlinear)

    def stem(self, x):
        return self.relu(self.bn1(self.conv1(x)))

    def forward(self, x):
        out = self.stem(x)
        for stage in STAGES:
            out = getattr(self, stage)(out)
        return self.fc(self.pool(out).flatten(1))


def base_widths(cfg: ModelConfig) -> dict[str, int]:
    return {stage: cfg.width * 2 ** i for i, stage in enumerate(STAGES)}


def build(cfg: ModelConfig, widths: dict[str, int], input_shape, num_classes: int, ranks=None,
          rank_nonlinear: bool = False) -> ResNet18:
    channels, _, _ = image_shape("resnet18", input_shape)
    return ResNet18(widths, channels, num_classes, ranks, rank_nonlinear)
