"""CLI conventions: --version, shell completion, --json documents on stdout (and nothing else
there), environment-variable defaults shown in --help."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import invoke

from widecli import __version__


def test_version():
    res = invoke("--version")
    assert res.exit_code == 0 and res.stdout.strip() == f"widecli {__version__}"


def test_completion_script():
    res = invoke("--show-completion", "bash")
    assert res.exit_code == 0 and "_widecli_completion" in res.stdout


def test_check_and_layers_json(make_recipe):
    recipe = make_recipe()
    check = invoke("check", recipe, "--json")
    assert check.exit_code == 0
    doc = json.loads(check.stdout)
    assert doc["recipe"] == "tiny" and len(doc["runs"]) == 3
    sparse = next(r for r in doc["runs"] if r["method"] == "sparse")
    assert sparse["nonzeros"] == sparse["budget"] == 800 and sparse["layers"]["fc1"]["masked"]
    layers = invoke("layers", recipe, "--factor", 2, "--json")
    assert [row["name"] for row in json.loads(layers.stdout)["layers"]] == ["fc1", "out"]


def test_dry_run_and_report_json(make_recipe, tmp_path):
    recipe = make_recipe({"widen": {"factors": [1]}})
    plan = json.loads(invoke("sweep", recipe, "--dry-run", "--json", "--results", tmp_path).stdout)
    assert [(r["status"], r["todo"]) for r in plan["runs"]] == [("new", True)]
    assert invoke("sweep", recipe, "--results", tmp_path, "--device", "cpu").exit_code == 0
    plan = json.loads(invoke("sweep", recipe, "--dry-run", "--json", "--results", tmp_path).stdout)
    assert [(r["status"], r["todo"]) for r in plan["runs"]] == [("finished", False)]
    # A real process: the JSON document alone on stdout, the "written:" line on stderr.
    proc = subprocess.run([sys.executable, "-m", "widecli", "report", str(tmp_path), "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) == {"table1", "runs"} and doc["table1"][0]["baseline"] > 0.1
    assert "written:" in proc.stderr


def test_environment_defaults(make_recipe, tmp_path):
    recipe = make_recipe({"widen": {"factors": [1]}})
    env = {"WIDECLI_RESULTS": str(tmp_path / "from-env"), "WIDECLI_DEVICE": "cpu"}
    res = invoke("sweep", recipe, env=env)
    assert res.exit_code == 0, res.output
    assert list((tmp_path / "from-env" / "tiny").glob("*/result.json"))
    help_text = invoke("sweep", "--help", env={"COLUMNS": "200"}).stdout
    assert "WIDECLI_RESULTS" in help_text and "WIDECLI_JOBS" in help_text and "WIDECLI_DEVICE" in help_text
