"""Layers shared by the convnets: bottleneck (factorized) replacements of Conv2d and Linear."""

from __future__ import annotations

from torch import nn

from widecli.errors import RecipeError


class Factorized(nn.Module):
    """A layer W replaced by two factors, out = U(act(V x)) with inner width `rank`.

    Conv: V is the kxk conv in -> rank (it carries the stride), U a 1x1 conv rank -> out.
    Linear: V is in -> rank, U is rank -> out. Only U has the bias; act is ReLU for the
    non-linear bottleneck and the identity for the linear one (DESIGN.md, Bottlenecks).
    """

    def __init__(self, V: nn.Module, U: nn.Module, nonlinear: bool):
        super().__init__()
        self.V, self.U = V, U
        self.act = nn.ReLU() if nonlinear else nn.Identity()

    def forward(self, x):
        return self.U(self.act(self.V(x)))


def conv(name: str, n_in: int, n_out: int, size: int, stride: int = 1, ranks=None,
         nonlinear: bool = False) -> nn.Module:
    """A bias-free size x size conv (padding size//2), or its bottleneck when `name` has a rank."""
    if ranks and name in ranks:
        r = ranks[name]
        return Factorized(nn.Conv2d(n_in, r, size, stride, size // 2, bias=False),
                          nn.Conv2d(r, n_out, 1, bias=False), nonlinear)
    return nn.Conv2d(n_in, n_out, size, stride, size // 2, bias=False)


def linear(name: str, n_in: int, n_out: int, ranks=None, nonlinear: bool = False) -> nn.Module:
    """nn.Linear, or its bottleneck when `name` has a rank."""
    if ranks and name in ranks:
        r = ranks[name]
        return Factorized(nn.Linear(n_in, r, bias=False), nn.Linear(r, n_out), nonlinear)
    return nn.Linear(n_in, n_out)


def image_shape(arch: str, input_shape) -> tuple[int, int, int]:
    """(C, H, W) of an image data set; convnets refuse flat inputs with one line."""
    if len(input_shape) != 3:
        raise RecipeError(f"model.arch: {arch} needs image inputs [C, H, W], got shape "
                          f"{tuple(input_shape)}; use arch: mlp for this data set")
    return tuple(input_shape)
