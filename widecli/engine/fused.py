"""The fused MLP steps: forward, loss gradient, backward and update without autograd (`train.fused`).

At small widths a step of eager PyTorch is dominated by fixed per-operation costs (building the
autograd graph, the engine's bookkeeping, zeroing and reallocating gradients, the optimizer's
Python wrapper), not by the matmuls. For a plain stacked MLP (`StackedLinear` layers, relu or linear
activation, fp32) the whole step is a short fixed sequence: batched matmuls on the [K, out, in]
weights into buffers allocated once per batch size, the softmax cross-entropy gradient written in
place, and the same fused optimizer kernel `torch.optim` would call, on the optimizer's own state
tensors (so checkpoints and `opt.state_dict()` are unchanged). `SparseFusedStep` does the same for
one run whose masked layers are CSR weights (sparsity.csr), with the CPU kernels of sparsity.csr_cpu.
Both equal the autograd path (engine.steps) within float tolerance (tests/engine/test_steps.py) and
never sync with the host; their speed-ups are measured in benchmarks/results/ (peak.txt, sparse.txt).
"""

from __future__ import annotations

import torch
from torch import nn

from widecli.config.schema import TrainConfig
from widecli.models.mlp import MLP, StackedLinear
from widecli.sparsity import csr_cpu
from widecli.sparsity.csr import SparseLinear
from widecli.sparsity.masks import MaskEnforcer


def fused_usable(model: nn.Module, opt: torch.optim.Optimizer, precision: str, cfg: TrainConfig,
                 distributed: bool) -> bool:
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
    def __call__(self, x: torch.Tensor, y: torch.Tensor, global_batch: int,
                 update: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Train on a [K, B, ...] batch (all of the global batch: no DDP here) with [K, B] labels; returns (mean loss per run [K], logits).
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
    (`sparsity.csr_cpu`): a sparse layer's forward is an SpMM, its weight gradient an SDDMM at the
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
    def __call__(self, x: torch.Tensor, y: torch.Tensor, global_batch: int,
                 update: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        k, b = y.shape
        buf = self._buffers(k, b, x)
        h = csr_cpu.transpose(x.reshape(b, -1), buf["x"])
        inputs, last = [], len(self.layers) - 1
        for i, (layer, out) in enumerate(zip(self.layers, buf["acts"])):
            inputs.append(h)
            relu = self.relu and i < last
            if isinstance(layer, SparseLinear):
                csr_cpu.spmm(layer.crow32, layer.col32, layer.values, h, out, layer.bias, layer.scale, relu)
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
                csr_cpu.sddmm(layer.crow32, layer.col32, gt, inp, layer.values.grad, alpha)
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
                    csr_cpu.spmm(layer.crow_t32, layer.col_t32, layer.values, gt, gin, perm=layer.order_t32,
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
