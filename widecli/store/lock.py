"""Per-run locks: results/<recipe>/.locks/<run_id>.lock, taken with O_EXCL by whichever process
trains the run, so two sweeps (or a sweep and `widecli train`) never train one run twice; and a
journal of who trained what.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from widecli.errors import StoreError

LOCKS = ".locks"


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


def _alive(info: dict) -> bool:
    """Whether a lock's owner may still run: always true for another host (we cannot look)."""
    if info.get("host") != socket.gethostname():
        return True
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


class RunLock:
    """An O_EXCL lock file results/<recipe>/.locks/<run_id>.lock holding pid, host and a token."""

    def __init__(self, path: Path, info: dict):
        self.path, self.info = path, info

    def held(self) -> bool:
        return _read_lock(self.path) == self.info

    def release(self) -> None:
        # Only remove our own lock: a stale-lock takeover may have replaced it.
        if self.held():
            self.path.unlink(missing_ok=True)


def lock_path(results: str | Path, spec) -> Path:
    return Path(results) / spec.recipe / LOCKS / f"{spec.run_id}.lock"


def _read_lock(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def lock_owner(results: str | Path, spec) -> dict | None:
    """pid/host of the live process holding a run's lock, or None."""
    info = _read_lock(lock_path(results, spec))
    return info if info is not None and _alive(info) else None


def try_lock(results: str | Path, spec) -> RunLock | None:
    """Take a run's lock, or None while a live process holds it; stale locks are taken over."""
    path = lock_path(results, spec)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"{path.parent}: cannot create the lock folder ({e.strerror or e})") from None
    pid = os.getpid()
    info = {"pid": pid, "host": socket.gethostname(), "start": _process_start(pid),
            "token": uuid.uuid4().hex, "time": time.time()}
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
    """Remove a lock whose owner is dead; True if the lock is gone.

    Takeovers are serialised by an flock on a guard file (released by the kernel if we die), so two
    processes can never both judge one lock stale and the second delete the first's fresh lock.
    """
    with open(path.parent / ".guard", "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        try:
            info = _read_lock(path)
            if info is None and path.exists():
                # Created but not yet written (or torn by a crash): stale only once it is old.
                if time.time() - path.stat().st_mtime < 10:
                    return False
            elif info is not None and _alive(info):
                return False
            path.unlink(missing_ok=True)
            return True
        except FileNotFoundError:
            return True
        finally:
            fcntl.flock(guard, fcntl.LOCK_UN)


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
