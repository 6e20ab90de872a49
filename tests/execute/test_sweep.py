"""Sweeps: plan and resume, stacked groups, failures, --jobs, concurrent sweeps, interrupts, SIGKILL
chaos and the Ray executor. Real tiny runs on MNIST-1D; other processes are real subprocesses."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from helpers import CPU, invoke

from widecli.config.schema import RunSpec
from widecli.execute import run as runner
from widecli.execute import sweep
from widecli.execute.worklist import run_statuses, stack_groups
from widecli.execute.run import load_model
from widecli.recipes import expand, load_recipe
from widecli.store import lock as store_lock
from widecli.store import runs as store

ROOT = Path(__file__).resolve().parents[2]
# factors 1, 2 x sparse, dense x seeds 0, 1: 6 runs in 3 stacked groups (factor 1 is one dense run)
TINY = {"name": "tiny", "model": {"arch": "mlp", "hidden": [16]},
        "widen": {"layers": "first", "factors": [1, 2], "methods": ["sparse", "dense"]},
        "train": {"epochs": 2, "batch_size": 128, "lr": 0.05}, "seeds": [0, 1]}


def write_recipe(folder: Path, data_root: Path, **changes) -> Path:
    raw = {**TINY, "data": {"dataset": "mnist1d", "root": str(data_root)}, **changes}
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def specs_of(path: Path, *overrides: str) -> list[RunSpec]:
    return expand(load_recipe(path, list(overrides)))


def comparable(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    return df.drop(columns=[c for c in sweep.TIMING_COLUMNS if c in df]).sort_values("run_id").reset_index(drop=True)


def journal(results: Path, word: str) -> list[str]:
    path = results / "tiny" / store_lock.LOCKS / "journal.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return [line.split()[4] for line in lines if line.split()[3] == word]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one thread is ~10x cheaper than two on a busy 2-core machine (no spin-waiting)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference(one_thread, tmp_path_factory, data_root):
    """An uninterrupted sequential sweep of the tiny recipe: (recipe path, results dir, summary)."""
    folder = tmp_path_factory.mktemp("reference")
    path = write_recipe(folder, data_root)
    summary = sweep.sweep(specs_of(path), folder / "results", device="cpu")
    return path, folder / "results", summary


def copy_results(reference, tmp_path) -> Path:
    shutil.copytree(reference[1], tmp_path / "results")
    return tmp_path / "results"


def launch(*args, results: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "widecli", *map(str, args), "--results", str(results),
                             "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)


# --------------------------------------------------------------------------- plan and resume


def test_reference_sweep_trains_every_run_once_in_stacked_groups(reference):
    path, results, summary = reference
    assert (summary.ok, summary.diverged, summary.failed, summary.skipped) == (6, 0, 0, 0)
    df = pd.read_csv(summary.runs_csv)
    assert summary.runs_csv == results / "tiny" / "runs.csv" and len(df) == 6
    assert set(df.stacked_with) == {2}  # seeds 0 and 1 trained as one model
    assert sorted(journal(results, "start")) == sorted(df.run_id)
    assert (df.test_accuracy > 0.15).all()  # chance is 0.10 after 2 epochs


def test_stack_groups_pair_seeds_unless_stacking_is_off(reference):
    specs = specs_of(reference[0])
    assert sorted(len(g) for g in stack_groups(specs, CPU)) == [2, 2, 2]
    assert {s.stack_key() for s in stack_groups(specs, CPU)[1]} == {stack_groups(specs, CPU)[1][0].stack_key()}
    off = specs_of(reference[0], "train.stack=off")
    assert [len(g) for g in stack_groups(off, CPU)] == [1] * 6


def test_plan_finds_partial_and_corrupt_runs_and_the_sweep_redoes_only_them(reference, tmp_path):
    results = copy_results(reference, tmp_path)
    specs = specs_of(reference[0])
    partial, corrupt = store.run_dir(results, specs[2]), store.run_dir(results, specs[4])
    (partial / store.RESULT).unlink()
    text = (corrupt / store.RESULT).read_text()
    (corrupt / store.RESULT).write_text(text.replace('"status": "ok"', '"status": "diverged"'))
    planned = {p.run_id: p for p in run_statuses(specs, results)}
    assert planned[specs[2].run_id].status == "partial" and planned[specs[4].run_id].status == "corrupt"
    assert "checksum" in planned[specs[4].run_id].error
    assert sum(p.todo for p in planned.values()) == 2
    summary = sweep.sweep(specs, results, device="cpu")
    assert (summary.ok, summary.skipped) == (2, 4)
    # Only the two broken runs were trained again, each alone: its stacked partner was finished.
    assert sorted(journal(results, "start")) == sorted(journal(reference[1], "start") + [specs[2].run_id, specs[4].run_id])
    redone = comparable(summary.runs_csv).drop(columns="stacked_with")
    pd.testing.assert_frame_equal(redone, comparable(reference[2].runs_csv).drop(columns="stacked_with"),
                                  check_exact=False, rtol=1e-4)


def test_force_and_retry_failed(reference, monkeypatch, tmp_path):
    results = tmp_path / "results"
    specs = specs_of(reference[0])
    bad = {s.run_id for s in specs if s.method == "sparse"}
    real = runner.fit

    def train(group, *a, **k):
        if group[0].run_id in bad:
            raise RuntimeError("simulated out of memory")
        return real(group, *a, **k)
    monkeypatch.setattr(runner, "fit", train)
    summary = sweep.sweep(specs, results, device="cpu")
    assert (summary.ok, summary.failed) == (4, 2)
    assert {r for r, _ in summary.failures} == bad
    assert all("simulated out of memory" in e for _, e in summary.failures)
    result = store.read_result(store.run_dir(results, specs[2]))
    assert result["status"] == "failed" and result["error"] == "RuntimeError: simulated out of memory"
    statuses = {p.run_id: (p.status, p.todo) for p in run_statuses(specs, results)}
    assert {statuses[r] for r in bad} == {("failed", False)}
    assert {p.todo for p in run_statuses(specs, results, retry_failed=True) if p.run_id in bad} == {True}
    assert all(p.todo for p in run_statuses(specs, results, force=True))
    monkeypatch.setattr(runner, "fit", real)
    summary = sweep.sweep(specs, results, device="cpu", retry_failed=True)
    assert (summary.ok, summary.failed, summary.skipped) == (2, 0, 4)


def test_cli_exit_code_is_nonzero_when_a_run_failed(reference, monkeypatch, tmp_path):
    def train(*a, **k):
        raise RuntimeError("boom")
    monkeypatch.setattr(runner, "fit", train)
    res = invoke(*["sweep", str(reference[0]), "--set", "widen.factors=[1]",
                                       "--results", str(tmp_path), "--device", "cpu"])
    assert res.exit_code == 1, res.output
    assert "2 failed" in res.output and "RuntimeError: boom" in res.output


def test_dry_run_table_and_a_finished_sweep_trains_nothing(reference, tmp_path):
    results = copy_results(reference, tmp_path)
    shutil.rmtree(store.run_dir(results, specs_of(reference[0])[0]))
    res = invoke(*["sweep", str(reference[0]), "--results", str(results), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "6 runs, 1 to train" in res.output and res.output.count("finished") == 5
    assert "0.5000" in res.output  # the sparse runs' connectivity at factor 2
    assert not store.run_dir(results, specs_of(reference[0])[0]).exists()
    res = invoke(*["sweep", str(reference[0]), "--results", str(results), "--device", "cpu"])
    assert res.exit_code == 0 and "1 ok" in res.output and "runs.csv" in res.output
    res = invoke(*["sweep", str(reference[0]), "--results", str(results), "--device", "cpu"])
    assert res.exit_code == 0 and "nothing to train" in res.output and "trained 0" in res.output


def read_until(proc: subprocess.Popen, *needles: str) -> list[str]:
    """Lines of the process's stdout up to one containing each needle in turn (events the program
    prints: stdout is a pipe, so the progress writes plain lines). Fails if the process ends first."""
    seen = []
    for needle in needles:
        for line in proc.stdout:
            seen.append(line.decode())
            if needle in seen[-1]:
                break
        else:
            pytest.fail(f"{needle!r} never printed: {''.join(seen)}{proc.stderr.read().decode()}")
    return seen


def test_sigterm_exits_143_with_a_resume_hint(reference, tmp_path):
    """A real SIGTERM (what SLURM and `kill` send) to a real sweep process, mid-epoch."""
    proc = launch("sweep", reference[0], "--set", "train.epochs=300", results=tmp_path)
    read_until(proc, " · epoch 1/300 · ")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr.decode()
    assert "resume with: widecli sweep" in stderr.decode() and "Traceback" not in stderr.decode()
    assert not [d for d in (tmp_path / "tiny").iterdir() if d.is_dir() and d.name != store_lock.LOCKS]
    assert not list((tmp_path / "tiny" / store_lock.LOCKS).glob("*.lock"))


# --------------------------------------------------------------------------- processes


def test_jobs_2_gives_the_same_results_as_jobs_1(reference, tmp_path):
    events = []
    summary = sweep.sweep(specs_of(reference[0]), tmp_path, jobs=2, device="cpu", on_event=events.append)
    assert (summary.ok, summary.failed) == (6, 0)
    assert pd.read_csv(summary.runs_csv).threads.eq(1).all()  # small runs: one thread per worker (auto)
    pd.testing.assert_frame_equal(comparable(summary.runs_csv), comparable(reference[2].runs_csv))
    assert [e.epoch for e in events if e.kind == "epoch"].count(2) == 3  # epochs reach the driver


def test_two_concurrent_sweeps_never_train_a_run_twice(reference, tmp_path):
    procs = [launch("sweep", reference[0], "--set", "seeds=[0, 1, 2]", results=tmp_path) for _ in range(2)]
    outputs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    starts = journal(tmp_path, "start")
    assert len(starts) == len(set(starts)) == 9
    df = pd.read_csv(tmp_path / "tiny" / "runs.csv")
    assert sorted(df.run_id) == sorted(starts) and (df.status == "ok").all()
    lines = [line for o, _ in outputs for line in o.decode().splitlines()]
    assert sorted(line.split()[1] for line in lines if line.startswith("ok ")) == sorted(starts)


def test_sigint_removes_the_current_runs_partial_files_and_exits_130(reference, tmp_path):
    proc = launch("sweep", reference[0], "--set", "train.epochs=150", results=tmp_path)
    read_until(proc, "ok ", " · epoch 1/150 · ")  # a group finished, the next one is training
    finished_before = {d.name: (d / store.RESULT).read_bytes() for d in (tmp_path / "tiny").iterdir()
                       if d.is_dir() and store.is_finished(d)}
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr.decode()
    assert "resume with: widecli sweep" in stderr.decode() and "Traceback" not in stderr.decode()
    dirs = [d for d in (tmp_path / "tiny").iterdir() if d.is_dir() and d.name != store_lock.LOCKS]
    assert finished_before and all(store.is_finished(d) for d in dirs)  # nothing half-written left
    assert {d.name: (d / store.RESULT).read_bytes() for d in dirs} == finished_before
    assert not list((tmp_path / "tiny" / store_lock.LOCKS).glob("*.lock"))


def read_each(proc: subprocess.Popen, needles: set[str]) -> list[str]:
    """stdout lines until each needle has appeared in some line, in any order (events the program
    prints); fails if the process ends first."""
    seen, left = [], set(needles)
    for line in proc.stdout:
        seen.append(line.decode())
        left = {n for n in left if n not in seen[-1]}
        if not left:
            return seen
    pytest.fail(f"{sorted(left)} never printed: {''.join(seen)}{proc.stderr.read().decode()}")


def test_sigterm_stops_every_worker_of_a_jobs_2_sweep_cleanly(data_root, tmp_path):
    """SIGTERM (what SLURM and `kill` send) to a `--jobs 2` sweep while both workers train: the driver
    stops its workers by SIGTERM, each unwinds its run (locks released, nothing but the resumable
    checkpoint left) and exits before the driver does; a rerun resumes both runs from their
    checkpoints without redoing the run that had finished."""
    epochs = 100
    path = write_recipe(tmp_path, data_root, seeds=[0],
                        data={"dataset": "mnist1d", "root": str(data_root), "subset": 512},
                        widen={"layers": "first", "factors": [1, 2, 4], "methods": ["sparse"],
                               "per_factor": {"train.epochs": {1: 2, 2: epochs, 4: epochs}}},
                        train={"epochs": epochs, "batch_size": 128, "lr": 0.05, "checkpoint_every": 1})
    results = tmp_path / "results"
    baseline, *wide = specs_of(path)   # factor 1 (2 epochs), then factors 2 and 4 (100 epochs)
    proc = launch("sweep", path, "--jobs", "2", results=results)
    # Events: the baseline stored by one worker, then both wide runs training, one per worker.
    read_each(proc, {f"ok {baseline.run_id}", "f=2 sparse · epoch 1/", "f=4 sparse · epoch 1/"})
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr.decode()
    assert "resume with: widecli sweep" in stderr.decode() and "Traceback" not in stderr.decode()
    assert not list((results / "tiny" / store_lock.LOCKS).glob("*.lock"))   # every worker freed its locks
    lines = (results / "tiny" / store_lock.LOCKS / "journal.log").read_text().splitlines()
    workers = {int(line.split()[2]) for line in lines}
    assert len(workers) == 2 and not [pid for pid in workers if Path(f"/proc/{pid}").exists()]  # none outlived it
    done = set(journal(results, "done"))
    interrupted = [s for s in wide if s.run_id not in done]
    assert interrupted and baseline.run_id in done
    for s in interrupted:   # only a resumable checkpoint left, of an epoch reached
        d = store.run_dir(results, s)
        assert [p.name for p in d.iterdir()] == [store.CHECKPOINT]
        assert torch.load(d / store.CHECKPOINT, weights_only=False)["epoch"] >= 1
    summary = sweep.sweep(specs_of(path), results, device="cpu")
    assert (summary.ok, summary.skipped) == (len(interrupted), 3 - len(interrupted))
    starts = journal(results, "start")   # the finished run not redone; each interrupted one started again
    assert {s.run_id: starts.count(s.run_id) for s in [baseline, *wide]} == {
        s.run_id: 2 if s in interrupted else 1 for s in [baseline, *wide]}
    resumed = [line.split()[4] for line in (results / "tiny" / store_lock.LOCKS / "journal.log").read_text()
               .splitlines() if line.endswith("from-checkpoint")]
    assert sorted(resumed) == sorted(s.run_id for s in interrupted)
    for s in interrupted:
        metrics = pd.read_csv(store.run_dir(results, s) / store.METRICS)
        assert list(metrics.epoch) == list(range(1, epochs + 1))   # the epochs before the stop kept


def test_sigkill_chaos_three_kills_loses_and_duplicates_nothing(data_root, tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import chaos_sweep
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    fig = chaos_sweep.chaos(kills=3, data_root=data_root, workdir=tmp_path, window=0.4)
    assert fig["kills"] == 3, fig
    assert (fig["runs_lost"], fig["runs_duplicated"], fig["half_written_read_as_finished"]) == (0, 0, 0), fig
    assert fig["runs_csv_equal"] and fig["final_exit_code"] == 0, fig


def test_four_concurrent_sweeps_with_random_kills_store_every_run_once(data_root, tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import chaos_sweep
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    fig = chaos_sweep.chaos_concurrent(procs=4, kills=3, data_root=data_root, workdir=tmp_path, window=0.4)
    assert fig["kills"] == 3, fig
    assert (fig["runs_lost"], fig["runs_duplicated"], fig["half_written_read_as_finished"]) == (0, 0, 0), fig
    assert fig["runs_csv_equal"] and fig["final_exit_code"] == 0 and fig["survivor_exit_codes"] == [0], fig


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")
def test_ray_executor_on_a_local_instance(reference, tmp_path):
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = sweep.sweep(specs_of(reference[0]), tmp_path, executor="ray", device="cpu")
    finally:
        ray.shutdown()
    assert (summary.ok, summary.failed) == (6, 0)
    pd.testing.assert_frame_equal(comparable(summary.runs_csv), comparable(reference[2].runs_csv))
    for d in (tmp_path / "tiny").iterdir():
        if d.is_dir() and d.name != store_lock.LOCKS:
            load_model(d)  # the driver wrote loadable checkpoints returned by the workers
