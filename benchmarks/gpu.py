"""GPU path: ResNet-18 on CIFAR-shaped data (widths 16/64/128) and stacked-MLP throughput.

Prints epoch time, images/s, % of the device's matmul peak (bf16 on CUDA, measured in the same run
with a large matmul), peak memory, and K = 8 stacked MLPs' throughput. The data are synthetic
(random images of CIFAR shape, random labels): the speed of an epoch does not depend on the pixels.
Without a GPU it runs a reduced version on the CPU (fp32, 1024 images, width 16 only) and says so.

    python benchmarks/gpu.py [--images 50000] [--widths 16 64 128] [--compile]
"""

from __future__ import annotations

import argparse
import importlib.util

import torch
from common import header, matmul_peak, parse, spec, train_time
from torch.utils.flop_counter import FlopCounterMode

from widecli.config.expand import make_spec
from widecli.config.schema import Recipe
from widecli.data.resident import DeviceDataset


def cifar_shaped(n: int, device) -> DeviceDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return DeviceDataset("cifar10", x.to(device), y.to(device), x[: n // 5].to(device), y[: n // 5].to(device), 10)


def resnet_spec(width: int, epochs: int, compile_: bool):
    r = Recipe.model_validate({"name": "bench", "data": {"dataset": "cifar10"},
                               "model": {"arch": "resnet18", "width": width},
                               "train": {"epochs": epochs, "batch_size": 512, "lr": 0.1, "compile": compile_},
                               "widen": {"factors": [1], "methods": ["dense"]}})
    return make_spec(r, 1, "dense", 0)


def step_flops(s, data, device) -> float:
    """FLOPs of one training step (forward + backward) on one batch, counted by PyTorch."""
    from widecli.methods import build

    model = build([s], data.input_shape, data.num_classes, device).model
    x, y = data.x_train[: s.train.batch_size], data.y_train[: s.train.batch_size]
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(model(x), y).backward()
    return counter.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=50000)
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 64, 128])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="train.compile: torch.compile the model")
    args = parse(ap)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if not cuda:
        args.images, args.widths, args.epochs = 1024, [16], 2
    header("GPU path: ResNet-18 (CIFAR shape, batch 512, SGD) and stacked MLPs")
    if not cuda:
        print("# NOTE: no CUDA GPU here; reduced CPU run (fp32, 1024 images, width 16, 2 epochs). "
              "The GPU figures need a CUDA machine.")
    dtype = torch.bfloat16 if cuda else torch.float32
    peak = matmul_peak(8192 if cuda else 2048, dtype=dtype, device=device)
    print(f"# {'bf16' if cuda else 'fp32'} matmul peak measured: {peak:.0f} GFLOP/s")
    if importlib.util.find_spec("widecli.models.resnet") is None:
        print("# widecli.models.resnet is not available: ResNet-18 part skipped")
    else:
        data = cifar_shaped(args.images, device)
        print(f"{'width':>5} {'s/epoch':>8} {'images/s':>9} {'TFLOP/s':>8} {'% peak':>7} {'peak mem MiB':>12}")
        for w in args.widths:
            s = resnet_spec(w, args.epochs, args.compile)
            seconds, [o] = train_time([s], data, device)
            steps = -(-args.images // s.train.batch_size)
            rate = step_flops(s, data, device) * steps / seconds  # test pass left out: a lower bound
            print(f"{w:>5} {seconds:>8.3f} {args.images / seconds:>9.0f} {rate / 1e12:>8.2f} "
                  f"{100 * rate / (peak * 1e9):>6.1f}% {o.final['peak_memory_bytes'] / 2**20:>12.0f}", flush=True)
            if cuda:
                torch.cuda.empty_cache()
    from common import mnist_shaped
    mlp_data = mnist_shaped(device)
    n = len(mlp_data.y_train)
    for h in ([1024, 4096] if cuda else [1024]):
        specs = [spec(hidden=h, epochs=3, seed=k) for k in range(8)]
        seconds, outs = train_time(specs, mlp_data, device)
        print(f"# stacked MLP 784-{h}-10, K = 8 seeds: {seconds:.3f} s/epoch, {8 * n / seconds:,.0f} "
              f"examples/s over all seeds, peak memory {outs[0].final['peak_memory_bytes'] / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
