"""`widecli ablate`, `widecli tune` and `widecli kernel`: the studies built on runs (arms compared,
learning rates tuned per cell, the NNGP kernel at init against accuracy)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import List, Optional

import typer

from widecli.analysis import ablate as ablate_mod
from widecli.analysis import nngp, tune_report
from widecli.analysis import tune as tune_mod
from widecli.cli.exits import handled
from widecli.cli.options import (
    DeviceOpt,
    JobsOpt,
    ResultsOpt,
    SetOpt,
    Switch,
    ThreadsOpt,
    factors_override,
    parse_jobs,
)
from widecli.cli.render import analyses, console, tuning
from widecli.cli.render.fit import table
from widecli.cli.render.progress import RunProgress
from widecli.recipes import load_recipe
from widecli.engine.device import resolve_device
from widecli.errors import RecipeError
from widecli.execute import preflight, provenance
from widecli.execute.sweep import sweep as run_sweep


@handled
def ablate(recipe: Optional[Path] = typer.Argument(None, help="recipe YAML file (default: the bundled quickstart)"),
           widen_layers: Optional[List[str]] = typer.Option(
               None, "--widen-layers", help="first | last | all | NAME[,NAME...]; repeatable"),
           rule: Optional[List[str]] = typer.Option(None, "--rule", help="proportional | leveling | erk | uniform | "
                                                                         "custom; repeatable"),
           method: Optional[List[str]] = typer.Option(None, "--method", help="sparse | dense | linear_bottleneck | "
                                                                             "nonlinear_bottleneck; repeatable"),
           set_: Optional[List[str]] = SetOpt,
           jobs: str = JobsOpt,
           executor: str = typer.Option("local", help="local | ray"),
           address: Optional[str] = typer.Option(None, help="ray: auto | HOST:PORT"),
           device: str = DeviceOpt, results: Path = ResultsOpt,
           dry_run: bool = Switch("--dry-run", help="print the arms and their run counts, train nothing"),
           no_reference: bool = Switch("--no-reference", help="leave out the recipe's own setting"),
           threads: Optional[int] = ThreadsOpt) -> None:
    """Compare widening choices, sparsity rules and methods against the recipe's setting (each arm a sweep)."""
    path = recipe or ablate_mod.default_recipe()
    arms, notes = ablate_mod.arms(path, widen_layers or [], rule or [], method or [], set_ or [],
                                  reference=not no_reference)
    for note in notes:
        console.out.print(f"[yellow]note:[/] {note}")
    if dry_run:
        console.out.print(table(ablate_mod.dry_run(arms, results), f"{arms[0].recipe.name}: "
                                f"{len(arms)} arm(s) from {path}"))
        return
    specs = ablate_mod.all_specs(arms)
    preflight.before_training(specs, results, device)
    with RunProgress(arms[0].recipe.name, results) as progress:
        summary = run_sweep(specs, results, jobs=parse_jobs(jobs, specs, device), executor=executor, address=address,
                            device=device, on_event=progress.on_event, threads=threads,
                            provenance=provenance.collect(path))
    console.out.print(f"trained {summary.trained}, {summary.skipped} already finished, {summary.failed} failed")
    comparison = ablate_mod.compare(arms, results)
    analyses.ablation(*ablate_mod.display(comparison), comparison.files)
    if summary.failed:
        raise typer.Exit(1)


@handled
def tune(recipe: Path = typer.Argument(..., help="recipe YAML file (with data.validation)"),
         set_: Optional[List[str]] = SetOpt,
         range_: Optional[List[str]] = typer.Option(
             None, "--range", help="KEY=LOW:HIGH searched log-uniform (KEY=LOW:HIGH:linear: uniform); repeatable; "
                                   "default train.lr from 1/100 to 100x the recipe's values"),
         trials: int = typer.Option(20, "--trials", min=1, help="trials per (factor, method) cell: a budget, "
                                                                "a restarted tune runs only the missing ones"),
         no_prune: bool = Switch("--no-prune", help="train every trial to the end (default: stop trials in the "
                                                    "bottom quarter at the same epoch)"),
         jobs: str = JobsOpt, device: str = DeviceOpt, results: Path = ResultsOpt,
         threads: Optional[int] = ThreadsOpt) -> None:
    """Tune keys (default train.lr) per widening factor and method on the validation split (Optuna);
    writes a recipe overlay with the best values and a report. Trials are ordinary stored runs."""
    r = load_recipe(recipe, set_, warn=console.warning)
    spaces = [tune_mod.parse_range(x) for x in range_ or []] or [tune_mod.default_space(r)]
    s = tune_mod.setup(r, str(recipe), spaces, trials, results, prune=not no_prune,
                       provenance=provenance.collect(recipe), overrides=list(set_ or []))
    probe = tune_mod.probe_specs(s)
    preflight.before_training(probe, results, device)
    n_jobs = parse_jobs(jobs, probe, device)
    tuning.tune_start(s, n_jobs)
    with RunProgress(r.name, results) as progress:
        tune_mod.tune(s, device, n_jobs, threads, emit=progress.on_event)
    sums = tune_report.summarize(s)
    command = shlex.join(["widecli", "tune", str(recipe), *[f"--set={x}" for x in set_ or []],
                          *[f"--range={x}" for x in range_ or []], f"--trials={trials}",
                          *(["--no-prune"] if no_prune else [])])
    paths = tune_report.write(s, sums, command)
    tuning.tune_summary(s, sums)
    console.written(paths.values())


@handled
def kernel(recipe: Path = typer.Argument(..., help="recipe YAML file"),
           factors: Optional[str] = typer.Option(None, help="comma-separated widening factors (default: the recipe's)"),
           samples: int = typer.Option(256, help="N: inputs (the first N of the split) the kernel is measured on"),
           inits: int = typer.Option(128, help="M: random inits (with their masks) averaged per model"),
           seed: Optional[int] = typer.Option(None, help="first init seed; inits use seed..seed+M-1 (default: the recipe's first)"),
           split: str = typer.Option("test", help="test | train: where the N inputs come from"),
           reference: str = typer.Option("auto", help="auto | closed_form (MLP) | dense (widest affordable dense model)"),
           reference_factor: Optional[float] = typer.Option(None, help="factor of the dense reference model (default: widest affordable)"),
           set_: Optional[List[str]] = SetOpt, device: str = DeviceOpt, results: Path = ResultsOpt) -> None:
    """Distance of each model's NNGP kernel at init to the infinite-width kernel (paper Section 3, Fig. 7)."""
    overrides = list(set_ or []) + factors_override(factors)
    if split not in ("test", "train"):
        raise RecipeError(f"--split: unknown split {split!r}; allowed: test, train")
    r = load_recipe(recipe, overrides, warn=console.warning)
    dev = resolve_device(device)
    specs = nngp.kernel_specs(r)
    console.out.print(f"[bold]{r.name}[/] kernel at init: {len(specs)} models, {samples} {split} inputs, "
                      f"{inits} inits each, on {dev}")
    with RunProgress(r.name, results) as progress:
        advance = progress.count("kernel", len(specs))

        def on_row(row: dict) -> None:
            advance()
            analyses.kernel_row(row)
        df = nngp.analyze(r, samples, inits, dev, seed, reference, reference_factor, split, on_row,
                          on_reference=lambda name: console.out.print(f"infinite-width kernel: {name}"))
    analyses.kernel_summary(nngp.write(df, results, r.name), r.name, results)
