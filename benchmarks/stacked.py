"""K seeds trained as one stacked model (batched matmuls) vs the same K runs one by one.

Both sides use widecli's trainer; the stacked runs equal the solo runs within float tolerance
(tests/engine/test_stacked.py), so the accuracies printed must match. Convnets: benchmarks/stacked_conv.py.

    python benchmarks/stacked.py [--k 8] [--hidden 64 256 1024] [--threads 2]
"""

from __future__ import annotations

import argparse

from common import header, mnist_shaped, parse, solo_vs_stacked, spec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--hidden", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    args = parse(ap)
    data = mnist_shaped()
    header(f"K = {args.k} seeds stacked vs one by one: 784-h-10 MLP, batch 128, SGD, "
           f"{len(data.y_train)} train examples, {args.epochs} epochs")
    print("# time for all K runs per epoch: fastest epoch after the first, best of interleaved repeats")
    print(f"{'h':>5} {'one by one s':>12} {'stacked s':>10} {'speed-up':>8} {'mean acc solo':>13} "
          f"{'mean acc stacked':>16}")
    for h in args.hidden:
        specs = [spec(hidden=h, epochs=args.epochs, seed=s) for s in range(args.k)]
        med, solo_acc, stacked_acc = solo_vs_stacked(specs, data, args.repeats)
        print(f"{h:>5} {med['solo']:>12.4f} {med['stacked']:>10.4f} {med['solo'] / med['stacked']:>7.2f}x "
              f"{solo_acc:>13.4f} {stacked_acc:>16.4f}", flush=True)


if __name__ == "__main__":
    main()
