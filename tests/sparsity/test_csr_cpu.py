"""widecli's CSR kernels (numba) compute the dense masked products at the kept positions."""

from __future__ import annotations

import pytest
import torch

from widecli.models.mlp import StackedLinear
from widecli.sparsity import csr_cpu
from widecli.sparsity.csr import SparseLinear


def pattern(out: int, n_in: int, seed: int = 0) -> tuple[torch.Tensor, SparseLinear]:
    """A dense [out, in] weight, masked with rows of 0 to 11 kept weights (every remainder of the
    kernels' four-at-a-time loop), and its SparseLinear."""
    g = torch.Generator().manual_seed(seed)
    keep = torch.zeros(out, n_in, dtype=torch.bool)
    for o in range(out):
        keep[o, torch.randperm(n_in, generator=g)[: o % 12]] = True
    dense = StackedLinear(n_in, out, 1)
    dense.reset_parameters([g])
    with torch.no_grad():
        dense.weight.mul_(keep)
    return dense.weight.detach()[0].clone(), SparseLinear(dense, keep[None])


@pytest.mark.parametrize("batch", [1, 7, 128])
@pytest.mark.parametrize("relu,scale,bias", [(False, 1.0, False), (True, 0.3, True), (False, 2.0, True)])
def test_spmm_is_the_masked_matmul(batch, relu, scale, bias):
    w, layer = pattern(30, 40)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 40, generator=g)
    b = torch.randn(30, generator=g) if bias else None
    out = torch.full((30, batch), float("nan"))              # every entry must be written
    csr_cpu.spmm(layer.crow32, layer.col32, layer.values, csr_cpu.transpose(x), out, b, scale, relu)
    want = scale * (x @ w.t()) + (b if bias else 0.0)
    torch.testing.assert_close(out, (want.relu() if relu else want).t(), rtol=1e-5, atol=1e-5)


def test_transposed_spmm_is_the_input_gradient():
    """With the transposed pattern and its permutation of the values: W^T g."""
    w, layer = pattern(30, 40)
    g_t = torch.randn(30, 9, generator=torch.Generator().manual_seed(2))
    out = torch.empty(40, 9)
    csr_cpu.spmm(layer.crow_t32, layer.col_t32, layer.values, g_t, out, perm=layer.order_t32)
    torch.testing.assert_close(out, w.t() @ g_t, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("alpha", [1.0, 0.25])
def test_sddmm_is_the_weight_gradient_at_the_kept_positions(alpha):
    w, layer = pattern(30, 40)
    g = torch.Generator().manual_seed(3)
    x, grad = torch.randn(16, 40, generator=g), torch.randn(16, 30, generator=g)
    out = torch.full_like(layer.values, float("nan"))
    csr_cpu.sddmm(layer.crow32, layer.col32, csr_cpu.transpose(grad), csr_cpu.transpose(x), out, alpha)
    keep = w != 0
    torch.testing.assert_close(out, alpha * (grad.t() @ x)[keep], rtol=1e-5, atol=1e-5)


def test_fastmath_never_assumes_values_finite():
    """The compiled flags are the documented ones: no nnan/ninf (nor `fast`, which sets them)."""
    assert csr_cpu._FLAGS == {"reassoc", "contract", "nsz", "arcp"}
    assert all(word in csr_cpu.__doc__ for word in ("reassociation", "contraction", "`nsz`", "`arcp`"))


def test_a_pruned_weight_is_absent_for_nan_and_inf_inputs():
    """A NaN/inf input reaches only the outputs that keep a weight from it (the dense masked path
    would make every output NaN: 0 x NaN); the documented difference, in both directions."""
    crow = torch.tensor([0, 1, 2, 2], dtype=torch.int32)      # row 0 keeps input 1, row 1 input 2, row 2 none
    col = torch.tensor([1, 2], dtype=torch.int32)
    x_t = torch.tensor([[float("nan")] * 3, [2.0] * 3, [float("inf")] * 3])   # inputs 0 (pruned), 1, 2
    out = torch.empty(3, 3)
    csr_cpu.spmm(crow, col, torch.tensor([0.5, 1.0]), x_t, out)
    assert out[0].eq(1.0).all() and out[1].isinf().all() and out[2].eq(0.0).all()
    dense = torch.zeros(3, 3)
    dense[0, 1], dense[1, 2] = 0.5, 1.0
    assert (dense @ x_t).isnan().all()                         # dense masked math: NaN everywhere


def test_nan_and_inf_propagate_through_kept_weights():
    """NaN and inf propagate as in torch (relu(NaN) is NaN): a diverging run is still seen to diverge."""
    crow, col = torch.tensor([0, 1, 2], dtype=torch.int32), torch.tensor([0, 1], dtype=torch.int32)
    x_t = torch.tensor([[float("nan")] * 5, [1.0] * 5])
    out = torch.empty(2, 5)
    csr_cpu.spmm(crow, col, torch.tensor([1.0, float("inf")]), x_t, out, relu=True)
    assert out[0].isnan().all() and out[1].isinf().all()
    dw = torch.empty(2)
    csr_cpu.sddmm(crow, col, torch.ones(2, 5), x_t, dw)
    assert dw[0].isnan() and dw[1] == 5.0


def test_gate_is_the_relu_backward():
    """gate zeroes the result where the gate is <= 0, as torch's threshold_backward (NaN passes)."""
    w, layer = pattern(30, 40)
    g = torch.Generator().manual_seed(4)
    g_t, a = torch.randn(30, 9, generator=g), torch.randn(40, 9, generator=g).relu()
    a[0, 0] = float("nan")
    out = torch.empty(40, 9)
    csr_cpu.spmm(layer.crow_t32, layer.col_t32, layer.values, g_t, out, perm=layer.order_t32, gate=a)
    want = torch.ops.aten.threshold_backward(w.t() @ g_t, a, 0.0)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    assert (out[a == 0] == 0).all() and out[0, 0] != 0
