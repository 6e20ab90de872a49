"""Property: widecli's CSR layer and kernels compute dense masked math - the forward, the input
gradient and the weight gradient at the kept positions, with bias, scale (ntk), ReLU and its
backward gate - for generated shapes, connectivities (empty rows and columns, no weight at all,
every weight) and batch sizes; and with NaN/inf inputs, dense masked math in which a pruned
connection is absent (widecli.sparsity.csr, "NaN and inf").

The reference is float64 torch on the dense masked weight; each float32 result must lie within a
rounding bound of it: 1e-5 of the sum of the absolute terms it adds up (sums are reassociated).
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from widecli.models.mlp import StackedLinear
from widecli.sparsity import csr_cpu
from widecli.sparsity.csr import SparseLinear

REL = 1e-5  # float32 sums of up to 48 terms, in any order, stay well within this of the exact sum


@st.composite
def patterns(draw, max_side: int = 48):
    """(dense masked StackedLinear, its keep mask [out, in], a generator for data): any density,
    some rows and columns emptied."""
    out, n_in = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    density = draw(st.one_of(st.sampled_from([0.0, 0.02, 0.25, 1.0]), st.floats(0, 1)))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    keep = torch.rand(out, n_in, generator=g) < density
    keep[draw(st.lists(st.integers(0, out - 1), unique=True, max_size=out))] = False
    keep[:, draw(st.lists(st.integers(0, n_in - 1), unique=True, max_size=n_in))] = False
    dense = StackedLinear(n_in, out, 1, bias=draw(st.booleans()), ntk=draw(st.booleans()))
    dense.reset_parameters([g])
    with torch.no_grad():
        dense.weight.mul_(keep)
    return dense, keep, g


def within(got: torch.Tensor, want: torch.Tensor, scale: torch.Tensor) -> None:
    """got (float32) equals want (float64) up to REL of `scale` (the sum of the absolute terms)."""
    err = (got.double() - want).abs()
    bound = REL * scale + 1e-30
    assert got.shape == want.shape and bool((err <= bound).all()), \
        f"max error {float((err - bound).max()):.3g} over the bound; got {got}, want {want}"


@settings(max_examples=settings.default.max_examples)
@given(patterns(), st.integers(1, 33))
def test_sparse_linear_forward_and_gradients_are_dense_masked_math(pattern, batch):
    dense, keep, g = pattern
    sparse = SparseLinear(dense, keep[None])
    x = torch.randn(1, batch, dense.in_features, generator=g, requires_grad=True)
    upstream = torch.randn(1, batch, dense.out_features, generator=g)
    out = sparse(x)
    (out * upstream).sum().backward()

    w, s = dense.weight.detach()[0].double(), sparse.scale
    x64, up = x.detach()[0].double(), upstream[0].double()
    b = dense.bias.detach()[0].double() if dense.bias is not None else torch.zeros(dense.out_features).double()
    within(out.detach()[0], s * x64 @ w.t() + b, s * x64.abs() @ w.abs().t() + b.abs())
    within(x.grad[0], s * up @ w, s * up.abs() @ w.abs())
    rows, cols = keep.nonzero(as_tuple=True)                  # the values' order: row-major
    within(sparse.values.grad, (s * up.t() @ x64)[rows, cols], (s * up.abs().t() @ x64.abs())[rows, cols])
    if sparse.bias is not None:
        within(sparse.bias.grad, up.sum(0), up.abs().sum(0))
    assert torch.equal(sparse.to_dense().weight, dense.weight)


@settings(max_examples=settings.default.max_examples)
@given(patterns(), st.integers(1, 33), st.floats(0.05, 4.0), st.booleans(), st.booleans(), st.booleans(),
       st.floats(0.25, 2.0))
def test_kernels_fused_epilogues_are_dense_masked_math(pattern, batch, scale, bias, relu, gated, alpha):
    """The fused step's kernel calls: SpMM with bias, scale and ReLU; the transposed SpMM (values
    permuted) with the ReLU backward's gate; SDDMM with its alpha."""
    dense, keep, g = pattern
    layer = SparseLinear(dense, keep[None])
    w = dense.weight.detach()[0].double()
    x_t = torch.randn(layer.in_features, batch, generator=g)
    b = torch.randn(layer.out_features, generator=g) if bias else None
    out = torch.full((layer.out_features, batch), float("nan"))        # every entry must be written
    csr_cpu.spmm(layer.crow32, layer.col32, layer.values, x_t, out, b, scale, relu)
    z = scale * w @ x_t.double() + (b.double()[:, None] if bias else 0.0)
    size = scale * w.abs() @ x_t.double().abs() + (b.double().abs()[:, None] if bias else 0.0)
    within(out, z.clamp(min=0) if relu else z, size)

    g_t = torch.randn(layer.out_features, batch, generator=g)
    gate = torch.randn(layer.in_features, batch, generator=g).relu() if gated else None
    grad_in = torch.full((layer.in_features, batch), float("nan"))
    csr_cpu.spmm(layer.crow_t32, layer.col_t32, layer.values, g_t, grad_in, perm=layer.order_t32, gate=gate)
    want = w.t() @ g_t.double()
    if gated:
        want = want.where(gate.double() > 0, 0.0)
    within(grad_in, want, w.abs().t() @ g_t.double().abs())

    grad_w = torch.full_like(layer.values, float("nan"))
    csr_cpu.sddmm(layer.crow32, layer.col32, g_t, x_t, grad_w, alpha)
    rows, cols = keep.nonzero(as_tuple=True)
    within(grad_w, (alpha * g_t.double() @ x_t.double().t())[rows, cols],
           (alpha * g_t.double().abs() @ x_t.double().abs().t())[rows, cols])


non_finite = st.sampled_from([float("nan"), float("inf"), float("-inf")])


@settings(max_examples=settings.default.max_examples)
@given(patterns(max_side=16), st.integers(1, 9), st.data())
def test_a_pruned_connection_is_absent_for_nan_and_inf_inputs(pattern, batch, data):
    """NaN and inf reach exactly the outputs that keep a weight from them: the reference adds up
    only the kept products, so a pruned 0 x NaN never enters it (unlike `dense(x)`)."""
    dense, keep, g = pattern
    sparse = SparseLinear(dense, keep[None])
    x = torch.randn(batch, dense.in_features, generator=g)
    for _ in range(data.draw(st.integers(1, 4))):
        x[data.draw(st.integers(0, batch - 1)), data.draw(st.integers(0, dense.in_features - 1))] = data.draw(non_finite)
    with torch.no_grad():
        got = sparse(x[None])[0].double()
    w, s = dense.weight.detach()[0].double(), sparse.scale
    b = dense.bias.detach()[0].double() if dense.bias is not None else torch.zeros(dense.out_features).double()
    terms = (w[None] * x.double()[:, None, :]).where(keep[None], 0.0)   # [batch, out, in], pruned: absent
    want = s * terms.sum(-1) + b
    assert torch.equal(got.isnan(), want.isnan()), (got, want)
    assert torch.equal(got.isinf() & (got > 0), want.isinf() & (want > 0))
    assert torch.equal(got.isinf() & (got < 0), want.isinf() & (want < 0))
    finite = want.isfinite()
    err = (got - want).abs()[finite]
    assert bool((err <= REL * (s * terms.abs().sum(-1) + b.abs())[finite] + 1e-30).all())
