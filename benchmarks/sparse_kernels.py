"""The kernels one sparse step is made of, against the dense GEMMs of the baseline at the same number
of nonzero weights: PyTorch's CSR kernels and widecli's own (widecli/sparsity/csr_cpu.py, numba).

The first layer of the sparse-wide 784-64f-10 MLP at f = 10 keeps the baseline's 784 x 64 weights
among 784 x 640 (connectivity 0.1). A step needs its forward (x @ W.T) and its weight gradient at
the kept positions (g.T @ x sampled: SDDMM); the first layer needs no input gradient. Times per
call (batch 128, median of 50 after a warm-up), in ms, and as multiples of the baseline's dense GEMM:

    python benchmarks/sparse_kernels.py [--threads 1] [--factor 10]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from common import header, parse

from widecli.sparsity import csr_cpu as kernels

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


def ms(fn, n: int = 50) -> float:
    fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--factor", type=int, default=10)
    ap.add_argument("--batch", type=int, default=128)
    args = parse(ap)
    header(f"sparse kernels at equal nonzeros: first layer 784 x 64 (baseline) vs 784 x {64 * args.factor} "
           f"at connectivity {1 / args.factor:.3g}, batch {args.batch}")
    g = torch.Generator().manual_seed(0)
    b, n_in, base, wide = args.batch, 784, 64, 64 * args.factor
    x = torch.randn(b, n_in, generator=g)
    w_base = torch.randn(base, n_in, generator=g)
    w_wide = torch.randn(wide, n_in, generator=g)
    keep = torch.zeros(wide * n_in, dtype=torch.bool)
    keep[torch.randperm(wide * n_in, generator=g)[: base * n_in]] = True
    w_masked = w_wide * keep.view(wide, n_in)
    csr = w_masked.to_sparse_csr()
    grad_base, grad_wide = torch.randn(b, base, generator=g), torch.randn(b, wide, generator=g)
    xt, gt = x.t().contiguous(), grad_wide.t().contiguous()
    rows = torch.repeat_interleave(torch.arange(wide), csr.crow_indices().diff())
    cols = csr.col_indices()
    crow32, col32, vals = csr.crow_indices().int(), cols.int(), csr.values()
    y_t, dw = torch.empty(wide, b), torch.empty_like(vals)
    rows_ = [
        ("baseline dense forward  x @ W.T (784x64)", ms(lambda: x @ w_base.t())),
        ("baseline dense weight gradient g.T @ x", ms(lambda: grad_base.t() @ x)),
        ("masked dense forward (784 x wide)", ms(lambda: x @ w_masked.t())),
        ("masked dense weight gradient", ms(lambda: grad_wide.t() @ x)),
        ("CSR forward  torch.sparse.mm(W, x.T)", ms(lambda: torch.sparse.mm(csr, xt))),
        ("CSR weight gradient torch.sparse.sampled_addmm", ms(lambda: torch.sparse.sampled_addmm(csr, gt, x))),
        ("gathered weight gradient (g.T[r] * x.T[c]).sum(1)", ms(lambda: (gt.index_select(0, rows)
                                                                        * xt.index_select(0, cols)).sum(1))),
        ("widecli forward  kernels.spmm", ms(lambda: kernels.spmm(crow32, col32, vals, xt, y_t))),
        ("widecli weight gradient kernels.sddmm", ms(lambda: kernels.sddmm(crow32, col32, gt, xt, dw))),
        ("input transpose  kernels.transpose(x)", ms(lambda: kernels.transpose(x, xt))),
    ]
    torch.testing.assert_close(y_t, torch.sparse.mm(csr, xt), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(dw, torch.sparse.sampled_addmm(csr, gt, x, beta=0.0).values(), rtol=1e-4, atol=1e-4)
    ref = rows_[0][1]
    print(f"{'kernel':<52} {'ms':>7} {'x baseline forward':>18}")
    for name, t in rows_:
        print(f"{name:<52} {t:>7.3f} {t / ref:>17.2f}x")
    t = dict(rows_)
    base_step = rows_[0][1] + rows_[1][1]
    print(f"first layer, forward + weight gradient, as multiples of the baseline's {base_step:.3f} ms: "
          f"dense masked {(rows_[2][1] + rows_[3][1]) / base_step:.2f}x, PyTorch CSR "
          f"{(rows_[4][1] + rows_[5][1]) / base_step:.2f}x, widecli CSR "
          f"{(t['widecli forward  kernels.spmm'] + t['widecli weight gradient kernels.sddmm']) / base_step:.2f}x")


if __name__ == "__main__":
    main()
