"""Fully connected network with stable layer names fc1..fcL, out, and a stack dimension.

Every weight has a leading stack dimension K: K runs that differ only in seed train as one model
with batched matmuls (`torch.baddbmm`), each slice seeing its own data, init and masks. K = 1 is an
ordinary MLP. Inputs are [K, B, *input_shape]; an unstacked [B, *input_shape] batch is accepted too.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from widecli.config.schema import ModelConfig

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "linear": nn.Identity}


class StackedLinear(nn.Module):
    """K independent linear maps: weight [K, out, in], bias [K, out]."""

    stacked = True

    def __init__(self, in_features: int, out_features: int, stack: int = 1, bias: bool = True,
                 ntk: bool = False, init: str = "auto"):
        super().__init__()
        self.in_features, self.out_features, self.stack, self.ntk = in_features, out_features, stack, ntk
        self.weight = nn.Parameter(torch.empty(stack, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(stack, out_features)) if bias else None
        # NTK parameterization (official MLP code): weights of scale 1, 1/sqrt(fan_in) in the forward.
        self.scale = 1.0 / math.sqrt(in_features) if ntk else 1.0
        # model.init: the weights' distribution at scale s (ntk: s = 1; standard: s = 1/sqrt(fan_in)):
        # normal N(0, s^2) or uniform U(-s, s); auto is normal for ntk, uniform (PyTorch's) for standard.
        self.init = init if init != "auto" else ("normal" if ntk else "uniform")

    def reset_parameters(self, generators: list[torch.Generator]) -> None:
        """Slice k is drawn from generators[k] (on CPU, so every device gets the same numbers)."""
        bound = 1.0 / math.sqrt(self.in_features)
        s = 1.0 if self.ntk else bound
        with torch.no_grad():
            for k, g in enumerate(generators):
                w = torch.empty(self.out_features, self.in_features)
                w.normal_(0.0, s, generator=g) if self.init == "normal" else w.uniform_(-s, s, generator=g)
                self.weight[k].copy_(w)
                if self.bias is not None:
                    b = torch.zeros(self.out_features)
                    if not self.ntk:  # PyTorch's nn.Linear default
                        b.uniform_(-bound, bound, generator=g)
                    self.bias[k].copy_(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return _StackedAffine.apply(x, self.weight, self.bias, self.scale)
        return _affine(x, self.weight, self.bias, self.scale)

    def extra_repr(self) -> str:
        return f"stack={self.stack}, in={self.in_features}, out={self.out_features}, ntk={self.ntk}"


def _affine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, scale: float) -> torch.Tensor:
    """x @ W^T * scale + b over the stack dimension: [K, B, in] -> [K, B, out]."""
    if bias is None:
        out = torch.bmm(x, weight.transpose(1, 2))
        return out * scale if scale != 1.0 else out
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2), alpha=scale)


class _StackedAffine(torch.autograd.Function):
    """x @ W^T * scale + b with a hand-written backward: autograd's baddbmm backward produces the
    weight gradient transposed and copies it into place, slower per training step on CPU
    (benchmarks/peak.py, benchmarks/results/peak.txt); this one writes dW = g^T x directly and
    skips the input gradient where the input needs none (the first layer)."""

    @staticmethod
    def forward(ctx, x, weight, bias, scale):
        ctx.save_for_backward(x, weight)
        ctx.scale, ctx.has_bias = scale, bias is not None
        ctx.bias_dtype = bias.dtype if bias is not None else None
        return _affine(x, weight, bias, scale)

    @staticmethod
    def backward(ctx, grad):
        # Under autocast the forward ran in bf16/fp16 (grad's dtype); compute the backward in that
        # dtype too and hand each gradient back in its input's dtype.
        x, weight = ctx.saved_tensors
        g = grad * ctx.scale if ctx.scale != 1.0 else grad
        grad_x = torch.bmm(g, weight.to(g.dtype)).to(x.dtype) if ctx.needs_input_grad[0] else None
        grad_w = (torch.bmm(g.transpose(1, 2), x.to(g.dtype)).to(weight.dtype)
                  if ctx.needs_input_grad[1] else None)
        grad_b = grad.sum(1).to(ctx.bias_dtype) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None


class FactorizedLinear(nn.Module):
    """Bottleneck replacement of a linear layer: out = U(act(V x)), inner width `rank`."""

    stacked = True

    def __init__(self, in_features: int, out_features: int, rank: int, stack: int = 1,
                 bias: bool = True, ntk: bool = False, nonlinear: bool = False, init: str = "auto"):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.V = StackedLinear(in_features, rank, stack, bias=False, ntk=ntk, init=init)
        self.U = StackedLinear(rank, out_features, stack, bias=bias, ntk=ntk, init=init)
        self.act = nn.ReLU() if nonlinear else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.U(self.act(self.V(x)))


class MLP(nn.Module):
    def __init__(self, sizes: list[int], input_shape: tuple[int, ...], activation: str = "relu",
                 bias: bool = True, ntk: bool = False, stack: int = 1,
                 ranks: dict[str, int] | None = None, rank_nonlinear: bool = False, init: str = "auto"):
        super().__init__()
        self.input_shape, self.stack = tuple(input_shape), stack
        self.names = [f"fc{i + 1}" for i in range(len(sizes) - 2)] + ["out"]
        for name, n_in, n_out in zip(self.names, sizes[:-1], sizes[1:]):
            if ranks and name in ranks:
                layer = FactorizedLinear(n_in, n_out, ranks[name], stack, bias, ntk, rank_nonlinear, init)
            else:
                layer = StackedLinear(n_in, n_out, stack, bias, ntk, init)
            setattr(self, name, layer)
        self.act = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        unstacked = x.dim() == len(self.input_shape) + 1
        if unstacked:
            x = x.unsqueeze(0).expand(self.stack, *x.shape)
        h = x.flatten(2)
        for name in self.names[:-1]:
            h = self.act(getattr(self, name)(h))
        out = self.out(h)
        return out[0] if unstacked and self.stack == 1 else out


def base_widths(cfg: ModelConfig) -> dict[str, int]:
    return {f"fc{i + 1}": h for i, h in enumerate(cfg.hidden)}


def build(cfg: ModelConfig, widths: dict[str, int], input_shape, num_classes: int, stack: int = 1,
          ranks: dict[str, int] | None = None, rank_nonlinear: bool = False) -> MLP:
    n_in = math.prod(input_shape)
    sizes = [n_in] + [widths[name] for name in base_widths(cfg)] + [num_classes]
    return MLP(sizes, input_shape, cfg.activation, cfg.bias, cfg.parameterization == "ntk", stack,
               ranks, rank_nonlinear, cfg.init)
