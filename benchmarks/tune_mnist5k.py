"""Does `widecli tune` find the paper's per-width learning rates? (issue 28's check)

The paper's MLP on mnist5k (`recipes/paper/mlp_mnist.yaml`, 299 epochs, 2,048 training images, NTK
parameterization, the official numerics) at widths 8, 32 and 128 (factors 1, 4, 16), sparse, 5 seeds,
with a 952-image validation split. Two commands, each a fresh process, timed (wall and CPU of the
children):
  1. `widecli sweep` at the official table's learning rates (5 / 136 / 260): their validation accuracy;
  2. `widecli tune --range train.lr=LOW:HIGH --trials N`: the learning rate it finds per width.
Criterion: the tuned rates' validation accuracy within 1 point of the official rates'.
Writes benchmarks/results/tune_mnist5k.txt and copies the tuning report (tune.md, tune.png,
overlay.yaml) to benchmarks/results/tune_mnist5k/.

    nice -n 5 python benchmarks/tune_mnist5k.py [--trials 12] [--range 1:1000] [--results DIR]

Resumable: the runs and the Optuna storage stay in --results; rerunning continues (and then times
only what was left).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "paper" / "mlp_mnist.yaml"
SETS = ["--set", "data.validation=952", "--set", "widen.factors=[1,4,16]", "--set", "widen.methods=[sparse]"]
OFFICIAL = {1.0: 5.0, 4.0: 136.0, 16.0: 260.0}
OUT = ROOT / "benchmarks" / "results"


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall s, CPU s of the child) of one command; its output goes to our stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.monotonic() - t0, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def val_accuracy(results: Path, factor: float, lr: float) -> tuple[float, float]:
    """(mean, std over seeds) of the stored final validation accuracy of the runs at this factor and
    lr (the runs a tuning trial at this lr would train: the same run ids as the sweep's)."""
    import numpy as np

    from widecli.analysis import tune
    from widecli.recipes import load_recipe
    from widecli.store import runs as store

    r = load_recipe(RECIPE, SETS[1::2], warn=lambda m: None)
    s = tune.setup(r, str(RECIPE), [tune.Space("train.lr", 1, 1000)], 1, results)
    [cell] = [c for c in s.cells if c.factor == factor]
    vals = [store.read_result(store.run_dir(results, x))["final"]["val_accuracy"]
            for x in tune.cell_specs(s, cell, {"train.lr": lr})]
    return float(np.mean(vals)), float(np.std(vals, ddof=1))


def rebase(overlay: Path) -> None:
    """The copied overlay's `base:` made relative to its new folder (it still runs from there)."""
    lines = overlay.read_text().splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("base: "))
    lines[i] = f"base: {os.path.relpath(RECIPE, overlay.parent)}"
    overlay.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--range", default="1:1000")
    ap.add_argument("--results", type=Path, default=Path("/tmp/widecli-tune-mnist5k"))
    args = ap.parse_args()
    widecli = [sys.executable, "-m", "widecli.cli.app"]
    common = [*SETS, "--results", str(args.results), "--device", "cpu"]
    load = os.getloadavg()
    sweep_wall, sweep_cpu = timed([*widecli, "sweep", str(RECIPE), *common])
    tune_cmd = ["tune", str(RECIPE), *SETS, "--range", f"train.lr={args.range}", "--trials", str(args.trials)]
    tune_wall, tune_cpu = timed([*widecli, *tune_cmd, "--results", str(args.results), "--device", "cpu"])

    folder = args.results / "mlp_mnist_official" / "tune"
    dest = OUT / "tune_mnist5k"
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("tune.md", "tune.png", "overlay.yaml"):
        shutil.copy(folder / name, dest / name)
    rebase(dest / "overlay.yaml")
    import yaml

    tuned = {float(f): v for f, v in yaml.safe_load((folder / "overlay.yaml").read_text())["widen"]["per_factor"]
             ["train.lr"].items()}
    lines = [f"# widecli {' '.join(tune_cmd)} (widecli tune on mnist5k vs the official learning rates)",
             f"# {time.strftime('%Y-%m-%d')}; load average at start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
             f"on {os.cpu_count()} cores; nice 5; --device cpu",
             f"# official-rate sweep (15 runs): wall {sweep_wall / 60:.1f} min, CPU {sweep_cpu / 60:.1f} min",
             f"# tune ({args.trials} trials x 3 cells x 5 seeds, pruning on): wall {tune_wall / 60:.1f} min, "
             f"CPU {tune_cpu / 60:.1f} min",
             "width  official lr  val % (mean±std, 5 seeds)  tuned lr  val % (mean±std)  tuned - official (points)  "
             "within 1 point"]
    ok = True
    for f, lr in OFFICIAL.items():
        o_mean, o_std = val_accuracy(args.results, f, lr)
        t_mean, t_std = val_accuracy(args.results, f, tuned[f])
        diff = 100 * (t_mean - o_mean)
        ok &= diff >= -1.0
        lines.append(f"{int(8 * f):5d}  {lr:11g}  {100 * o_mean:6.2f} ± {100 * o_std:4.2f}             "
                     f"{tuned[f]:8.4g}  {100 * t_mean:6.2f} ± {100 * t_std:4.2f}   {diff:+6.2f}                     "
                     f"{'yes' if diff >= -1.0 else 'NO'}")
    lines.append(f"# criterion (every tuned rate's validation accuracy >= the official's - 1 point): "
                 f"{'met' if ok else 'NOT met'}")
    (OUT / "tune_mnist5k.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps({"wall_min": (sweep_wall + tune_wall) / 60, "cpu_min": (sweep_cpu + tune_cpu) / 60}))


if __name__ == "__main__":
    main()
