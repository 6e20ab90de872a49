"""Results leave widecli: every epoch of every run as one DataFrame, and export to TensorBoard,
MLflow or Weights & Biases (offline), each run with its per-epoch metrics and its flattened spec as
hyperparameters. The exporters are optional extras (`pip install 'widecli[export]'`)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from widecli.errors import WidecliError
from widecli.store import runs as store

METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr")
TARGETS = ("tensorboard", "mlflow", "wandb")


def _finished(results: str | Path, recipes: list[str] | None) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for name in recipes or [None]:
        runs = store.finished_runs(results, name)
        out.update({f"{name}/{k}" if name else k: r for k, r in runs.items()})
    if not out:
        raise WidecliError(f"{results}: no finished runs{' of ' + ', '.join(recipes) if recipes else ''}; "
                           f"run `widecli sweep RECIPE` first")
    return out


def load_metrics(results: str | Path, recipes: list[str] | None = None) -> pd.DataFrame:
    """Every epoch of every finished run: one row per (recipe, run_id, epoch), with the per-epoch
    metrics of metrics.csv and the run's flattened spec and final metrics (as in runs.csv)."""
    frames = []
    for key, result in _finished(results, recipes).items():
        path = store.run_dir(results, _Ref(result["recipe"], result["run_id"])) / store.METRICS
        epochs = pd.read_csv(path)
        flat = {k: v for k, v in store.flatten(result).items() if k not in epochs.columns}
        frames.append(epochs.assign(**flat))
    df = pd.concat(frames, ignore_index=True)
    first = ["recipe", "run_id", "epoch"]
    return df[first + [c for c in df.columns if c not in first]]


class _Ref:
    """recipe/run_id, the two fields store.run_dir reads of a spec."""

    def __init__(self, recipe: str, run_id: str):
        self.recipe, self.run_id = recipe, run_id


def _params(result: dict) -> dict:
    """The flattened spec and identity of a run, as hyperparameters (scalars only)."""
    flat = store.flatten(result)
    keep = ("recipe", "run_id", "status", "factor", "method", "seed", "widen_layers", "budget", "nonzeros",
            "connectivity")
    return {k: v for k, v in flat.items()
            if (k in keep or "." in k or k.startswith("axis:")) and v is not None and not _nan(v)}


def _nan(v) -> bool:
    return isinstance(v, float) and v != v


def export(results: str | Path, to: str, out: str | Path | None = None,
           recipes: list[str] | None = None) -> list[Path]:
    """Write every finished run to a tracking tool; returns the files or folders written."""
    if to not in TARGETS:
        raise WidecliError(f"--to: unknown target {to!r}; allowed: {', '.join(TARGETS)}")
    out = Path(out or Path(results) / "export" / to)
    runs = _finished(results, recipes)
    epochs = load_metrics(results, recipes)
    by_run = {k: g for k, g in epochs.groupby(["recipe", "run_id"], sort=False)}
    writer = {"tensorboard": _tensorboard, "mlflow": _mlflow, "wandb": _wandb}[to]
    return writer(runs, by_run, out)


def _missing(name: str) -> WidecliError:
    return WidecliError(f"export: {name} is not installed; pip install 'widecli[export]'")


def _tensorboard(runs: dict, by_run: dict, out: Path) -> list[Path]:
    try:
        from torch.utils.tensorboard import SummaryWriter  # optional extra: needs the tensorboard package
    except ImportError:
        raise _missing("tensorboard") from None
    written = []
    for result in runs.values():
        folder = out / result["recipe"] / result["run_id"]
        rows = by_run[(result["recipe"], result["run_id"])]
        with SummaryWriter(log_dir=str(folder)) as w:
            for row in rows.itertuples(index=False):
                for m in METRICS:
                    split, _, what = m.partition("_")
                    w.add_scalar(f"{split}/{what}" if what else m, getattr(row, m), int(row.epoch))
            final = {f"hparam/{k}": v for k, v in result.get("final", {}).items()
                     if isinstance(v, (int, float)) and not isinstance(v, bool) and not _nan(v)}
            w.add_hparams(_params(result), final, run_name=".")
        written.append(folder)
    return written


def _mlflow(runs: dict, by_run: dict, out: Path) -> list[Path]:
    try:
        import mlflow  # optional extra: mlflow (or mlflow-skinny)
        from mlflow.entities import Metric, Param, RunTag  # optional extra, as above
    except ImportError:
        raise _missing("mlflow") from None
    out.mkdir(parents=True, exist_ok=True)
    # A file store (a folder others can copy or serve with `mlflow ui --backend-store-uri`): MLflow 3
    # keeps it in maintenance mode and asks for this opt-in.
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = mlflow.tracking.MlflowClient(tracking_uri=out.resolve().as_uri())
    for result in runs.values():
        name = result["recipe"]
        experiment = client.get_experiment_by_name(name)
        eid = experiment.experiment_id if experiment else client.create_experiment(name)
        run = client.create_run(eid, run_name=result["run_id"],
                                tags={"recipe": name, "run_id": result["run_id"], "status": result["status"]})
        rows = by_run[(name, result["run_id"])]
        # MLflow caps a param value at 6,000 characters (older servers: 500): long lists are cut.
        params = [Param(k, str(v)[:500]) for k, v in _params(result).items()]
        metrics = [Metric(m, float(getattr(row, m)), 0, int(row.epoch)) for row in rows.itertuples(index=False)
                   for m in METRICS]
        client.log_batch(run.info.run_id, metrics=metrics, params=params, tags=[RunTag("widecli", "1")])
        client.set_terminated(run.info.run_id, "FINISHED" if result["status"] == "ok" else "FAILED")
    return [out]


def _wandb(runs: dict, by_run: dict, out: Path) -> list[Path]:
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ["WANDB_MODE"] = "offline"  # never contact a server: `wandb sync` uploads later
    try:
        import wandb  # optional extra
    except ImportError:
        raise _missing("wandb") from None
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for result in runs.values():
        run = wandb.init(project=result["recipe"], name=result["run_id"], id=result["run_id"], dir=str(out),
                         config=_params(result), mode="offline", reinit="finish_previous")
        for row in by_run[(result["recipe"], result["run_id"])].itertuples(index=False):
            run.log({m: float(getattr(row, m)) for m in METRICS}, step=int(row.epoch))
        run.summary.update({k: v for k, v in result.get("final", {}).items() if isinstance(v, (int, float))})
        written.append(Path(run.dir).parent)
        run.finish()
    return written
