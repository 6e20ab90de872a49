"""`widecli tune RECIPE`: for each (factor, method) cell of a recipe's grid, search the value of some
keys (default `train.lr`, log-uniform) that maximizes validation accuracy (`data.validation`), as the
paper's authors tuned a learning rate per width. A width comparison at untuned learning rates is a
comparison of learning rates.

Why Optuna (not Ray Tune, W&B sweeps or a hand-written grid): a well-kept library whose TPE sampler
finds a 1-3 dimensional optimum in a dozen trials; pruners fed by per-epoch values (here validation
accuracy) that stop hopeless trials early; RDB storage in one SQLite file that several processes
share and that a restarted search resumes; no server and no cluster runtime (Ray Tune needs Ray, W&B
sweeps a W&B server). Only widecli's own logic is here: cells, trials as ordinary runs, the overlay.

Why in analysis/ (DESIGN.md lists tune there): like ablate it turns a recipe into runs through the
one run path (execute.run) and then reads and reports them (tune_report, plots), so it sits above
execute.

Trials are ordinary runs: a trial's runs are the cell's RunSpecs with the trial's values (one per
recipe seed), trained through execute.run.run_group with the sweeps' leases, stored in
results/<recipe>/; a run already finished is not trained again and its stored validation accuracy is
the objective (mean over seeds of the final epoch's). A pruned trial is recorded by Optuna (state
PRUNED with its per-epoch values, in the storage) and nowhere in the store: its runs stop early,
their partial files are removed, and a stopped run is not a finished run. Optuna's storage lives in
results/<recipe>/tune/optuna.db (one study per cell, named by the cell and a hash of what it searches
over, so a changed recipe or range starts a new study), with the overlay and the report beside it.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import math
import multiprocessing as mp
import queue
import signal
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from widecli.config.load import get_dotted, set_dotted
from widecli.config.schema import GRID_KEYS, Recipe, RunSpec
from widecli.engine import threads as threads_mod
from widecli.engine.device import resolve_device
from widecli.errors import RecipeError, WidecliError
from widecli.execute.worklist import stack_groups
from widecli.execute.run import Event, label, run_group_when_free
from widecli.recipes import make_spec, validate
from widecli.store import runs as store

DEFAULT_KEY = "train.lr"
SPAN = 100.0   # the default range: 1/100 to 100 x the values the recipe gives the key
FOLDER = "tune"


class TrialFailed(WidecliError):
    """A run of a trial failed (not diverged: an error); the trial is recorded as FAIL."""


@dataclass(frozen=True)
class Space:
    key: str
    low: float
    high: float
    log: bool = True

    def text(self) -> str:
        return f"{self.key} in [{self.low:g}, {self.high:g}]{' log' if self.log else ''}"


@dataclass
class Cell:
    factor: float
    method: str
    raw: dict              # the recipe (resolved, json) with the searched keys out of per-factor tables
    study: str             # Optuna study name

    @property
    def name(self) -> str:
        return "f=1 baseline" if self.factor == 1 else f"f={self.factor:g} {self.method}"


@dataclass
class Setup:
    """Everything a tuning process (the driver or a --jobs worker) needs; picklable."""

    recipe: Recipe
    source: str            # the recipe file, for messages
    spaces: list[Space]
    trials: int            # budget per cell: complete + pruned (+ running) trials
    results: Path
    cells: list[Cell] = field(default_factory=list)
    prune: bool = True
    provenance: dict | None = None
    overrides: list[str] = field(default_factory=list)   # the --set items (the overlay repeats them)

    @property
    def folder(self) -> Path:
        return self.results / self.recipe.name / FOLDER

    @property
    def storage_url(self) -> str:
        return f"sqlite:///{(self.folder / 'optuna.db').resolve()}"


# --------------------------------------------------------------------------- setting up


def parse_range(text: str) -> Space:
    """`train.lr=0.1:1000` (log-uniform), `train.momentum=0:0.99:linear` (uniform)."""
    key, sep, rest = text.partition("=")
    parts = rest.split(":")
    scale = parts.pop() if len(parts) == 3 else "log"
    try:
        if not sep or len(parts) != 2 or scale not in ("log", "linear"):
            raise ValueError
        low, high = float(parts[0]), float(parts[1])
    except ValueError:
        raise RecipeError(f"--range {text!r}: expected KEY=LOW:HIGH (log-uniform) or KEY=LOW:HIGH:linear, "
                          f"e.g. --range train.lr=0.1:1000") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise RecipeError(f"--range {text!r}: LOW must be below HIGH (both finite numbers)")
    if scale == "log" and low <= 0:
        raise RecipeError(f"--range {text!r}: a log-uniform range needs LOW > 0; add :linear for a uniform one")
    return Space(key.strip(), low, high, scale == "log")


def default_space(recipe: Recipe, key: str = DEFAULT_KEY) -> Space:
    """1/100 to 100 x the values the recipe gives `key` (its own and its per-factor tables)."""
    values = [get_dotted(recipe.model_dump(mode="json"), key)]
    tables = [recipe.widen.per_factor.get(key, {})] + [t.get(key, {}) for t in recipe.widen.per_method_factor.values()]
    values += [v for t in tables for v in t.values()]
    values = [float(v) for v in values if isinstance(v, (int, float)) and v > 0]
    if not values:
        raise RecipeError(f"{key}: no positive value in the recipe to center a default range on; give "
                          f"--range {key}=LOW:HIGH")
    return Space(key, min(values) / SPAN, max(values) * SPAN, True)


def setup(recipe: Recipe, source: str, spaces: list[Space], trials: int, results: str | Path,
          prune: bool = True, provenance: dict | None = None, overrides: list[str] = ()) -> Setup:
    """Check what can be tuned and lay out the cells; one-line RecipeError otherwise."""
    if recipe.data.validation is None:
        raise RecipeError(f"{source}: data.validation is not set; tune maximizes validation accuracy and never "
                          f"looks at the test set: hold some training-side images out, e.g. --set "
                          f"data.validation=1000")
    if recipe.sweep:
        raise RecipeError(f"{source}: sweep: tune searches one setting per cell; give the sweep axes "
                          f"({', '.join(recipe.sweep)}) a value with --set, or remove them with --set sweep=null")
    if trials < 1:
        raise RecipeError(f"--trials: got {trials}; expected an integer >= 1")
    keys = [s.key for s in spaces]
    if len(set(keys)) != len(keys):
        raise RecipeError(f"--range: {keys} names a key twice")
    for s in spaces:
        if s.key in GRID_KEYS or s.key.split(".")[0] not in ("data", "model", "sparsity", "train"):
            raise RecipeError(f"--range {s.key}: not a tunable key; allowed: numeric keys of data, model, "
                              f"sparsity and train (e.g. train.lr, train.weight_decay)")
    out = Setup(recipe, source, spaces, trials, Path(results), prune=prune, provenance=provenance,
                overrides=list(overrides))
    seen = set()
    for f in recipe.widen.factors:
        for m in (["dense"] if f == 1 else recipe.widen.methods):
            if (f, m) in seen:
                continue
            seen.add((f, m))
            raw = cell_raw(recipe, f, m, keys)
            for s in spaces:  # both ends must be values the schema accepts
                for v in (s.low, s.high):
                    cell_specs(out, Cell(f, m, raw, ""), {s.key: v})
            out.cells.append(Cell(f, m, raw, study_name(out, f, m, raw)))
    return out


def cell_raw(recipe: Recipe, factor: float, method: str, keys: list[str]) -> dict:
    """The recipe as json with the searched keys taken out of the per-factor tables (the trial's
    value replaces them)."""
    raw = recipe.model_dump(mode="json")
    widen = raw["widen"]
    for k in keys:
        widen["per_factor"].pop(k, None)
        for table in widen["per_method_factor"].values():
            table.pop(k, None)
    widen["per_method_factor"] = {m: t for m, t in widen["per_method_factor"].items() if t}
    widen["factors"], widen["methods"] = [factor], [method]
    return raw


def cell_specs(s: Setup, cell: Cell, values: dict) -> list[RunSpec]:
    """The runs of one trial: the cell at these values, one per seed (ordinary RunSpecs)."""
    raw = copy.deepcopy(cell.raw)
    for key, value in values.items():
        set_dotted(raw, key, value, source=f"--range {key}")
    r = validate(raw, f"{s.source} ({cell.name or f'f={cell.factor:g}'} at {values})")
    return [make_spec(r, cell.factor, cell.method, seed) for seed in r.seeds]


def study_name(s: Setup, factor: float, method: str, raw: dict) -> str:
    """`f4-sparse-<hash>`: the hash covers what the trials compute apart from the searched values
    (the runs' identities with those keys left out) and the ranges."""
    probe = cell_specs(s, Cell(factor, method, raw, ""), {sp.key: sp.low for sp in s.spaces})
    ident = [_without(x.identity(), [sp.key for sp in s.spaces]) for x in probe]
    blob = json.dumps([ident, [vars(sp) for sp in s.spaces]], sort_keys=True, default=str)
    return f"f{factor:g}-{method}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def probe_specs(s: Setup) -> list[RunSpec]:
    """Every cell's runs at the low end of the ranges: what memory checks and --jobs auto judge."""
    return [x for c in s.cells for x in cell_specs(s, c, {sp.key: sp.low for sp in s.spaces})]


def _without(d: dict, keys: list[str]) -> dict:
    d = copy.deepcopy(d)
    for k in keys:
        *parent, last = k.split(".")
        node = d
        for p in parent:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    return d


# --------------------------------------------------------------------------- searching


def _optuna():
    try:
        # Lazy: with SQLAlchemy under it ~0.5 s to import, paid by `tune` only.
        import optuna
    except ImportError:
        raise WidecliError("tune: optuna is not installed (a dependency of widecli); pip install 'optuna>=3.0'") from None

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # widecli prints its own trial lines
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def open_study(s: Setup, cell: Cell, worker: int = 0):
    optuna = _optuna()
    s.folder.mkdir(parents=True, exist_ok=True)
    # A killed process leaves its trial RUNNING; without a heartbeat for 10 minutes it is failed and
    # stops counting against the budget. SQLite waits up to a minute for another process's write.
    storage = optuna.storages.RDBStorage(s.storage_url, engine_kwargs={"connect_args": {"timeout": 60}},
                                         heartbeat_interval=60, grace_period=600)
    epochs = s.recipe.train.epochs
    # "Hopeless": in the bottom quarter of the finished trials at the same epoch, after a tenth of them.
    pruner = (optuna.pruners.PercentilePruner(25.0, n_startup_trials=3, n_warmup_steps=max(1, epochs // 10))
              if s.prune else optuna.pruners.NopPruner())
    study = optuna.create_study(storage=storage, pruner=pruner, study_name=cell.study, direction="maximize",
                                load_if_exists=True)
    # Seeded: per cell (a fresh search proposes the same values, whose runs are then found stored), per
    # --jobs worker and per trials already there (a resumed search or a second worker with the same
    # seed would propose values already tried, spending the budget on runs that are stored).
    seed = int(hashlib.sha256(cell.study.encode()).hexdigest()[:8], 16) + 1000 * worker + len(study.trials)
    study.sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(3, min(10, s.trials // 4)))
    return study


def counted(study) -> int:
    """Trials that use up the budget: finished (complete or pruned) or running."""
    from optuna.trial import TrialState  # lazy with optuna (see _optuna)

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                        TrialState.RUNNING)))


def search(s: Setup, device: str = "auto", emit: Callable[[Event], None] = lambda e: None, worker: int = 0) -> None:
    """Run trials until every cell has s.trials of them (counting every process's)."""
    optuna = _optuna()
    dev = resolve_device(device)
    guard = s.folder / ".ask.lock"
    for cell in s.cells:
        study = open_study(s, cell, worker)
        while True:
            # Count and create the next trial under one lock, so that --jobs processes never start
            # more trials than the budget; the objective releases it once its trial exists.
            with open(guard, "a") as fd:
                fcntl.flock(fd, fcntl.LOCK_EX)
                optuna.storages.fail_stale_trials(study)
                if counted(study) >= s.trials:
                    break
                study.optimize(lambda t: objective(s, cell, t, dev, emit, fd), n_trials=1, catch=(TrialFailed,))


def objective(s: Setup, cell: Cell, trial, device, emit, guard=None) -> float:
    """One trial: train (or read back) the cell's runs at the suggested values; mean final validation
    accuracy over seeds. Pruned from the first group's per-epoch validation accuracy."""
    optuna = _optuna()
    values = {sp.key: trial.suggest_float(sp.key, sp.low, sp.high, log=sp.log) for sp in s.spaces}
    if guard is not None:
        fcntl.flock(guard, fcntl.LOCK_UN)
    specs = cell_specs(s, cell, values)
    trial.set_user_attr("run_ids", [x.run_id for x in specs])

    last = {"epoch": 0, "value": None}

    def stop(epoch: int, epochs: int, rows: list[dict]) -> bool:
        vals = [r["val_accuracy"] for r in rows if "val_accuracy" in r]
        if vals:
            last.update(epoch=epoch, value=sum(vals) / len(vals))
            trial.report(last["value"], epoch)
        return trial.should_prune()

    info = {"cell": cell.name, "trial": trial.number + 1, "budget": s.trials, "values": values}
    try:
        for i, group in enumerate(stack_groups(specs, device)):
            report = run_group_when_free(group, s.results, device, emit=emit, stop=stop if i == 0 else None,
                                         provenance=s.provenance)
            emit(Event("finished", [label(x) for x in group]))
            if report.stopped:
                emit(Event("trial", status="pruned", rows=[{**info, **last}]))
                raise optuna.TrialPruned(f"validation accuracy {last['value']:.4f} at epoch {last['epoch']}")
    except KeyboardInterrupt:
        # Interrupted: the same values come first next time, so its finished runs are reused.
        trial.study.enqueue_trial(trial.params)
        raise
    results = [store.read_run(s.results, x, verify_files=False) for x in specs]
    failed = [r for r in results if r["status"] == "failed"]
    if failed:
        emit(Event("trial", status="failed", rows=[{**info, "error": failed[0].get("error")}]))
        raise TrialFailed(f"run {failed[0]['run_id']} failed: {failed[0].get('error')}")
    val = [_number(r["final"].get("val_accuracy")) for r in results]
    test = [_number(r["final"].get("test_accuracy")) for r in results]
    trial.set_user_attr("val_per_seed", val)
    trial.set_user_attr("test_accuracy", sum(test) / len(test))
    trial.set_user_attr("diverged", sum(r["status"] == "diverged" for r in results))
    value = sum(val) / len(val)
    emit(Event("trial", status="complete", rows=[{**info, "value": value,
                                                  "diverged": sum(r["status"] == "diverged" for r in results)}]))
    return value


def _number(v) -> float:
    """An accuracy, 0 where a run recorded none (it diverged before its first validation)."""
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else 0.0


# --------------------------------------------------------------------------- --jobs


def tune(s: Setup, device: str = "auto", jobs: int = 1, threads: int | None = None,
         emit: Callable[[Event], None] = lambda e: None) -> None:
    """Search every cell to its budget, in this process or in `jobs` worker processes sharing the
    storage (Optuna's way to parallelize: each process runs trials against one study)."""
    threads_mod.configure(threads, jobs)
    if jobs <= 1:
        search(s, device, emit)
        return
    for cell in s.cells:  # the storage's tables and studies, made once before the workers open them
        open_study(s, cell)
    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(s, device, jobs, threads, events, i), daemon=True)
             for i in range(jobs)]
    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs) or not events.empty():
            try:
                item = events.get(timeout=0.2)
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                raise item
            emit(item)
    except BaseException:
        for p in procs:
            p.terminate()  # SIGTERM: each worker's current run removes its partial files
        for p in procs:
            p.join(timeout=30)
        raise
    bad = [p.exitcode for p in procs if p.exitcode]
    if bad:
        raise WidecliError(f"tune: {len(bad)} worker process(es) stopped with exit code {bad[0]}")


def _worker(s: Setup, device: str, jobs: int, threads: int | None, events, index: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # Ctrl-C is the driver's to handle

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    threads_mod.configure(threads, jobs)
    try:
        search(s, device, events.put, index)
    except KeyboardInterrupt:
        return
    except WidecliError as e:
        events.put(WidecliError(str(e)))
