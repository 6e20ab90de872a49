"""The benchmark scripts that report the documentation's figures (docs/explanations/performance.md)
still run (reduced sizes): the GPU benchmark's CPU-reduced mode (so the first GPU machine gets its
figures in one call) and the store-at-scale benchmark. They are run, not timed: figures come from
the scripts themselves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, script, *args], cwd=ROOT / "benchmarks", capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_gpu_benchmark_cpu_reduced_mode_writes_its_figures(tmp_path):
    out = tmp_path / "gpu.txt"
    proc = run("gpu.py", "--threads", "1", "--images", "128", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "reduced CPU run" in text and "matmul peak measured" in text
    rows = [line.split() for line in text.splitlines() if line and line[0] != "#" and line.split()[0].isdigit()]
    assert [r[:2] for r in rows] == [["8", "1"], ["8", "2"]]  # width 8 alone, then K = 2 seeds stacked
    assert all(float(r[2]) > 0 and float(r[3]) > 0 for r in rows)
    assert "K = 2:" in text and "stacked MLP 784-256-10, K = 8 seeds" in text


def test_store_scale_benchmark_runs_on_a_small_store(tmp_path):
    proc = run("store_scale.py", "--seeds", "1", "2", "--keep", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    sizes = [int(line.split()[0]) for line in lines if line.strip() and line.split()[0].isdigit()]
    assert sizes == [99, 198]  # 50 factors x {sparse, dense} (factor 1 once) x seeds
    assert (tmp_path / "results2" / "report.md").stat().st_size > 0
    assert sum(1 for _ in (tmp_path / "results2" / "scale2").glob("*/result.json")) == 198


def test_sparse_kernels_benchmark_checks_and_prints_widecli_kernels():
    """It asserts its kernels' results against PyTorch's CSR kernels before printing any figure."""
    proc = run("sparse_kernels.py", "--threads", "1", "--factor", "4", "--batch", "32")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "widecli forward  kernels.spmm" in proc.stdout and "widecli CSR" in proc.stdout


def test_vs_commit_compares_against_a_revision_and_cleans_up():
    worktrees = subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True).stdout
    proc = run("vs_commit.py", "HEAD", "--hidden", "16", "--factors", "1", "4", "--rounds", "1", "--epochs", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line.split() and line.split()[0] == "16"]
    assert [r[1] for r in rows] == ["1", "4"] and all(float(r[2]) > 0 and float(r[3]) > 0 for r in rows)
    assert subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True).stdout == worktrees
