"""The options several commands share, and the parsers that turn option values into what the
packages below take (one-line RecipeError on a bad value)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from widecli.engine import threads as threads_mod
from widecli.engine.device import resolve_device
from widecli.errors import RecipeError
from widecli.execute import slurm


def Switch(*names: str, help: str, **kw) -> Any:
    """A boolean option that is on when given and takes no value (no `<bool>` placeholder in --help)."""
    return typer.Option(False, *names, help=help, metavar="", **kw)


SetOpt = typer.Option(None, "--set", help="override a recipe key: dotted.key=value (YAML value); repeatable")
ResultsOpt = typer.Option(Path("results"), "--results", envvar="WIDECLI_RESULTS", help="results directory")
DeviceOpt = typer.Option("auto", "--device", envvar="WIDECLI_DEVICE", help="auto | cpu | cuda | cuda:N")
JobsOpt = typer.Option("1", "--jobs", "-j", envvar="WIDECLI_JOBS",
                       help="worker processes (local executor): N, or auto: one process per free core when every "
                            "run is small (one thread each), else 1 (its threads take the cores)")
ThreadsOpt = typer.Option(
    None, "--threads", min=1,
    help="intra-op CPU threads per run; default auto (WIDECLI_THREADS): 1 for small models (a step under "
         "2e8 multiply-adds), else the cores split over --jobs and never more than other processes leave free")
JsonOpt = Switch("--json", help="print one machine-readable JSON document on stdout (and nothing else there)")


def parse_jobs(value: str, specs: list, device: str) -> int:
    """`--jobs N` or `auto` (engine.threads.auto_jobs)."""
    if value.strip() == "auto":
        return threads_mod.auto_jobs(specs, resolve_device(device))
    if not value.strip().isdigit() or int(value) < 1:
        raise RecipeError(f"--jobs: got {value!r}; expected auto or an integer >= 1")
    return int(value)


def run_flags(factor: float | None, method: str | None, seed: int | None, gpus: int | None = None) -> dict:
    """Command-line options that set recipe keys, validated by the schema like the recipe itself."""
    flags = {"--factor": ("widen.factors", [factor]), "--method": ("widen.methods", [method]),
             "--seed": ("seeds", [seed]), "--gpus": ("train.gpus", gpus)}
    return {k: v for k, v in flags.items() if (v[1][0] if isinstance(v[1], list) else v[1]) is not None}


def factors_override(factors: str | None) -> list[str]:
    """`--factors 1,2,4` as a --set item (widen.factors=[1.0,2.0,4.0]); none without the option."""
    if factors is None:
        return []
    try:
        return [f"widen.factors=[{','.join(str(float(f)) for f in factors.split(','))}]"]
    except ValueError:
        raise RecipeError(f"--factors {factors!r}: expected comma-separated numbers, e.g. 1,2,4") from None


def slurm_options(executor: str, partition: str | None, gpus_per_run: int, cpus_per_run: int, time_limit: str,
                  array_parallelism: int | None, no_wait: bool, cluster: str | None, mem: str | None,
                  account: str | None, qos: str | None, constraint: str | None, setup: list[str] | None,
                  extra: list[str] | None) -> dict:
    """The sweep's SLURM options as the slurm executor takes them (execute.slurm checks their values);
    a SLURM-only option with another executor is an error."""
    given = [o for o, v in (("--mem", mem), ("--account", account), ("--qos", qos), ("--constraint", constraint),
                            ("--slurm-setup", setup), ("--slurm-option", extra)) if v]
    if given and executor != "slurm":
        raise RecipeError(f"{given[0]}: a SLURM option; it applies with --executor slurm (got --executor {executor})")
    return {"partition": partition, "gpus_per_run": gpus_per_run, "cpus_per_run": cpus_per_run,
            "time_min": slurm.time_limit_minutes(time_limit), "array_parallelism": array_parallelism,
            "no_wait": no_wait, "cluster": cluster,
            "slurm": slurm.check_options(mem, account, qos, constraint, setup or [], extra or [])}
