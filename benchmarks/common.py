"""Shared helpers of the benchmark scripts: MNIST-shaped offline data, RunSpecs, interleaved timing.

No data set can be downloaded here, so the MNIST-shaped data are MNIST-1D (generated locally, a real
learnable task) upsampled from 40 to 784 features and viewed as 1x28x28 images.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Callable

import torch

from widecli.config.schema import DataConfig, Recipe
from widecli.data.registry import load_arrays
from widecli.data.resident import DeviceDataset
from widecli.engine import threads
from widecli.recipes import make_spec


def parse(ap) -> argparse.Namespace:
    """Parse a script's arguments plus --threads (intra-op threads; 1 is the robust choice when
    other users load the machine: spinning OpenMP barriers make 2 threads erratic under load)."""
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    threads.configure(args.threads)  # the trainer sets each run's threads: to these
    return args


def mnist_shaped(device="cpu", repeat: int = 1) -> DeviceDataset:
    """MNIST-1D upsampled to 784 features, [N, 1, 28, 28]; `repeat` tiles the training set."""
    s = load_arrays(DataConfig(dataset="mnist1d"))   # data.splits.Splits (validation split: none here)
    x_train, y_train, x_test, y_test = s.x_train, s.y_train, s.x_test, s.y_test

    def up(a):
        t = torch.from_numpy(a)[:, None]
        return torch.nn.functional.interpolate(t, size=784, mode="linear").view(-1, 1, 28, 28)
    x_train, y_train = up(x_train).repeat(repeat, 1, 1, 1), torch.from_numpy(y_train).repeat(repeat)
    return DeviceDataset("mnist1d", x_train.to(device), y_train.to(device),
                                  up(x_test).to(device), torch.from_numpy(y_test).to(device), 10)


def spec(hidden: int = 64, factor: float = 1, method: str = "dense", seed: int = 0, epochs: int = 3,
         **train):
    """A RunSpec of the 784-h-10 MLP (batch 128, SGD, constant lr unless overridden)."""
    t = {"epochs": epochs, "batch_size": 128, "lr": 0.05, "momentum": 0.9, "schedule": "constant", **train}
    r = Recipe.model_validate({"name": "bench", "data": {"dataset": "mnist1d"},
                               "model": {"arch": "mlp", "hidden": [hidden]},
                               "widen": {"layers": "first", "factors": [factor], "methods": [method]},
                               "train": t, "seeds": [seed]})
    return make_spec(r, factor, method, seed)


def interleaved(variants: dict[str, Callable[[], float | None]], repeats: int = 3) -> dict[str, float]:
    """Best seconds of each variant, run round-robin so that load from other users of the machine
    hits every variant alike (noise only ever adds time, so the minimum is the most repeatable
    estimate). A variant may return its own measured seconds."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            got = fn()
            times[name].append(got if got is not None else time.perf_counter() - t0)
    return {name: min(ts) for name, ts in times.items()}


def matmul_peak(n: int = 2048, repeats: int = 5, dtype=torch.float32, device="cpu") -> float:
    """Achieved GFLOP/s of a large square matmul: the practical peak of this device and dtype."""
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def mlp_train_flops(sizes: list[int], n: int) -> float:
    """Matmul FLOPs of MLP training on n examples: forward, weight gradient and input gradient per
    layer (2 FLOPs per multiply-add), except the first layer's input gradient, never computed."""
    macs = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    return 2.0 * n * (2 * macs[0] + 3 * sum(macs[1:]))


def header(title: str, out: Callable[[str], None] = print) -> None:
    out(f"# {title}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    out(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load:.1f} on "
        f"{os.cpu_count()} cores, "
        f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU only'}")


def best_epoch(metrics: list[dict]) -> float:
    """Fastest epoch, the first (warm-up) excluded: on a shared machine the minimum is the most
    repeatable estimate of what the code costs; noise from other users only adds time."""
    times = [r["seconds"] for r in metrics]
    return min(times[1:] or times)


def train_time(specs, data, device="cpu") -> tuple[float, list]:
    """(best epoch seconds, outcomes) of widecli's trainer on these specs (stacked if several)."""
    from widecli.engine.loop import fit

    outcomes = fit(specs, data, torch.device(device))
    return best_epoch(outcomes[0].metrics), outcomes


def solo_vs_stacked(specs, data, repeats: int) -> tuple[dict[str, float], float, float]:
    """(best seconds per epoch of all runs: {"solo", "stacked"}, mean test accuracy solo, stacked) of
    K runs trained one by one and as one stacked model, interleaved."""
    accs: dict[str, list[float]] = {"solo": [], "stacked": []}

    def solo():
        total = 0.0
        for s in specs:
            t, [o] = train_time([s], data)
            total += t
            accs["solo"].append(o.final["test_accuracy"])
        return total

    def stacked():
        t, outs = train_time(specs, data)
        assert outs[0].final["stacked_with"] == len(specs), "stacking did not happen"
        accs["stacked"] += [o.final["test_accuracy"] for o in outs]
        return t
    times = interleaved({"solo": solo, "stacked": stacked}, repeats)
    return times, sum(accs["solo"]) / len(accs["solo"]), sum(accs["stacked"]) / len(accs["stacked"])
