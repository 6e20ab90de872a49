"""Chaos test of `widecli sweep`: SIGKILL a small sweep at random moments, restart it each time.

Checks that every run finishes exactly once (a finished result.json is never rewritten or lost),
that no half-written run directory is ever read as finished, and that the final runs.csv equals an
uninterrupted sweep's (ignoring timing columns). Prints kills, runs lost, runs duplicated.

    python benchmarks/chaos_sweep.py [--kills 20] [--jobs 1] [--seed 0] [--data-root DIR]
    python benchmarks/chaos_sweep.py --procs 4 --kills 20   # four sweeps at once, random kills among them
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from widecli.config.schema import RunSpec
from widecli.execute import sweep
from widecli.recipes import expand, load_recipe
from widecli.store import runs as store
from widecli.store.lock import LOCKS

NAME = "chaos"


def write_recipe(folder: Path, data_root: Path, kills: int, window: float = 0.8) -> Path:
    """A tiny MLP study with enough stacked groups that a sweep outlives `kills` restarts."""
    # A restart trains up to ~9 stacked groups before its kill lands with window 0.8 s (~0.1 s per
    # group on 2 busy cores; measured): 5 factors (10 groups) per kill and second of window, so all
    # kills land before the sweep is done (80 factors for 20 kills at 0.8 s, 6 for 3 at 0.4 s).
    factors = [1 + 0.5 * i for i in range(max(2, round(5 * kills * window)))]
    raw = {"name": NAME, "data": {"dataset": "mnist1d", "root": str(data_root)},
           "model": {"arch": "mlp", "hidden": [16]},
           "widen": {"layers": "first", "factors": factors, "methods": ["sparse", "dense"]},
           "train": {"epochs": 2, "batch_size": 128, "lr": 0.05}, "seeds": [0, 1]}
    path = folder / f"{NAME}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def starts(results: Path) -> int:
    """How many runs sweeps have started on this results directory (from the journal)."""
    try:
        return sum(" start " in line for line in (results / NAME / LOCKS / "journal.log").open())
    except FileNotFoundError:
        return 0


def launch(recipe: Path, results: Path, jobs: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "widecli", "sweep", str(recipe), "--results", str(results), "--device", "cpu",
           "--jobs", str(jobs)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())


def _env() -> dict:
    # Start-up (importing torch) is most of a restart; one thread keeps 2-core machines responsive.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def kill_at_random(proc: subprocess.Popen, results: Path, rng: random.Random, window: float) -> bool:
    """SIGKILL `proc` a random moment after it starts training a run; False if it finished first."""
    seen = starts(results)
    deadline = time.monotonic() + 120
    while starts(results) == seen and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(rng.uniform(0, window))
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()  # reap it, so its pid is really gone when the next sweep judges its locks stale
    return True


def snapshot(results: Path) -> tuple[dict[str, str], int]:
    """run_id -> content checksum of every finished run, and how many of those are half-written."""
    done, bad = {}, 0
    root = results / NAME
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if not d.is_dir() or d.name == LOCKS or not store.is_finished(d):
            continue
        result = store.read_result(d)
        done[d.name] = result["checksums"]["content"]
        bad += not complete(d, result)
    return done, bad


def complete(d: Path, result: dict) -> bool:
    """A run read as finished really is: all epochs in metrics.csv, a loadable model, its own spec."""
    try:
        spec = RunSpec.model_validate(yaml.safe_load((d / store.SPEC).read_text()))
        rows = len(pd.read_csv(d / store.METRICS))
        if result["status"] != "failed":
            torch.load(d / store.MODEL, map_location="cpu", weights_only=True)
        return spec.run_id == d.name and rows == result["final"].get("epochs_run", rows)
    except Exception:
        return False


def comparable(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    df = df.drop(columns=[c for c in sweep.TIMING_COLUMNS if c in df])
    return df.sort_values("run_id").reset_index(drop=True)


def same_runs_csv(a: Path, b: Path) -> bool:
    """Equal apart from timings and how a run was executed: a run redone alone after its stacked
    partner had finished (stacked_with 1, not 2) differs from the stacked computation by fp32
    rounding (measured: 1 ulp of one train_loss), so floats compare to 1e-4 relative."""
    x, y = (comparable(p).drop(columns="stacked_with", errors="ignore") for p in (a, b))
    try:
        pd.testing.assert_frame_equal(x, y, check_exact=False, rtol=1e-4)
        return True
    except AssertionError:
        return False


def chaos(kills: int = 20, jobs: int = 1, seed: int = 0, data_root: Path | None = None,
          workdir: Path | None = None, window: float = 0.8) -> dict:
    """Run the chaos experiment; returns its figures."""
    rng = random.Random(seed)
    work = Path(workdir or tempfile.mkdtemp(prefix="widecli-chaos-"))
    data_root = Path(data_root or work / "data")
    recipe = write_recipe(work, data_root, kills, window)
    specs = expand(load_recipe(recipe))
    reference = sweep.sweep(specs, work / "reference", device="cpu")
    # Kill within about two groups' training time of a run's start (measured in the reference
    # sweep): on a fast machine a fixed window lets one restart finish the whole sweep before all
    # kills have landed.
    runs = pd.read_csv(reference.runs_csv)
    per_group = float((runs["wall_time_s"] * runs["stacked_with"]).median())
    window = min(window, max(0.02, 2 * per_group))
    results = work / "results"

    done, killed, lost, duplicated, half = {}, 0, set(), set(), 0
    while killed < kills:
        proc = launch(recipe, results, jobs)
        if not kill_at_random(proc, results, rng, window):
            break  # the sweep finished before this kill: nothing left to interrupt
        killed += 1
        now, bad = snapshot(results)
        half += bad
        lost |= {r for r in done if r not in now}
        duplicated |= {r for r in done if r in now and now[r] != done[r]}
        done = now
    proc = launch(recipe, results, jobs)
    _, stderr = proc.communicate()
    final, bad = snapshot(results)
    half += bad
    duplicated |= {r for r in done if r in final and final[r] != done[r]}
    lost |= {s.run_id for s in specs} - set(final)
    equal = same_runs_csv(reference.runs_csv, results / NAME / store.INDEX)
    return {"kills": killed, "runs": len({s.run_id for s in specs}), "runs_lost": len(lost),
            "runs_duplicated": len(duplicated), "half_written_read_as_finished": half,
            "runs_csv_equal": equal, "final_exit_code": proc.returncode,
            "stderr": stderr.decode(errors="replace")[-2000:], "workdir": str(work)}


def done_counts(results: Path) -> dict[str, int]:
    """run_id -> how many times a sweep stored it (journal `done` lines)."""
    counts: dict[str, int] = {}
    try:
        for line in (results / NAME / LOCKS / "journal.log").open():
            parts = line.split()
            if len(parts) > 4 and parts[3] == "done":
                counts[parts[4]] = counts.get(parts[4], 0) + 1
    except FileNotFoundError:
        pass
    return counts


def chaos_concurrent(procs: int = 4, kills: int = 20, jobs: int = 1, seed: int = 0,
                     data_root: Path | None = None, workdir: Path | None = None, window: float = 0.8) -> dict:
    """`procs` sweep processes on one results directory at once; SIGKILL a random one of them a
    random moment after a run starts, start a new one in its place, `kills` times; then let them
    finish. Every run must be stored exactly once (one journal `done` line; a finished result is
    never rewritten) and runs.csv must equal an uninterrupted sweep's."""
    rng = random.Random(seed)
    work = Path(workdir or tempfile.mkdtemp(prefix="widecli-chaos4-"))
    data_root = Path(data_root or work / "data")
    recipe = write_recipe(work, data_root, kills * 4, window)  # four sweeps share the groups: 4x as many
    specs = expand(load_recipe(recipe))
    t0 = time.monotonic()
    reference = sweep.sweep(specs, work / "reference", device="cpu")
    reference_s = time.monotonic() - t0
    results = work / "results"
    t0 = time.monotonic()
    live = [launch(recipe, results, jobs) for _ in range(procs)]
    done, killed, lost, rewritten, half, exits = {}, 0, set(), set(), 0, []
    while killed < kills and any(p.poll() is None for p in live):
        seen, deadline = starts(results), time.monotonic() + 120
        while starts(results) == seen and any(p.poll() is None for p in live) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, window))
        running = [p for p in live if p.poll() is None]
        if not running:
            break
        victim = rng.choice(running)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed += 1
        live.remove(victim)
        live.append(launch(recipe, results, jobs))
        now, bad = snapshot(results)
        half += bad
        lost |= {r for r in done if r not in now}
        rewritten |= {r for r in done if r in now and now[r] != done[r]}
        done = now
    for p in live:
        p.communicate()
        exits.append(p.returncode)
    elapsed = time.monotonic() - t0
    final_proc = launch(recipe, results, jobs)  # must find nothing left to do
    _, stderr = final_proc.communicate()
    final, bad = snapshot(results)
    half += bad
    rewritten |= {r for r in done if r in final and final[r] != done[r]}
    lost |= {s.run_id for s in specs} - set(final)
    counts = done_counts(results)
    stored_twice = {r for r, n in counts.items() if n > 1}
    return {"procs": procs, "kills": killed, "runs": len({s.run_id for s in specs}), "runs_lost": len(lost),
            "runs_duplicated": len(rewritten | stored_twice), "half_written_read_as_finished": half,
            "runs_csv_equal": same_runs_csv(reference.runs_csv, results / NAME / store.INDEX),
            "survivor_exit_codes": sorted(set(exits)), "final_exit_code": final_proc.returncode,
            "seconds": round(elapsed, 1),
            "uninterrupted_seconds": round(reference_s, 1),
            "stderr": stderr.decode(errors="replace")[-2000:], "workdir": str(work)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--procs", type=int, default=1,
                    help="sweep processes on the results directory at once (> 1: kill a random one)")
    ap.add_argument("--data-root", type=Path, default=Path("~/.cache/widecli").expanduser())
    args = ap.parse_args()
    if args.procs > 1:
        fig = chaos_concurrent(args.procs, args.kills, args.jobs, args.seed, args.data_root)
        keys = ("procs", "kills", "runs", "runs_lost", "runs_duplicated", "half_written_read_as_finished",
                "runs_csv_equal", "survivor_exit_codes", "final_exit_code", "seconds", "uninterrupted_seconds",
                "workdir")
    else:
        fig = chaos(args.kills, args.jobs, args.seed, args.data_root)
        keys = ("kills", "runs", "runs_lost", "runs_duplicated", "half_written_read_as_finished",
                "runs_csv_equal", "final_exit_code", "workdir")
    for k in keys:
        print(f"{k}: {fig[k]}")
    ok = (fig["runs_lost"] == fig["runs_duplicated"] == fig["half_written_read_as_finished"] == 0
          and fig["runs_csv_equal"] and fig["final_exit_code"] == 0)
    if not ok:
        print(fig["stderr"], file=sys.stderr)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
