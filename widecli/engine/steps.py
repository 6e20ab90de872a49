"""Training steps: one call trains on one batch (forward, loss, backward, update, masks enforced).

Two steps behind one interface, `losses, logits = step(x [K, B, ...], y [K, B], full_batch)`:
  - AutogradStep: any model, any precision, DDP; the loss of K stacked runs is summed, whose
    gradient w.r.t. each run's weights is that run's own gradient.
  - FusedStep: plain fp32 MLPs; forward, loss gradient, backward and update without autograd.
    At small widths a step of eager PyTorch is dominated by fixed per-operation costs (building
    the autograd graph, the engine's bookkeeping, zeroing and reallocating gradients, the
    optimizer's Python wrapper), not by the matmuls. For a plain stacked MLP (`StackedLinear`
    layers, relu or linear activation, fp32) the whole step is a short fixed sequence: batched
    matmuls on the [K, out, in] weights into buffers allocated once per batch size, the softmax
    cross-entropy gradient written in place, and the same fused optimizer kernel `torch.optim` would
    call, on the optimizer's own state tensors (so checkpoints and `opt.state_dict()` are unchanged).
    Equal to the autograd path within float tolerance (tests/test_steps.py); never syncs with the host.
Masks are enforced after every update, so neither momentum nor weight decay can revive a pruned weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from widecli.engine.dist import Single
from widecli.models.mlp import MLP, StackedLinear
from widecli.sparsity import kernels
from widecli.sparsity.csr import SparseLinear
from widecli.sparsity.masks import MaskEnforcer


def lr_at(cfg, epoch: int) -> float:
    """Learning rate for an epoch (schedules step once per epoch, as the official code)."""
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
    if cfg.schedule == "step":
        return cfg.lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    return cfg.lr


FUSED_KERNELS = {"sgd": "_fused_sgd_", "adam": "_fused_adam_", "adamw": "_fused_adamw_"}


def make_optimizer(cfg, params, fused: bool | None = None) -> torch.optim.Optimizer:
    """The recipe's optimizer; fused (one kernel for all parameters) where PyTorch supports it,
    measured ~1.5x cheaper per step than the default per-parameter loop on CPU."""
    params = list(params)
    if fused is None:
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    # fused=True runs torch's private fused kernel; a torch build without it gets the default loop.
    fused = fused and callable(getattr(torch, FUSED_KERNELS[cfg.optimizer], None))
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov and cfg.momentum > 0, fused=fused or None)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)


def to_model_layout(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Image batches in channels_last when the model was converted to it (CUDA convnets)."""
    if getattr(model, "_channels_last", False) and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


@dataclass(frozen=True)
class Stack:
    """The stacking dimension: K runs in one model with a stack dimension (MLPs), or one run in a
    plain model, seen by the loop alike as [K, B, ...] -> [K, B, classes]."""

    k: int
    stacked: bool
    squeeze: bool = False  # run j's solo state is state[j] (stacked convnets), not state[j:j+1] (MLPs)

    def forward(self, model: nn.Module, forward: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Logits [K, B, C] of a training batch [K, B, ...]."""
        return forward(x) if self.stacked else forward(to_model_layout(model, x[0]))[None]

    def forward_shared(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Logits [K, B, C] of one batch [B, ...] shown to every run (evaluation)."""
        if self.stacked:
            return model(x.unsqueeze(0).expand(self.k, *x.shape))
        return model(to_model_layout(model, x))[None]

    def slice_state(self, model: nn.Module, j: int) -> dict:
        """State dict of run j alone (stacked tensors keep a leading dimension of 1)."""
        return {n: self._slice(t, j).detach().cpu().clone() for n, t in model.state_dict().items()}

    def slice_masks(self, masks: dict[str, torch.Tensor], j: int) -> dict[str, torch.Tensor]:
        return {n: self._slice(m, j).cpu() for n, m in masks.items()}

    def _slice(self, t: torch.Tensor, j: int) -> torch.Tensor:
        if not self.stacked:
            return t
        if self.squeeze:
            return t[j] if t.dim() > 0 else t  # num_batches_tracked: shared, the runs step together
        return t[j:j + 1]


class AutogradStep:
    """forward -> cross-entropy -> backward -> optimizer step -> masks, for any model."""

    def __init__(self, model: nn.Module, forward: nn.Module, opt: torch.optim.Optimizer,
                 enforcer: MaskEnforcer, stack: Stack, amp, dist: Single):
        self.model, self.forward, self.opt, self.enforcer = model, forward, opt, enforcer
        self.stack, self.amp, self.dist = stack, amp, dist

    def __call__(self, x: torch.Tensor, y: torch.Tensor, full: int,
                 update: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        k, b = y.shape
        with self.amp:
            out = self.stack.forward(self.model, self.forward, x)
        losses = F.cross_entropy(out.float().flatten(0, 1), y.flatten(), reduction="none").view(k, b).mean(1)
        self.opt.zero_grad(set_to_none=True)
        # The sum's gradient w.r.t. each run's weights is that run's own gradient.
        (losses.sum() * self.dist.grad_scale(b, full)).backward()
        if update:  # not on a mask-update step (sparsity.dynamic): its gradient only grows connections
            self.opt.step()
            self.enforcer.apply()
        return losses, out


def fused_usable(model: nn.Module, opt: torch.optim.Optimizer, precision: str, cfg, distributed: bool) -> bool:
    """Whether `FusedStep` computes what the autograd path computes (within float tolerance)."""
    if not isinstance(model, MLP) or not isinstance(model.act, (nn.ReLU, nn.Identity)):
        return False
    layers = [getattr(model, n) for n in model.names]
    if not all(type(m) in (StackedLinear, SparseLinear) for m in layers):
        return False  # bottleneck (FactorizedLinear) layers keep autograd
    if any(isinstance(m, SparseLinear) for m in layers) and not (
            model.stack == 1 and all(p.device.type == "cpu" for p in model.parameters())):
        return False  # the CSR kernels of SparseFusedStep are CPU kernels for one run
    if precision != "fp32" or cfg.compile or distributed:
        return False
    if any(p.dtype != torch.float32 for p in model.parameters()):
        return False
    group = opt.param_groups[0]
    return (len(opt.param_groups) == 1 and not group.get("maximize") and not group.get("dampening")
            and isinstance(opt, (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)))


def fused_step(model: MLP, opt: torch.optim.Optimizer, enforcer: MaskEnforcer) -> "FusedStep":
    """The fused step for a model `fused_usable` accepted: with CSR layers, SparseFusedStep."""
    sparse = any(isinstance(getattr(model, n), SparseLinear) for n in model.names)
    return (SparseFusedStep if sparse else FusedStep)(model, opt, enforcer)


class FusedStep:
    """One training step of a stacked MLP: `losses, logits = step(x, y)` then the update."""

    def __init__(self, model: MLP, opt: torch.optim.Optimizer, enforcer: MaskEnforcer):
        self.model, self.opt, self.enforcer = model, opt, enforcer
        self.layers: list[StackedLinear] = [getattr(model, n) for n in model.names]
        self.relu = isinstance(model.act, nn.ReLU)
        self.params = [p for g in opt.param_groups for p in g["params"]]
        for p in self.params:  # persistent gradient buffers, overwritten (never accumulated) each step
            p.grad = torch.zeros_like(p)
        self.grads = [p.grad for p in self.params]
        self.buffers: dict[int, dict] = {}
        # The private fused SGD kernel that torch.optim.SGD(fused=True) itself calls; where a torch
        # build lacks it, the public opt.step() does the same update (a little slower at small widths).
        self.sgd = (isinstance(opt, torch.optim.SGD) and opt.param_groups[0].get("fused")
                    and callable(getattr(torch, "_fused_sgd_", None)))

    def _buffers(self, k: int, b: int, like: torch.Tensor) -> dict:
        """Activations and gradients for batch size b, allocated once (the last batch of an epoch
        is smaller). The logits are kept transposed, [K, classes, B]: PyTorch's CPU log_softmax over
        a last dimension of 10 is ~10x slower than over a strided one of that size."""
        if b not in self.buffers:
            new = lambda *shape: torch.empty(k, *shape, dtype=like.dtype, device=like.device)
            classes = self.layers[-1].out_features
            self.buffers[b] = {
                "acts": [new(b, m.out_features) for m in self.layers[:-1]] + [new(classes, b)],
                "logp": new(classes, b),
                "grads": [new(b, m.in_features) for m in self.layers[1:]],
                "minus_inv_b": torch.full((k, 1, b), -1.0 / b, dtype=like.dtype, device=like.device),
                "nll": new(1, b),
            }
        return self.buffers[b]

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, y: torch.Tensor, full: int,
                 update: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Train on a [K, B, ...] batch with [K, B] labels; returns (mean loss per run [K], logits).
        update=False: gradients only, no optimizer step (a mask-update step of sparsity.dynamic)."""
        k, b = y.shape
        buf = self._buffers(k, b, self.layers[0].weight)
        h, inputs, last = x.reshape(k, b, -1), [], len(self.layers) - 1
        for i, (layer, out) in enumerate(zip(self.layers, buf["acts"])):
            inputs.append(h)
            # Hidden layers: h W^T -> [K, B, out]; the last: W h^T -> logits^T [K, classes, B].
            a, w = (layer.weight, h.transpose(1, 2)) if i == last else (h, layer.weight.transpose(1, 2))
            if layer.bias is None:
                torch.bmm(a, w, out=out)
                if layer.scale != 1.0:
                    out.mul_(layer.scale)
            else:
                bias = layer.bias.unsqueeze(2 if i == last else 1)
                torch.baddbmm(bias, a, w, alpha=layer.scale, out=out)
            if self.relu and i < last:
                out.relu_()
            h = out
        losses, gt = self._loss_grad(h, y, buf)
        c = 1.0  # the gradient w.r.t. a layer's output is c * gt (c: the NTK scales passed)
        for i in range(last, -1, -1):
            layer = self.layers[i]
            layer.weight.grad.baddbmm_(gt, inputs[i], beta=0.0, alpha=c * layer.scale)
            if layer.bias is not None:
                torch.sum(gt, 2, out=layer.bias.grad)
                if c != 1.0:
                    layer.bias.grad.mul_(c)
            if i:
                gin = torch.bmm(gt.transpose(1, 2), layer.weight, out=buf["grads"][i - 1])
                if self.relu:  # relu'(z) = [a > 0] where a = relu(z) is the stored input
                    torch.ops.aten.threshold_backward.grad_input(gin, inputs[i], 0.0, grad_input=gin)
                c *= layer.scale
                gt = gin.transpose(1, 2)
        if update:
            self._update()
            self.enforcer.apply()
        # Contiguous [K, B, classes]: the caller's argmax over a strided last dim is ~5x slower.
        return losses, h.transpose(1, 2).contiguous()

    @staticmethod
    def _loss_grad(logits_t: torch.Tensor, y: torch.Tensor, buf: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss per run [K] and its gradient w.r.t. the logits^T [K, classes, B].

        Softmax cross-entropy: loss = -log p[y]; its gradient w.r.t. the logits is p - onehot(y)."""
        b = y.shape[1]
        yi = y.unsqueeze(1)
        logp = torch.log_softmax(logits_t, 1, out=buf["logp"])
        losses = torch.gather(logp, 1, yi, out=buf["nll"]).sum(2).squeeze(1).mul_(-1.0 / b)
        return losses, logp.exp_().mul_(1.0 / b).scatter_add_(1, yi, buf["minus_inv_b"])  # (p - onehot) / B

    def _update(self) -> None:
        """The optimizer's own update on its own state: the fused SGD kernel called directly (its
        Python wrapper costs as much as the kernel at small widths), else `opt.step()`."""
        if not self.sgd:
            self.opt.step()
            return
        group, grads = self.opt.param_groups[0], self.grads
        momentum = group["momentum"]
        bufs, first = [], False
        if momentum:
            state = [self.opt.state[p] for p in self.params]
            first = all("momentum_buffer" not in s for s in state)
            if first:  # torch.optim.SGD: the first step's buffer is the gradient itself
                for s, gr in zip(state, grads):
                    s["momentum_buffer"] = torch.empty_like(gr)
            bufs = [s["momentum_buffer"] for s in state]
        torch._fused_sgd_(self.params, grads, bufs, weight_decay=group["weight_decay"], momentum=momentum,
                          lr=group["lr"], dampening=group["dampening"], nesterov=group["nesterov"],
                          maximize=group["maximize"], is_first_step=first)


class SparseFusedStep(FusedStep):
    """The fused step of one run (K = 1) on CPU whose masked layers are CSR weights (`SparseLinear`).

    Every activation is kept transposed, [features, B], the layout of the CSR kernels
    (`sparsity.kernels`): a sparse layer's forward is an SpMM, its weight gradient an SDDMM at the
    kept positions only and its input gradient an SpMM with the transposed pattern; a dense layer
    is a plain matmul on the same layout. The optimizer updates the kept values only. Equal to the
    dense masked path within float tolerance (tests/engine/test_steps.py)."""

    def _buffers(self, k: int, b: int, like: torch.Tensor) -> dict:
        if b not in self.buffers:
            new = lambda *shape: torch.empty(*shape, dtype=torch.float32)
            classes = self.layers[-1].out_features
            self.buffers[b] = {
                "x": new(self.layers[0].in_features, b),
                "acts": [new(m.out_features, b) for m in self.layers],
                "grads": [new(m.in_features, b) for m in self.layers[1:]],
                "logp": new(1, classes, b),
                "minus_inv_b": torch.full((1, 1, b), -1.0 / b),
                "nll": new(1, 1, b),
            }
        return self.buffers[b]

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, y: torch.Tensor, full: int,
                 update: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        k, b = y.shape
        buf = self._buffers(k, b, x)
        h = kernels.transpose(x.reshape(b, -1), buf["x"])
        inputs, last = [], len(self.layers) - 1
        for i, (layer, out) in enumerate(zip(self.layers, buf["acts"])):
            inputs.append(h)
            relu = self.relu and i < last
            if isinstance(layer, SparseLinear):
                kernels.spmm(layer.crow32, layer.col32, layer.values, h, out, layer.bias, layer.scale, relu)
            else:
                if layer.bias is None:
                    torch.mm(layer.weight[0], h, out=out)
                    if layer.scale != 1.0:
                        out.mul_(layer.scale)
                else:
                    torch.addmm(layer.bias[0].unsqueeze(1), layer.weight[0], h, alpha=layer.scale, out=out)
                if relu:
                    out.relu_()
            h = out
        losses, gt = self._loss_grad(h.unsqueeze(0), y, buf)
        gt, c = gt[0], 1.0  # the gradient w.r.t. a layer's output is c * gt, [out, B]
        for i in range(last, -1, -1):
            layer, inp = self.layers[i], inputs[i]
            alpha = c * layer.scale
            if isinstance(layer, SparseLinear):
                kernels.sddmm(layer.crow32, layer.col32, gt, inp, layer.values.grad, alpha)
            else:
                layer.weight.grad[0].addmm_(gt, inp.t(), beta=0.0, alpha=alpha)
            if layer.bias is not None:
                bias_grad = layer.bias.grad.view(-1)
                torch.sum(gt, 1, out=bias_grad)
                if c != 1.0:
                    bias_grad.mul_(c)
            if i:
                gin = buf["grads"][i - 1]
                # relu'(z) = [a > 0] where a = relu(z) is the stored input
                if isinstance(layer, SparseLinear):
                    kernels.spmm(layer.crow_t32, layer.col_t32, layer.values, gt, gin, perm=layer.order_t32,
                                 gate=inp if self.relu else None)
                else:
                    torch.mm(layer.weight[0].t(), gt, out=gin)
                    if self.relu:
                        torch.ops.aten.threshold_backward.grad_input(gin, inp, 0.0, grad_input=gin)
                c *= layer.scale
                gt = gin
        if update:
            self._update()
            self.enforcer.apply()
        return losses, h.t().unsqueeze(0).contiguous()


class MaskUpdateStep:
    """A step under dynamic masks (SET, RigL; sparsity.dynamic): on a mask-update step the inner step
    computes the gradients without updating the weights (as RigL's optimizer), then the masks drop
    and grow; every other step is the inner step itself. Works with AutogradStep and FusedStep: both
    leave the dense gradient of every masked weight in `.grad`."""

    def __init__(self, inner, updater):
        self.inner, self.updater = inner, updater

    def __call__(self, x: torch.Tensor, y: torch.Tensor, full: int) -> tuple[torch.Tensor, torch.Tensor]:
        due = self.updater.due()
        losses, out = self.inner(x, y, full, update=not due)
        if due:
            self.updater.update()
        self.updater.advance()
        return losses, out
