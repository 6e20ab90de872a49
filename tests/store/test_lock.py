"""Leases: a run's lock is renewed while its owner trains, expires when another host's owner stops
renewing it, is respected while alive, goes to exactly one of several racing processes, and can be
broken on request when its owner is gone."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import invoke

from widecli.errors import SweepError
from widecli.execute.sweep import sweep
from widecli.recipes import expand, load_recipe
from widecli.store import lock

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def spec(spec_of):
    return spec_of({"widen": {"factors": [1], "methods": ["dense"]}}, factor=1, method="dense")


def fake_lease(results, spec, host="node-17", age=0.0, lease_s=2.0, pid=4242) -> Path:
    """A lease written as another machine's sweep would have written it, last renewed `age` s ago."""
    path = lock.lock_path(results, spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "host": host, "start": None, "token": "t", "time": 0,
                                "lease_s": lease_s}))
    os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_another_hosts_lease_is_respected_until_it_expires(tmp_path, spec):
    fake_lease(tmp_path, spec, age=0.5, lease_s=30)
    assert lock.try_lock(tmp_path, spec) is None            # renewed 0.5 s ago: its owner trains
    assert lock.lock_owner(tmp_path, spec)["host"] == "node-17"
    fake_lease(tmp_path, spec, age=31, lease_s=30)          # not renewed for longer than its lease
    assert lock.lock_owner(tmp_path, spec) is None
    taken = lock.try_lock(tmp_path, spec)
    assert taken is not None and taken.held() and json.loads(lock.lock_path(tmp_path, spec).read_text())[
        "host"] == socket.gethostname()
    taken.release()


def test_a_live_lease_on_this_host_is_respected(tmp_path, spec):
    mine = lock.try_lock(tmp_path, spec)
    assert mine is not None and lock.try_lock(tmp_path, spec) is None
    mine.release()
    assert lock.try_lock(tmp_path, spec) is not None


HOLD = """
import sys, threading, time
from widecli.recipes import expand, load_recipe
from widecli.store import lock
renew, printing = lock.RunLock.renew, threading.Lock()  # (two threads print: one line at a time)
def say(line):
    with printing:
        print(line, flush=True)
def announced(self):  # each renewal of the heartbeat is an event the test reads, with its time
    ok = renew(self)
    say(f"renewed {time.time()}" if ok else "lost")
    return ok
lock.RunLock.renew = announced
[spec] = expand(load_recipe(sys.argv[1]))
held = lock.try_lock(sys.argv[2], spec)
say("held" if held else "busy")
threading.Event().wait()  # hold the lease until killed
"""


def renewals(proc: subprocess.Popen, since: float, limit: int = 20):
    """The owner's renewals done after `since` (a renewal event carries its time: lines waiting in
    the pipe from before are skipped); fails after `limit` of them."""
    for line in proc.stdout:
        word, _, at = line.strip().partition(" ")
        if word == "renewed" and float(at) >= since:
            yield
            limit -= 1
            if not limit:
                pytest.fail("the owner renewed its lease again and again, and the lease never came back")
    pytest.fail("the owner process ended before renewing its lease")


def test_the_heartbeat_renews_and_a_killed_owner_expires(make_recipe, tmp_path, monkeypatch):
    """A real owner process renews its lease; seen from "another host" (a patched host name), a
    lease left unrenewed for longer than its length comes back to life at the owner's next renewal
    (event: its "renewed" line), and once the owner is killed nothing renews it: respected within its
    length, taken over past it. Event-driven: the file's age is set, never waited for."""
    recipe = make_recipe({"widen": {"factors": [1], "methods": ["dense"]}})
    [spec] = expand(load_recipe(recipe))
    lease_s = 4.0  # renewed every second; long enough that a busy machine never sees it lapse by itself
    env = {**os.environ, "WIDECLI_LEASE_SECONDS": str(lease_s)}
    owner = subprocess.Popen([sys.executable, "-c", HOLD, str(recipe), str(tmp_path)], env=env, cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    path = lock.lock_path(tmp_path, spec)
    try:
        assert "held" in [owner.stdout.readline().strip() for _ in range(2)]   # (a first renewal may come first)
        monkeypatch.setattr(socket, "gethostname", lambda: "another-machine")
        backdated = time.time()
        expired = backdated - 2 * lease_s                 # as if unrenewed for two lease lengths
        os.utime(path, (expired, expired))
        for _ in renewals(owner, since=backdated):
            if path.stat().st_mtime >= backdated:         # renewed by the owner after the backdating
                break
        assert lock.lock_owner(tmp_path, spec)["pid"] == owner.pid
        assert lock.try_lock(tmp_path, spec) is None      # renewed: its owner trains
        owner.kill()
        owner.wait()
        within = time.time() - lease_s / 2               # last renewed half a lease ago: still respected
        os.utime(path, (within, within))
        assert lock.try_lock(tmp_path, spec) is None
        past = time.time() - 1.5 * lease_s               # nothing renewed it past its length: expired
        os.utime(path, (past, past))
        taken = lock.try_lock(tmp_path, spec)
        assert taken is not None and json.loads(path.read_text())["host"] == "another-machine"
        taken.release()
    finally:
        owner.kill()
        owner.wait()


def _race(args) -> bool:
    barrier, results, spec = args
    barrier.wait()
    return lock.try_lock(results, spec) is not None


def test_racing_processes_exactly_one_takes_the_run(tmp_path, spec):
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(6)
        with ctx.Pool(6) as pool:
            won = pool.map(_race, [(barrier, str(tmp_path), spec)] * 6)
    assert sum(won) == 1


def test_waiting_for_a_lease_times_out_and_names_the_holder(tmp_path, spec):
    fake_lease(tmp_path, spec, lease_s=600)
    events = []
    with pytest.raises(SweepError, match="node-17 pid 4242") as e:
        sweep([spec], tmp_path, device="cpu", wait_timeout=0.3, on_event=events.append)
    assert "--break-locks" in str(e.value) and "\n" not in str(e.value)
    [wait] = [ev for ev in events if ev.kind == "wait"]
    assert wait.holders[0]["host"] == "node-17"


def test_break_locks_removes_gone_owners_and_keeps_live_ones(make_recipe, tmp_path):
    recipe = make_recipe({"widen": {"factors": [1, 2], "methods": ["sparse"]}})
    first, second = expand(load_recipe(recipe))
    fake_lease(tmp_path, first, lease_s=600)     # another host, renewing: only the user knows it is gone
    live = lock.try_lock(tmp_path, second)       # this process: alive here, never broken
    res = invoke("sweep", recipe, "--results", tmp_path, "--break-locks", "--dry-run", input="n\n")
    assert res.exit_code == 0 and "no lease broken" in res.output and lock.lock_path(tmp_path, first).exists()
    res = invoke("sweep", recipe, "--results", tmp_path, "--break-locks", "--yes", "--dry-run")
    assert res.exit_code == 0, res.output
    assert "broke 1 lease(s)" in res.output and "kept" in res.output
    assert not lock.lock_path(tmp_path, first).exists() and live.held()
    live.release()
