"""Command-line interface: parses arguments, loads recipes and delegates. The only module that knows
about terminals and exit codes: every WidecliError becomes one red line on stderr and exit code 2.
"""

from __future__ import annotations

import difflib
import functools
import sys
from pathlib import Path
from typing import Callable, List, Optional

import typer
import typer.core
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from widecli.errors import WidecliError

out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)


# click.exceptions, or the copy of Click that typer >= 0.2x vendors (typer._click.exceptions)
_cx = sys.modules[typer.BadParameter.__module__]


class OneLineGroup(typer.core.TyperGroup):
    """Usage errors (missing argument, unknown option or command, bad option value) as one red line
    and exit code 2, instead of Click's multi-line usage box: Click's documented way is to run
    `main(standalone_mode=False)` and handle the ClickException ourselves."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _cx.NoArgsIsHelpError as e:  # bare `widecli`: the help was printed
            sys.exit(e.exit_code)
        except _cx.ClickException as e:
            where = e.ctx.command_path if getattr(e, "ctx", None) else "widecli"
            message = " ".join(e.format_message().split()) + _given(e, sys.argv[1:] if args is None else args)
            err.print(f"[red]error:[/] {escape(where)}: {escape(message)} (see {escape(where)} --help)",
                      markup=True)
            sys.exit(e.exit_code)
        except typer.Abort:
            err.print("[red]interrupted[/]", markup=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)

    def resolve_command(self, ctx, args):
        name = args[0] if args else None
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            commands = self.list_commands(ctx)
            close = difflib.get_close_matches(name, commands, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            ctx.fail(f"no such command {name!r}{hint} (commands: {', '.join(commands)})")
        return super().resolve_command(ctx, args)


def _given(e, args: list[str]) -> str:
    """` (got 'x')`: the value a bad option had on the command line (Click's message leaves it out)."""
    if not isinstance(e, _cx.BadParameter):
        return ""
    opts = getattr(getattr(e, "param", None), "opts", None) or []
    for i, a in enumerate(args):
        name, eq, value = str(a).partition("=")
        if name in opts:
            got = value if eq else (args[i + 1] if i + 1 < len(args) else None)
            return f" (got {got!r})" if got is not None else ""
    return ""


app = typer.Typer(name="widecli", add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  cls=OneLineGroup,
                  help="Ablation studies on wide, sparse networks at a fixed number of weights.")
_debug = {"on": False}

SetOpt = typer.Option(None, "--set", help="override a recipe key: dotted.key=value (YAML value); repeatable")
ResultsOpt = typer.Option(Path("results"), "--results", help="results directory")
DeviceOpt = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N")


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="show Python tracebacks on errors")) -> None:
    _debug["on"] = debug


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the current run cleans up its partial files."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated


def handled(fn: Callable) -> Callable:
    """Turn WidecliError into one red line and exit code 2 (a traceback only with --debug).

    Ctrl-C / SIGTERM: the runner has removed the current run's partial files; say how to resume
    and exit 130 / 143.
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import shlex
        import signal

        try:
            signal.signal(signal.SIGTERM, _on_sigterm)
        except ValueError:
            pass  # not the main thread (an embedding program): leave its signals alone
        try:
            return fn(*args, **kwargs)
        except WidecliError as e:
            if _debug["on"]:
                raise
            err.print(f"[red]error:[/] {escape(str(e))}", markup=True)  # a value like [b] is not markup
            raise typer.Exit(2) from None
        except KeyboardInterrupt as e:
            again = shlex.join(["widecli", *sys.argv[1:]])
            err.print(f"[red]interrupted[/]: finished runs are kept and the current run's partial files "
                      f"were removed; resume with: {escape(again)}", markup=True)
            raise typer.Exit(143 if isinstance(e, Terminated) else 130) from None
    return wrapper


def fmt_count(n: int) -> str:
    return f"{n:,}"


def layer_summary(layers: dict) -> str:
    return ", ".join(f"{n}:{v['connectivity']:.3g}" for n, v in layers.items())


@app.command()
@handled
def check(recipe: Path = typer.Argument(..., help="recipe YAML file"), set_: Optional[List[str]] = SetOpt) -> None:
    """Validate a recipe and print every planned run with widths, nonzeros and connectivity."""
    from widecli import data, recipe as recipe_mod
    from widecli.build import plan

    r = recipe_mod.load(recipe, set_)
    specs = recipe_mod.expand(r)
    shape, classes = data.describe(r.data)
    table = Table(title=f"{r.name}: {len(specs)} runs, input {shape}, {classes} classes")
    for col in ("run_id", "factor", "method", "seed", "widths", "budget", "nonzeros", "gap",
                "connectivity", "per-layer connectivity"):
        table.add_column(col, overflow="fold")
    for s in specs:
        p = plan(s, shape, classes)
        widths = ",".join(str(w) for w in p.widths.values())
        gap = p.budget - p.nonzeros
        gap_s = "[green]0[/]" if gap == 0 else (f"{gap:+,}" if s.method != "dense" else "-")
        table.add_row(s.run_id, f"{s.factor:g}", s.method, str(s.seed), widths, fmt_count(p.budget),
                      fmt_count(p.nonzeros), gap_s, f"{p.connectivity:.4f}",
                      layer_summary(p.layers()))
    out.print(table)
    sparse = [s for s in specs if s.method == "sparse"]
    if sparse:
        short = [s for s in sparse if s.sparsity.granularity == "kernel"]
        exact = f"for all {len(sparse)}" if not short else \
            f"for {len(sparse) - len(short)}; {len(short)} with granularity kernel may fall short by < one kernel"
        out.print(f"sparse runs: nonzeros == budget {exact} (gap column); "
                  "biases/BatchNorm are counted separately and never masked")


@app.command()
@handled
def train(recipe: Path = typer.Argument(..., help="recipe YAML file"),
          factor: Optional[float] = typer.Option(None, help="widening factor (default: the recipe's first)"),
          method: Optional[str] = typer.Option(None, help="sparse | dense | linear_bottleneck | nonlinear_bottleneck"),
          seed: Optional[int] = typer.Option(None, help="seed (default: the recipe's first)"),
          set_: Optional[List[str]] = SetOpt, device: str = DeviceOpt, results: Path = ResultsOpt,
          gpus: Optional[int] = typer.Option(None, "--gpus", min=1,
                                             help="data-parallel over N GPUs (N CPU processes with --device cpu)")) -> None:
    """Train one run of a recipe and write it to the results directory."""
    from widecli import distributed, preflight, recipe as recipe_mod, runner
    from widecli.train import resolve_device

    r = recipe_mod.load(recipe, [*(set_ or []), *([f"train.gpus={gpus}"] if gpus else [])])
    check_factor_method(factor, method)
    spec = recipe_mod.make_spec(r, factor if factor is not None else r.widen.factors[0],
                                method or r.widen.methods[0], r.seeds[0] if seed is None else seed)
    dev = distributed.init_from_env(resolve_device(device))  # a torchrun rank joins its group
    if not distributed.is_main():  # torchrun ranks > 0 train their share silently, write nothing
        runner.run([spec], results, dev)
        return
    preflight.before_training([spec], results, dev, force=True)
    where = f"{spec.train.gpus} x {dev}" if spec.train.gpus > 1 else str(dev)
    out.print(f"[bold]{r.name}[/] run {spec.run_id}: factor {spec.factor:g}, {spec.method}, "
              f"seed {spec.seed}, on {where}")
    with epoch_progress() as on_epoch:
        [(outcome, path)] = runner.run([spec], results, dev, on_epoch=on_epoch)
    print_run_summary(outcome, path)


def check_factor_method(factor: float | None, method: str | None) -> None:
    """Refuse a --factor below 1 or an unknown --method (None: the recipe's own)."""
    from widecli.errors import RecipeError
    from widecli.recipe import METHODS

    if method is not None and method not in METHODS:
        raise RecipeError(f"--method: unknown method {method!r}; allowed: {', '.join(METHODS)}")
    if factor is not None and factor < 1:
        raise RecipeError(f"--factor: got {factor:g}; widening factors must be >= 1")


class epoch_progress:
    """Context manager yielding an on_epoch callback that drives a rich progress bar."""

    def __enter__(self):
        self.progress = Progress(TextColumn("epoch"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=out,
                                 transient=True)
        self.progress.__enter__()
        self.task = None

        def on_epoch(epoch: int, epochs: int, rows: list[dict]) -> None:
            if self.task is None:
                self.task = self.progress.add_task("train", total=epochs, info="")
            info = "  ".join(f"test {r['test_accuracy']:.3f} train {r['train_accuracy']:.3f}" for r in rows[:4])
            self.progress.update(self.task, completed=epoch, info=info)
        return on_epoch

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)


def print_run_summary(outcome, path: Path) -> None:
    import json

    result = json.loads((path / "result.json").read_text())
    w, f = result["weights"], result["final"]
    colour = "green" if outcome.status == "ok" else "red"
    out.print(f"[{colour}]{outcome.status}[/]: test accuracy {f['test_accuracy']:.4f}, train accuracy "
              f"{f['train_accuracy']:.4f} after {f['epochs_run']} epochs ({f['wall_time_s']:.1f}s)")
    out.print(f"weights: budget {fmt_count(w['budget'])}, nonzeros {fmt_count(w['nonzeros'])}, "
              f"dense {fmt_count(w['dense_weights'])}, connectivity {w['connectivity']:.4f}; "
              f"biases/BN {fmt_count(w['other_params'])} (never masked)")
    out.print(f"per layer: {layer_summary(w['layers'])}")
    out.print(f"written to {path}")


# --- layers command (issue 5) ---
@app.command()
@handled
def layers(recipe: Path = typer.Argument(..., help="recipe YAML file"), set_: Optional[List[str]] = SetOpt,
           factor: float = typer.Option(1.0, help="widening factor at which to show the layers"),
           method: str = typer.Option("sparse", help="sparse | dense | linear_bottleneck | nonlinear_bottleneck")) -> None:
    """List every weight layer: name, shape, weights, whether it can widen and whether it is masked."""
    from widecli import data, models, recipe as recipe_mod
    from widecli.build import layer_table

    r = recipe_mod.load(recipe, set_)
    check_factor_method(factor, method)
    shape, classes = data.describe(r.data)
    spec = recipe_mod.make_spec(r, factor, method, r.seeds[0])
    rows = layer_table(spec, shape, classes)
    table = Table(title=f"{r.name}: {r.model.arch} at factor {factor:g} ({spec.method}), widen.layers "
                        f"{spec.widen_layers}, scope {r.sparsity.scope}")
    for col in ("layer", "shape", "weights", "nonzeros", "widens with", "masked"):
        table.add_column(col, justify="right" if col in ("weights", "nonzeros") else "left")
    for row in rows:
        table.add_row(row["name"], "x".join(map(str, row["shape"])), fmt_count(row["weights"]),
                      fmt_count(row["nonzeros"]), row["widens_with"] or "no", "yes" if row["masked"] else "no")
    out.print(table)
    out.print(f"{len(rows)} weight layers, {fmt_count(sum(x['weights'] for x in rows))} weights; "
              f"widen.layers may name: {', '.join(models.widenable_layers(r.model))} (or first, last, all)")


# --- sweep command (issue 6) ---


@app.command()
@handled
def sweep(recipe: Path = typer.Argument(..., help="recipe YAML file"), set_: Optional[List[str]] = SetOpt,
          jobs: int = typer.Option(1, "--jobs", "-j", help="worker processes (local executor)"),
          executor: str = typer.Option("local", help="local | ray"),
          address: Optional[str] = typer.Option(None, help="ray: auto | HOST:PORT (none: start a local Ray)"),
          num_cpus: Optional[float] = typer.Option(None, "--num-cpus", help="ray: CPUs per run (default 1)"),
          num_gpus: Optional[float] = typer.Option(None, "--num-gpus",
                                                   help="ray: GPUs per run (default 1 if the cluster has GPUs)"),
          device: str = DeviceOpt, results: Path = ResultsOpt,
          force: bool = typer.Option(False, "--force", help="retrain finished runs too"),
          retry_failed: bool = typer.Option(False, "--retry-failed", help="retrain runs recorded as failed"),
          dry_run: bool = typer.Option(False, "--dry-run", help="print the plan and exit")) -> None:
    """Train every run of a recipe not yet finished (resumable, parallel, safe to run twice at once)."""
    from widecli import preflight, recipe as recipe_mod, sweep as sweep_mod

    r = recipe_mod.load(recipe, set_)
    specs = recipe_mod.expand(r)
    if dry_run:
        preflight.results_dir(results, [r.name], write=False)
        print_plan(r, sweep_mod.plan(specs, results, force, retry_failed))
        return
    preflight.before_training(specs, results, device, force)
    with SweepProgress(r.name, results) as progress:
        summary = sweep_mod.run(specs, results, jobs=jobs, executor=executor, address=address, device=device,
                                force=force, retry_failed=retry_failed, on_event=progress.on_event,
                                num_cpus=num_cpus, num_gpus=num_gpus)
    print_sweep_summary(summary)
    if summary.failed:
        raise typer.Exit(1)


def print_plan(r, planned) -> None:
    from widecli import data
    from widecli.build import plan

    shape, classes = data.describe(r.data)
    todo = sum(p.todo for p in planned)
    table = Table(title=f"{r.name}: {len(planned)} runs, {todo} to train")
    for col in ("run_id", "factor", "method", "seed", "axes", "connectivity", "status", "train"):
        table.add_column(col, overflow="fold")
    colours = {"finished": "green", "failed": "red", "corrupt": "red", "partial": "yellow"}
    for p in planned:
        s = p.spec
        axes = ", ".join(f"{k}={v}" for k, v in s.axes.items())
        status = f"[{colours[p.status]}]{p.status}[/]" if p.status in colours else p.status
        table.add_row(s.run_id, f"{s.factor:g}", s.method, str(s.seed), axes,
                      f"{plan(s, shape, classes).connectivity:.4f}", status, "yes" if p.todo else "-")
    out.print(table)
    for p in planned:
        if p.error:
            out.print(f"[red]corrupt[/] {p.run_id}: {p.error}")


class SweepProgress:
    """rich progress for a sweep: overall runs done/total with ETA, one bar per training group."""

    def __init__(self, name: str, results: Path):
        self.name, self.results = name, results

    def __enter__(self):
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=out,
                                 transient=True)
        self.progress.__enter__()
        self.overall, self.groups = None, {}
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def on_event(self, e) -> None:
        p, key = self.progress, tuple(r[0] for r in e.runs)
        if e.kind == "plan":
            for run in e.planned:
                if run.error:
                    p.console.print(f"[red]corrupt[/] {run.run_id}: {run.error}")
            if e.total == 0:
                p.console.print(f"{self.name}: nothing to train, all {e.skipped} runs are finished in "
                                f"{self.results / self.name} (--force retrains)")
            else:
                p.console.print(f"{self.name}: {e.total} runs to train, {e.skipped} already finished")
            self.overall = p.add_task("runs", total=e.total, info="")
        elif e.kind == "start":
            label = ", ".join(f"f={f:g} {m} s{s}" for _, f, m, s in e.runs)
            self.groups[key] = p.add_task(f"  {label[:60]}", total=None, info="")
        elif e.kind == "epoch" and key in self.groups:
            info = " ".join(f"test {r['test_accuracy']:.3f}" for r in e.rows[:4])
            p.update(self.groups[key], total=e.epochs, completed=e.epoch, info=info)
        elif e.kind == "done":
            run_id, f, m, s = e.runs[0]
            colour = {"ok": "green", "diverged": "yellow", "failed": "red"}.get(e.status, "dim")
            why = f": {e.error}" if e.error else (" (finished by another sweep)" if e.status == "elsewhere" else "")
            p.console.print(f"[{colour}]{e.status}[/] {run_id} f={f:g} {m} seed {s}{why}")
            p.advance(self.overall)
            for k in [k for k in self.groups if run_id in k]:
                p.remove_task(self.groups.pop(k))
        elif e.kind == "wait":
            p.console.print(f"waiting for {len(e.runs)} runs another sweep is training")


def print_sweep_summary(summary) -> None:
    from widecli.sweep import best_table

    out.print(f"trained {summary.trained}: [green]{summary.ok} ok[/], [yellow]{summary.diverged} diverged[/], "
              f"[red]{summary.failed} failed[/]; {summary.skipped} skipped (already finished)")
    df = best_table(summary.rows)
    if not df.empty:
        table = Table(title="test accuracy by method and factor")
        for col in df.columns:
            table.add_column(str(col), justify="right")
        for row in df.itertuples(index=False):
            table.add_row(*[f"{v:.4f}" if isinstance(v, float) and not float(v).is_integer() else
                            (f"{v:g}" if isinstance(v, float) else str(v)) for v in row])
        out.print(table)
    for run_id, error in summary.failures:
        out.print(f"[red]failed[/] {run_id}: {error}")
    out.print(f"runs.csv: {summary.runs_csv}")

@app.command()
@handled
def report(results: Path = typer.Argument(Path("results"), help="results directory (any number of recipes)"),
           table1: bool = typer.Option(False, "--table1", help="the paper's Table 1, one row per study"),
           runs: bool = typer.Option(False, "--runs", help="mean ± std per recipe x method x factor"),
           plot: bool = typer.Option(False, "--plot", help="PNG per study: accuracy vs factor / connectivity"),
           fmt: Optional[str] = typer.Option(None, "--format", help="print md | txt | csv | latex (and write csv/tex)"),
           out_dir: Optional[Path] = typer.Option(None, "--out", help="where report files go (default: RESULTS)"),
           recipe: Optional[List[str]] = typer.Option(
               None, "--recipe", help="only this recipe: a NAME, or a recipe FILE (also counts its missing runs)")) -> None:
    """Table 1, a runs table and plots from finished runs; writes report.md and report.txt."""
    from widecli import recipe as recipe_mod, report as report_mod

    names, expected = [], []
    for item in recipe or []:
        if item.endswith((".yaml", ".yml")) or Path(item).is_file():
            r = recipe_mod.load(item)
            names.append(r.name)
            expected += recipe_mod.expand(r)
        else:
            names.append(item)
    both = not (table1 or runs or plot)
    rep = report_mod.build(results, table1_=table1 or both, runs=runs or both, plot=plot, fmt=fmt,
                           out=out_dir, recipes=names or None, expected=expected)
    for why in rep.rejected:  # never silently: a corrupt or foreign result.json is not counted
        err.print(f"[yellow]warning:[/] {escape(why)} (not counted)", markup=True)
    for name, shown in rep.shown.items():
        if fmt:
            text = report_mod.render(rep.tables[name] if fmt == "csv" else shown, fmt)
            typer.echo(text if fmt == "csv" else f"{report_mod.TITLES[name]}\n\n{text}\n")
        else:
            out.print(rich_table(shown, report_mod.TITLES[name]))
    if not fmt and (out.width or 0) >= 100:
        for s in rep.studies:
            chart = report_mod.text_chart(s, min(out.width, 110))
            if chart:
                out.print(chart, markup=False)
    target = err if fmt else out
    target.print("written: " + ", ".join(str(f) for f in rep.files), markup=False)


def rich_table(df, title: str) -> Table:
    """A DataFrame of display strings as a rich Table."""
    table = Table(title=title, title_justify="left")
    for col in df.columns:
        table.add_column(str(col), overflow="fold")
    for row in df.itertuples(index=False):
        table.add_row(*[str(v) for v in row])
    return table


@app.command()
@handled
def ablate(recipe: Optional[Path] = typer.Argument(None, help="recipe YAML file (default: the bundled quickstart)"),
           widen_layers: Optional[List[str]] = typer.Option(
               None, "--widen-layers", help="first | last | all | NAME[,NAME...]; repeatable"),
           rule: Optional[List[str]] = typer.Option(None, "--rule", help="proportional | leveling | erk | uniform | "
                                                                         "custom; repeatable"),
           method: Optional[List[str]] = typer.Option(None, "--method", help="sparse | dense | linear_bottleneck | "
                                                                             "nonlinear_bottleneck; repeatable"),
           set_: Optional[List[str]] = SetOpt,
           jobs: int = typer.Option(1, "--jobs", "-j", help="worker processes (local executor)"),
           executor: str = typer.Option("local", help="local | ray"),
           address: Optional[str] = typer.Option(None, help="ray: auto | HOST:PORT"),
           device: str = DeviceOpt, results: Path = ResultsOpt,
           dry_run: bool = typer.Option(False, "--dry-run", help="print the arms and their run counts, train nothing"),
           no_reference: bool = typer.Option(False, "--no-reference", help="leave out the recipe's own setting")) -> None:
    """Compare widening choices, sparsity rules and methods against the recipe's setting (each arm a sweep)."""
    from widecli import ablate as ablate_mod, preflight, report as report_mod, sweep as sweep_mod

    path = recipe or ablate_mod.default_recipe()
    arms, notes = ablate_mod.arms(path, widen_layers or [], rule or [], method or [], set_ or [],
                                  reference=not no_reference)
    for note in notes:
        out.print(f"[yellow]note:[/] {note}")
    if dry_run:
        out.print(rich_table(ablate_mod.dry_run(arms, results).astype(str), f"{arms[0].recipe.name}: "
                             f"{len(arms)} arm(s) from {path}"))
        return
    specs = ablate_mod.all_specs(arms)
    preflight.before_training(specs, results, device)
    with SweepProgress(arms[0].recipe.name, results) as progress:
        summary = sweep_mod.run(specs, results, jobs=jobs, executor=executor,
                                address=address, device=device, on_event=progress.on_event)
    out.print(f"trained {summary.trained}, {summary.skipped} already finished, {summary.failed} failed")
    comparison = ablate_mod.compare(arms, results)
    per_factor, per_arm = ablate_mod.display(comparison)
    out.print(rich_table(per_factor, "test accuracy (%) per arm and factor, mean ± std over seeds"))
    out.print(rich_table(per_arm, "Table 1 per arm; Δ = best wide accuracy minus the reference's (points)"))
    out.print("written: " + ", ".join(str(f) for f in comparison.files), markup=False)
    if summary.failed:
        raise typer.Exit(1)


@app.command()
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
    from widecli import kernel as kernel_mod, recipe as recipe_mod
    from widecli.errors import RecipeError
    from widecli.train import resolve_device

    overrides = list(set_ or [])
    if factors is not None:
        try:
            overrides.append(f"widen.factors=[{','.join(str(float(f)) for f in factors.split(','))}]")
        except ValueError:
            raise RecipeError(f"--factors {factors!r}: expected comma-separated numbers, e.g. 1,2,4") from None
    if split not in ("test", "train"):
        raise RecipeError(f"--split: unknown split {split!r}; allowed: test, train")
    r = recipe_mod.load(recipe, overrides)
    dev = resolve_device(device)
    specs = kernel_mod.kernel_specs(r)
    out.print(f"[bold]{r.name}[/] kernel at init: {len(specs)} models, {samples} {split} inputs, "
              f"{inits} inits each, on {dev}")
    with Progress(TextColumn("kernel"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=out, transient=True) as progress:
        task = progress.add_task("kernel", total=len(specs))

        def on_row(row: dict) -> None:
            progress.advance(task)
            out.print(f"factor {row['factor']:g} {row['method']} rule {row['rule']}: connectivity "
                      f"{row['connectivity']:.4f}, distance {row['distance']:.4f} (expected "
                      f"{row['expected_distance']:.4f}, one init {row['init_distance']:.4f})")
        df = kernel_mod.analyze(r, samples, inits, dev, seed, reference, reference_factor, split, on_row,
                                on_reference=lambda name: out.print(f"infinite-width kernel: {name}"))
    written = kernel_mod.write(df, results, r.name)
    rho, p, n = written["spearman"]
    if n:
        out.print(f"distance vs test accuracy over {n} models with finished runs: Spearman rho "
                  f"{rho:.3f} (p {p:.3g})")
    else:
        out.print(f"no finished runs of {r.name} under {results}: no accuracy correlation")
    for path in written["paths"].values():
        out.print(f"written {path}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("[red]interrupted[/]", markup=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
