"""Provenance: which code and which recipe produced a run. result.json records, under
`provenance`, for the widecli checkout (when widecli runs from a git checkout, not an installed
wheel; its widecli/ package) and for the recipe's directory: the git commit, whether the tree differs from it (dirty) and
a hash of that difference; and a hash of the installed packages (name==version of every
distribution). It is metadata, never part of the run id: a run trained from a dirty tree is the same
run. Computed once per process (git and the package list take ~50 ms together); the driver passes
its record to the processes that train, so every run of a sweep records the same provenance.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import shutil
import subprocess
from pathlib import Path

import widecli

PACKAGE = Path(widecli.__file__).resolve().parent


def collect(recipe: str | Path | None = None) -> dict:
    """The provenance record of runs trained now from `recipe` (a file; None: no recipe file)."""
    folder = Path(recipe).resolve().parent if recipe is not None else None
    return {"widecli": widecli_checkout(), "recipe": git_state(str(folder), True) if folder else None,
            "recipe_file": Path(recipe).name if recipe is not None else None, "packages": packages_hash()}


def widecli_checkout() -> dict | None:
    """Git state of the checkout widecli is imported from, or None (an installed wheel: a
    site-packages folder inside someone's repository is not widecli's checkout). Dirty and the diff
    cover the package's own files (tracked changes and new modules under widecli/): the code that
    trains, not the tests, benchmarks or results beside it."""
    state = git_state(str(PACKAGE), True)
    if state is None or Path(state["root"]) / "widecli" != PACKAGE:
        return None
    return state


@functools.lru_cache(maxsize=None)
def git_state(folder: str, untracked: bool) -> dict | None:
    """{root, commit, dirty, diff_sha256} of `folder` in its git repository, or None (not in one,
    or no git). The diff is `git diff HEAD` limited to the folder; with `untracked`, files git does
    not track there count too (a recipe never committed is a dirty recipe folder)."""
    if shutil.which("git") is None:
        return None
    root = _git(folder, "rev-parse", "--show-toplevel")
    commit = _git(folder, "rev-parse", "HEAD")
    if root is None or commit is None:
        return None
    scope = ["--", "."] if Path(folder).resolve() != Path(root).resolve() else []
    diff = _git(folder, "diff", "HEAD", "--binary", *scope, strip=False) or ""
    digest = hashlib.sha256(diff.encode())
    dirty = bool(diff)
    if untracked:
        names = (_git(folder, "ls-files", "--others", "--exclude-standard", "-z", "--", ".", strip=False) or "")
        for name in sorted(n for n in names.split("\0") if n):
            digest.update(name.encode() + b"\0")
            try:
                digest.update((Path(folder) / name).read_bytes())
            except OSError:
                pass
            dirty = True
    return {"root": root, "commit": commit, "dirty": dirty, "diff_sha256": digest.hexdigest() if dirty else None}


def _git(folder: str, *args: str, strip: bool = True) -> str | None:
    try:
        out = subprocess.run(["git", "-C", folder, *args], capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if strip else out.stdout


@functools.lru_cache(maxsize=None)
def packages_hash() -> str:
    """sha256 of the sorted `name==version` lines of every installed distribution."""
    lines = sorted({f"{(d.metadata['Name'] or '').lower()}=={d.version}" for d in importlib.metadata.distributions()})
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()
