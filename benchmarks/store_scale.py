"""Costs at scale: planning, resuming and reporting over a store of ~1,000 and ~10,000 runs.

Writes synthetic finished runs in the real store format (store.write_run: spec.yaml, metrics.csv with
10 epochs, result.json with checksums; no weights, as the committed studies) for a recipe whose grid
is 50 factors x {sparse, dense} x S seeds, then times the commands a researcher runs on it, each in
a fresh process (start-up included, as the user sees it):

- `widecli sweep RECIPE --dry-run --json` (plan: every run's status, verified),
- `widecli sweep RECIPE` with everything finished (resume: plan, "nothing to train", runs.csv),
- `widecli report RESULTS --table1` (load every result, group into studies, Table 1, write files),

and each process's peak memory. Target (issue 20): each under 30 s at 10,000 runs and within 1.5x
of 10 x the 1,000-run time (no quadratic step).

    python benchmarks/store_scale.py [--seeds 10 100] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from widecli.execute.run import weights_summary
from widecli.methods import plan_weights
from widecli.recipes import expand, load_recipe
from widecli.store import runs as store

FACTORS = [1 + 0.25 * i for i in range(50)]


def write_recipe(folder: Path, seeds: int) -> Path:
    raw = {"name": f"scale{seeds}", "data": {"dataset": "mnist1d"}, "model": {"arch": "mlp", "hidden": [32]},
           "widen": {"layers": "first", "factors": FACTORS, "methods": ["sparse", "dense"]},
           "sparsity": {"rule": "leveling"}, "train": {"epochs": 10, "lr": 0.05}, "seeds": list(range(seeds))}
    path = folder / f"scale{seeds}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def fill(recipe: Path, results: Path) -> int:
    """Store every run of the recipe as finished (synthetic metrics, real format)."""
    specs = expand(load_recipe(recipe))
    for i, s in enumerate(specs):
        acc = 0.5 + 0.1 * (i % 7) / 7
        rows = [{"epoch": e, "lr": 0.05, "train_loss": 1.0 / e, "train_accuracy": acc, "test_loss": 1.1 / e,
                 "test_accuracy": acc - 0.01, "seconds": 0.01} for e in range(1, 11)]
        final = {"test_accuracy": acc - 0.01, "test_loss": 0.11, "train_accuracy": acc, "train_loss": 0.1,
                 "best_test_accuracy": acc, "epochs_run": 10, "diverged_at_epoch": None, "wall_time_s": 0.1,
                 "stacked_with": 1, "backend": "dense", "sparse_layers": "", "fused_step": True, "device": "cpu",
                 "device_name": "cpu", "precision": "fp32", "peak_memory_bytes": 0, "threads": 1}
        result = {"status": "ok", "error": None, "final": final,
                  "weights": weights_summary(plan_weights(s, (40,), 10)),
                  "data": {"input_shape": [40], "num_classes": 10, "train_size": 4000, "test_size": 1000}}
        store.write_run(results, s, rows, result)
    store.rebuild_index(results, specs[0].recipe, verify_files=False)
    return len(specs)


def timed(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of a command in a fresh process."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "COLUMNS": "120"})
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def measure(seeds: int, work: Path) -> dict:
    results = work / f"results{seeds}"
    recipe = write_recipe(work, seeds)
    t0 = time.perf_counter()
    n = fill(recipe, results)
    fill_s = time.perf_counter() - t0
    widecli = [sys.executable, "-m", "widecli"]
    out = {"runs": n, "fill_s": fill_s}
    out["dry_run_s"], out["dry_run_mb"] = timed(widecli + ["sweep", str(recipe), "--results", str(results),
                                                           "--dry-run", "--json"])
    out["resume_s"], out["resume_mb"] = timed(widecli + ["sweep", str(recipe), "--results", str(results),
                                                         "--device", "cpu"])
    out["report_s"], out["report_mb"] = timed(widecli + ["report", str(results), "--table1"])
    out["startup_s"], _ = timed(widecli + ["--version"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[10, 100], help="seeds per grid point (10: ~1,000 runs)")
    ap.add_argument("--keep", type=Path, help="write the stores here and keep them")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="widecli-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    print("# store at scale: fresh process per command (start-up included); peak RSS is the largest child so far")
    print(f"{'runs':>6} {'start-up s':>10} {'dry-run s':>9} {'resume s':>9} {'report s':>9} {'peak MiB':>9} "
          f"{'per 1k runs: dry-run / resume / report s':>42}")
    rows = []
    for seeds in args.seeds:
        m = measure(seeds, work)
        rows.append(m)
        per = [f"{(m[k] - m['startup_s']) / m['runs'] * 1000:.2f}" for k in ("dry_run_s", "resume_s", "report_s")]
        print(f"{m['runs']:>6} {m['startup_s']:>10.2f} {m['dry_run_s']:>9.2f} {m['resume_s']:>9.2f} "
              f"{m['report_s']:>9.2f} {max(m['dry_run_mb'], m['resume_mb'], m['report_mb']):>9.0f} "
              f"{' / '.join(per):>42}", flush=True)
    if len(rows) >= 2:
        small, big = rows[0], rows[-1]
        scale = big["runs"] / small["runs"]
        for k in ("dry_run_s", "resume_s", "report_s"):
            ratio = big[k] / (scale * small[k])
            print(f"{k[:-2]}: {big[k]:.1f} s at {big['runs']} runs = {ratio:.2f} x ({scale:.1f} x the "
                  f"{small['runs']}-run time); target < 30 s and <= 1.5 x: "
                  f"{'met' if big[k] < 30 and ratio <= 1.5 else 'NOT met'}")


if __name__ == "__main__":
    main()
