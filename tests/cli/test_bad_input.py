"""Every bad input is one line on stderr naming the file/key/value and what is allowed, exit code 2,
no traceback (issue 11). One table: each case builds its broken input on disk and runs the real CLI."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import yaml
from disk_formats import write_idx
from helpers import invoke

from widecli.analysis.frame import load_frame
from widecli.cli.app import app
from widecli.execute import preflight

GPU = torch.cuda.is_available()


class Ctx:
    """Builds the broken inputs of one case under tmp_path."""

    def __init__(self, tmp: Path, data_root: Path):
        self.tmp, self.data_root = tmp, data_root
        self.results = tmp / "results"

    def recipe(self, name: str = "tiny", **sections) -> str:
        """A tiny valid MNIST-1D MLP recipe with sections replaced/merged."""
        raw = {"name": name, "data": {"dataset": "mnist1d", "root": str(self.data_root)},
               "model": {"arch": "mlp", "hidden": [16]},
               "widen": {"layers": "first", "factors": [1, 2], "methods": ["sparse", "dense"]},
               "train": {"epochs": 1, "batch_size": 128, "lr": 0.05}, "seeds": [0]}
        for key, value in sections.items():
            raw[key] = {**raw[key], **value} if isinstance(value, dict) and isinstance(raw.get(key), dict) else value
        if raw["model"].get("arch") != "mlp":  # a convnet has no hidden widths (they would have no effect)
            raw["model"].pop("hidden")
        return self.text(f"{name}.yaml", yaml.safe_dump(raw))

    def text(self, name: str, content: str) -> str:
        path = self.tmp / name
        path.write_text(content)
        return str(path)

    def npz(self, **arrays) -> str:
        rng = np.random.default_rng(0)
        full = {"x_train": rng.normal(size=(20, 5)).astype(np.float32), "y_train": rng.integers(0, 3, 20),
                "x_test": rng.normal(size=(10, 5)).astype(np.float32), "y_test": rng.integers(0, 3, 10)}
        full.update(arrays)
        path = self.tmp / "data.npz"
        np.savez(path, **{k: v for k, v in full.items() if v is not None})
        return self.recipe(data={"dataset": "npz", "path": str(path)})

    def data_recipe(self, dataset: str) -> str:
        return self.recipe(data={"dataset": dataset, "root": str(self.tmp / "d"), "download": False},
                           model={"arch": "cnn", "width": 2})

    def finished_run(self) -> Path:
        """Train one tiny run into self.results and return its directory."""
        r = invoke("train", self.recipe(), "--factor", 1, "--results", self.results, "--device", "cpu")
        assert r.exit_code == 0, r.output
        [d] = [p.parent for p in (self.results / "tiny").glob("*/result.json")]
        return d

    def train(self, recipe: str, *extra) -> list:
        return ["train", recipe, "--results", self.results, "--device", "cpu", *extra]


def truncated_mnist(t: Ctx) -> list:
    raw = t.tmp / "d" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split, n in (("train", 8), ("t10k", 4)):
        write_idx(raw / f"{split}-images-idx3-ubyte", np.zeros((n, 28, 28)), truncate=100 if split == "train" else 0)
        write_idx(raw / f"{split}-labels-idx1-ubyte", np.zeros(n))
    return t.train(t.data_recipe("mnist"))


def corrupt_cifar(t: Ctx) -> list:
    d = t.tmp / "d" / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = np.zeros((2, 3072), dtype=np.uint8)
        blob = pickle.dumps({"labels": [0, 1], "data": x})
        (d / f).write_bytes(blob[: len(blob) // 2] if f == "data_batch_3" else blob)
    return t.train(t.data_recipe("cifar10"))


def corrupt_svhn(t: Ctx) -> list:
    d = t.tmp / "d"
    d.mkdir()
    scipy.io.savemat(d / "train_32x32.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.ones((2, 1))})
    (d / "test_32x32.mat").write_bytes(b"MATLAB 5.0 MAT-file, garbage" * 3)
    return t.train(t.data_recipe("svhn"))


def corrupt_result(t: Ctx, content: str) -> list:
    d = t.finished_run()
    (d / "result.json").write_text(content)
    return ["report", t.results]


def edited_result(t: Ctx) -> list:
    d = t.finished_run()
    result = json.loads((d / "result.json").read_text())
    result["final"]["test_accuracy"] = 0.99
    (d / "result.json").write_text(json.dumps(result))
    return ["report", t.results]


def results_is_file(t: Ctx) -> list:
    Path(t.text("results.txt", "not a folder"))
    return ["train", t.recipe(), "--results", t.tmp / "results.txt", "--device", "cpu"]


def unwritable_results(t: Ctx) -> list:
    """A results directory this process cannot write to (root ignores permissions: use /sys)."""
    if os.geteuid() == 0:
        return ["train", t.recipe(), "--results", "/sys/widecli-results", "--device", "cpu"]
    t.results.mkdir()
    t.results.chmod(0o555)
    return t.train(t.recipe())


def unreadable_results(t: Ctx) -> list:
    """A recipe folder under the results directory that cannot be listed."""
    (t.results / "tiny").mkdir(parents=True)
    if os.geteuid() == 0:  # root reads everything: a recipe folder that is a file is just as unreadable
        (t.results / "tiny").rmdir()
        (t.results / "tiny").write_text("x")
    else:
        (t.results / "tiny").chmod(0)
    return ["sweep", t.recipe(), "--results", t.results, "--device", "cpu"]


def tiny_memory(t: Ctx, monkeypatch) -> list:
    """A model that does not fit the (pretended) free memory: refused with the estimate."""
    monkeypatch.setattr(preflight, "available_memory", lambda device: (1 << 20, "available RAM"))
    return t.train(t.recipe(model={"hidden": [4096]}), "--factor", 1)


# (case id, builder(ctx[, monkeypatch]) -> argv, words the one line must contain)
CASES = [
    # ---- recipes
    ("yaml-malformed", lambda t: ["check", t.text("r.yaml", "name: [tiny\ndata: {dataset: digits}\n")],
     ["r.yaml", "malformed YAML", "line"]),
    ("yaml-not-mapping", lambda t: ["check", t.text("r.yaml", "- a\n- b\n")], ["r.yaml", "mapping"]),
    ("yaml-empty", lambda t: ["check", t.text("r.yaml", "")], ["r.yaml", "empty"]),
    ("yaml-duplicate-key", lambda t: ["check", t.text("r.yaml", "name: a\ndata: {dataset: digits}\nname: b\n")],
     ["r.yaml", "name", "twice"]),
    ("yaml-not-utf8", lambda t: ["check", _binary(t.tmp / "r.yaml")], ["r.yaml"]),
    ("missing-name", lambda t: ["check", t.text("r.yaml", "data: {dataset: digits}\n")], ["r.yaml", "'name'"]),
    ("missing-data", lambda t: ["check", t.text("r.yaml", "name: x\n")], ["r.yaml", "'data'"]),
    ("bad-name", lambda t: ["check", t.recipe(name="a b")], ["name", "letters"]),
    ("wrong-type-int", lambda t: ["check", t.recipe(train={"epochs": "ten"})], ["train.epochs", "ten"]),
    ("wrong-type-list", lambda t: ["check", t.recipe(model={"hidden": 32})], ["model.hidden", "32"]),
    ("wrong-type-section", lambda t: ["check", t.recipe(train=[1, 2])], ["train", "tiny.yaml"]),
    ("unknown-key-top", lambda t: ["check", t.recipe(trian={"epochs": 1})], ["trian", "did you mean 'train'"]),
    ("unknown-key-nested", lambda t: ["check", t.recipe(train={"ephocs": 3})],
     ["train.ephocs", "did you mean 'epochs'"]),
    ("factors-empty", lambda t: ["check", t.recipe(widen={"factors": []})], ["widen.factors", "non-empty"]),
    ("factors-not-list", lambda t: ["check", t.recipe(widen={"factors": 4})], ["widen.factors", "list"]),
    ("factor-below-1", lambda t: ["check", t.recipe(widen={"factors": [1, 0.5]})], ["widen.factors", ">= 1"]),
    ("factor-not-number", lambda t: ["check", t.recipe(widen={"factors": [1, "wide"]})], ["widen.factors", "wide"]),
    ("duplicate-factors", lambda t: ["check", t.recipe(widen={"factors": [2, 2]})], ["widen.factors", "repeat"]),
    ("duplicate-seeds", lambda t: ["check", t.recipe(seeds=[0, 0])], ["seeds", "repeat"]),
    ("duplicate-methods", lambda t: ["check", t.recipe(widen={"methods": ["sparse", "sparse"]})],
     ["widen.methods", "repeat"]),
    ("duplicate-layers", lambda t: ["check", t.recipe(model={"hidden": [8, 8]}, widen={"layers": ["fc1", "fc1"]})],
     ["widen.layers", "repeat"]),
    ("unknown-method", lambda t: ["check", t.recipe(widen={"methods": ["sparse", "magic"]})],
     ["widen.methods", "magic", "linear_bottleneck"]),
    ("unknown-layer", lambda t: ["check", t.recipe(widen={"layers": ["fc9"]})], ["widen.layers", "fc9", "fc1"]),
    ("unknown-dataset", lambda t: ["check", t.recipe(data={"dataset": "mnsit"})],
     ["data.dataset", "mnsit", "did you mean 'mnist'"]),
    ("unknown-arch", lambda t: ["check", t.recipe(model={"arch": "resnet81"})],
     ["model.arch", "resnet81", "did you mean 'resnet18'"]),
    ("unknown-rule", lambda t: ["check", t.recipe(sparsity={"rule": "random"})], ["sparsity.rule", "random", "erk"]),
    ("connectivity-above-1", lambda t: ["check", t.recipe(sparsity={"rule": "custom", "connectivity": {"fc1": 1.5}})],
     ["sparsity.connectivity", "1.5", "(0, 1]"]),
    ("connectivity-unknown-layer",
     lambda t: ["check", t.recipe(sparsity={"rule": "custom", "connectivity": {"fc7": 0.5}})], ["fc7"]),
    ("impossible-connectivity",
     lambda t: ["check", t.recipe(sparsity={"rule": "custom", "connectivity": {"fc1": 1.0}}, widen={"factors": [4]})],
     ["fc1", "budget"]),
    ("impossible-bottleneck",
     lambda t: ["check", t.recipe(model={"hidden": [2]}, widen={"factors": [1000], "methods": ["nonlinear_bottleneck"]})],
     ["budget"]),
    ("sweep-unknown-key", lambda t: ["check", t.recipe(sweep={"train.lrr": [0.1, 0.2]})],
     ["train.lrr", "did you mean 'lr'"]),
    ("sweep-grid-key", lambda t: ["check", t.recipe(sweep={"seeds": [[0], [1]]})], ["sweep", "seeds"]),
    ("sweep-not-list", lambda t: ["check", t.recipe(sweep={"train.lr": 0.1})], ["sweep.train.lr", "list"]),
    ("sweep-bad-value", lambda t: ["check", t.recipe(sweep={"train.lr": [0.1, -1]})], ["train.lr", "-1"]),
    ("sweep-duplicate-values", lambda t: ["check", t.recipe(sweep={"train.lr": [0.1, 0.1]})],
     ["sweep.train.lr", "repeat"]),
    ("huge-width-memory", lambda t: t.train(t.recipe(model={"hidden": [1_000_000_000]}), "--factor", 1),
     ["GiB", "memory", "model.hidden"]),
    ("memory-over-available", tiny_memory, ["MiB", "available RAM", "cpu"]),
    ("check-memory-over-available", lambda t, mp: tiny_memory(t, mp)[:2] + ["--device", "cpu"],
     ["needs about", "available RAM", "model.hidden"]),
    ("check-factor-unbuildable", lambda t: ["check", t.recipe(), "--set", "widen.factors=[1, 1e300]"],
     ["widen.factors", "1e+300", "wider than"]),
    # ---- non-finite numbers (the schema walk in tests/config/test_fences.py covers every key)
    ("nan-lr-string", lambda t: ["check", t.recipe(), "--set", "train.lr=nan"], ["train.lr", "finite"]),
    ("inf-factor", lambda t: ["check", t.recipe(), "--set", "widen.factors=[1, .inf]"],
     ["widen.factors", "finite"]),
    ("nan-factor-option", lambda t: t.train(t.recipe(), "--factor", "nan"), ["--factor", "finite"]),
    ("nan-per-factor", lambda t: ["check", t.recipe(widen={"per_factor": {"train.lr": {1: float("nan"), 2: 1}}})],
     ["widen.per_factor.train.lr.1", "finite"]),
    ("nan-connectivity", lambda t: ["check", t.recipe(sparsity={"rule": "custom",
                                                               "connectivity": {"fc1": float("nan")}})],
     ["sparsity.connectivity.fc1", "finite"]),
    ("inf-sweep-value", lambda t: ["check", t.recipe(sweep={"train.lr": [0.1, float("inf")]})],
     ["train.lr", "finite"]),
    # ---- settings without effect (the full table is in tests/config/test_fences.py)
    ("no-effect-nesterov", lambda t: ["check", t.recipe(train={"momentum": 0, "nesterov": True})],
     ["train.nesterov", "no effect", "momentum"]),
    ("no-effect-kernel-mlp", lambda t: ["check", t.recipe(sparsity={"granularity": "kernel"})],
     ["sparsity.granularity", "no effect", "mlp"]),
    # ---- command line
    ("file-missing", lambda t: ["check", t.tmp / "nope.yaml"], ["nope.yaml", "no such recipe"]),
    ("file-name-like-markup", lambda t: ["check", t.text("[b]r.yaml", "name: x\n")], ["[b]r.yaml", "'data'"]),
    ("file-is-directory", lambda t: ["check", t.tmp], ["directory", "recipe"]),
    ("set-no-equals", lambda t: ["check", t.recipe(), "--set", "train.lr"], ["train.lr", "dotted.key=value"]),
    ("set-bad-key", lambda t: ["check", t.recipe(), "--set", "=3"], ["--set", "dotted.key=value"]),
    ("set-bad-yaml", lambda t: ["check", t.recipe(), "--set", "train.lr=[0.1"], ["train.lr", "YAML"]),
    ("set-into-scalar", lambda t: ["check", t.recipe(), "--set", "name.x=1"], ["name", "not a mapping"]),
    ("set-unknown-key", lambda t: ["check", t.recipe(), "--set", "train.epochz=3"],
     ["train.epochz", "did you mean 'epochs'"]),
    ("device-unknown", lambda t: t.train(t.recipe())[:-1] + ["tpu"], ["--device", "tpu", "cuda"]),
    ("device-no-gpu", lambda t: t.train(t.recipe())[:-1] + ["cuda:99" if GPU else "cuda"], ["--device", "cuda"]),
    ("method-unknown", lambda t: t.train(t.recipe(), "--method", "magic"), ["--method", "magic", "sparse"]),
    ("factor-option-below-1", lambda t: t.train(t.recipe(), "--factor", "0.5"), ["--factor", "0.5", ">= 1"]),
    ("usage-missing-argument", lambda t: ["check"], ["RECIPE", "widecli check"]),
    ("usage-unknown-option", lambda t: ["check", t.recipe(), "--fatcor", "2"], ["--fatcor", "widecli check"]),
    ("usage-bad-option-type", lambda t: t.train(t.recipe(), "--factor", "wide"), ["--factor", "wide"]),
    ("usage-unknown-command", lambda t: ["chek", t.recipe()], ["chek", "check"]),
    ("usage-missing-option-value", lambda t: ["check", t.recipe(), "--set"], ["--set"]),
    ("jobs-zero", lambda t: ["sweep", t.recipe(), "--jobs", "0", "--results", t.results], ["--jobs", "0"]),
    ("executor-unknown", lambda t: ["sweep", t.recipe(), "--executor", "condor", "--results", t.results],
     ["--executor", "condor", "ray", "slurm"]),
    ("executor-slurm-without-slurm", lambda t: ["sweep", t.recipe(), "--executor", "slurm", "--results", t.results],
     ["--executor slurm", "srun", "--slurm-cluster local"]),
    ("kernel-bad-factors", lambda t: ["kernel", t.recipe(), "--factors", "1,x"], ["--factors", "1,x"]),
    ("report-bad-format", lambda t: ["report", t.tmp, "--format", "docx"], ["--format", "docx", "latex"]),
    ("report-missing-dir", lambda t: ["report", t.tmp / "nowhere"], ["nowhere", "no such results directory"]),
    ("ablate-bad-rule", lambda t: ["ablate", t.recipe(), "--rule", "magic", "--dry-run", "--results", t.results],
     ["--rule", "magic"]),
    # ---- data
    ("npz-no-path", lambda t: ["check", t.recipe(data={"dataset": "npz"})], ["data.path"]),
    ("npz-missing-file", lambda t: ["check", t.recipe(data={"dataset": "npz", "path": str(t.tmp / "no.npz")})],
     ["no.npz", "data.path"]),
    ("npz-corrupt", lambda t: ["check", t.recipe(data={"dataset": "npz", "path": t.text("bad.npz", "garbage")})],
     ["bad.npz", "npz"]),
    ("npz-missing-key", lambda t: ["check", t.npz(y_test=None)], ["data.npz", "y_test"]),
    ("npz-negative-label", lambda t: ["check", t.npz(y_train=np.array([0, -1] * 10))], ["y_train", "-1"]),
    ("npz-float-labels", lambda t: ["check", t.npz(y_test=np.full(10, 0.5))], ["y_test", "integer"]),
    ("npz-label-out-of-range", lambda t: ["check", t.npz(y_test=np.full(10, 7))], ["y_test", "7"]),
    ("npz-nan-features", lambda t: ["check", t.npz(x_train=np.full((20, 5), np.nan, np.float32))],
     ["x_train", "NaN"]),
    ("npz-row-mismatch", lambda t: ["check", t.npz(y_train=np.zeros(7, np.int64))], ["x_train", "20", "7"]),
    ("mnist-truncated-idx", truncated_mnist, ["train-images-idx3-ubyte"]),
    ("mnist-missing-no-download", lambda t: t.train(t.data_recipe("mnist")),
     ["data.root", "MNIST", "download: true", "train-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "/d/MNIST/raw/"]),
    ("cifar-missing-no-download", lambda t: t.train(t.data_recipe("cifar10")),
     ["data_batch_1", "cifar-10-batches-py/", "test_batch", "download: true"]),
    ("cifar-corrupt-pickle", corrupt_cifar, ["data_batch_3", "CIFAR10"]),
    ("svhn-corrupt-mat", corrupt_svhn, ["test_32x32.mat", "SVHN"]),
    # ---- results
    ("result-json-corrupt", lambda t: corrupt_result(t, "{not json"), ["result.json", "corrupt"]),
    ("result-json-foreign", lambda t: corrupt_result(t, json.dumps({"accuracy": 1})), ["result.json", "widecli"]),
    ("result-json-edited", edited_result, ["result.json", "checksum"]),
    ("results-is-file", results_is_file, ["results.txt", "not a directory"]),
    ("results-unwritable", unwritable_results, ["results", "writable"]),
    ("results-unreadable", unreadable_results, ["tiny"]),
]

def _binary(path: Path) -> str:
    path.write_bytes(b"name: \xff\xfe\x00bad\n")
    return str(path)


@pytest.mark.parametrize("case, build, needles", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2(case, build, needles, tmp_path, data_root, monkeypatch):
    monkeypatch.chdir(tmp_path)
    t = Ctx(tmp_path, data_root)
    args = build(t, monkeypatch) if build.__code__.co_argcount == 2 else build(t)
    result = invoke(*args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, f"exit {result.exit_code}\n{result.output}"
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not an uncaught error
    assert len(lines) == 1, result.stderr
    for word in needles:
        assert word.lower() in lines[0].lower(), f"{word!r} not in: {lines[0]}"


def _commands():
    import typer.main

    return sorted(typer.main.get_command(app).commands)


@pytest.mark.parametrize("command", _commands())
def test_every_command_refuses_an_unknown_option_in_one_line(command, tmp_path):
    """Enumerated from the program (every registered command), not from this file's table."""
    result = invoke(command, "--no-such-option")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "--no-such-option" in lines[0], result.output


@pytest.mark.parametrize("args, needle", [
    (["check", "nope.yaml"], "nope.yaml"),
    (["check", "--fatcor"], "--fatcor"),
    (["--debug", "chek"], "chek"),
])
def test_real_process_one_line_on_stderr(tmp_path, args, needle):
    proc = subprocess.run([sys.executable, "-m", "widecli", *args], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_real_process_refuses_a_read_only_results_dir_before_training(tmp_path, data_root):
    t = Ctx(tmp_path, data_root)
    args = [str(a) for a in unwritable_results(t)]
    proc = subprocess.run([sys.executable, "-m", "widecli", *args], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "writable" in proc.stderr and "Traceback" not in proc.stderr
    assert "epoch" not in proc.stdout  # refused before training started


def test_debug_shows_the_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "widecli", "--debug", "check", str(tmp_path / "nope.yaml")],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "RecipeError" in proc.stderr


def test_report_warns_about_a_corrupt_result_and_leaves_it_out(tmp_path, data_root):
    t = Ctx(tmp_path, data_root)
    good = t.finished_run()
    r = invoke("train", t.recipe(), "--factor", 1, "--seed", 1, "--results", t.results, "--device", "cpu")
    assert r.exit_code == 0, r.output
    [bad] = [d for d in (t.results / "tiny").iterdir() if d.is_dir() and d.name not in (good.name, ".locks")]
    (bad / "result.json").write_text('{"run_id": "x"')
    r = invoke("report", t.results, "--runs", "--format", "csv")
    assert r.exit_code == 0, r.output
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and str(bad / "result.json") in warnings[0] and "not counted" in warnings[0]
    assert list(load_frame(t.results).run_id) == [good.name]


def test_ablate_sigint_cleans_up_and_exits_130(tmp_path, data_root):
    import signal

    t = Ctx(tmp_path, data_root)
    recipe = t.recipe(train={"epochs": 400, "batch_size": 32})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "widecli", "ablate", recipe, "--rule", "erk", "--results",
                             str(t.results), "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, cwd=tmp_path)
    # stdout is not a terminal: the progress prints a line at a group's first epoch. Wait for it, so
    # the signal lands mid-run (400 epochs to go), whatever the machine's speed.
    seen = []
    for line in proc.stdout:
        seen.append(line.decode())
        if " · epoch 1/400 · " in seen[-1]:
            break
    else:
        pytest.fail(f"no epoch line before the process ended: {''.join(seen)} {proc.stderr.read().decode()}")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr.decode()
    assert "resume with: widecli ablate" in stderr.decode() and "Traceback" not in stderr.decode()
    runs = [d for d in (t.results / "tiny").iterdir() if d.is_dir() and d.name != ".locks"]
    assert not runs  # the interrupted run's partial files are gone; nothing had finished
    assert not list((t.results / "tiny" / ".locks").glob("*.lock"))


def test_memory_check_skips_stored_runs_so_a_finished_sweep_still_resumes(tmp_path, data_root, monkeypatch):
    t = Ctx(tmp_path, data_root)
    t.finished_run()
    monkeypatch.setattr(preflight, "available_memory", lambda device: (1, "available RAM"))
    r = invoke("sweep", t.recipe(), "--set", "widen.factors=[1]", "--results", t.results, "--device", "cpu")
    assert r.exit_code == 0 and "nothing to train" in r.output, r.output
    r = invoke("train", t.recipe(), "--factor", 1, "--results", t.results, "--device", "cpu", "--force")  # again
    assert r.exit_code == 2 and "needs about" in r.stderr and "has 1 B available RAM" in r.stderr, r.output
