"""`widecli train` (one run) and `widecli sweep` (every run of a recipe, resumable, on any executor)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from widecli.analysis import checks
from widecli.analysis.report import table1_of
from widecli.analysis.summary import best_table
from widecli.cli.exits import handled
from widecli.cli.options import (
    DeviceOpt,
    JobsOpt,
    ResultsOpt,
    SetOpt,
    Switch,
    ThreadsOpt,
    parse_jobs,
    run_flags,
    slurm_options,
)
from widecli.cli.render import console, previews
from widecli.cli.render import runs as show_runs
from widecli.cli.render.progress import RunProgress
from widecli.cli.render.table1 import table1_compact
from widecli.recipes import expand, load_recipe, make_spec
from widecli.engine import dist
from widecli.engine import threads as threads_mod
from widecli.engine.device import resolve_device
from widecli.errors import RecipeError
from widecli.execute import preflight, provenance
from widecli.execute.worklist import status_of
from widecli.execute.run import LOST_LEASE, run_group, run_group_when_free
from widecli.execute.sweep import sweep as run_sweep
from widecli.store import lock
from widecli.store import runs as store


@handled
def train(recipe: Path = typer.Argument(..., help="recipe YAML file"),
          factor: Optional[float] = typer.Option(None, help="widening factor (default: the recipe's first)"),
          method: Optional[str] = typer.Option(None, help="sparse | dense | linear_bottleneck | nonlinear_bottleneck"),
          seed: Optional[int] = typer.Option(None, help="seed (default: the recipe's first)"),
          set_: Optional[List[str]] = SetOpt, device: str = DeviceOpt, results: Path = ResultsOpt,
          force: bool = Switch("--force", help="retrain the run even if it is finished"),
          gpus: Optional[int] = typer.Option(None, "--gpus", min=1,
                                             help="data-parallel over N GPUs (N CPU processes with --device cpu)"),
          threads: Optional[int] = ThreadsOpt) -> None:
    """Train one run of a recipe and write it to the results directory (skipped if already finished)."""
    threads_mod.configure(threads)
    r = load_recipe(recipe, set_, run_flags(factor, method, seed, gpus), warn=console.warning)
    spec = make_spec(r, r.widen.factors[0], r.widen.methods[0], r.seeds[0])
    dev = dist.init_from_env(resolve_device(device))  # a torchrun rank joins its group
    if not dist.is_main():  # torchrun ranks > 0 train their share silently, write nothing
        run_group([spec], results, dev)
        return
    if not force and status_of(results, spec)[0] == "finished":
        console.out.print(f"{r.name} run {spec.run_id} is already finished in {results / r.name} (--force retrains)")
        show_runs.run_summary(store.read_run(results, spec), store.run_dir(results, spec))
        return
    preflight.before_training([spec], results, dev, force=True)
    where = f"{spec.train.gpus} x {dev}" if spec.train.gpus > 1 else str(dev)
    console.out.print(f"[bold]{r.name}[/] run {spec.run_id}: factor {spec.factor:g}, {spec.method}, "
                      f"seed {spec.seed}, on {where}")
    with RunProgress(r.name, results) as progress:
        # Another sweep (or train) holding the run: wait for it, take over if it died.
        report = run_group_when_free([spec], results, dev, force=force, emit=progress.on_event,
                                     record_failures=False, provenance=provenance.collect(recipe))
    if report.written:
        show_runs.run_summary(report.results[0], report.written[0])
    elif report.trained and report.trained[0][1] == LOST_LEASE:
        console.out.print(f"[yellow]{LOST_LEASE}[/] {r.name} run {spec.run_id}: {escape(report.trained[0][2] or '')}")
        raise typer.Exit(1)
    else:
        console.out.print(f"{r.name} run {spec.run_id} was trained by another process")
        show_runs.run_summary(store.read_run(results, spec), store.run_dir(results, spec))


@handled
def sweep(recipe: Path = typer.Argument(..., help="recipe YAML file"), set_: Optional[List[str]] = SetOpt,
          jobs: str = JobsOpt,
          executor: str = typer.Option("local", help="local | ray | slurm"),
          address: Optional[str] = typer.Option(None, help="ray: auto | HOST:PORT (none: start a local Ray)"),
          partition: Optional[str] = typer.Option(None, "--partition", help="slurm: the partition to submit to"),
          gpus_per_run: int = typer.Option(0, "--gpus-per-run", min=0, help="slurm: GPUs per array task"),
          cpus_per_run: int = typer.Option(1, "--cpus-per-run", min=1, help="slurm: CPUs per array task"),
          time_limit: str = typer.Option("4:00:00", "--time", help="slurm: time limit per task, [D-]HH:MM:SS"),
          array_parallelism: Optional[int] = typer.Option(None, "--array-parallelism", min=1,
                                                          help="slurm: at most N array tasks at once"),
          no_wait: bool = Switch("--no-wait",
                                 help="slurm: return after submitting; `widecli sweep RECIPE` again re-attaches"),
          slurm_cluster: Optional[str] = typer.Option(
              None, "--slurm-cluster", help="slurm: `local` runs the array tasks as processes here (no SLURM)"),
          mem: Optional[str] = typer.Option(None, "--mem", help="slurm: memory per task, e.g. 16G or 4000M"),
          account: Optional[str] = typer.Option(None, "--account", help="slurm: the account charged"),
          qos: Optional[str] = typer.Option(None, "--qos", help="slurm: quality of service"),
          constraint: Optional[str] = typer.Option(None, "--constraint", help="slurm: node features, e.g. a100"),
          slurm_setup: Optional[List[str]] = typer.Option(
              None, "--slurm-setup", help="slurm: a shell line run before each task (module load, venv "
                                          "activation); repeatable, in order"),
          slurm_option: Optional[List[str]] = typer.Option(
              None, "--slurm-option", help="slurm: any other sbatch option, KEY=VALUE (or KEY for a switch), "
                                           "e.g. mail-type=END; repeatable"),
          num_cpus: Optional[float] = typer.Option(None, "--num-cpus", help="ray: CPUs per run (default 1)"),
          num_gpus: Optional[float] = typer.Option(None, "--num-gpus",
                                                   help="ray: GPUs per run (default 1 if the cluster has GPUs)"),
          device: str = DeviceOpt, results: Path = ResultsOpt,
          force: bool = Switch("--force", help="retrain finished runs too"),
          retry_failed: bool = Switch("--retry-failed", help="retrain runs recorded as failed"),
          fail_fast: bool = Switch("--fail-fast",
                                   help="stop at the first failed run (default: record it and go on)"),
          dry_run: bool = Switch("--dry-run", help="print the plan and exit"),
          as_json: bool = Switch("--json", help="with --dry-run: the plan as one JSON document on stdout"),
          break_locks: bool = Switch("--break-locks",
                                     help="first remove the leases of runs whose owner is gone (asks)"),
          yes: bool = Switch("--yes", "-y", help="do not ask (--break-locks)"),
          wait_timeout: Optional[float] = typer.Option(
              None, "--wait-timeout", min=0,
              help="seconds to wait for runs another process leases (default: as long as it renews them)"),
          threads: Optional[int] = ThreadsOpt) -> None:
    """Train every run of a recipe not yet finished (resumable, parallel, safe to run twice at once)."""
    r = load_recipe(recipe, set_, warn=console.warning)
    specs = expand(r)
    if break_locks:
        _break_locks(results, r.name, yes)
    if dry_run:
        todo = checks.dry_run(r, specs, results, force, retry_failed)
        if as_json:
            console.json_out(previews.dry_run_json(r.name, todo))
        else:
            previews.dry_run_table(r.name, todo)
        return
    if as_json:
        raise RecipeError("--json: sweep prints JSON with --dry-run only (the plan); training shows progress")
    options = slurm_options(executor, partition, gpus_per_run, cpus_per_run, time_limit, array_parallelism, no_wait,
                            slurm_cluster, mem, account, qos, constraint, slurm_setup, slurm_option)
    if executor != "slurm":  # the memory check runs where the runs run: here, unless submitted
        preflight.before_training(specs, results, device, force)
    with RunProgress(r.name, results) as progress:
        summary = run_sweep(specs, results, jobs=parse_jobs(jobs, specs, device), executor=executor, address=address,
                            device=device, force=force, retry_failed=retry_failed, on_event=progress.on_event,
                            num_cpus=num_cpus, num_gpus=num_gpus, wait_timeout=wait_timeout, options=options,
                            fail_fast=fail_fast, threads=threads, provenance=provenance.collect(recipe))
    if no_wait and executor == "slurm":
        console.out.print(f"submitted; follow with `widecli sweep {recipe}` (re-attaches) or squeue")
        return
    show_runs.sweep_summary(summary, best_table(summary.rows))
    if summary.ok:  # this sweep's own Table 1 rows; `report` shows every study in the folder
        console.out.print(table1_compact(table1_of(results, [r.name]), console.width()))
        console.out.print(f"all studies in {results}, with report files: widecli report {results}  "
                          f"(plots: --plot, learning curves: --curves)")
    if summary.failed:
        raise typer.Exit(1)


def _break_locks(results: Path, recipe: str, yes: bool) -> None:
    """Remove the leases whose owner is not a live process on this host, after asking."""
    found = lock.leases(results, recipe)
    kept, gone = lock.breakable(found)
    show_runs.leases_table(recipe, found)
    if kept:
        console.out.print(f"{len(kept)} lease(s) held by live processes on this host are kept")
    if not gone:
        console.out.print("no lease to break")
        return
    if not yes and not typer.confirm(f"break {len(gone)} lease(s)? (only if their owners are really gone)"):
        console.out.print("no lease broken")
        return
    broken = sum(lock.break_lease(x["path"]) for x in gone)
    console.out.print(f"broke {broken} lease(s)")
