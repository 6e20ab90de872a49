"""One run path: `widecli train` takes the same lock, journal and store writes as `sweep`, so it is
resumable (a finished run is not trained again) and safe beside a sweep training the same run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from helpers import invoke

from widecli.data.resident import load_dataset
from widecli.execute.run import state_of, train_group
from widecli.recipes import expand, load_recipe
from widecli.store import lock
from widecli.store import runs as store
from widecli.store.lock import LOCKS

ROOT = Path(__file__).resolve().parents[2]


def _journal(results: Path, recipe: str) -> list[list[str]]:
    path = results / recipe / LOCKS / "journal.log"
    return [line.split()[3:] for line in path.read_text().splitlines()] if path.exists() else []


def test_train_twice_trains_once(make_recipe, tmp_path):
    recipe, results = make_recipe(), tmp_path / "results"
    args = ["train", str(recipe), "--factor", "2", "--method", "sparse", "--results", str(results), "--device", "cpu"]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    [result] = list((results / "tiny").glob("*/result.json"))
    stamp = result.stat().st_mtime_ns
    second = invoke(*args)
    assert second.exit_code == 0, second.output
    assert "already finished" in second.output
    assert result.stat().st_mtime_ns == stamp
    assert [w[0] for w in _journal(results, "tiny")] == ["start", "done"]
    forced = invoke(*args + ["--force"])
    assert forced.exit_code == 0 and "already finished" not in forced.output
    assert [w[0] for w in _journal(results, "tiny")] == ["start", "done", "start", "done"]


def test_train_beside_a_sweep_of_the_same_run_trains_it_once(make_recipe, tmp_path):
    # One run (factor 1, one seed), long enough that the sweep still trains when `train` starts.
    recipe = make_recipe({"widen": {"factors": [1], "methods": ["dense"]}, "train": {"epochs": 400}})
    results = tmp_path / "results"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["--results", str(results), "--device", "cpu"]
    sweep = subprocess.Popen([sys.executable, "-m", "widecli", "sweep", str(recipe), *common], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    locks = results / "tiny" / LOCKS
    deadline = time.monotonic() + 120
    while not (locks.is_dir() and any(locks.glob("*.lock"))):  # the sweep's lock: it is training now
        assert sweep.poll() is None, sweep.communicate()[0].decode()
        assert time.monotonic() < deadline, "the sweep never took its run's lock"
        time.sleep(0.05)
    train = subprocess.run([sys.executable, "-m", "widecli", "train", str(recipe), *common], env=env,
                           capture_output=True, text=True, cwd=ROOT, timeout=300)
    sweep_out = sweep.communicate(timeout=300)[0].decode()
    assert sweep.returncode == 0, sweep_out
    assert train.returncode == 0, train.stdout + train.stderr
    # It either waited for the sweep's lock or found the run finished: never trained it again.
    assert "trained by another process" in train.stdout or "already finished" in train.stdout, train.stdout
    starts = [w for w in _journal(results, "tiny") if w[0] == "start"]
    assert len(starts) == 1, _journal(results, "tiny")
    assert len(list((results / "tiny").glob("*/result.json"))) == 1


def test_train_waits_for_a_live_lock_then_finds_the_run_finished(make_recipe, tmp_path):
    """Deterministic: this test holds the run's lock (as a sweep would), `train` must wait, and when
    the holder has written the run, `train` finds it finished instead of training it again."""
    recipe = make_recipe({"widen": {"factors": [1], "methods": ["dense"]}})
    results = tmp_path / "results"
    [spec] = expand(load_recipe(recipe))
    held = lock.try_lock(results, spec)
    assert held is not None
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    train = subprocess.Popen([sys.executable, "-m", "widecli", "train", str(recipe), "--results", str(results),
                              "--device", "cpu"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, cwd=ROOT)
    seen = []
    for line in train.stdout:  # the event: train says it waits for another process
        seen.append(line)
        if "waiting for 1 runs another process is training" in line:
            break
    else:
        raise AssertionError("train never waited:\n" + "".join(seen))
    assert not any(results.glob("tiny/*/result.json"))
    # The lock holder trains and writes the run, then releases its lock.
    lock.journal(results, "tiny", "start", spec.run_id)
    ds = load_dataset(spec.data)
    for o, result in train_group([spec], torch.device("cpu"), ds):
        store.write_run(results, o.spec, o.metrics, result, state_of(o))
    lock.journal(results, "tiny", "done", spec.run_id, "ok")
    held.release()
    rest = train.communicate(timeout=120)[0]
    assert train.returncode == 0, "".join(seen) + rest
    assert "trained by another process" in rest, rest
    assert [w[0] for w in _journal(results, "tiny")] == ["start", "done"]
