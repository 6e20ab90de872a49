"""Sparse compute for masked Linear layers: only the kept weights are parameters (`train.backend`).

A masked dense layer at connectivity c still multiplies every weight, so a sparse-wide model costs
about f times its baseline. Here a masked layer becomes a CSR matrix whose values are the only
trainable leaf: the forward is a CSR x dense SpMM, the weight gradient a sampled dense-dense
product (SDDMM) at the kept positions only, and the input gradient an SpMM with the transposed
pattern. The kept values and their updates are those of the dense masked path (same init, same
elementwise optimizer), so results agree within float tolerance; after training the layer is
turned back into the dense [1, out, in] layout that `execute.run.load_model` reads.

On CPU the kernels are widecli's own (`sparsity.csr_cpu`, numba) and one run's whole step is fused
(`engine.fused.SparseFusedStep`); on GPUs PyTorch's CSR kernels (cuSPARSE) under autograd.
Measured on CPU (benchmarks/sparse.py): it pays only at low connectivity, so `auto` picks it there.

NaN and inf: a pruned connection is absent. Through kept weights NaN and inf propagate exactly as in
dense math, so a run whose weights or activations overflow has a non-finite loss and stops as
`diverged` on either backend. They differ only where a non-finite value meets a pruned weight: the
dense masked path computes 0 x NaN = NaN (and 0 x inf = NaN) there, so a NaN anywhere in an input
example makes all of that layer's outputs NaN; here it reaches only the outputs that keep a weight
from that input, and the others stay finite (tests/sparsity/test_csr_cpu.py,
tests/properties/test_csr_props.py).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from widecli.models.mlp import StackedLinear
from widecli.sparsity import csr_cpu

# `auto` makes a masked layer sparse only on CPU, at or below this connectivity and above this size:
# the crossover measured by benchmarks/sparse.py (fused steps on both sides, one thread; numbers in
# benchmarks/results/sparse.txt): the CSR kernels spend several times the time per multiply-add of a
# dense GEMM, so CSR only gains at low connectivity.
AUTO_MAX_CONNECTIVITY = 0.25
AUTO_MIN_WEIGHTS = 2048

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


def sparse_layers(backend: str, plan, device: torch.device, stack: int = 1, model: nn.Module | None = None) -> list[str]:
    """Names of the masked layers that train as CSR weights under `backend` (dense|sparse|auto).

    Only linear layers that are widecli's own (top-level `StackedLinear`, as in `mlp`); given the
    model, layers of any other kind (a user model's nn.Linear, a convnet's classifier) stay dense."""
    if backend == "dense" or stack > 1:
        return []  # CSR leaves hold one run; stacked seeds stay dense
    if getattr(plan, "dynamic", False):
        return []  # SET/RigL masks change during training: a CSR pattern is fixed (sparsity.dynamic)
    names = [n for n in plan.masked if len(plan.shapes[n]) == 2]
    if model is not None:
        names = [n for n in names if type(getattr(model, n, None)) is StackedLinear]
    if backend == "sparse":
        return names
    if device.type != "cpu":
        return []  # not measured on GPUs: cuSPARSE vs dense tensor cores is a different trade
    return [n for n in names if plan.counts[n] / (plan.shapes[n][0] * plan.shapes[n][1])
            <= AUTO_MAX_CONNECTIVITY and plan.shapes[n][0] * plan.shapes[n][1] >= AUTO_MIN_WEIGHTS]


class _CSRMatmul(torch.autograd.Function):
    """y = x @ W.T for a CSR weight W [out, in] given by (pattern, values): the numba kernels of
    `sparsity.csr_cpu` on CPU, PyTorch's CSR kernels (cuSPARSE) elsewhere."""

    @staticmethod
    def forward(ctx, x, values, layer):
        ctx.layer = layer
        cpu = x.device.type == "cpu"
        xT = csr_cpu.transpose(x) if cpu else x.t().contiguous()
        ctx.save_for_backward(xT, values)
        if cpu:
            return csr_cpu.spmm(layer.crow32, layer.col32, values, xT, x.new_empty(layer.out_features, len(x))).t()
        return torch.sparse.mm(layer.csr(values), xT).t()

    @staticmethod
    def backward(ctx, grad_out):
        xT, values = ctx.saved_tensors
        layer = ctx.layer
        cpu = grad_out.device.type == "cpu"
        gT = csr_cpu.transpose(grad_out) if cpu else grad_out.t().contiguous()
        grad_x = grad_values = None
        if ctx.needs_input_grad[0]:
            if cpu:
                grad_x = csr_cpu.spmm(layer.crow_t32, layer.col_t32, values, gT,
                                      gT.new_empty(layer.in_features, gT.shape[1]), perm=layer.order_t32).t()
            else:
                grad_x = torch.sparse.mm(layer.csr_t(values), gT).t()
        if ctx.needs_input_grad[1]:
            if cpu:
                grad_values = csr_cpu.sddmm(layer.crow32, layer.col32, gT, xT, torch.empty_like(values))
            else:
                pattern = layer.csr(torch.zeros_like(values))
                grad_values = torch.sparse.sampled_addmm(pattern, gT, xT.t(), beta=0.0).values()
        return grad_x, grad_values, None


class SparseLinear(nn.Module):
    """A masked StackedLinear (stack 1) whose kept weights are a CSR values vector. Pruned weights
    are absent, not zeros: a NaN/inf input reaches only outputs that keep a weight from it (the
    module docstring)."""

    def __init__(self, dense: StackedLinear, mask: torch.Tensor):
        super().__init__()
        self.in_features, self.out_features = dense.in_features, dense.out_features
        self.scale, self.ntk = dense.scale, dense.ntk
        keep = mask.reshape(dense.out_features, dense.in_features).bool()
        rows, cols = keep.nonzero(as_tuple=True)                 # row-major order = CSR order
        counts = torch.bincount(rows, minlength=self.out_features)
        self.register_buffer("crow", torch.cat([counts.new_zeros(1), counts.cumsum(0)]))
        self.register_buffer("col", cols)
        # The transposed pattern (CSR of W.T) and where each of its entries sits in `values`.
        order = torch.argsort(cols * self.out_features + rows)
        counts_t = torch.bincount(cols, minlength=self.in_features)
        self.register_buffer("crow_t", torch.cat([counts_t.new_zeros(1), counts_t.cumsum(0)]))
        self.register_buffer("col_t", rows[order])
        self.register_buffer("order_t", order)
        # int32 copies for the CPU kernels (not saved: derived from the buffers above).
        for name in ("crow", "col", "crow_t", "col_t", "order_t"):
            self.register_buffer(name + "32", getattr(self, name).int(), persistent=False)
        self.values = nn.Parameter(dense.weight.detach()[0][rows, cols].clone())
        self.bias = nn.Parameter(dense.bias.detach()[0].clone()) if dense.bias is not None else None

    def csr(self, values: torch.Tensor) -> torch.Tensor:
        return torch.sparse_csr_tensor(self.crow, self.col, values, (self.out_features, self.in_features),
                                       check_invariants=False)

    def csr_t(self, values: torch.Tensor) -> torch.Tensor:
        return torch.sparse_csr_tensor(self.crow_t, self.col_t, values[self.order_t],
                                       (self.in_features, self.out_features), check_invariants=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        # CSR kernels have no autocast rule: run them in the values' dtype (fp32).
        out = _CSRMatmul.apply(x.reshape(-1, self.in_features).to(self.values.dtype), self.values, self)
        if self.scale != 1.0:
            out = out * self.scale
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*lead, self.out_features)

    def to_dense(self) -> StackedLinear:
        """The equivalent StackedLinear (stack 1), masked weights zero."""
        dense = StackedLinear(self.in_features, self.out_features, 1, self.bias is not None, self.ntk)
        dense = dense.to(self.values.device)
        with torch.no_grad():
            dense.weight.zero_()
            dense.weight[0].view(-1)[self._flat_index()] = self.values.detach()
            if self.bias is not None:
                dense.bias[0].copy_(self.bias.detach())
        return dense

    def _flat_index(self) -> torch.Tensor:
        rows = torch.repeat_interleave(torch.arange(self.out_features, device=self.crow.device),
                                       self.crow.diff())
        return rows * self.in_features + self.col


def sparsify(model: nn.Module, masks: dict[str, torch.Tensor], names: list[str]) -> None:
    """Replace the named (masked, top-level) StackedLinear layers by SparseLinear, in place."""
    for name in names:
        setattr(model, name, SparseLinear(getattr(model, name), masks[name]))


def densify(model: nn.Module) -> None:
    """Turn every SparseLinear back into a dense StackedLinear (the stored layout), in place."""
    for name, m in list(model.named_children()):
        if isinstance(m, SparseLinear):
            setattr(model, name, m.to_dense())
