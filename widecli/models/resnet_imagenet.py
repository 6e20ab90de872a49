"""ImageNet ResNet-18 (He et al. 2016; torchvision's resnet18): 7x7 stride-2 stem and a 3x3 stride-2
max-pool before four stages of two BasicBlocks with k, 2k, 4k, 8k channels (k = 64 is the standard
model). The blocks, layer names, widening units and rules are the CIFAR ResNet-18's (resnet.py):
only the stem differs, so every method and rule applies unchanged.
"""

from __future__ import annotations

from torch import nn

from widecli.config.schema import ModelConfig
from widecli.models import resnet
from widecli.models.layers import image_shape


class ResNet18ImageNet(resnet.ResNet18):
    def __init__(self, widths: dict[str, int], in_channels: int, num_classes: int, ranks=None,
                 nonlinear: bool = False):
        # The ImageNet stem: 7x7 stride 2 (padding 3), then max-pool 3x3 stride 2: 224 -> 56.
        super().__init__(widths, in_channels, num_classes, ranks, nonlinear, stem_kernel=7, stem_stride=2)
        self.maxpool = nn.MaxPool2d(3, 2, 1)

    def stem(self, x):
        return self.maxpool(super().stem(x))


base_widths = resnet.base_widths


def build(cfg: ModelConfig, widths: dict[str, int], input_shape, num_classes: int, ranks=None,
          rank_nonlinear: bool = False) -> ResNet18ImageNet:
    channels, _, _ = image_shape("resnet18_imagenet", input_shape)
    return ResNet18ImageNet(widths, channels, num_classes, ranks, rank_nonlinear)
