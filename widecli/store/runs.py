"""The run store: results/<recipe>/<run_id>/{spec.yaml, metrics.csv, model.pt, result.json}.

The store reads and writes files; it knows run specs only as pydantic models with `recipe` and
`run_id`, and nothing of models or training. It is also the one reader of runs: `iter_runs` (every
finished run's result), `read_run` (one run's), `read_epochs` (one run's metrics.csv) and
`read_metrics` (every epoch of every run as one DataFrame); nothing else builds a run's path.

Every file is written to a temporary name and renamed into place; a run's files are first staged
in results/<recipe>/.staging/ and then renamed into its directory, `result.json` last. It carries
checksums of itself and of the other files: its valid presence means the run is finished; anything
less is a partial run that is redone. `runs.csv` is an index rebuilt from the
result files, never the only copy of anything.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import torch
import yaml

from widecli.config.schema import RunSpec
from widecli.errors import StoreError

RESULT, SPEC, METRICS, MODEL, INDEX = "result.json", "spec.yaml", "metrics.csv", "model.pt", "runs.csv"
CHECKPOINT = "checkpoint.pt"  # a resumable in-run checkpoint (engine.checkpoint writes it)
STAGING = ".staging"          # results/<recipe>/.staging/: finished runs' files before they are published
FORMAT = 1


def run_dir(results: str | Path, spec: RunSpec) -> Path:
    """results/<recipe>/<run_id> of a spec (or anything with `recipe` and `run_id`)."""
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
    return stage_run(results, spec, metrics, result, state).commit()


class StagedRun:
    """A run's files written and fsynced outside its run directory (results/<recipe>/.staging/),
    ready to be renamed into it: the run directory is touched only by `commit`, a few renames,
    so whoever publishes a run can check its lease just before (execute.run, RunLock.commit)."""

    def __init__(self, results: str | Path, spec: RunSpec, names: list[str]):
        self.run_dir, self.names = run_dir(results, spec), names
        self.folder = staging_dir(results, spec) / f"{spec.run_id}.{os.getpid()}.{uuid.uuid4().hex[:8]}"

    def commit(self) -> Path:
        """Rename the staged files into the run directory, result.json last; the run directory."""
        d, target = self.run_dir, self.run_dir
        try:
            d.mkdir(parents=True, exist_ok=True)
            (d / RESULT).unlink(missing_ok=True)  # a re-run is unfinished until its new result lands
            for name in self.names:               # RESULT is the last name
                target = d / name
                os.replace(self.folder / name, target)
        except OSError as e:
            raise _cannot_write(target, e) from None
        self.discard()
        return d

    def discard(self) -> None:
        """Remove the staged files (after a commit: the empty staging folder), and .staging/ once
        empty, so that a results folder shows it only while a run is being published."""
        shutil.rmtree(self.folder, ignore_errors=True)
        _remove_if_empty(self.folder.parent)


def _cannot_write(target: Path, e: OSError) -> StoreError:
    return StoreError(f"{target}: cannot write ({e.strerror or e}); check the results directory is writable "
                      f"and has space")


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # another run is staging there (or already removed)


def staging_dir(results: str | Path, spec: RunSpec) -> Path:
    return Path(results) / spec.recipe / STAGING


def stage_run(results: str | Path, spec: RunSpec, metrics: list[dict], result: dict,
              state: dict | None = None) -> StagedRun:
    """Write a finished run's files to a staging folder (nothing in its run directory yet)."""
    files = {SPEC: yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False).encode(),
             METRICS: _csv_bytes(metrics)}
    if state is not None:
        buf = io.BytesIO()
        torch.save(state, buf)
        files[MODEL] = buf.getvalue()
    result = {"format": FORMAT, "run_id": spec.run_id, "recipe": spec.recipe, **result,
              "spec": spec.model_dump(mode="json")}
    result["checksums"] = {**{n: _sha(b) for n, b in files.items()}, "content": _content_checksum(result)}
    files[RESULT] = json.dumps(result, indent=1, default=str).encode()
    staged = StagedRun(results, spec, list(files))
    target = staged.folder
    try:
        for attempt in range(3):
            try:
                staged.folder.mkdir(parents=True)
                break
            except FileNotFoundError:  # another process removed .staging/, empty, just then
                if attempt == 2:
                    raise
        for name, data in files.items():
            target = staged.folder / name
            atomic_write(target, data)
    except OSError as e:
        staged.discard()
        raise _cannot_write(target, e) from None
    return staged


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


# --------------------------------------------------------------------------- the one reader of runs


def iter_runs(results: str | Path, recipes: list[str] | None = None, *, verify_files: bool = True,
              rejected: list[str] | None = None, required: bool = False) -> Iterator[dict]:
    """The result (verified result.json) of every finished run under `results`, of the recipes named
    (default: all), recipe by recipe; two recipes may hold the same run id (ids hash what a run
    computes, not its recipe). `rejected` collects one line per result file left out and why (see
    finished_runs); `required`: StoreError when there is no finished run at all."""
    found = False
    for name in dict.fromkeys(recipes or [None]):
        for result in finished_runs(results, name, verify_files, rejected).values():
            found = True
            yield result
    if required and not found:
        raise StoreError(f"{results}: no finished runs{' of ' + ', '.join(recipes) if recipes else ''}; "
                         f"run `widecli sweep RECIPE` first")


def read_run(results: str | Path, spec: RunSpec, verify_files: bool = True) -> dict:
    """The result of one run (a spec's recipe and run id); StoreError if it is not a finished run."""
    return read_result(run_dir(results, spec), verify_files)


def holds_runs(folder: Path, levels: int = 1) -> bool:
    """Whether a run's result.json lies `levels` folders below `folder`: 1 for a recipe's folder
    (results/<recipe>/), 2 for a results directory."""
    return any(folder.glob("*/" * levels + RESULT))


def read_epochs(results: str | Path, result: dict) -> pd.DataFrame:
    """A run's metrics.csv (one row per epoch; empty for a run that stopped before its first epoch)."""
    path = Path(results) / result["recipe"] / result["run_id"] / METRICS
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame({"epoch": pd.Series(dtype="int64")})
    except OSError as e:
        raise StoreError(f"{path}: cannot read ({e.strerror or e})") from None


METRICS_KEYS = ("recipe", "run_id", "epoch")   # the first columns of read_metrics


def read_metrics(results: str | Path, recipes: list[str] | None = None) -> pd.DataFrame:
    """Every epoch of every finished run (of `recipes`, default all): one row per (recipe, run_id,
    epoch), with the per-epoch metrics of metrics.csv and the run's flattened spec and final values
    (the columns of runs.csv; where a final value shares a name with a per-epoch metric, the
    per-epoch value is kept). StoreError when there is no finished run."""
    runs = list(iter_runs(results, recipes, required=True))
    epochs = pd.concat([read_epochs(results, r).assign(_run=i) for i, r in enumerate(runs)], ignore_index=True)
    # One row per run, repeated per epoch by position: no per-run column inserts, one concat.
    spec = pd.DataFrame([flatten(r) for r in runs])
    spec = spec.drop(columns=[c for c in spec.columns if c in epochs.columns])
    df = pd.concat([spec.take(epochs.pop("_run").to_numpy()).reset_index(drop=True), epochs], axis=1)
    first = list(METRICS_KEYS) + [c for c in epochs.columns if c not in METRICS_KEYS]  # keys, metrics, spec
    return df[first + [c for c in df.columns if c not in first]]


def flatten(result: dict) -> dict[str, Any]:
    """One runs.csv / report row: id, status, final metrics, weights and the spec's dotted keys."""
    row = {"run_id": result["run_id"], "recipe": result["recipe"], "status": result["status"]}
    spec = result["spec"]
    row.update({"factor": spec["factor"], "method": spec["method"], "seed": spec["seed"],
                "widen_layers": _scalar(spec["widen_layers"])})
    for k, v in result.get("final", {}).items():
        if not isinstance(v, dict):
            row[k] = v
    for k in ("budget", "dense_weights", "nonzeros", "connectivity", "other_params", "macs_nonzero", "macs_dense"):
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


def remove_partial(results: str | Path, spec: RunSpec) -> bool:
    """Delete a run directory that is not a finished run (after an interrupt), and the run's staged
    files (of a process that died before publishing them); True if a run directory was removed."""
    staging = staging_dir(results, spec)
    if staging.is_dir():
        for stale in staging.glob(f"{spec.run_id}.*"):
            shutil.rmtree(stale, ignore_errors=True)
        _remove_if_empty(staging)
    d = run_dir(results, spec)
    if not d.is_dir() or is_finished(d):
        return False
    if (d / CHECKPOINT).is_file():  # a resumable checkpoint (engine.checkpoint) is kept
        for p in d.iterdir():
            if p.name != CHECKPOINT:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        return True
    shutil.rmtree(d, ignore_errors=True)
    return True
