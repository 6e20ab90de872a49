"""SLURM options people pass (--mem, --account, --qos, --constraint, --slurm-setup, --slurm-option):
checked before anything is submitted, and written into the sbatch script exactly. The script is read
back from a real submission through submitit to a stand-in `sbatch` on PATH (it records the script
and answers with a job id, as sbatch does); the same options run through submitit's local cluster."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from helpers import invoke

from widecli.execute import slurm
from widecli.recipes import expand, load_recipe
from widecli.store import runs as store

pytest.importorskip("submitit")

OPTIONS = ["--mem", "16g", "--account", "proj-42", "--qos", "high", "--constraint", "a100&ib",
           "--slurm-setup", "module load cuda/12.4", "--slurm-setup", "source ~/venv/bin/activate",
           "--slurm-option", "mail-type=END", "--slurm-option", "exclusive", "--slurm-option", "mail_user=a@b.c"]


@pytest.fixture
def fake_sbatch(tmp_path, monkeypatch) -> Path:
    """`sbatch` and `srun` stand-ins: sbatch copies the script it is given and prints a job id."""
    bin_dir, scripts = tmp_path / "bin", tmp_path / "submitted"
    bin_dir.mkdir()
    scripts.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {scripts}/job.sh\necho "Submitted batch job 4242"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return scripts / "job.sh"


def test_the_options_reach_the_sbatch_script(make_recipe, tmp_path, fake_sbatch):
    recipe = make_recipe({"widen": {"factors": [1, 2], "methods": ["sparse"]}})
    res = invoke(*["sweep", str(recipe), "--results", str(tmp_path / "r"), "--executor", "slurm",
                                   "--partition", "gpu", "--time", "1:30:00", "--no-wait", *OPTIONS])
    assert res.exit_code == 0, res.output
    script = fake_sbatch.read_text().splitlines()
    for line in ("#SBATCH --mem=16G", "#SBATCH --account=proj-42", "#SBATCH --qos=high",
                 "#SBATCH --constraint='a100&ib'", "#SBATCH --mail-type=END", "#SBATCH --exclusive",
                 "#SBATCH --mail-user=a@b.c", "#SBATCH --partition=gpu", "#SBATCH --time=90"):
        assert line in script, (line, script)
    setup = script.index("# setup")
    assert script[setup + 1: setup + 3] == ["module load cuda/12.4", "source ~/venv/bin/activate"]
    assert setup < next(i for i, x in enumerate(script) if x.startswith("srun"))   # before the task runs
    jobs = json.loads((tmp_path / "r" / ".slurm" / "tiny" / slurm.JOBS_FILE).read_text())["jobs"]
    assert [j["job_id"].split("_")[0] for j in jobs] == ["4242", "4242"]   # one array, two tasks


@pytest.mark.parametrize("args, words", [
    (["--mem", "16GB"], ["--mem", "'16GB'", "16G or 4000M"]),
    (["--mem", "lots"], ["--mem", "'lots'"]),
    (["--account", "my account"], ["--account", "'my account'"]),
    (["--qos", ""], ["--qos"]),
    (["--constraint", "a100 ib"], ["--constraint", "no spaces"]),
    (["--slurm-setup", " "], ["--slurm-setup", "one non-empty shell line"]),
    (["--slurm-setup", "a\nb"], ["--slurm-setup", "once per line"]),
    (["--slurm-option", "time=10"], ["time", "use --time"]),
    (["--slurm-option", "mem=4G"], ["mem", "use --mem"]),
    (["--slurm-option", "output=x"], ["output", "widecli (through submitit) sets it"]),
    (["--slurm-option", "Bad Key=1"], ["--slurm-option", "KEY=VALUE"]),
    (["--slurm-option", "mail-type="], ["--slurm-option", "KEY=VALUE"]),
    (["--time", "25:00:00:00"], ["--time"]),
])
def test_bad_options_are_one_line_before_anything_is_submitted(make_recipe, tmp_path, fake_sbatch, args, words):
    # --no-wait: were a bad option let through, the stand-in sbatch would record a script (no hang)
    res = invoke(*["sweep", str(make_recipe()), "--results", str(tmp_path / "r"), "--executor",
                                   "slurm", "--no-wait", *args])
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and all(w in out for w in words), res.output
    assert len(res.output.strip().splitlines()) == 1 and not fake_sbatch.exists()


def test_slurm_options_without_the_slurm_executor_are_refused(make_recipe, tmp_path):
    res = invoke(*["sweep", str(make_recipe()), "--results", str(tmp_path), "--mem", "4G"])
    assert res.exit_code == 2 and "--executor slurm" in res.output


def test_the_same_options_run_through_the_local_cluster(make_recipe, tmp_path):
    recipe = make_recipe({"widen": {"factors": [1, 2], "methods": ["sparse"]}})
    res = invoke(*["sweep", str(recipe), "--results", str(tmp_path), "--executor", "slurm",
                                   "--slurm-cluster", "local", "--time", "0:10:00", *OPTIONS])
    assert res.exit_code == 0, res.output
    assert all(store.is_finished(store.run_dir(tmp_path, s)) for s in expand(load_recipe(recipe)))
