"""The store: atomic run files, verified results, per-run locks with stale-lock takeover, journal."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from widecli.errors import StoreError
from widecli.execute.run import load_model
from widecli.store import lock as store_lock
from widecli.store import runs as store


@pytest.fixture
def spec(spec_of):
    return spec_of()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lock(path, **info):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": socket.gethostname(), "token": "t", **info}))


def finished_run(tmp_path, spec):
    return store.write_run(tmp_path, spec, [{"epoch": 1, "test_accuracy": 0.5}],
                           {"status": "ok", "final": {"test_accuracy": 0.5}}, {"w": [1, 2]})


def test_a_lock_is_exclusive_until_released(tmp_path, spec):
    lock = store_lock.try_lock(tmp_path, spec)
    assert lock is not None and lock.held()
    info = json.loads(store_lock.lock_path(tmp_path, spec).read_text())
    assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
    assert store_lock.try_lock(tmp_path, spec) is None  # a live owner (ourselves) holds it
    assert store_lock.lock_owner(tmp_path, spec)["pid"] == os.getpid()
    lock.release()
    assert not store_lock.lock_path(tmp_path, spec).exists() and store_lock.lock_owner(tmp_path, spec) is None
    again = store_lock.try_lock(tmp_path, spec)
    assert again is not None and again.info["token"] != lock.info["token"]


def test_a_dead_owners_lock_is_taken_over(tmp_path, spec):
    write_lock(store_lock.lock_path(tmp_path, spec), pid=dead_pid())
    assert store_lock.lock_owner(tmp_path, spec) is None
    lock = store_lock.try_lock(tmp_path, spec)
    assert lock is not None and lock.info["pid"] == os.getpid()


def test_a_reused_pid_is_not_mistaken_for_the_owner(tmp_path, spec):
    # Our own pid, but another process start time: the pid was reused after the owner died.
    write_lock(store_lock.lock_path(tmp_path, spec), pid=os.getpid(), start="1")
    assert store_lock.try_lock(tmp_path, spec) is not None


def test_another_hosts_lock_is_never_taken_over(tmp_path, spec):
    write_lock(store_lock.lock_path(tmp_path, spec), pid=dead_pid(), host="elsewhere.example")
    assert store_lock.try_lock(tmp_path, spec) is None


def test_release_leaves_a_lock_that_was_taken_over(tmp_path, spec):
    lock = store_lock.try_lock(tmp_path, spec)
    write_lock(lock.path, pid=os.getpid(), token="someone else")
    lock.release()
    assert lock.path.exists()


def test_an_unwritten_lock_file_counts_as_held_while_fresh(tmp_path, spec):
    path = store_lock.lock_path(tmp_path, spec)
    path.parent.mkdir(parents=True)
    path.touch()  # created by O_EXCL, its owner not yet done writing
    assert store_lock.try_lock(tmp_path, spec) is None
    os.utime(path, (0, 0))
    assert store_lock.try_lock(tmp_path, spec) is not None


def test_remove_partial_keeps_finished_runs(tmp_path, spec):
    d = finished_run(tmp_path, spec)
    assert not store.remove_partial(tmp_path, spec) and store.is_finished(d)
    (d / store.RESULT).unlink()
    assert store.remove_partial(tmp_path, spec) and not d.exists()
    assert not store.remove_partial(tmp_path, spec)


def test_result_checksums_catch_edits_of_any_file(tmp_path, spec):
    d = finished_run(tmp_path, spec)
    assert store.read_result(d)["status"] == "ok"
    (d / store.METRICS).write_text("epoch,test_accuracy\n1,0.9\n")
    with pytest.raises(StoreError, match="metrics.csv"):
        store.read_result(d)
    assert store.finished_runs(tmp_path, spec.recipe) == {}


def test_journal_appends_one_line_per_event(tmp_path, spec):
    store_lock.journal(tmp_path, spec.recipe, "start", spec.run_id)
    store_lock.journal(tmp_path, spec.recipe, "done", spec.run_id, "ok")
    lines = (tmp_path / spec.recipe / store_lock.LOCKS / "journal.log").read_text().splitlines()
    assert [line.split()[3:] for line in lines] == [["start", spec.run_id], ["done", spec.run_id, "ok"]]
    assert lines[0].split()[2] == str(os.getpid())


def test_stripped_weights_keep_a_run_finished_but_changed_weights_do_not(tmp_path, spec):
    # Committed studies keep result.json and metrics.csv but not model.pt (git-ignored).
    d = finished_run(tmp_path, spec)
    (d / store.MODEL).unlink()
    assert store.is_finished(d)
    with pytest.raises(StoreError, match="weights of this run were not kept"):
        load_model(d)
    d = finished_run(tmp_path / "b", spec)
    (d / store.MODEL).write_bytes(b"tampered")
    assert not store.is_finished(d)
    (d / store.MODEL).unlink()
    (d / store.METRICS).write_text("epoch\n1\n")
    assert not store.is_finished(d)
