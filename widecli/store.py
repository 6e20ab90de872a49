"""The run store: results/<recipe>/<run_id>/{spec.yaml, metrics.csv, model.pt, result.json}.

Every file is written to a temporary name and renamed into place. `result.json` is written last
and carries checksums of itself and of the other files: its valid presence means the run is
finished; anything less is a partial run that is redone. `runs.csv` is an index rebuilt from the
result files, never the only copy of anything.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml

from widecli.errors import StoreError
from widecli.recipe import RunSpec

RESULT, SPEC, METRICS, MODEL, INDEX = "result.json", "spec.yaml", "metrics.csv", "model.pt", "runs.csv"
FORMAT = 1


def run_dir(results: str | Path, spec: RunSpec) -> Path:
    return Path(results) / spec.recipe / spec.run_id


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _content_checksum(result: dict) -> str:
    body = {k: v for k, v in result.items() if k != "checksums"}
    return _sha(json.dumps(body, sort_keys=True, default=str).encode())


def write_run(results: str | Path, spec: RunSpec, metrics: list[dict], result: dict,
              state: dict | None = None) -> Path:
    """Write a finished run; result.json goes last."""
    d = run_dir(results, spec)
    try:
        d.mkdir(parents=True, exist_ok=True)
        (d / RESULT).unlink(missing_ok=True)  # a re-run is unfinished until its new result lands
        files = {SPEC: yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False).encode(),
                 METRICS: _csv_bytes(metrics)}
        if state is not None:
            buf = io.BytesIO()
            torch.save(state, buf)
            files[MODEL] = buf.getvalue()
        for name, data in files.items():
            atomic_write(d / name, data)
        result = {"format": FORMAT, "run_id": spec.run_id, "recipe": spec.recipe, **result,
                  "spec": spec.model_dump(mode="json")}
        result["checksums"] = {**{n: _sha(b) for n, b in files.items()}, "content": _content_checksum(result)}
        atomic_write(d / RESULT, json.dumps(result, indent=1, default=str).encode())
    except OSError as e:
        raise StoreError(f"{d}: cannot write run files ({e.strerror or e}); check the results "
                         f"directory is writable and has space") from None
    return d


def _csv_bytes(rows: list[dict]) -> bytes:
    if not rows:
        return b""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue().encode()


def read_result(d: Path, verify_files: bool = True) -> dict:
    """A run's result.json, verified; StoreError says why a run directory is not a finished run."""
    path = d / RESULT
    try:
        result = json.loads(path.read_text())
    except FileNotFoundError:
        raise StoreError(f"{path}: missing (run not finished)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(f"{path}: corrupt result file ({type(e).__name__}); the run will be redone") from None
    if not isinstance(result, dict) or "run_id" not in result or not isinstance(result.get("checksums"), dict):
        raise StoreError(f"{path}: not a widecli result file (no run_id/checksums)")
    if result["run_id"] != d.name:
        raise StoreError(f"{path}: belongs to run {result['run_id']}, not {d.name}")
    if _content_checksum(result) != result["checksums"].get("content"):
        raise StoreError(f"{path}: checksum mismatch (edited or corrupt); the run will be redone")
    if verify_files:
        for name, digest in result["checksums"].items():
            if name == "content":
                continue
            if name == MODEL and not (d / name).exists():
                # Weights deliberately not kept (committed studies strip model.pt): result.json is
                # written last, so its valid presence still proves the run finished.
                continue
            try:
                ok = _sha((d / name).read_bytes()) == digest
            except OSError:
                ok = False
            if not ok:
                raise StoreError(f"{d / name}: missing or does not match result.json's checksum")
    return result


def is_finished(d: Path) -> bool:
    try:
        read_result(d)
        return True
    except StoreError:
        return False


def finished_runs(results: str | Path, recipe: str | None = None, verify_files: bool = True,
                  rejected: list[str] | None = None) -> dict[str, dict]:
    """run_id -> result of every finished run of one recipe; with recipe=None, of all recipes keyed
    "recipe/run_id" (two recipes may hold the same run: ids hash what a run computes, not its recipe).

    A result.json that is corrupt, foreign or fails its checksums is left out; `rejected` (if given)
    collects one line per such file saying why.
    """
    root = Path(results)
    try:
        dirs = [root / recipe] if recipe else [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
        out = {}
        for rd in dirs:
            if not rd.is_dir():
                continue
            for d in sorted(rd.iterdir()):
                if d.is_dir() and (d / RESULT).exists():
                    try:
                        out[d.name if recipe else f"{rd.name}/{d.name}"] = read_result(d, verify_files)
                    except StoreError as e:
                        if rejected is not None:
                            rejected.append(str(e))
    except OSError as e:
        raise StoreError(f"{e.filename or root}: cannot read the results directory ({e.strerror or e})") from None
    return out


def flatten(result: dict) -> dict[str, Any]:
    """One runs.csv / report row: id, status, final metrics, weights and the spec's dotted keys."""
    row = {"run_id": result["run_id"], "recipe": result["recipe"], "status": result["status"]}
    spec = result["spec"]
    row.update({"factor": spec["factor"], "method": spec["method"], "seed": spec["seed"],
                "widen_layers": _scalar(spec["widen_layers"])})
    for k, v in result.get("final", {}).items():
        if not isinstance(v, dict):
            row[k] = v
    for k in ("budget", "dense_weights", "nonzeros", "connectivity", "other_params"):
        row[k] = result.get("weights", {}).get(k)
    for section in ("data", "model", "sparsity", "train"):
        for k, v in spec[section].items():
            row[f"{section}.{k}"] = _scalar(v)
    for k, v in spec.get("axes", {}).items():
        row[f"axis:{k}"] = _scalar(v)
    return row


def _scalar(v: Any) -> Any:
    return json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v


def rebuild_index(results: str | Path, recipe: str, verify_files: bool = True) -> Path:
    """Rewrite results/<recipe>/runs.csv from the result files (atomic).

    verify_files=False checks only each result.json's own checksum: a sweep rebuilding after every
    run need not re-hash every checkpoint each time.
    """
    return write_index(results, recipe, finished_runs(results, recipe, verify_files))


def write_index(results: str | Path, recipe: str, runs: dict[str, dict]) -> Path:
    """Write results/<recipe>/runs.csv from `runs` (finished_runs of that recipe; atomic)."""
    df = pd.DataFrame([flatten(r) for r in runs.values()])
    if not df.empty:
        df = df.sort_values(["method", "factor", "seed", "run_id"], kind="stable")
    path = Path(results) / recipe / INDEX
    try:
        atomic_write(path, df.to_csv(index=False).encode())
    except OSError as e:
        raise StoreError(f"{path}: cannot write ({e.strerror or e})") from None
    return path


def load_model(d: str | Path, device: str = "cpu") -> torch.nn.Module:
    """Rebuild the trained nn.Module of a finished run (masks applied) from its directory."""
    from widecli import models
    from widecli.build import plan

    d = Path(d)
    result = read_result(d)
    if not (d / MODEL).exists():
        raise StoreError(f"{d / MODEL}: the trained weights of this run were not kept (only its "
                         f"metrics were); re-train it with `widecli sweep --force` to get them")
    spec = RunSpec.model_validate(result["spec"])
    shape, classes = tuple(result["data"]["input_shape"]), result["data"]["num_classes"]
    p = plan(spec, shape, classes)
    model = models.build(spec.model, p.widths, shape, classes, ranks=p.ranks,
                         rank_nonlinear=spec.method == "nonlinear_bottleneck")
    saved = torch.load(d / MODEL, map_location="cpu", weights_only=True)
    model.load_state_dict(saved["state"])
    model.masks = saved["masks"]
    return model.to(device).eval()


# --------------------------------------------------------------------------- locks

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


def lock_path(results: str | Path, spec: RunSpec) -> Path:
    return Path(results) / spec.recipe / LOCKS / f"{spec.run_id}.lock"


def _read_lock(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def lock_owner(results: str | Path, spec: RunSpec) -> dict | None:
    """pid/host of the live process holding a run's lock, or None."""
    info = _read_lock(lock_path(results, spec))
    return info if info is not None and _alive(info) else None


def try_lock(results: str | Path, spec: RunSpec) -> RunLock | None:
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


def remove_partial(results: str | Path, spec: RunSpec) -> bool:
    """Delete a run directory that is not a finished run (after an interrupt); True if removed."""
    d = run_dir(results, spec)
    if not d.is_dir() or is_finished(d):
        return False
    if (d / "checkpoint.pt").is_file():  # a resumable checkpoint (widecli.checkpoint) is kept
        for p in d.iterdir():
            if p.name != "checkpoint.pt":
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        return True
    shutil.rmtree(d, ignore_errors=True)
    return True
