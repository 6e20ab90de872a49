"""Sparse-wide MLP epoch time relative to its dense baseline (f = 1): dense masked, CSR, and `auto`.

At widening factor f with the budget held fixed, the sparse-wide model has the baseline's nonzeros
(equal useful FLOPs) at connectivity about 1/f, but the dense masked path multiplies all f times
as many weights. The CSR backend (widecli/sparsity/csr.py, kernels in widecli/sparsity/csr_cpu.py,
trained by the fused step SparseFusedStep) multiplies only the kept ones; `csr` makes every masked
layer CSR (`backend: sparse`), `auto` only those `sparse_layers` picks. All three give the same
results (tests/engine/test_steps.py): the accuracies printed agree up to the drift of float
rounding over a few epochs.

    python benchmarks/sparse.py [--hidden 64] [--factors 2 3 4 6 10 32] [--threads 1]
"""

from __future__ import annotations

import argparse

from common import header, interleaved, mnist_shaped, parse, spec, train_time

from widecli.methods import plan_weights as plan


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=64, help="baseline width h of 784-h-10")
    ap.add_argument("--factors", type=float, nargs="+", default=[2, 3, 4, 6, 10, 32])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    args = parse(ap)
    data = mnist_shaped(repeat=3)
    header(f"sparse-wide MLP, 784-{args.hidden}f-10 at the baseline's nonzeros, batch 128, SGD, "
           f"{len(data.y_train)} train examples, {args.epochs} epochs")
    print("# epoch time = fastest epoch after the first, best of interleaved repeats; "
          "x base = epoch time / dense baseline (f = 1)")
    print(f"{'f':>4} {'width':>6} {'conn':>6} {'dense-mask s':>12} {'x base':>7} {'csr s':>7} {'x base':>7} "
          f"{'auto s':>7} {'x base':>7} {'auto CSR':>9} {'csr gain':>8} {'acc dense/csr/auto':>20}")
    accs: dict[str, float] = {}

    def timed(s, key):
        def go():
            t, [o] = train_time([s], data)
            accs[key] = o.final["test_accuracy"]
            accs[key + "_layers"] = o.final["sparse_layers"]
            return t
        return go
    base_spec = spec(hidden=args.hidden, epochs=args.epochs)
    wins = []
    for f in args.factors:
        runs = {b: spec(hidden=args.hidden, factor=f, method="sparse", epochs=args.epochs,
                        backend={"csr": "sparse"}.get(b, b)) for b in ("dense", "csr", "auto")}
        med = interleaved({"base": timed(base_spec, "base"), **{b: timed(s, b) for b, s in runs.items()}},
                          args.repeats)
        p = plan(runs["dense"], data.input_shape, 10)
        x = {b: med[b] / med["base"] for b in runs}
        wins.append((p.connectivity, med["dense"] / med["csr"]))
        print(f"{f:>4g} {p.widths['fc1']:>6} {p.connectivity:>6.3f} {med['dense']:>12.4f} {x['dense']:>6.2f}x "
              f"{med['csr']:>7.4f} {x['csr']:>6.2f}x {med['auto']:>7.4f} {x['auto']:>6.2f}x "
              f"{accs['auto_layers'] or '-':>9} {med['dense'] / med['csr']:>7.2f}x "
              f"{accs['dense']:>10.4f}/{accs['csr']:.4f}/{accs['auto']:.4f}", flush=True)
    print(f"# dense baseline (f = 1): test accuracy {accs['base']:.4f}, epoch {med['base']:.4f} s")
    paying = [c for c, gain in wins if gain > 1]
    print(f"# crossover: CSR beats dense masking at connectivity <= {max(paying):.3f}" if paying
          else "# crossover: CSR beats dense masking at none of these factors")


if __name__ == "__main__":
    main()
