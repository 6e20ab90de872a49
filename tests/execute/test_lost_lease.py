"""A lost lease never overwrites: when another host takes over a run whose lease expired, the old
owner stops training at its next lease check (after the epoch), writes nothing into the run
directory, journals `lost-lease`, and the sweep (and the CLI) report it. The takeover happens
mid-run, at the run's first epoch event."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest
from helpers import CPU, invoke

from widecli.execute import run as runner
from widecli.execute.run import LOST_LEASE, run_group
from widecli.execute.sweep import sweep
from widecli.recipes import expand, load_recipe
from widecli.store import lock
from widecli.store import runs as store

OTHER = "node-17"


@pytest.fixture
def recipe(make_recipe) -> Path:
    return make_recipe({"widen": {"factors": [1], "methods": ["dense"]}, "train": {"epochs": 2}})


def take_over(results: Path, spec, monkeypatch) -> dict:
    """What another host does to a run whose owner stopped renewing its lease: judge the lease
    expired, take it (lock.try_lock, as that host), and train and store the run itself. Returns the
    run directory's files as the new owner left them (name -> bytes) and its lease."""
    path = lock.lock_path(results, spec)
    lease_s = json.loads(path.read_text())["lease_s"]
    stale = time.time() - 2 * lease_s
    os.utime(path, (stale, stale))  # not renewed for two lease lengths, as seen from the other host
    with monkeypatch.context() as m:
        m.setattr(socket, "gethostname", lambda: OTHER)
        theirs = lock.try_lock(results, spec)
    assert theirs is not None and theirs.held(), "the expired lease was not taken over"
    store.write_run(results, spec, [{"epoch": 1, "test_accuracy": 0.5}],
                    {"status": "ok", "error": None, "final": {"test_accuracy": 0.5, "owner": OTHER}})
    return {"files": files_of(store.run_dir(results, spec)), "lease": theirs}


def files_of(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def journal_words(results: Path, spec) -> list[str]:
    lines = (results / spec.recipe / lock.LOCKS / "journal.log").read_text().splitlines()
    return [line.split()[3] for line in lines if line.split()[4] == spec.run_id]


def on_first_epoch(results, spec, monkeypatch, seen: dict):
    def hook(event) -> None:
        if event.kind == "epoch" and event.epoch == 1 and not seen:
            seen.update(take_over(results, spec, monkeypatch))
    return hook


def check_untouched(results: Path, spec, seen: dict) -> None:
    d = store.run_dir(results, spec)
    assert files_of(d) == seen["files"]                      # not one byte of the new owner's run changed
    assert store.read_result(d)["final"]["owner"] == OTHER
    assert lock.lock_path(results, spec).read_text() == json.dumps(seen["lease"].info)  # its lease kept
    assert journal_words(results, spec) == ["start", LOST_LEASE]   # no `done` by the old owner
    staging = store.staging_dir(results, spec)
    assert not staging.exists() or not list(staging.iterdir())     # its staged files discarded
    seen["lease"].release()


def test_a_run_whose_lease_was_taken_over_writes_nothing(make_recipe, tmp_path, monkeypatch):
    recipe = make_recipe({"widen": {"factors": [1], "methods": ["dense"]}, "train": {"epochs": 5}})
    [spec] = expand(load_recipe(recipe))
    seen: dict = {}
    epochs: list[int] = []
    hook = on_first_epoch(tmp_path, spec, monkeypatch, seen)
    report = run_group([spec], tmp_path, CPU,
                       emit=lambda e: (hook(e), epochs.append(e.epoch) if e.kind == "epoch" else None))
    assert seen, "the run never reached its first epoch"
    assert epochs == [1]  # the old owner stopped training at the lease check after the takeover
    [(run_id, status, error)] = report.trained
    assert (run_id, status) == (spec.run_id, LOST_LEASE) and OTHER in error and "\n" not in error
    assert report.written == [] and report.results == []
    check_untouched(tmp_path, spec, seen)


def test_the_sweep_reports_a_lost_lease(recipe, tmp_path, monkeypatch):
    [spec] = expand(load_recipe(recipe))
    seen: dict = {}
    events = []
    hook = on_first_epoch(tmp_path, spec, monkeypatch, seen)
    summary = sweep([spec], tmp_path, device="cpu", on_event=lambda e: (hook(e), events.append(e)))
    assert (summary.lost_lease, summary.ok, summary.failed, summary.trained) == (1, 0, 0, 1)
    [done] = [e for e in events if e.kind == "done"]
    assert done.status == LOST_LEASE and OTHER in done.error
    check_untouched(tmp_path, spec, seen)


@pytest.mark.parametrize("command, code", [("sweep", 0), ("train", 1)])
def test_the_cli_says_which_run_lost_its_lease(recipe, tmp_path, monkeypatch, command, code):
    """sweep: a run another host finishes is not a failure of the sweep (exit 0); train: the one run
    asked for was not stored here (exit 1)."""
    [spec] = expand(load_recipe(recipe))
    seen: dict = {}
    real = runner.fit

    def fit(specs, data, device, on_epoch=None, checkpoint_dir=None):
        def epoch(e, n, rows):
            if e == 1 and not seen:
                seen.update(take_over(tmp_path, spec, monkeypatch))
            on_epoch(e, n, rows)
        return real(specs, data, device, epoch, checkpoint_dir)
    monkeypatch.setattr(runner, "fit", fit)
    res = invoke(*[command, str(recipe), "--results", str(tmp_path), "--device", "cpu"])
    assert res.exit_code == code, res.output
    assert LOST_LEASE in res.output and spec.run_id in res.output and OTHER in res.output
    if command == "sweep":
        assert f"{LOST_LEASE} {spec.run_id}" in res.output and "1 lost lease" in res.output
    check_untouched(tmp_path, spec, seen)
