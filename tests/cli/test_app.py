"""The train and check commands, and the CLI's error contract (one line on stderr, exit code 2)."""

import subprocess
import sys

import pytest
from helpers import invoke


def test_check_prints_every_run_at_the_budget(make_recipe):
    result = invoke("check", make_recipe(), "--set", "widen.factors=[1, 2, 8]")
    assert result.exit_code == 0, result.output
    assert "5 runs" in result.output and "nonzeros == budget for all 2" in result.output
    assert result.output.count("800") >= 5  # every run's budget column: 40*16 + 16*10 weights


def test_train_writes_a_finished_run(make_recipe, tmp_path):
    result = invoke("train", make_recipe(), "--factor", 2, "--method", "sparse", "--results", tmp_path,
                    "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "nonzeros 800" in result.output and "budget 800" in result.output
    assert list((tmp_path / "tiny").glob("*/result.json"))


@pytest.mark.parametrize("args, needle", [
    (["--set", "train.epochz=3"], "train.epochz"),
    (["--set", "train.epochs=ten"], "train.epochs"),
    (["--set", "widen.factors=[0.5]"], "widen.factors"),
    (["--set", "data.dataset=nope"], "data.dataset"),
    (["--set", "sparsity.rule=custom", "--set", "sparsity.connectivity={out: 0.01, fc1: 0.01}"],
     "sparsity.connectivity"),
    (["--factor", "0.5"], "--factor"),
    (["--method", "magic"], "--method"),
    (["--device", "tpu"], "--device"),
    (["--device", "cuda:7"], "cuda"),
])
def test_bad_input_is_one_line_and_exit_2(make_recipe, tmp_path, args, needle):
    result = invoke("train", make_recipe(), "--results", tmp_path, "--factor", 2, *args) \
        if "--factor" not in args else invoke("train", make_recipe(), "--results", tmp_path, *args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    error_lines = [line for line in lines if line.startswith("error:")]
    assert len(error_lines) == 1 and needle in error_lines[0], result.output
    assert "Traceback" not in result.output


def test_real_process_error_goes_to_stderr(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "widecli", "check", str(tmp_path / "nope.yaml")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no such recipe" in proc.stderr
    assert proc.stdout == ""
