"""Property: after any sequence of sweeps (some forced, some retrying failures), kills in the middle of
publishing a run, resumes, removals and archivals, every operation that completes leaves `runs.csv`
equal to a rebuild from the result files (the rows of the run directories whose result.json reads
back verified), and a final resume leaves every run finished or failed.

The store, run path and sweep are real; only training and its data are replaced (by outcomes made
up in microseconds, some diverged and some raising, i.e. failed). A kill is a process that dies between
two of the renames that publish a run (or before the first, its files staged): nothing cleans up
after it, as after SIGKILL.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from widecli.engine.loop import Outcome
from widecli.errors import StoreError
from widecli.execute import run as runner
from widecli.execute.worklist import status_of
from widecli.execute.sweep import sweep
from widecli.recipes import expand, validate
from widecli.store import manage
from widecli.store import runs as store

RECIPE = "prop"


# What the run path reads of a data set (the result's "data" record), without loading one.
DATA = SimpleNamespace(input_shape=(40,), num_classes=10, y_train=range(400), y_test=range(100))


def specs_for() -> list:
    """factors 1, 2 x sparse, dense x seeds 0, 1: six runs (factor 1 is one dense run per seed)."""
    return expand(validate({"name": RECIPE, "data": {"dataset": "mnist1d"},
                            "model": {"arch": "mlp", "hidden": [4]},
                            "widen": {"factors": [1, 2], "methods": ["sparse", "dense"]},
                            "train": {"epochs": 1}, "seeds": [0, 1]}, "generated"))


def made_up_training(fates: dict[str, str]):
    """A stand-in for engine.loop.fit: each run's outcome by its fate (ok | diverged | raise)."""
    def fit(specs, data, device, on_epoch=None, checkpoint_dir=None):
        if any(fates[s.run_id] == "raise" for s in specs):
            raise RuntimeError("simulated out of memory")
        out = []
        for s in specs:
            accuracy = 0.1 + 0.1 * s.seed + 0.01 * s.factor
            row = {"epoch": 1, "lr": 0.01, "train_loss": 2.0, "train_accuracy": accuracy, "test_loss": 2.1,
                   "test_accuracy": accuracy, "seconds": 0.0}
            out.append(Outcome(s, fates[s.run_id], [row], {"test_accuracy": accuracy, "epochs_run": 1}))
        return out
    return fit


class Killed(BaseException):
    """The process died here (SIGKILL): no handler, no cleanup."""


@contextlib.contextmanager
def dies_after(renames: int):
    """os.replace works `renames` times, then the process is killed."""
    real, done = os.replace, itertools.count()

    def replace(src, dst, *a, **k):
        if next(done) >= renames:
            raise Killed
        return real(src, dst, *a, **k)
    os.replace = replace
    try:
        yield
    finally:
        os.replace = real


def kill_while_publishing(results: Path, spec, fates: dict[str, str], at: int) -> None:
    """Train `spec` and die while publishing it: at -1 with its files staged only, at 0-3 after that
    many of its four renames into the run directory, at 4 after all of them (runs.csv not rebuilt)."""
    [o] = made_up_training({**fates, spec.run_id: "ok" if fates[spec.run_id] == "raise" else fates[spec.run_id]})(
        [spec], None, None)
    staged = store.stage_run(results, spec, o.metrics, {"status": o.status, "error": None, "final": o.final},
                             {"state": {}, "masks": {}})
    if at < 0:
        return
    with contextlib.suppress(Killed), dies_after(at):
        staged.commit()


def rebuilt(results: Path) -> pd.DataFrame:
    """runs.csv as a rebuild would write it: a row per run directory whose result.json verifies."""
    rows = []
    folder = results / RECIPE
    for d in sorted(folder.iterdir()) if folder.is_dir() else []:
        if d.is_dir() and (d / store.RESULT).exists():
            try:
                rows.append(store.flatten(store.read_result(d)))
            except StoreError:
                pass
    return normalized(pd.DataFrame(rows))


def on_disk(results: Path) -> pd.DataFrame:
    path = results / RECIPE / store.INDEX
    try:
        return normalized(pd.read_csv(path))
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame()


def normalized(df: pd.DataFrame) -> pd.DataFrame:
    """Through CSV and back (the types runs.csv can hold), rows by run id, columns by name."""
    if df.empty:
        return pd.DataFrame()
    with tempfile.TemporaryFile("w+") as f:
        df.to_csv(f, index=False)
        f.seek(0)
        df = pd.read_csv(f)
    return df.sort_values("run_id").reset_index(drop=True)[sorted(df.columns)]


def assert_index_is_a_rebuild(results: Path, after: tuple) -> None:
    want, got = rebuilt(results), on_disk(results)
    assert list(got.get("run_id", [])) == list(want.get("run_id", [])), f"after {after}: runs.csv lists " \
        f"{list(got.get('run_id', []))}, the result files {list(want.get('run_id', []))}"
    if not want.empty:
        pd.testing.assert_frame_equal(got, want, obj=f"runs.csv after {after}")


runs = st.integers(0, 5)
operations = st.lists(st.one_of(
    st.tuples(st.just("sweep"), st.lists(runs, min_size=1, max_size=6, unique=True), st.booleans()),
    st.tuples(st.just("kill"), runs, st.integers(-1, 4)),
    st.tuples(st.just("resume"), st.booleans()),                                 # retry failed runs or not
    st.tuples(st.sampled_from(["remove", "archive"]),
              st.one_of(st.lists(st.sampled_from(manage.STORED_STATUSES), min_size=1, max_size=2, unique=True),
                        st.lists(runs, min_size=1, max_size=3, unique=True)))),
    min_size=1, max_size=7)


def apply(op: tuple, results: Path, specs: list, fates: dict[str, str], archives: Path) -> bool:
    """Do one operation; whether it completed (so that runs.csv must be a rebuild)."""
    kind = op[0]
    if kind == "sweep":
        sweep([specs[i] for i in op[1]], results, device="cpu", force=op[2])
    elif kind == "resume":
        sweep(specs, results, device="cpu", retry_failed=op[1])
    elif kind == "kill":
        kill_while_publishing(results, specs[op[1]], fates, op[2])
        return False
    else:
        stored = manage.scan(results, [RECIPE]) if (results / RECIPE).is_dir() else []
        chosen = (manage.select(stored, status=op[1]) if isinstance(op[1][0], str)
                  else manage.select(stored, ids=[specs[i].run_id for i in op[1]]))
        done, _ = manage.remove(results, chosen, archives / str(len(list(archives.iterdir()))) if kind == "archive"
                                else None)
        return bool(done)   # removing nothing rebuilds nothing
    return True


@settings(max_examples=max(5, settings.default.max_examples // 4))
@given(operations, st.lists(st.sampled_from(["ok", "ok", "diverged", "raise"]), min_size=6, max_size=6))
def test_runs_csv_is_a_rebuild_after_every_completed_operation(ops, fate_list):
    specs = specs_for()
    fates = {s.run_id: fate for s, fate in zip(specs, fate_list, strict=True)}
    real = runner.fit, runner.dataset
    runner.fit, runner.dataset = made_up_training(fates), lambda spec, device: DATA
    try:
        with tempfile.TemporaryDirectory() as tmp:
            results, archives = Path(tmp) / "results", Path(tmp) / "archive"
            archives.mkdir()
            for n, op in enumerate([*ops, ("resume", False)]):
                if apply(op, results, specs, fates, archives):
                    assert_index_is_a_rebuild(results, (n, *op))
            assert {status_of(results, s)[0] for s in specs} <= {"finished", "failed"}
    finally:
        runner.fit, runner.dataset = real
