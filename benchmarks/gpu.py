"""GPU path: ResNet-18 on CIFAR-shaped data (widths 8/18/64, the paper's k), K = 1/4/8 seeds stacked
at width 8, and stacked-MLP throughput.

Prints epoch time, images/s per run, % of the device's matmul peak (bf16 on CUDA, measured in the
same run with a large matmul), peak memory, the stacking speed-up per run, and K = 8 stacked MLPs'
throughput; writes it all to benchmarks/results/gpu.txt. The data are synthetic (random images of
CIFAR shape, random labels): the speed of an epoch does not depend on the pixels. Without a GPU it
runs a reduced version on the CPU (fp32, 512 images, width 8, K = 1 and 2), writes
gpu_cpu_reduced.txt, and says so (tests/test_benchmarks.py runs it).

    python benchmarks/gpu.py [--images 50000] [--widths 8 18 64] [--stack 1 4 8] [--compile]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from common import header, matmul_peak, parse, spec, train_time
from torch.utils.flop_counter import FlopCounterMode

from widecli.config.schema import Recipe
from widecli.data.resident import DeviceDataset
from widecli.recipes import make_spec


def cifar_shaped(n: int, device) -> DeviceDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return DeviceDataset("cifar10", x.to(device), y.to(device), x[: n // 5].to(device), y[: n // 5].to(device), 10)


def resnet_spec(width: int, epochs: int, compile_: bool, seed: int = 0):
    r = Recipe.model_validate({"name": "bench", "data": {"dataset": "cifar10"},
                               "model": {"arch": "resnet18", "width": width},
                               "train": {"epochs": epochs, "batch_size": 512, "lr": 0.1, "compile": compile_},
                               "widen": {"factors": [1], "methods": ["dense"]}, "seeds": [seed]})
    return make_spec(r, 1, "dense", seed)


def step_flops(s, data, device) -> float:
    """FLOPs of one training step (forward + backward) on one batch, counted by PyTorch."""
    from widecli.methods import build

    model = build([s], data.input_shape, data.num_classes, device).model
    x, y = data.x_train[: s.train.batch_size], data.y_train[: s.train.batch_size]
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(model(x), y).backward()
    return counter.get_total_flops()


class Report:
    """Prints each line and keeps it, to write the whole output to a file at the end."""

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=50000)
    ap.add_argument("--widths", type=int, nargs="+", default=[8, 18, 64])
    ap.add_argument("--stack", type=int, nargs="+", default=[1, 4, 8], help="K seeds stacked at the first width")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="train.compile: torch.compile the model")
    ap.add_argument("--out", type=Path, help="write the output here (default benchmarks/results/gpu.txt, or "
                                             "gpu_cpu_reduced.txt without a GPU)")
    args = parse(ap)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if not cuda:
        args.images, args.widths, args.stack, args.epochs = min(args.images, 512), args.widths[:1], [1, 2], 2
    out = Report()
    header("GPU path: ResNet-18 (CIFAR shape, batch 512, SGD) and stacked seeds", out)
    if not cuda:
        out(f"# NOTE: no CUDA GPU here; reduced CPU run (fp32, {args.images} images, width {args.widths[0]}, "
            f"K {args.stack}, 2 epochs). The GPU figures need a CUDA machine: python benchmarks/gpu.py")
    dtype = torch.bfloat16 if cuda else torch.float32
    peak = matmul_peak(8192 if cuda else 1024, dtype=dtype, device=device)
    out(f"# {'bf16' if cuda else 'fp32'} matmul peak measured: {peak:.0f} GFLOP/s")
    data = cifar_shaped(args.images, device)
    out(f"{'width':>5} {'K':>2} {'s/epoch':>8} {'images/s/run':>12} {'TFLOP/s':>8} {'% peak':>7} {'peak mem MiB':>12}")
    rows = [(w, 1) for w in args.widths] + [(args.widths[0], k) for k in args.stack if k > 1]
    for w, k in rows:
        specs = [resnet_spec(w, args.epochs, args.compile, seed) for seed in range(k)]
        seconds, outs = train_time(specs, data, device)
        assert outs[0].final["stacked_with"] == k, "stacking did not happen"
        steps = -(-args.images // specs[0].train.batch_size)
        rate = k * step_flops(specs[0], data, device) * steps / seconds  # test pass left out: a lower bound
        out(f"{w:>5} {k:>2} {seconds:>8.3f} {args.images * k / seconds / k:>12.0f} {rate / 1e12:>8.2f} "
            f"{100 * rate / (peak * 1e9):>6.1f}% {outs[0].final['peak_memory_bytes'] / 2**20:>12.0f}")
        if k > 1:
            base = next(r for r in out.lines if r.split()[:2] == [str(w), "1"])
            out(f"#   K = {k}: {float(base.split()[2]) * k / seconds:.2f}x per run against one by one")
        if cuda:
            torch.cuda.empty_cache()
    from common import mnist_shaped
    mlp_data = mnist_shaped(device)
    n = len(mlp_data.y_train)
    for h in ([1024, 4096] if cuda else [256]):
        specs = [spec(hidden=h, epochs=3, seed=k) for k in range(8)]
        seconds, outs = train_time(specs, mlp_data, device)
        out(f"# stacked MLP 784-{h}-10, K = 8 seeds: {seconds:.3f} s/epoch, {8 * n / seconds:,.0f} "
            f"examples/s over all seeds, peak memory {outs[0].final['peak_memory_bytes'] / 2**20:.0f} MiB")
    path = args.out or Path(__file__).parent / "results" / ("gpu.txt" if cuda else "gpu_cpu_reduced.txt")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out.lines) + "\n")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
