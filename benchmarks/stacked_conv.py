"""K convnet seeds trained as one stacked model (grouped convolutions) vs the same K runs one by one.

(a) the digits `cnn` (k = 4, three conv blocks, BatchNorm, batch 32, the committed study's model) with
K = 8 seeds; (b) ResNet-18 at width 8 on CIFAR-shaped synthetic data (random 3x32x32 images, batch
128) with K = 4. Both sides use widecli's trainer; stacked runs equal solo runs within float
tolerance (tests/engine/test_stacked_conv.py). Prints the time of all K runs per epoch (fastest epoch
after the first, best of interleaved repeats) and the speed-up per run.

    python benchmarks/stacked_conv.py [--threads 1] [--repeats 2] [--images 1024]
"""

from __future__ import annotations

import argparse

import torch
from common import header, parse, solo_vs_stacked

from widecli.config.schema import Recipe
from widecli.data.resident import DeviceDataset, load_dataset
from widecli.engine import threads
from widecli.recipes import make_spec


def conv_spec(arch: str, width: int, dataset: str, seed: int, batch: int, factor: float = 1):
    r = Recipe.model_validate({"name": "bench", "data": {"dataset": dataset}, "model": {"arch": arch, "width": width},
                               "widen": {"layers": "all", "factors": [factor], "methods": ["sparse"]},
                               "sparsity": {"rule": "leveling"},
                               "train": {"epochs": 3, "batch_size": batch, "lr": 0.05, "momentum": 0.9,
                                         "weight_decay": 5e-4, "schedule": "constant"}, "seeds": [seed]})
    return make_spec(r, factor, "sparse" if factor > 1 else "dense", seed)


def cifar_shaped(n: int) -> DeviceDataset:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)
    return DeviceDataset("cifar10", x, y, x[: n // 4], y[: n // 4], 10)


def compare(name: str, specs, data, repeats: int) -> None:
    t, solo_acc, stacked_acc = solo_vs_stacked(specs, data, repeats)
    print(f"{name:<44} {len(specs):>2} {t['solo']:>12.3f} {t['stacked']:>10.3f} {t['solo'] / t['stacked']:>7.2f}x "
          f"{100 * solo_acc:>12.2f} {100 * stacked_acc:>15.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--images", type=int, default=1024, help="CIFAR-shaped training images for (b)")
    args = parse(ap)
    header("stacked convnets (grouped convolutions) vs one by one")
    print(f"# {threads.settings().requested or 'auto'} thread(s) per run; time for all K runs per epoch")
    print(f"{'model':<44} {'K':>2} {'one by one s':>12} {'stacked s':>10} {'speed-up':>8} "
          f"{'acc solo %':>12} {'acc stacked %':>15}")
    digits = load_dataset(conv_spec("cnn", 4, "digits", 0, 32).data, "cpu")
    compare("digits cnn k=4, batch 32, dense", [conv_spec("cnn", 4, "digits", s, 32) for s in range(8)],
            digits, args.repeats)
    compare("digits cnn k=4, batch 32, sparse f=4", [conv_spec("cnn", 4, "digits", s, 32, 4) for s in range(8)],
            digits, args.repeats)
    cifar = cifar_shaped(args.images)
    compare(f"resnet18 w8, CIFAR-shaped ({args.images} imgs), batch 128",
            [conv_spec("resnet18", 8, "cifar10", s, 128) for s in range(4)], cifar, args.repeats)


if __name__ == "__main__":
    main()
