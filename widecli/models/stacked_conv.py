"""K convnets of the same shape (seeds of one run) as one model, through grouped convolutions.

The K runs' activations sit side by side in the channel dimension, [B, K*C, H, W]: a conv becomes
one grouped conv (groups = K, weight [K, out, in, kh, kw] viewed as [K*out, in, kh, kw]), BatchNorm
one BatchNorm over K*C channels (per run and channel, as alone: its statistics stay per run), ReLU,
pooling and residual additions act per channel anyway, and the classifier reads [B, K*F] as K
runs' features [K, B, F] (a StackedLinear). The model takes and returns the loop's stacked layout
([K, B, C, H, W] -> [K, B, classes]); layer names stay those of the solo model, so masks, plans,
init streams and checkpoints are unchanged, and run j's state sliced out is the solo model's.

Each run draws its init from its own streams (StackedConv2d.reset_parameters), so a stacked run
equals the same run trained alone within float tolerance (tests/engine/test_stacked_conv.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from widecli.models.mlp import StackedLinear


class StackedConv2d(nn.Module):
    """K convs: weight [K, out, in, kh, kw] (bias [K, out]), one grouped conv on [B, K*in, H, W]."""

    stacked = True

    def __init__(self, conv: nn.Conv2d, stack: int):
        super().__init__()
        if conv.groups != 1 or conv.dilation != (1, 1) or not isinstance(conv.padding, tuple):
            raise ValueError("only plain convs (groups 1, dilation 1, numeric padding) can be stacked")
        self.stack, self.stride, self.padding = stack, conv.stride, conv.padding
        self.in_features = conv.in_channels  # weight_modules' mark of a stacked weight layer
        self.out_channels = conv.out_channels
        self.weight = nn.Parameter(torch.empty(stack, *conv.weight.shape))
        self.bias = nn.Parameter(torch.empty(stack, conv.out_channels)) if conv.bias is not None else None

    def reset_parameters(self, generators: list[torch.Generator]) -> None:
        """Slice k exactly as models.init.default_init draws a solo conv from generators[k]."""
        bound = 1.0 / math.sqrt(math.prod(self.weight.shape[2:]))
        with torch.no_grad():
            for k, g in enumerate(generators):
                self.weight[k].copy_(torch.empty(self.weight.shape[1:]).uniform_(-bound, bound, generator=g))
                if self.bias is not None:
                    self.bias[k].copy_(torch.empty(self.bias.shape[1:]).uniform_(-bound, bound, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.reshape(-1, *self.weight.shape[2:])
        b = self.bias.reshape(-1) if self.bias is not None else None
        return F.conv2d(x, w, b, self.stride, self.padding, 1, self.stack)


class StackedBatchNorm2d(nn.Module):
    """K BatchNorm2d(C): parameters and running statistics [K, C], applied as one over K*C channels."""

    stacked = True

    def __init__(self, bn: nn.BatchNorm2d, stack: int):
        super().__init__()
        c = bn.num_features
        self.stack, self.eps, self.momentum = stack, bn.eps, bn.momentum
        self.weight = nn.Parameter(torch.ones(stack, c))
        self.bias = nn.Parameter(torch.zeros(stack, c))
        self.register_buffer("running_mean", torch.zeros(stack, c))
        self.register_buffer("running_var", torch.ones(stack, c))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.num_batches_tracked.add_(1)
        # Views of the [K, C] buffers: batch_norm updates the running statistics in place.
        return F.batch_norm(x, self.running_mean.view(-1), self.running_var.view(-1), self.weight.view(-1),
                            self.bias.view(-1), self.training, self.momentum, self.eps)


class GroupedFeaturesLinear(StackedLinear):
    """The classifier of K stacked convnets: features [B, K*F] -> logits [K, B, classes]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        return super().forward(x.reshape(b, self.stack, -1).transpose(0, 1))


def _to_grouped(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: the loop's [K, B, C, H, W] as the channel-stacked [B, K*C, H, W]."""
    x = args[0]
    k, b = x.shape[:2]
    return (x.transpose(0, 1).reshape(b, k * x.shape[2], *x.shape[3:]),)


def stack_convnet(model: nn.Module, stack: int, classifier: str = "fc") -> nn.Module:
    """Turn a solo convnet (plain convs, BatchNorm2d, ReLU, pooling, adds, one final Linear named
    `classifier` fed the flattened pooled features) into K stacked copies, in place; returns it."""
    for name, m in list(model.named_modules()):
        parent, _, attr = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        if isinstance(m, nn.Conv2d):
            setattr(owner, attr, StackedConv2d(m, stack).train(m.training))
        elif isinstance(m, nn.BatchNorm2d):
            setattr(owner, attr, StackedBatchNorm2d(m, stack).train(m.training))
        elif isinstance(m, nn.Linear):
            if name != classifier:
                raise ValueError(f"{name}: only the classifier {classifier!r} may be a Linear layer")
            fc = GroupedFeaturesLinear(m.in_features, m.out_features, stack, bias=m.bias is not None)
            setattr(owner, attr, fc.train(m.training))
        elif list(m.parameters(recurse=False)):
            raise ValueError(f"{name}: {type(m).__name__} cannot be stacked")
    model.register_forward_pre_hook(_to_grouped)
    return model
