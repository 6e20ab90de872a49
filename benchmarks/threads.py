"""Intra-op threads: where a second thread pays, and what the default costs on a shared machine.

Part 1 (in-process, idle): seconds per epoch of the 784-h-10 MLP at 1 and 2 threads for widths h
spanning the auto rule's threshold (engine.threads.SMALL_STEP_MACS), interleaved: the ratio says
where a second thread starts to pay.

Part 2 (processes): the quick start's baseline group (2 seeds stacked, `recipes/quickstart.yaml` at
factor 1, --epochs of them) trained by `widecli sweep` with 1 thread, 2 threads (PyTorch's default on
these 2 cores) and auto (widecli's default), each alone and beside one competing busy process (a
Python busy loop: what a second sweep, a browser or another user does to a core), interleaved.
The criterion (issue 21): auto beside the busy process within 1.5x of 1 thread alone.

    python benchmarks/threads.py [--epochs 200] [--repeats 2] [--hidden 64 256 1024 2048]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
from common import header, interleaved, mnist_shaped, spec, train_time

from widecli.engine import threads

ROOT = Path(__file__).resolve().parents[1]


def busy_process() -> subprocess.Popen:
    """One competing CPU-bound process (a Python busy loop)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def part1(hidden: list[int], repeats: int) -> None:
    data = mnist_shaped()
    print("# part 1: seconds per epoch of the 784-h-10 MLP (batch 128), fastest epoch after the first, best of "
          "interleaved repeats; idle, then beside one busy process")
    print(f"{'h':>5} {'MACs/step':>10} {'idle 1':>7} {'idle 2':>7} {'2 vs 1':>7} {'busy 1':>7} {'busy 2':>7} "
          f"{'2 vs 1':>7} {'auto':>5}")
    for h in hidden:
        s = spec(hidden=h, epochs=3)
        macs = threads.step_macs([s], (1, 28, 28), 10)

        def run(n, busy):
            def go():
                threads.configure(n)
                hog = busy_process() if busy else None
                try:
                    return train_time([s], data)[0]
                finally:
                    if hog:
                        hog.kill()
                        hog.wait()
            return go
        t = interleaved({"i1": run(1, False), "i2": run(2, False), "b1": run(1, True), "b2": run(2, True)},
                        repeats)
        threads.configure()
        auto = 1 if macs < threads.SMALL_STEP_MACS else 2
        print(f"{h:>5} {macs:>10.2g} {t['i1']:>7.3f} {t['i2']:>7.3f} {t['i1'] / t['i2']:>6.2f}x {t['b1']:>7.3f} "
              f"{t['b2']:>7.3f} {t['b1'] / t['b2']:>6.2f}x {auto:>5}", flush=True)


def sweep_seconds(threads_opt: str | None, epochs: int) -> float:
    """Training seconds of the quick start's baseline group (both seeds) in a fresh process."""
    with tempfile.TemporaryDirectory() as results:
        cmd = [sys.executable, "-m", "widecli", "sweep", str(ROOT / "recipes" / "quickstart.yaml"),
               "--set", "widen.factors=[1]", "--set", f"train.epochs={epochs}", "--results", results,
               "--device", "cpu"] + (["--threads", threads_opt] if threads_opt else [])
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "WIDECLI_THREADS")}
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        df = pd.read_csv(Path(results) / "quickstart" / "runs.csv")
        return float((df.wall_time_s * df.stacked_with).iloc[0])


def part2(epochs: int, repeats: int) -> dict:
    print(f"# part 2: the quick start's baseline group (2 seeds stacked, {epochs} epochs), training "
          f"seconds; best of {repeats} interleaved repeats")
    variants = {}
    for load in ("idle", "busy"):
        for name, opt in (("1 thread", "1"), ("2 threads", "2"), ("auto", None)):
            def go(opt=opt, load=load):
                hog = busy_process() if load == "busy" else None
                try:
                    return sweep_seconds(opt, epochs)
                finally:
                    if hog:
                        hog.kill()
                        hog.wait()
            variants[f"{name}, {load}"] = go
    t = interleaved(variants, repeats)
    base = t["1 thread, idle"]
    print(f"{'variant':<22} {'seconds':>8} {'vs 1 thread idle':>16}")
    for name, sec in t.items():
        print(f"{name:<22} {sec:>8.2f} {sec / base:>15.2f}x")
    ratio = t["auto, busy"] / base
    print(f"criterion: auto beside a busy process / 1 thread idle = {ratio:.2f} (target <= 1.5): "
          f"{'met' if ratio <= 1.5 else 'NOT met'}")
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--hidden", type=int, nargs="+", default=[64, 256, 1024, 2048, 4096])
    ap.add_argument("--skip-part1", action="store_true")
    args = ap.parse_args()
    header("intra-op threads")
    if not args.skip_part1:
        part1(args.hidden, args.repeats)
    part2(args.epochs, args.repeats)


if __name__ == "__main__":
    main()
