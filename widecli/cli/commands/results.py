"""`widecli report`, `widecli runs` and `widecli export`: what the store holds, as tables, plots and
files for other tools."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from widecli.analysis import export as export_mod
from widecli.analysis import report as report_mod
from widecli.analysis.summary import accuracy_bars
from widecli.cli.exits import handled
from widecli.cli.options import JsonOpt, Switch
from widecli.cli.render import analyses, console
from widecli.cli.render import runs as show_runs
from widecli.errors import RecipeError
from widecli.store import manage


@handled
def report(results: Path = typer.Argument(Path("results"), help="results directory (any number of recipes)"),
           table1: bool = Switch("--table1", help="the paper's Table 1, one row per study"),
           runs: bool = Switch("--runs", help="mean ± std per recipe x method x factor"),
           plot: bool = Switch("--plot", help="PNG per study: accuracy vs factor / connectivity"),
           curves: bool = Switch("--curves", help="PNG per study: test and train accuracy per epoch (learning curves)"),
           charts: bool = Switch("--charts", help="text bar charts per study in the terminal"),
           fmt: Optional[str] = typer.Option(None, "--format", help="print md | txt | csv | latex (and write csv/tex)"),
           out_dir: Optional[Path] = typer.Option(None, "--out", help="where report files go (default: RESULTS)"),
           recipe: Optional[List[str]] = typer.Option(
               None, "--recipe", help="only this recipe: a NAME, or a recipe FILE (also counts its missing runs)"),
           as_json: bool = JsonOpt) -> None:
    """Table 1, a runs table and plots from finished runs; writes report.md and report.txt."""
    names, expected = report_mod.select_recipes(recipe or [], warn=console.warning)
    both = not (table1 or runs or plot or curves or charts)
    rep = report_mod.build(results, table1_=table1 or both, runs=runs or both, plot=plot, fmt=fmt,
                           out=out_dir, recipes=names or None, expected=expected, curves=curves)
    bars = [accuracy_bars(s) for s in rep.studies] if charts and not fmt and not as_json else []
    analyses.report(rep, fmt, [b for b in bars if b is not None], as_json)


@handled
def runs(results: Path = typer.Argument(Path("results"), envvar="WIDECLI_RESULTS", help="results directory"),
         recipe: Optional[List[str]] = typer.Option(None, "--recipe", help="only this recipe (repeatable)"),
         status: Optional[List[str]] = typer.Option(
             None, "--status", help="ok | diverged | failed | corrupt | partial (repeatable)"),
         where: Optional[List[str]] = typer.Option(
             None, "--where", help="key=value on a runs.csv column, e.g. train.epochs=20 (repeatable)"),
         run_id: Optional[List[str]] = typer.Option(None, "--id", help="run id or its prefix (repeatable)"),
         remove: bool = Switch("--remove", help="delete the listed runs (asks first)"),
         archive: Optional[Path] = typer.Option(
             None, "--archive", help="move the listed runs to DIR/<recipe>/<run_id> (asks first)"),
         yes: bool = Switch("--yes", "-y", help="do not ask"),
         as_json: bool = JsonOpt) -> None:
    """List the stored runs (filtered by recipe, status or any spec key), and remove or archive them."""
    if remove and archive:
        raise RecipeError("--remove and --archive: choose one (archive keeps the runs elsewhere)")
    found = manage.find(results, recipe or None, status, where or [], run_id)
    details = {r.path: manage.details(r) for r in found} if run_id else {}  # --id: provenance and execution
    if as_json and not (remove or archive):
        console.json_out(show_runs.runs_json(found, details))
        return
    show_runs.runs_list(results, found)
    for r in found if run_id else ():
        show_runs.run_details(r.recipe, r.run_id, details[r.path])
    if not (remove or archive) or not found:
        return
    verb = "remove" if remove else f"move to {archive}"
    if not yes and not typer.confirm(f"{verb} these {len(found)} run(s)?"):
        console.out.print("nothing changed")
        return
    done, skipped = manage.remove(results, found, archive)
    for r in skipped:
        console.warning(f"{r.recipe} run {r.run_id} is being trained by a live process; left as it is")
    console.out.print(f"{'removed' if remove else f'archived to {archive}'}: {len(done)} run(s); runs.csv rebuilt")


@handled
def export(results: Path = typer.Argument(Path("results"), envvar="WIDECLI_RESULTS", help="results directory"),
           to: str = typer.Option(..., "--to", help="tensorboard | mlflow | wandb (offline runs)"),
           out_dir: Optional[Path] = typer.Option(None, "--out", help="where to write (default: RESULTS/export/TO)"),
           recipe: Optional[List[str]] = typer.Option(None, "--recipe", help="only this recipe (repeatable)")) -> None:
    """Every run's per-epoch metrics and flattened spec to TensorBoard, MLflow or W&B."""
    written = export_mod.export(results, to, out_dir, recipe or None)
    console.out.print(f"exported {len(written)} run(s) to {to}: {out_dir or Path(results) / 'export' / to}")
