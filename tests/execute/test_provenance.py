"""Provenance (execute.provenance): every run's result.json records the git commit, dirty flag and
diff hash of the widecli checkout and of the recipe's folder, and a hash of the installed packages;
none of it enters the run id; `widecli runs --id` shows it; the MLflow and W&B exports carry the
commit in their standard places."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import invoke
import yaml

from widecli.execute import provenance
from widecli.recipes import expand, load_recipe
from widecli.store import runs as store

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path, data_root) -> Path:
    """A git repository holding one committed recipe."""
    folder = tmp_path / "study"
    folder.mkdir()
    git(folder, "init", "-q")
    git(folder, "config", "user.email", "t@t")
    git(folder, "config", "user.name", "t")
    (folder / "r.yaml").write_text(yaml.safe_dump({
        "name": "prov", "data": {"dataset": "mnist1d", "root": str(data_root)}, "model": {"hidden": [8]},
        "widen": {"factors": [1]}, "train": {"epochs": 1}, "seeds": [0, 1]}))
    git(folder, "add", "r.yaml")
    git(folder, "commit", "-q", "-m", "recipe")
    provenance.git_state.cache_clear()
    return folder


def train(recipe: Path, results: Path, *extra: str) -> str:
    res = invoke(*["train", str(recipe), "--results", str(results), "--device", "cpu", *extra])
    assert res.exit_code == 0, res.output
    return res.output


def stored(results: Path, recipe: Path, seed: int) -> dict:
    [spec] = [s for s in expand(load_recipe(recipe)) if s.seed == seed]
    return json.loads((store.run_dir(results, spec) / store.RESULT).read_text())


def test_a_run_records_its_recipe_commit_and_a_dirty_tree_outside_its_id(repo, tmp_path):
    results = tmp_path / "results"
    train(repo / "r.yaml", results, "--seed", "0")
    clean = stored(results, repo / "r.yaml", 0)["provenance"]
    assert clean["recipe"]["commit"] == git(repo, "rev-parse", "HEAD")
    assert clean["recipe"]["dirty"] is False and clean["recipe"]["diff_sha256"] is None
    assert clean["recipe_file"] == "r.yaml" and len(clean["packages"]) == 64

    (repo / "r.yaml").write_text((repo / "r.yaml").read_text() + "# a comment: the same recipe\n")
    provenance.git_state.cache_clear()  # a new process would see the edit
    out = train(repo / "r.yaml", results, "--seed", "0")
    assert "already finished" in out   # the same run id: provenance is not part of it
    train(repo / "r.yaml", results, "--seed", "1")
    dirty = stored(results, repo / "r.yaml", 1)["provenance"]
    assert dirty["recipe"]["commit"] == clean["recipe"]["commit"] and dirty["recipe"]["dirty"] is True
    assert len(dirty["recipe"]["diff_sha256"]) == 64
    assert stored(results, repo / "r.yaml", 0)["run_id"] != stored(results, repo / "r.yaml", 1)["run_id"]


def test_an_untracked_recipe_is_a_dirty_recipe_folder(repo, tmp_path):
    new = repo / "new.yaml"
    new.write_text((repo / "r.yaml").read_text())
    state = provenance.collect(new)["recipe"]
    assert state["dirty"] is True and state["diff_sha256"]
    new.write_text(new.read_text() + "# edited\n")
    provenance.git_state.cache_clear()
    assert provenance.collect(new)["recipe"]["diff_sha256"] != state["diff_sha256"]   # the content counts


def test_a_recipe_outside_git_and_widecli_outside_its_checkout_record_none(tmp_path, monkeypatch):
    recipe = tmp_path / "plain" / "r.yaml"
    recipe.parent.mkdir()
    recipe.write_text("name: x\n")
    assert provenance.collect(recipe)["recipe"] is None
    # widecli installed into a site-packages folder that happens to lie inside some repository
    fake = tmp_path / "proj" / "venv" / "site-packages" / "widecli"
    fake.mkdir(parents=True)
    git(tmp_path / "proj", "init", "-q")
    monkeypatch.setattr(provenance, "PACKAGE", fake)
    assert provenance.widecli_checkout() is None


def test_this_checkout_is_recorded_when_widecli_runs_from_one():
    if provenance.git_state(str(provenance.PACKAGE), True) is None:
        pytest.skip("widecli is not imported from a git checkout here")
    state = provenance.widecli_checkout()
    assert Path(state["root"]) / "widecli" == provenance.PACKAGE
    assert state["commit"] == git(provenance.PACKAGE, "rev-parse", "HEAD")


def test_provenance_is_computed_once_per_process(repo, monkeypatch):
    calls = []
    real = subprocess.run
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a) or real(*a, **k))
    provenance.git_state.cache_clear()
    first = provenance.collect(repo / "r.yaml")
    n = len(calls)
    assert n and provenance.collect(repo / "r.yaml") == first and len(calls) == n


def test_runs_id_shows_provenance_and_execution(repo, tmp_path):
    results = tmp_path / "results"
    train(repo / "r.yaml", results, "--seed", "0")
    run_id = stored(results, repo / "r.yaml", 0)["run_id"]
    res = invoke(*["runs", str(results), "--id", run_id[:6]])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert f"commit {git(repo, 'rev-parse', 'HEAD')[:12]} (clean)" in text and "recipe r.yaml" in text
    assert "execution: device cpu" in text and "packages: sha256" in text
    res = invoke(*["runs", str(results), "--id", run_id, "--json"])
    [doc] = json.loads(res.output)
    assert doc["provenance"]["recipe"]["commit"] == git(repo, "rev-parse", "HEAD")


def _export_one(tmp_path, data_root, prov: dict, to: str) -> tuple[Path, dict]:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"name": "exp", "data": {"dataset": "mnist1d", "root": str(data_root)},
                                      "widen": {"factors": [1]}}))
    [spec] = expand(load_recipe(recipe))
    results = tmp_path / "results"
    rows = [{"epoch": 1, "test_accuracy": 0.5, "train_loss": 1.0}]
    result = {"status": "ok", "error": None, "final": {"test_accuracy": 0.5}, "weights": {}, "provenance": prov}
    store.write_run(results, spec, rows, result)
    from widecli.analysis.export import export

    return export(results, to, tmp_path / to)[0], result


PROV = {"widecli": {"root": "/src", "commit": "c0ffee" * 6 + "beef", "dirty": True, "diff_sha256": "d" * 64},
        "recipe": None, "recipe_file": "r.yaml", "packages": "a" * 64}


def test_mlflow_export_sets_the_standard_git_tag(tmp_path, data_root):
    mlflow = pytest.importorskip("mlflow")
    _export_one(tmp_path, data_root, PROV, "mlflow")
    client = mlflow.tracking.MlflowClient(tracking_uri="file:" + str((tmp_path / "mlflow").resolve()))
    (run,) = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
    assert run.data.tags["mlflow.source.git.commit"] == PROV["widecli"]["commit"]
    assert run.data.tags["widecli.git.dirty"] == "true" and run.data.tags["packages.sha256"] == "a" * 64


def test_wandb_export_sets_the_run_git_commit(tmp_path, data_root, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    from wandb.proto import wandb_internal_pb2 as pb
    from wandb_logs import read_wandb, wandb_records

    folder, _ = _export_one(tmp_path, data_root, PROV, "wandb")
    (log,) = folder.glob("*.wandb")
    commits = []
    for data in wandb_records(log):
        record = pb.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "run":
            commits.append(record.run.git.commit)
    _, config, _, _ = read_wandb(log)
    assert commits and set(commits) == {PROV["widecli"]["commit"]}, [
        pb.Record.FromString(d).WhichOneof("record_type") for d in wandb_records(log)]
    assert config["widecli.git.commit"] == PROV["widecli"]["commit"]
