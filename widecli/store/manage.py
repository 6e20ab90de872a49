"""The runs a results directory holds, and removing or archiving some of them (`widecli runs`).

A one-off `widecli train --set train.epochs=20` is stored like every other run and would otherwise
sit in every report of its recipe; these are the tools to list runs by recipe, status or any spec
key, and to delete them or move them to an archive folder (from which they can be moved back).
A run that a live process holds a lease on (it is training) is never touched.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from widecli.errors import StoreError
from widecli.store import lock
from widecli.store.runs import INDEX, RESULT, flatten, read_result, rebuild_index

# The statuses of run directories in the store (`widecli runs --status`); a sweep's run statuses
# (new, finished, ...) are another thing.
STORED_STATUSES = ("ok", "diverged", "failed", "corrupt", "partial")


@dataclass
class StoredRun:
    recipe: str
    run_id: str
    path: Path
    status: str                     # ok | diverged | failed | corrupt (result.json fails) | partial (none)
    row: dict = field(default_factory=dict)   # runs.csv columns (finished runs)
    error: str | None = None
    modified: float = 0.0           # when its newest file was written (seconds since the epoch)


def scan(results: str | Path, recipes: list[str] | None = None) -> list[StoredRun]:
    """Every run directory under results/<recipe>/ (finished or not), sorted by recipe and time."""
    root = Path(results)
    if not root.is_dir():
        raise StoreError(f"{root}: no such results directory")
    out = []
    try:
        folders = [root / r for r in recipes] if recipes else sorted(p for p in root.iterdir() if p.is_dir())
        for folder in folders:
            if not folder.is_dir():
                continue
            for d in sorted(folder.iterdir()):
                if not d.is_dir() or d.name.startswith(".") or not _looks_like_run(d):
                    continue
                modified = max((p.stat().st_mtime for p in d.iterdir()), default=d.stat().st_mtime)
                if not (d / RESULT).exists():
                    out.append(StoredRun(folder.name, d.name, d, "partial", modified=modified))
                    continue
                try:
                    result = read_result(d)
                    out.append(StoredRun(folder.name, d.name, d, result["status"], flatten(result), None, modified))
                except StoreError as e:
                    out.append(StoredRun(folder.name, d.name, d, "corrupt", error=str(e), modified=modified))
    except OSError as e:
        raise StoreError(f"{e.filename or root}: cannot read the results directory ({e.strerror or e})") from None
    return sorted(out, key=lambda r: (r.recipe, r.modified, r.run_id))


# result.json `final` keys that record how a run was executed (they shape its float trajectory as
# much as a seed does: a sparse kernel or a stacked matmul sums in another order).
EXECUTION_CHOICES = ("device", "backend", "sparse_layers", "stacked_with", "threads", "fused_step", "precision")


def details(r: StoredRun) -> dict:
    """What `widecli runs --id` adds: the run's provenance and its execution choices (none for a
    partial or corrupt run)."""
    try:
        result = read_result(r.path, verify_files=False)
    except StoreError:
        return {"provenance": None, "execution": {}}
    final = result.get("final") or {}
    return {"provenance": result.get("provenance"),
            "execution": {k: final[k] for k in EXECUTION_CHOICES if k in final}}


def _looks_like_run(d: Path) -> bool:
    """A run directory: named by a 12-hex-digit run id (not plots/, export/ or an ablation's files)."""
    return len(d.name) == 12 and all(c in "0123456789abcdef" for c in d.name)


def parse_where(items: list[str]) -> dict[str, Any]:
    """`--where train.epochs=20` -> {"train.epochs": 20} (values parsed as YAML, like --set)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise StoreError(f"--where {item!r}: expected key=value, e.g. --where train.epochs=20 "
                             f"(keys: the columns of runs.csv)")
        out[key.strip()] = yaml.safe_load(value)
    return out


def select(runs: list[StoredRun], status: list[str] | None = None, where: dict[str, Any] | None = None,
           ids: list[str] | None = None) -> list[StoredRun]:
    """The runs with one of these statuses, whose runs.csv columns equal every `where` value, and
    whose id starts with one of `ids`."""
    for s in status or []:
        if s not in STORED_STATUSES:
            raise StoreError(f"--status: unknown status {s!r}; allowed: {', '.join(STORED_STATUSES)}")
    chosen = []
    for r in runs:
        if status and r.status not in status:
            continue
        if ids and not any(r.run_id.startswith(i) for i in ids):
            continue
        if where and not all(_equal(r.row.get(k), v) for k, v in where.items()):
            continue
        chosen.append(r)
    return chosen


def find(results: str | Path, recipes: list[str] | None = None, status: list[str] | None = None,
         where: list[str] = (), ids: list[str] | None = None) -> list[StoredRun]:
    """The stored runs of `widecli runs`: scanned (of the recipes named, default all), then selected by
    status, `--where key=value` items (parse_where) and id prefixes."""
    return select(scan(results, recipes or None), status, parse_where(list(where)), ids)


def _equal(stored: Any, wanted: Any) -> bool:
    if stored == wanted:
        return True
    try:
        return float(stored) == float(wanted)
    except (TypeError, ValueError):
        return str(stored) == str(wanted)


def _busy(results: Path, r: StoredRun) -> bool:
    return lock.lock_owner(results, SimpleNamespace(recipe=r.recipe, run_id=r.run_id)) is not None


def remove(results: str | Path, runs: list[StoredRun], archive: str | Path | None = None
           ) -> tuple[list[StoredRun], list[StoredRun]]:
    """Delete the runs' directories, or move them to archive/<recipe>/<run_id>; runs.csv of each
    recipe touched is rebuilt. Returns (done, skipped: runs a live process is training)."""
    results = Path(results)
    done, skipped = [], []
    for r in runs:
        if _busy(results, r):
            skipped.append(r)
            continue
        try:
            if archive is None:
                shutil.rmtree(r.path)
            else:
                dest = Path(archive) / r.recipe / r.run_id
                if dest.exists():
                    raise StoreError(f"{dest}: already in the archive; remove it or choose another --archive")
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(r.path), str(dest))
        except OSError as e:
            raise StoreError(f"{r.path}: cannot {'remove' if archive is None else 'archive'} "
                             f"({e.strerror or e})") from None
        done.append(r)
    for recipe in sorted({r.recipe for r in done}):
        if (results / recipe / INDEX).exists() or any(_looks_like_run(d) for d in (results / recipe).iterdir()):
            rebuild_index(results, recipe, verify_files=False)
    return done, skipped
