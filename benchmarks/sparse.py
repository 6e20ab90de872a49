"""Sparse-wide MLP epoch time relative to its dense baseline (f = 1), dense masked vs CSR backend.

At widening factor f with the budget held fixed, the sparse-wide model has the baseline's nonzeros
(equal useful FLOPs) at connectivity about 1/f, but the dense masked path multiplies all f times
as many weights. The CSR backend (widecli/sparsity/csr.py) multiplies only the kept ones; both
give the same results (tests/sparsity/test_csr.py), so their accuracies printed must agree.

    python benchmarks/sparse.py [--hidden 64] [--factors 2 4 10 32] [--threads 2]
"""

from __future__ import annotations

import argparse

from common import header, interleaved, mnist_shaped, parse, spec, train_time

from widecli.methods import plan_weights as plan


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=64, help="baseline width h of 784-h-10")
    ap.add_argument("--factors", type=float, nargs="+", default=[2, 4, 10, 32])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    args = parse(ap)
    data = mnist_shaped(repeat=3)
    header(f"sparse-wide MLP, 784-{args.hidden}f-10 at the baseline's nonzeros, batch 128, SGD, "
           f"{len(data.y_train)} train examples, {args.epochs} epochs")
    print("# epoch time = fastest epoch after the first, best of interleaved repeats; "
          "x base = epoch time / dense baseline (f = 1)")
    print(f"{'f':>4} {'width':>6} {'conn':>6} {'dense-mask s':>12} {'x base':>7} {'sparse s':>9} "
          f"{'x base':>7} {'sparse gain':>11} {'acc dense':>9} {'acc sparse':>10}")
    accs: dict[str, float] = {}

    def timed(s, key):
        def go():
            t, [o] = train_time([s], data)
            accs[key] = o.final["test_accuracy"]
            return t
        return go
    base_spec = spec(hidden=args.hidden, epochs=args.epochs)
    for f in args.factors:
        dense = spec(hidden=args.hidden, factor=f, method="sparse", epochs=args.epochs, backend="dense")
        sparse = spec(hidden=args.hidden, factor=f, method="sparse", epochs=args.epochs, backend="sparse")
        med = interleaved({"base": timed(base_spec, "base"), "dense": timed(dense, "dense"),
                           "sparse": timed(sparse, "sparse")}, args.repeats)
        p = plan(dense, data.input_shape, 10)
        print(f"{f:>4g} {p.widths['fc1']:>6} {p.connectivity:>6.3f} {med['dense']:>12.4f} "
              f"{med['dense'] / med['base']:>6.2f}x {med['sparse']:>9.4f} {med['sparse'] / med['base']:>6.2f}x "
              f"{med['dense'] / med['sparse']:>10.2f}x {accs['dense']:>9.4f} {accs['sparse']:>10.4f}", flush=True)
    print(f"# dense baseline (f = 1): test accuracy {accs['base']:.4f}")


if __name__ == "__main__":
    main()
