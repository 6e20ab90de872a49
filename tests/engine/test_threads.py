"""Intra-op threads per run (issue 21): one thread for small steps, the free cores split over the
jobs for large ones, --threads / WIDECLI_THREADS to fix it, the choice recorded in result.json."""

from __future__ import annotations

import pytest
import torch
from helpers import CPU, invoke

from widecli.engine import threads
from widecli.errors import RecipeError
from widecli.recipes import expand, load_recipe


@pytest.fixture(autouse=True)
def auto(monkeypatch):
    monkeypatch.delenv("WIDECLI_THREADS", raising=False)
    threads.configure()
    yield
    threads.configure()


def group(make_recipe, hidden, seeds=(0,), batch=128):
    r = load_recipe(make_recipe({"model": {"hidden": list(hidden)}, "seeds": list(seeds),
                                 "train": {"batch_size": batch}}))
    return [s for s in expand(r) if s.factor == 1]


def test_step_macs_of_an_mlp_are_exact(make_recipe):
    specs = group(make_recipe, [16], seeds=(0, 1))
    # MNIST-1D: 40 inputs, 10 classes; two stacked runs, batch 128
    assert threads.step_macs(specs, (40,), 10) == (40 * 16 + 16 * 10) * 128 * 2


def test_step_macs_of_a_conv_count_every_output_position(make_recipe):
    r = load_recipe(make_recipe({"model": {"arch": "cnn", "width": 4}, "train": {"batch_size": 1}}))
    [spec] = [s for s in expand(r) if s.factor == 1]
    first_conv = 4 * 8 * 8 * (1 * 3 * 3)  # 4 channels x 8x8 positions (padding 1) x fan-in 1x3x3
    assert threads.step_macs([spec], (1, 8, 8), 10) > first_conv  # and the layers after it


def test_small_steps_get_one_thread_whatever_the_machine(make_recipe, monkeypatch):
    monkeypatch.setattr(threads, "cores", lambda: 64)
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: 0)
    n, why = threads.choose(group(make_recipe, [32, 32], seeds=(0, 1)), (40,), 10, CPU)
    assert n == 1 and why.startswith("auto: small step")


@pytest.mark.parametrize("cores, busy, jobs, expected", [
    (8, 0, 1, 8),     # idle: every core
    (8, 0, 2, 4),     # two jobs share them
    (8, 3, 2, 2),     # 5 cores free over 2 jobs
    (2, 1, 1, 1),     # one core busy elsewhere: never more threads than free cores
    (2, 7, 1, 1),     # overloaded: still one
])
def test_large_steps_split_the_free_cores_over_the_jobs(make_recipe, monkeypatch, cores, busy, jobs, expected):
    monkeypatch.setattr(threads, "cores", lambda: cores)
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: busy)
    threads.configure(jobs=jobs)
    specs = group(make_recipe, [4096, 4096])
    assert threads.step_macs(specs, (40,), 10) > threads.SMALL_STEP_MACS
    n, why = threads.choose(specs, (40,), 10, CPU)
    assert n == expected and f"over {jobs} job(s)" in why


def test_requested_and_environment_and_cap(make_recipe, monkeypatch):
    specs = group(make_recipe, [16])
    threads.configure(3)
    assert threads.choose(specs, (40,), 10, CPU) == (3, "requested")
    monkeypatch.setenv("WIDECLI_THREADS", "2")
    threads.configure()
    assert threads.choose(specs, (40,), 10, CPU)[0] == 2
    monkeypatch.setenv("WIDECLI_THREADS", "many")
    with pytest.raises(RecipeError, match="WIDECLI_THREADS: got 'many'; expected auto or a positive integer"):
        threads.configure()
    monkeypatch.setenv("WIDECLI_THREADS", "auto")
    monkeypatch.setattr(threads, "cores", lambda: 16)
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: 0)
    threads.configure(cap=3)  # a Ray task granted 3 CPUs
    assert threads.choose(group(make_recipe, [4096, 4096]), (40,), 10, CPU)[0] == 3


def test_busy_elsewhere_reads_the_kernels_runnable_count():
    n = threads.busy_elsewhere(samples=3, interval=0.0)
    assert isinstance(n, int) and n >= 0


def test_a_run_records_its_threads_and_why(make_recipe, tmp_path, run_stored):
    torch.set_num_threads(2)
    [(o, _)] = run_stored(group(make_recipe, [16])[:1], tmp_path, CPU)
    assert o.final["threads"] == 1 and o.final["threads_rule"].startswith("auto: small step")
    assert torch.get_num_threads() == 1


def test_auto_jobs_uses_free_cores_for_small_runs_only(make_recipe, monkeypatch):
    monkeypatch.setattr(threads, "cores", lambda: 8)
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: 3)
    small = group(make_recipe, [16], seeds=(0, 1, 2, 3, 4, 5, 6))
    assert threads.auto_jobs(small, CPU) == 5          # 8 cores, 3 busy elsewhere
    assert threads.auto_jobs(small[:2], CPU) == 2      # never more processes than runs
    assert threads.auto_jobs(group(make_recipe, [4096, 4096]), CPU) == 1  # a large run: threads instead
    assert threads.auto_jobs(small, torch.device("cuda")) == 1


def test_jobs_option_takes_auto_or_a_positive_integer(make_recipe, tmp_path):


    recipe = make_recipe({"widen": {"factors": [1]}})
    r = invoke(*["sweep", str(recipe), "--jobs", "many", "--results", str(tmp_path)])
    assert r.exit_code == 2 and "--jobs: got 'many'; expected auto or an integer >= 1" in r.stderr
    r = invoke(*["sweep", str(recipe), "--jobs", "auto", "--results", str(tmp_path),
                                 "--device", "cpu"])
    assert r.exit_code == 0 and "1 ok" in r.output, r.output
