"""Achieved GFLOP/s of widecli's MLP training as a fraction of this machine's fp32 matmul peak.

The peak is a large square fp32 matmul measured in the same run (the best of several, re-measured
beside every width, so load from other users hits both alike). Training FLOPs count the matmuls of
forward, weight gradient and input gradient (none for the first layer's input) plus the test pass.

    python benchmarks/peak.py [--hidden 64 256 1024 4096] [--epochs 3] [--threads 2]
"""

from __future__ import annotations

import argparse

from common import (
    header,
    matmul_peak,
    mlp_train_flops,
    mnist_shaped,
    parse,
    spec,
    train_time,
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, nargs="+", default=[64, 256, 1024, 4096])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeat-data", type=int, default=3)
    args = parse(ap)
    data = mnist_shaped(repeat=args.repeat_data)
    n, n_test = len(data.y_train), len(data.y_test)
    header(f"MLP training throughput vs fp32 matmul peak: 784-h-10, batch 128, SGD, {n} train examples")
    print("# epoch time = fastest epoch after the first; peak = best 2048^3 matmul measured beside it")
    print(f"{'h':>5} {'s/epoch':>8} {'GFLOP/epoch':>11} {'GFLOP/s':>8} {'peak GFLOP/s':>12} {'% of peak':>9}")
    for h in args.hidden:
        peak = matmul_peak()
        seconds, _ = train_time([spec(hidden=h, epochs=args.epochs)], data)
        peak = max(peak, matmul_peak())
        sizes = [784, h, 10]
        flops = mlp_train_flops(sizes, n) + 2.0 * n_test * sum(a * b for a, b in zip(sizes, sizes[1:]))
        rate = flops / seconds / 1e9
        print(f"{h:>5} {seconds:>8.4f} {flops / 1e9:>11.2f} {rate:>8.1f} {peak:>12.1f} {100 * rate / peak:>8.1f}%",
              flush=True)


if __name__ == "__main__":
    main()
