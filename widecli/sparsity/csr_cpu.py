"""The CPU side of the CSR backend: SpMM and SDDMM compiled by numba, whose cost follows the
nonzeros, in the batch-minor layout.

Activations are kept transposed, [features, B] contiguous, so every kept weight (o, c) touches
whole contiguous rows: the forward adds w * x[c, :] into y[o, :] (SpMM) and the weight gradient is
the dot product g[o, :] . x[c, :] (SDDMM) - B multiply-adds over contiguous memory per kept
weight, which LLVM vectorizes. Four kept weights of a row are taken at once, so the output row (or
the gradient row) is read once per four input rows. Measured against PyTorch's CSR kernels
(MKL SpMM, `sampled_addmm`) at 784 x 640, connectivity 0.1, batch 128, one thread:
benchmarks/sparse_kernels.py.

`fastmath` is `_FLAGS`: reassociation (sums in any order), contraction (fused multiply-add), no
signed zeros (`nsz`: a zero's sign may differ) and reciprocal approximation (`arcp`: no division
here). Not `nnan` or `ninf`: NaN and inf are computed, never assumed away, and propagate through
every kept weight as in dense math (relu(NaN) is NaN; the gate passes a NaN, as torch's
threshold_backward). A pruned weight is absent, not a stored zero: a NaN or inf input reaches only
the outputs that keep a weight from it, where the dense masked path multiplies it by the masked 0
(0 x NaN and 0 x inf are NaN) and every output of that example is NaN (sparsity.csr).
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch

_FLAGS = {"reassoc", "contract", "nsz", "arcp"}


@functools.cache
def _compiled():
    """(spmm, sddmm) compiled by numba, loaded when a CSR layer first runs on CPU."""
    import numba  # heavy (~160 ms to import): kept off every command's start-up
    from numba.core import codegen  # numba's host CPU features, for the vector width below

    _prefer_512_bit_vectors(numba, codegen)
    jit = numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy", fastmath=_FLAGS)
    return jit(_spmm), jit(_sddmm)


def _prefer_512_bit_vectors(numba, codegen) -> None:
    """LLVM tunes recent Intel CPUs to prefer 256-bit vectors; these kernels load whole rows and run
    ~15% faster with 512-bit ones (benchmarks/sparse_kernels.py). Only on CPUs with AVX-512, and
    only where the user has not set NUMBA_CPU_NAME / NUMBA_CPU_FEATURES; numba reads the setting
    when it first compiles in this process (a tuning choice: the code runs on the same CPU)."""
    if os.environ.get("NUMBA_CPU_NAME") or os.environ.get("NUMBA_CPU_FEATURES") or numba.config.CPU_FEATURES:
        return
    features = codegen.get_host_cpu_features()
    if "+avx512f" in features.split(","):
        numba.config.CPU_FEATURES = features + ",-prefer-256-bit"


def _spmm(crow, col, perm, vals, xT, bias, scale, relu, gate, yT):
    """yT[o] = act(scale * sum_k vals[perm[k]] * xT[col[k]] + bias[o]) over row o's kept weights.

    perm: an index into vals per kept weight (the transposed pattern) or empty (identity);
    bias: one per row or empty; gate: [rows, B] or empty, zeroes yT where gate <= 0 (the ReLU
    backward, as torch's threshold_backward)."""
    n, b = yT.shape
    use_perm, use_bias, use_gate = perm.shape[0] > 0, bias.shape[0] > 0, gate.shape[0] > 0
    for o in range(n):
        y = yT[o]
        for j in range(b):
            y[j] = 0.0
        k, end = crow[o], crow[o + 1]
        while k + 4 <= end:
            if use_perm:
                w0, w1, w2, w3 = vals[perm[k]], vals[perm[k + 1]], vals[perm[k + 2]], vals[perm[k + 3]]
            else:
                w0, w1, w2, w3 = vals[k], vals[k + 1], vals[k + 2], vals[k + 3]
            x0, x1, x2, x3 = xT[col[k]], xT[col[k + 1]], xT[col[k + 2]], xT[col[k + 3]]
            for j in range(b):
                y[j] += w0 * x0[j] + w1 * x1[j] + w2 * x2[j] + w3 * x3[j]
            k += 4
        while k < end:
            w0 = vals[perm[k]] if use_perm else vals[k]
            x0 = xT[col[k]]
            for j in range(b):
                y[j] += w0 * x0[j]
            k += 1
        c = bias[o] if use_bias else 0.0
        if relu:
            for j in range(b):
                y[j] = max(y[j] * scale + c, 0.0)
        elif scale != 1.0 or use_bias:
            for j in range(b):
                y[j] = y[j] * scale + c
        if use_gate:
            gr = gate[o]
            for j in range(b):
                if gr[j] <= 0.0:
                    y[j] = 0.0


def _sddmm(crow, col, gT, xT, alpha, out):
    """out[k] = alpha * gT[o] . xT[col[k]] for each kept weight k of row o."""
    n, b = gT.shape
    for o in range(n):
        g = gT[o]
        k, end = crow[o], crow[o + 1]
        while k + 4 <= end:
            x0, x1, x2, x3 = xT[col[k]], xT[col[k + 1]], xT[col[k + 2]], xT[col[k + 3]]
            s0 = s1 = s2 = s3 = np.float32(0.0)
            for j in range(b):
                gj = g[j]
                s0 += gj * x0[j]
                s1 += gj * x1[j]
                s2 += gj * x2[j]
                s3 += gj * x3[j]
            out[k], out[k + 1], out[k + 2], out[k + 3] = alpha * s0, alpha * s1, alpha * s2, alpha * s3
            k += 4
        while k < end:
            x0 = xT[col[k]]
            s0 = np.float32(0.0)
            for j in range(b):
                s0 += g[j] * x0[j]
            out[k] = alpha * s0
            k += 1


_EMPTY_I = np.empty(0, np.int32)
_EMPTY_F = np.empty(0, np.float32)
_EMPTY_F2 = np.empty((0, 0), np.float32)


def transpose(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """x [N, F] -> [F, N] contiguous (CPU float32), into `out` if given: numpy's blocked copy,
    faster than `x.t().contiguous()` (benchmarks/sparse_kernels.py)."""
    if out is None:
        out = x.new_empty(x.shape[1], x.shape[0])
    np.copyto(out.numpy(), x.detach().numpy().T)
    return out


def spmm(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, xT: torch.Tensor, out: torch.Tensor,
         bias: torch.Tensor | None = None, scale: float = 1.0, relu: bool = False,
         perm: torch.Tensor | None = None, gate: torch.Tensor | None = None) -> torch.Tensor:
    """out [rows, B] = act(scale * W xT + bias) for the CSR weight W = (crow, col, values[perm]),
    then zero where gate <= 0 if a gate [rows, B] is given.

    All CPU float32 contiguous; crow, col, perm int32. Writes `out` and returns it."""
    _compiled()[0](crow.numpy(), col.numpy(), _EMPTY_I if perm is None else perm.numpy(), values.detach().numpy(),
          xT.numpy(), _EMPTY_F if bias is None else bias.detach().numpy(), np.float32(scale), relu,
          _EMPTY_F2 if gate is None else gate.numpy(), out.numpy())
    return out


def sddmm(crow: torch.Tensor, col: torch.Tensor, gT: torch.Tensor, xT: torch.Tensor, out: torch.Tensor,
          alpha: float = 1.0) -> torch.Tensor:
    """out [nnz] = alpha * (gT @ xT.T) at the kept positions (crow, col) only."""
    _compiled()[1](crow.numpy(), col.numpy(), gT.numpy(), xT.numpy(), np.float32(alpha), out.detach().numpy())
    return out
