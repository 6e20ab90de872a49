"""The SLURM executor, for real through submitit's local cluster (the same pickled array tasks, run as
processes here): a sweep as a job array, a task preempted mid-run that requeues itself and resumes
from its checkpoint, and a driver that detaches and re-attaches."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from helpers import invoke
import torch

from widecli.execute import slurm
from widecli.execute.run import run_group
from widecli.recipes import expand, load_recipe
from widecli.store import runs as store
from widecli.store.lock import LOCKS

pytest.importorskip("submitit")

LOCAL = ["--executor", "slurm", "--slurm-cluster", "local", "--time", "0:10:00"]


def _journal(results: Path, recipe: str) -> list[list[str]]:
    path = results / recipe / LOCKS / "journal.log"
    return [line.split()[3:] for line in path.read_text().splitlines()] if path.exists() else []


def preempt(job) -> None:
    """Send the array task the signal SLURM sends before preempting or timing out a job (USR2 as
    submitit sets it up): the task checkpoints and requeues itself."""
    from submitit.local.local import LocalJobEnvironment

    marker = f"SUBMITIT_LOCAL_JOB_ID={job.job_id}".encode()
    for proc in Path("/proc").iterdir():
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if proc.name.isdigit() and marker in env and any(e.startswith(b"SUBMITIT_LOCAL_GLOBALID=") for e in env):
            os.kill(int(proc.name), LocalJobEnvironment._usr_sig())
            return
    raise AssertionError(f"no running task of job {job.job_id}")


def test_a_sweep_runs_as_a_job_array(make_recipe, tmp_path):
    recipe = make_recipe({"widen": {"factors": [1, 2], "methods": ["sparse"]}})
    res = invoke(*["sweep", str(recipe), "--results", str(tmp_path), *LOCAL])
    assert res.exit_code == 0, res.output
    assert "trained 2: 2 ok" in res.output
    jobs = json.loads((tmp_path / ".slurm" / "tiny" / slurm.JOBS_FILE).read_text())["jobs"]
    assert len(jobs) == 2 and all(store.is_finished(store.run_dir(tmp_path, s))
                                  for s in expand(load_recipe(recipe)))


def test_a_preempted_task_requeues_and_resumes_identical(make_recipe, tmp_path):
    recipe = make_recipe({"widen": {"factors": [2], "methods": ["sparse"]}, "train": {"epochs": 200}})
    [spec] = expand(load_recipe(recipe))
    reference = tmp_path / "reference"
    run_group([slurm.with_checkpoints(spec)], reference, torch.device("cpu"), record_failures=False)

    results = tmp_path / "results"
    [job] = slurm.submit([[spec]], results, {"cluster": "local", "time_min": 10})
    ckpt = store.run_dir(results, spec) / store.CHECKPOINT
    deadline = time.monotonic() + 120
    while not ckpt.exists():  # the event: the task has trained and checkpointed some epochs
        assert time.monotonic() < deadline and not job.done(), job.stderr()
        time.sleep(0.05)
    preempt(job)      # SLURM's preemption signal, sent to the running task
    job.result()      # the requeued task finished
    starts = [w for w in _journal(results, "tiny") if w[0] == "start"]
    assert len(starts) == 2, _journal(results, "tiny")   # the first attempt and the requeued one
    assert starts[1][2:] == ["from-checkpoint"]          # which resumed from the first one's checkpoint
    assert store.is_finished(store.run_dir(results, spec)) and not ckpt.exists()
    mine = (store.run_dir(results, spec) / store.METRICS).read_text()
    theirs = (store.run_dir(reference, spec) / store.METRICS).read_text()
    drop_seconds = lambda text: [line.rsplit(",", 1)[0] for line in text.splitlines()]  # noqa: E731
    assert drop_seconds(mine) == drop_seconds(theirs)  # resumed: every epoch as if never stopped


def test_no_wait_detaches_and_a_second_sweep_reattaches(make_recipe, tmp_path):
    recipe = make_recipe({"widen": {"factors": [1, 2], "methods": ["sparse"]}, "train": {"epochs": 30}})
    res = invoke(*["sweep", str(recipe), "--results", str(tmp_path), *LOCAL, "--no-wait"])
    assert res.exit_code == 0, res.output
    assert "submitted" in res.output
    res = invoke(*["sweep", str(recipe), "--results", str(tmp_path), *LOCAL])
    assert res.exit_code == 0, res.output
    specs = expand(load_recipe(recipe))
    assert all(store.is_finished(store.run_dir(tmp_path, s)) for s in specs)
    starts = [w for w in _journal(tmp_path, "tiny") if w[0] == "start"]
    assert len(starts) == len(specs)  # the re-attached driver trained nothing twice


def test_bad_time_is_one_line(make_recipe, tmp_path):
    res = invoke(*["sweep", str(make_recipe()), "--results", str(tmp_path), "--executor", "slurm",
                                   "--time", "soon"])
    assert res.exit_code == 2 and "--time" in res.output and len(res.output.strip().splitlines()) == 1
