"""Per-run leases: results/<recipe>/.locks/<run_id>.lock, taken with O_EXCL by whichever process
trains the run, so two sweeps (or a sweep and `widecli train`), on one machine or on many sharing a
file system, never train one run twice; and a journal of who trained what.

A lease records its owner (host, pid, process start time, a token) and its length. While the owner
trains, a heartbeat thread renews it (touches the file's mtime) every quarter of its length. Another
process may take a run over when its owner is gone: on the same host, when the pid is dead (or
reused); on another host - whose processes we cannot see - when the lease has not been renewed for
its length (`WIDECLI_LEASE_SECONDS`, default 300; hosts' clocks are assumed synchronized, as NTP
does on clusters). Takeovers and renewals are serialised by an flock on a guard file. A run is
published only while its lease is still its own (`RunLock.commit`): an owner whose lease was taken
over writes nothing into the run directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from widecli.config.schema import RunSpec
from widecli.errors import StoreError

LOCKS = ".locks"
DEFAULT_LEASE_S = 300.0


def lease_seconds() -> float:
    """The lease length new locks get: WIDECLI_LEASE_SECONDS, or 5 minutes."""
    try:
        value = float(os.environ.get("WIDECLI_LEASE_SECONDS", DEFAULT_LEASE_S))
    except ValueError:
        raise StoreError(f"WIDECLI_LEASE_SECONDS: got {os.environ['WIDECLI_LEASE_SECONDS']!r}; "
                         f"expected a number of seconds > 0") from None
    if not value > 0:
        raise StoreError(f"WIDECLI_LEASE_SECONDS: got {value:g}; expected a number of seconds > 0")
    return value


def _proc_stat(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (Linux); [] where there is none."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _process_start(pid: int) -> str | None:
    """The kernel's start time of a process, to tell a live owner from a reused pid."""
    fields = _proc_stat(pid)
    return fields[19] if len(fields) > 19 else None


def _alive(info: dict, renewed: float | None = None) -> bool:
    """Whether a lease's owner may still be training: on this host, whether its process lives; on
    another host, whether the lease was renewed within its length (`renewed`: the file's mtime)."""
    if info.get("host") != socket.gethostname():
        if renewed is None:
            return True
        return time.time() - renewed <= float(info.get("lease_s", DEFAULT_LEASE_S))
    pid = int(info.get("pid", 0))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _proc_stat(pid)
    if fields and fields[0] == "Z":  # killed, not yet reaped by its parent
        return False
    start = info.get("start")
    return start is None or not fields or fields[19] == start


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


@contextmanager
def _guard(folder: Path) -> Iterator[None]:
    """The flock that serialises takeovers and renewals of the leases in a folder."""
    with open(folder / ".guard", "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(guard, fcntl.LOCK_UN)


class RunLock:
    """An O_EXCL lock file results/<recipe>/.locks/<run_id>.lock holding pid, host and a token,
    renewed by the heartbeat while held."""

    def __init__(self, path: Path, info: dict):
        self.path, self.info = path, info
        _HEARTBEAT.add(self)

    def held(self) -> bool:
        return _read_lock(self.path) == self.info

    def renew(self) -> bool:
        """Touch the lease if it is still ours; False if another process has taken it over."""
        with _guard(self.path.parent):
            if not self.held():
                return False
            os.utime(self.path)
            return True

    def commit(self, publish: Callable[[], Any]) -> bool:
        """Call `publish` (the renames that put a finished run in place) only if this lease is still
        ours; False, without calling it, if another process has taken the run over.

        Under the guard that serialises takeovers, and renewed first: no takeover can come between
        the check and the renames (a takeover needs the guard, then a lease unrenewed for its length)."""
        with _guard(self.path.parent):
            if not self.held():
                return False
            os.utime(self.path)
            publish()
            return True

    def holder(self) -> dict | None:
        """Who holds this run's lock file now (host, pid, ...): us, a process that took it over, or None."""
        return _read_lock(self.path)

    def release(self) -> None:
        _HEARTBEAT.discard(self)
        # Only remove our own lock: a stale-lock takeover may have replaced it.
        with _guard(self.path.parent):
            if self.held():
                self.path.unlink(missing_ok=True)


class _Heartbeat:
    """One daemon thread per process renewing every lease it holds, each quarter of the shortest."""

    def __init__(self):
        self.held: set[RunLock] = set()
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None

    def add(self, run_lock: RunLock) -> None:
        with self.lock:
            self.held.add(run_lock)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="widecli-lease", daemon=True)
                self.thread.start()
        self.wake.set()

    def discard(self, run_lock: RunLock) -> None:
        with self.lock:
            self.held.discard(run_lock)

    def _run(self) -> None:
        while True:
            with self.lock:
                held = list(self.held)
            interval = min((float(h.info.get("lease_s", DEFAULT_LEASE_S)) for h in held), default=60.0) / 4
            self.wake.wait(interval)
            self.wake.clear()
            for h in held:
                try:
                    if not h.renew():
                        # Taken over: the run path stops the group at its next lease check
                        # (execute.run), and a write would find the lease gone (RunLock.commit).
                        self.discard(h)
                except OSError:
                    pass  # a file system hiccup: the next beat tries again


_HEARTBEAT = _Heartbeat()


def lock_path(results: str | Path, spec: RunSpec) -> Path:
    return Path(results) / spec.recipe / LOCKS / f"{spec.run_id}.lock"


def _read_lock(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def lock_owner(results: str | Path, spec: RunSpec) -> dict | None:
    """The lease of the live process holding a run (host, pid, `renewed`: seconds ago), or None."""
    path = lock_path(results, spec)
    info, renewed = _read_lock(path), _mtime(path)
    if info is None or not _alive(info, renewed):
        return None
    return {**info, "renewed": time.time() - renewed if renewed is not None else None}


def try_lock(results: str | Path, spec: RunSpec) -> RunLock | None:
    """Take a run's lock, or None while a live process holds it; stale locks are taken over."""
    path = lock_path(results, spec)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"{path.parent}: cannot create the lock folder ({e.strerror or e})") from None
    pid = os.getpid()
    info = {"pid": pid, "host": socket.gethostname(), "start": _process_start(pid),
            "token": uuid.uuid4().hex, "time": time.time(), "lease_s": lease_seconds()}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not _remove_if_stale(path):
                return None
            continue
        except OSError as e:
            raise StoreError(f"{path}: cannot create lock file ({e.strerror or e})") from None
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(info))
        return RunLock(path, info)
    return None


def _remove_if_stale(path: Path) -> bool:
    """Remove a lock whose owner is gone (dead pid here, expired lease elsewhere); True if it is gone.

    Takeovers are serialised by an flock on a guard file (released by the kernel if we die), so two
    processes can never both judge one lock stale and the second delete the first's fresh lock.
    """
    with _guard(path.parent):
        try:
            info = _read_lock(path)
            if info is None and path.exists():
                # Created but not yet written (or torn by a crash): stale only once it is old.
                if time.time() - path.stat().st_mtime < 10:
                    return False
            elif info is not None and _alive(info, _mtime(path)):
                return False
            path.unlink(missing_ok=True)
            return True
        except FileNotFoundError:
            return True


def leases(results: str | Path, recipe: str) -> list[dict]:
    """Every lease of a recipe: path, run_id, host, pid, seconds since renewal, and whether its owner
    is known alive (a live process here, or a lease renewed in time elsewhere)."""
    folder = Path(results) / recipe / LOCKS
    out = []
    for path in sorted(folder.glob("*.lock")) if folder.is_dir() else []:
        info, renewed = _read_lock(path) or {}, _mtime(path)
        here = info.get("host") == socket.gethostname()
        out.append({"path": path, "run_id": path.stem, "host": info.get("host", "?"), "pid": info.get("pid"),
                    "renewed": None if renewed is None else time.time() - renewed,
                    "alive": bool(info) and _alive(info, renewed), "this_host": here})
    return out


def breakable(found: list[dict]) -> tuple[list[dict], list[dict]]:
    """Leases (from `leases`) sorted for `--break-locks`: (kept: held by a live process on this host,
    never broken; the others, which only the user can know to be gone)."""
    kept = [x for x in found if x["this_host"] and x["alive"]]
    return kept, [x for x in found if x not in kept]


def break_lease(path: Path) -> bool:
    """Remove a lease unless a live process on this host holds it; True if removed."""
    with _guard(path.parent):
        info = _read_lock(path)
        if info is not None and info.get("host") == socket.gethostname() and _alive(info):
            return False
        path.unlink(missing_ok=True)
        return True


def journal(results: str | Path, recipe: str, *words: Any) -> None:
    """Append one line to results/<recipe>/.locks/journal.log: who trained what, when (an audit trail)."""
    path = Path(results) / recipe / LOCKS / "journal.log"
    line = " ".join([time.strftime("%Y-%m-%dT%H:%M:%S"), socket.gethostname(), str(os.getpid()),
                     *map(str, words)]) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # One O_APPEND write per line: concurrent sweeps never interleave within a line.
        fd = os.open(path, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    except OSError:
        pass  # the journal is an audit trail, never needed to resume
