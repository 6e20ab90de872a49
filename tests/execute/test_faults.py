"""Faults injected into real sweeps (issue 19): disk full and permission errors while writing a run's
metrics, result.json, weights and checkpoints, and corrupted files beside a valid result.json.

The faults are injected at the system-call boundary every writer of the store goes through
(`os.replace`, the last step of an atomic write): the code under test is the real store and run path.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pandas as pd
import pytest

from widecli.errors import SweepError
from widecli.execute import sweep
from widecli.execute.worklist import run_statuses
from widecli.recipes import expand, load_recipe
from widecli.store import runs as store


@pytest.fixture
def specs(specs_of):
    # factor 1 (one dense baseline per seed) + factor 2 x {sparse, dense}: 6 runs in 3 stacked groups
    return specs_of({"seeds": [0, 1], "train": {"epochs": 2, "lr": 0.05}})


def inject(monkeypatch, name: str, err: int = errno.ENOSPC, run_id: str | None = None,
           times: int | None = None) -> list[Path]:
    """Make the atomic write of files called `name` (of one run, or any) fail with `err`; the
    targets hit are returned as they happen."""
    real, hits = os.replace, []

    def faulty(src, dst, *a, **k):
        p = Path(dst)
        if p.name == name and (run_id is None or p.parent.name == run_id) and (times is None or len(hits) < times):
            hits.append(p)
            raise OSError(err, os.strerror(err), str(dst))
        return real(src, dst, *a, **k)
    monkeypatch.setattr(os, "replace", faulty)
    return hits


def statuses(results: Path, specs) -> dict[str, str]:
    return {p.run_id: p.status for p in run_statuses(specs, results)}


def no_half_written_run_reads_as_finished(results: Path, specs) -> None:
    for s in specs:
        d = store.run_dir(results, s)
        if (d / store.RESULT).exists():
            result = store.read_result(d)  # verified: every file it names matches its checksum
            assert result["status"] in ("ok", "failed", "diverged")


@pytest.mark.parametrize("name, err, word", [
    (store.METRICS, errno.ENOSPC, "No space left on device"),
    (store.MODEL, errno.EACCES, "Permission denied"),
    (store.RESULT, errno.ENOSPC, "No space left on device"),
])
def test_a_write_fault_fails_that_run_and_the_sweep_goes_on(specs, tmp_path, monkeypatch, name, err, word):
    victim = next(s for s in specs if s.factor == 2 and s.method == "sparse" and s.seed == 0)
    hits = inject(monkeypatch, name, err, run_id=victim.run_id, times=1)
    summary = sweep.sweep(specs, tmp_path, device="cpu")
    assert hits, "the fault was never injected"
    assert (summary.ok, summary.failed) == (5, 1), summary
    [(run_id, error)] = summary.failures
    assert run_id == victim.run_id and word in error and "\n" not in error and name in error
    no_half_written_run_reads_as_finished(tmp_path, specs)
    # Recorded failed with its error line (without metrics and weights); the others finished.
    result = store.read_result(store.run_dir(tmp_path, victim))
    assert result["status"] == "failed" and word in result["error"]
    assert statuses(tmp_path, specs) == {s.run_id: "failed" if s is victim else "finished" for s in specs}
    df = pd.read_csv(summary.runs_csv)
    assert df.set_index("run_id").status[victim.run_id] == "failed"
    # Space freed (the fault gone): --retry-failed trains exactly the failed run.
    monkeypatch.undo()
    again = sweep.sweep(specs, tmp_path, device="cpu", retry_failed=True)
    assert (again.ok, again.failed, again.skipped) == (1, 0, 5)
    assert set(statuses(tmp_path, specs).values()) == {"finished"}


def test_a_disk_that_stays_full_leaves_the_run_unstored_not_half_written(specs, tmp_path, monkeypatch):
    victim = next(s for s in specs if s.factor == 2 and s.method == "dense" and s.seed == 1)
    hits = inject(monkeypatch, store.RESULT, run_id=victim.run_id)  # every attempt, the failure record too
    summary = sweep.sweep(specs, tmp_path, device="cpu")
    assert len(hits) == 2  # the run's result, then its failure record
    assert summary.failed == 1 and "No space left on device" in summary.failures[0][1]
    no_half_written_run_reads_as_finished(tmp_path, specs)
    assert statuses(tmp_path, specs)[victim.run_id] == "new"  # nothing left: the next sweep trains it
    monkeypatch.undo()
    again = sweep.sweep(specs, tmp_path, device="cpu")
    assert (again.ok, again.skipped) == (1, 5)


def test_a_checkpoint_write_fault_fails_the_group_and_the_sweep_goes_on(make_recipe, tmp_path, monkeypatch):
    specs = expand(load_recipe(make_recipe({"seeds": [0], "train": {"epochs": 2, "checkpoint_every": 1}})))
    hits = inject(monkeypatch, store.CHECKPOINT, err=errno.ENOSPC, times=1)
    summary = sweep.sweep(specs, tmp_path, device="cpu")
    assert len(hits) == 1
    assert (summary.ok, summary.failed) == (len(specs) - 1, 1)
    assert "cannot write checkpoint" in summary.failures[0][1] and "No space left" in summary.failures[0][1]
    no_half_written_run_reads_as_finished(tmp_path, specs)


def test_fail_fast_stops_at_the_first_failure_and_the_same_command_resumes(specs, tmp_path, monkeypatch):
    hits = inject(monkeypatch, store.METRICS, times=1)  # the first run written
    with pytest.raises(SweepError, match=r"--fail-fast: run \w{12} failed \(.*No space left.*\); stopped"):
        sweep.sweep(specs, tmp_path, device="cpu", fail_fast=True)
    assert hits
    st = statuses(tmp_path, specs)
    assert list(st.values()).count("failed") == 1 and "new" in st.values()  # stopped before the rest
    no_half_written_run_reads_as_finished(tmp_path, specs)
    monkeypatch.undo()
    again = sweep.sweep(specs, tmp_path, device="cpu", retry_failed=True)
    assert again.failed == 0 and set(statuses(tmp_path, specs).values()) == {"finished"}


@pytest.mark.parametrize("name", [store.METRICS, store.SPEC, store.MODEL])
def test_a_corrupted_file_beside_a_valid_result_is_detected_and_retrained(specs, tmp_path, name):
    sweep.sweep(specs, tmp_path, device="cpu")
    victim = specs[0]
    path = store.run_dir(tmp_path, victim) / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    path.write_bytes(bytes(data))
    [planned] = [p for p in run_statuses(specs, tmp_path) if p.run_id == victim.run_id]
    assert planned.status == "corrupt" and planned.todo
    assert str(path) in planned.error and "checksum" in planned.error and "\n" not in planned.error
    events = []
    again = sweep.sweep(specs, tmp_path, device="cpu", retry_failed=True, on_event=events.append)
    assert (again.ok, again.skipped) == (1, len(specs) - 1)
    [plan] = [e for e in events if e.kind == "todo"]
    assert [p.run_id for p in plan.planned if p.error] == [victim.run_id]  # reported, one line per run
    assert store.read_result(store.run_dir(tmp_path, victim))["status"] == "ok"
