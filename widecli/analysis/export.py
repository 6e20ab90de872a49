"""Results leave widecli: export to TensorBoard, MLflow or Weights & Biases (offline), each run with
its per-epoch metrics and its flattened spec as hyperparameters, read through the store's reader
(widecli.store.runs: `iter_runs`, `read_epochs`; every epoch of every run as one DataFrame is
`read_metrics`). The exporters are optional extras (`pip install 'widecli[export]'`).

An export reflects the store as it is now: exporting again to the same folder replaces what an
earlier export wrote for the same (recipe, run id) instead of adding a duplicate.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from widecli.errors import WidecliError
from widecli.store import runs as store

TARGETS = ("tensorboard", "mlflow", "wandb")
# MLflow caps a param value at 6,000 characters (500 before MLflow 2.x servers raised it): cut at
# the lower bound so an export also logs to an older server.
PARAM_CHARS = 500


def _finished(results: str | Path, recipes: list[str] | None) -> list[dict]:
    """Every finished run of the recipes named (default: all), through the store's reader; a
    one-line StoreError, before anything is written, when there is none."""
    return list(store.iter_runs(results, recipes, required=True))


def _each_run(results: str | Path, runs: list[dict]) -> Iterator[tuple[dict, pd.DataFrame, list[str]]]:
    """(result, epochs, metric columns) per run, each metrics.csv read once."""
    for result in runs:
        epochs = store.read_epochs(results, result)
        yield result, epochs, [c for c in epochs.columns
                               if c != "epoch" and pd.api.types.is_numeric_dtype(epochs[c])]


def _points(epochs: pd.DataFrame, metric: str) -> Iterator[tuple[int, float]]:
    """(epoch, value) of one metric column."""
    return zip(epochs["epoch"].astype(int).tolist(), epochs[metric].astype(float).tolist())


def export(results: str | Path, to: str, out: str | Path | None = None,
           recipes: list[str] | None = None) -> list[Path]:
    """Write every finished run (of `recipes`, default all) to a tracking tool under `out` (default
    RESULTS/export/TO); returns one path per run: its TensorBoard log folder, its MLflow run folder
    or its W&B offline run folder. Prints nothing."""
    if to not in TARGETS:
        raise WidecliError(f"--to: unknown target {to!r}; allowed: {', '.join(TARGETS)}")
    out = Path(out) if out is not None else Path(results) / "export" / to
    writer = {"tensorboard": _tensorboard, "mlflow": _mlflow, "wandb": _wandb}[to]
    return writer(results, recipes, out)


def _missing(name: str) -> WidecliError:
    return WidecliError(f"export: {name} is not installed; pip install 'widecli[export]'")


def _params(result: dict) -> dict:
    """The flattened spec and identity of a run, as hyperparameters (scalars only, no None/NaN)."""
    flat = store.flatten(result)
    keep = ("recipe", "run_id", "status", "factor", "method", "seed", "widen_layers", "budget", "nonzeros",
            "connectivity")
    return {k: v for k, v in flat.items()
            if (k in keep or "." in k or k.startswith("axis:")) and v is not None and not _nan(v)}


def git_tags(result: dict) -> dict[str, str]:
    """The run's provenance (execute.provenance) as flat tags: the widecli checkout's commit (what
    MLflow's `mlflow.source.git.commit` and W&B's git commit mean: the code that ran), its dirty flag
    and diff hash, the recipe folder's, and the packages' hash. Empty for runs from before widecli
    recorded provenance, or installed from a wheel (no checkout)."""
    p = result.get("provenance") or {}
    tags = {}
    for what in ("widecli", "recipe"):
        state = p.get(what) or {}
        if state.get("commit"):
            tags[f"{what}.git.commit"] = state["commit"]
            tags[f"{what}.git.dirty"] = str(bool(state.get("dirty"))).lower()
            if state.get("diff_sha256"):
                tags[f"{what}.git.diff_sha256"] = state["diff_sha256"]
    if p.get("packages"):
        tags["packages.sha256"] = p["packages"]
    return tags


def _finals(result: dict) -> dict[str, float]:
    """A run's final numeric values (test_accuracy, best_test_accuracy, wall_time_s, ...)."""
    return {k: v for k, v in result.get("final", {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not _nan(v)}


def _nan(v) -> bool:
    return isinstance(v, float) and v != v


def _scalar_tag(metric: str) -> str:
    """metrics.csv column -> TensorBoard tag: train_loss -> train/loss, test_accuracy -> test/accuracy."""
    split, _, what = metric.partition("_")
    return f"{split}/{what}" if split in ("train", "test") and what else metric


def _tensorboard(results, recipes, out: Path) -> list[Path]:
    try:
        from torch.utils.tensorboard import SummaryWriter  # optional extra: pip install 'widecli[export]'
    except ImportError:
        raise _missing("tensorboard") from None
    written = []
    for result, epochs, metrics in _each_run(results, _finished(results, recipes)):
        folder = out / result["recipe"] / result["run_id"]
        for old in folder.glob("events.out.tfevents.*"):  # an earlier export of this run
            old.unlink()
        with SummaryWriter(log_dir=str(folder)) as w:
            for m in metrics:
                for epoch, value in _points(epochs, m):
                    w.add_scalar(_scalar_tag(m), value, epoch)
            # HParams: the spec, and the final values as its metrics (run_name "." keeps them in
            # this run's folder instead of a timestamped subfolder).
            w.add_hparams(_params(result), {f"hparam/{k}": v for k, v in _finals(result).items()}, run_name=".")
        written.append(folder)
    return written


def _mlflow(results, recipes, out: Path) -> list[Path]:
    try:
        import mlflow  # optional extra: pip install 'widecli[export]'
        from mlflow.entities import (  # optional extra: pip install 'widecli[export]'
            Metric,
            Param,
            RunTag,
        )
    except ImportError:
        raise _missing("mlflow") from None
    runs = _finished(results, recipes)
    out.mkdir(parents=True, exist_ok=True)
    # A file store (a folder others can copy or serve with `mlflow ui --backend-store-uri`): MLflow 3
    # keeps it in maintenance mode and asks for this opt-in.
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = mlflow.tracking.MlflowClient(tracking_uri=out.resolve().as_uri())
    experiments: dict[str, tuple[str, dict[str, list[str]]]] = {}
    written = []
    for result, epochs, metrics in _each_run(results, runs):
        name = result["recipe"]
        if name not in experiments:
            experiments[name] = _mlflow_experiment(client, name)
        eid, earlier = experiments[name]
        for old in earlier.pop(result["run_id"], []):  # an earlier export of this run
            client.delete_run(old)
            shutil.rmtree(out / eid / old, ignore_errors=True)  # the file store's hard delete (`mlflow gc`)
        git = git_tags(result)
        standard = {"mlflow.source.git.commit": git["widecli.git.commit"]} if "widecli.git.commit" in git else {}
        run = client.create_run(eid, run_name=result["run_id"],
                                tags={"recipe": name, "run_id": result["run_id"], "status": result["status"],
                                      **standard, **git})
        params = [Param(k, str(v)[:PARAM_CHARS]) for k, v in _params(result).items()]
        points = [Metric(m, value, 0, epoch) for m in metrics for epoch, value in _points(epochs, m)]
        client.log_batch(run.info.run_id, metrics=points, params=params, tags=[RunTag("widecli", "1")])
        client.set_terminated(run.info.run_id, "FINISHED" if result["status"] == "ok" else "FAILED")
        written.append(out / eid / run.info.run_id)
    return written


def _mlflow_experiment(client, name: str) -> tuple[str, dict[str, list[str]]]:
    """The experiment id of a recipe (created if new) and its widecli runs: run_id -> MLflow run ids."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name), {}
    earlier: dict[str, list[str]] = {}
    token = None
    while True:
        page = client.search_runs([experiment.experiment_id], "tags.widecli = '1'", max_results=1000,
                                  page_token=token)
        for r in page:
            earlier.setdefault(r.data.tags.get("run_id"), []).append(r.info.run_id)
        token = page.token
        if not token:
            return experiment.experiment_id, earlier


def _wandb_id(result: dict) -> str:
    """A W&B run id, unique across recipes (recipes may share a run id) and without / \\ # ? % :."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{result['recipe']}-{result['run_id']}")


def _wandb(results, recipes, out: Path) -> list[Path]:
    os.environ.setdefault("WANDB_SILENT", "true")
    try:
        import wandb  # optional extra: pip install 'widecli[export]'
    except ImportError:
        raise _missing("wandb") from None
    runs = _finished(results, recipes)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for result, epochs, metrics in _each_run(results, runs):
        # Offline (never contacts a server: `wandb sync` uploads later), silent, stdout left alone;
        # the git commit is the run's recorded one (W&B would otherwise read the exporting folder's).
        git = git_tags(result)
        settings = wandb.Settings(mode="offline", silent=True, console="off", disable_git=True, save_code=False,
                                  git_commit=git.get("widecli.git.commit"),
                                  git_root=((result.get("provenance") or {}).get("widecli") or {}).get("root"))
        run_id = _wandb_id(result)
        earlier = re.compile(r"offline-run-\d{8}_\d{6}-" + re.escape(run_id))
        for old in (out / "wandb").glob(f"offline-run-*-{run_id}"):  # an earlier export of this run
            if earlier.fullmatch(old.name):
                shutil.rmtree(old)
        # create_new: a run of the caller's own, if one is active, is neither finished nor logged to.
        run = wandb.init(project=result["recipe"], name=result["run_id"], id=run_id, dir=str(out),
                         config={**_params(result), **git}, tags=[result["status"]], mode="offline",
                         settings=settings, reinit="create_new")
        try:
            # The summary (W&B's run table) holds the run's final values from result.json; left to
            # W&B it would take each metric's last epoch row (the running train averages of the last
            # epoch, not the final clean pass), written after this update when the run finishes.
            for m in metrics:
                run.define_metric(m, summary="none")
            rows = epochs[metrics].astype(float).to_dict("records")
            for epoch, row in zip(epochs["epoch"].astype(int).tolist(), rows):
                run.log(row, step=epoch)
            run.summary.update(_finals(result))
            written.append(Path(run.dir).parent)
        finally:
            run.finish()
    if wandb.run is None:
        # finish() may return before W&B's service process has flushed the offline logs; shutting the
        # service down waits for it (a caller's own active run keeps it running).
        wandb.teardown()
    return written
