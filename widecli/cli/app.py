"""Command-line interface: each command parses its arguments, calls one function and renders the
result (widecli.cli.render). Every WidecliError becomes one red line on stderr and exit code 2.
"""

from __future__ import annotations

import difflib
import functools
import shlex
import signal
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer
import typer.core
from rich.markup import escape
from typer.exceptions import TyperException

from widecli import __version__
from widecli.analysis import ablate as ablate_mod
from widecli.analysis import export as export_mod
from widecli.analysis import kernel as kernel_mod
from widecli.analysis import report as report_mod
from widecli.analysis import tune as tune_mod
from widecli.analysis import tune_report
from widecli.cli import render, tuning
from widecli.cli.render import out
from widecli.data.registry import shape_of
from widecli.engine import dist
from widecli.engine import threads as threads_mod
from widecli.engine.device import resolve_device
from widecli.errors import RecipeError, ResourceError, WidecliError
from widecli.execute import preflight, provenance
from widecli.execute import slurm as slurm_mod
from widecli.execute.plan import plan_runs, run_status
from widecli.execute.run import LOST_LEASE, run_group, run_group_when_free
from widecli.execute.sweep import sweep as run_sweep
from widecli.methods import METHODS, layer_table, plan_weights
from widecli.models.registry import widenable_layers
from widecli.recipes import expand, load_recipe, make_spec
from widecli.store import manage
from widecli.store.lock import break_lease
from widecli.store.lock import leases as lease_list
from widecli.store.runs import read_result, run_dir


class OneLineGroup(typer.core.TyperGroup):
    """Usage errors (missing argument, unknown option or command, bad option value) as one red line
    and exit code 2, instead of Click's multi-line usage box: Click's documented way is to run
    `main(standalone_mode=False)` and handle the exception ourselves. Typer vendors Click; its
    exceptions all derive from the public `typer.exceptions.TyperException`."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Abort:
            render.err.print("[red]interrupted[/]", markup=True)
            sys.exit(130)
        except TyperException as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # bare `widecli`: the help was printed
                sys.exit(e.exit_code)
            where = e.ctx.command_path if getattr(e, "ctx", None) else "widecli"
            argv = [str(a) for a in (sys.argv[1:] if args is None else args)]
            message = (_set_without_equals(e, argv) or _switch_value(e, argv)
                       or " ".join(e.format_message().split()) + _given(e, argv))
            render.error(f"{where}: {message} (see {where} --help)")
            sys.exit(e.exit_code)
        sys.exit(code if isinstance(code, int) else 0)

    def resolve_command(self, ctx, args):
        name = args[0] if args else None
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            commands = self.list_commands(ctx)
            close = difflib.get_close_matches(name, commands, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            ctx.fail(f"no such command {name!r}{hint} (commands: {', '.join(commands)})")
        return super().resolve_command(ctx, args)


BOOL_WORDS = ("true", "false", "yes", "no", "on", "off", "1", "0")


def _switch_value(e, args: list[str]) -> str | None:
    """`--dry-run true`: Click reads `true` as an extra argument; say that switches take no value."""
    if "unexpected extra argument" not in e.format_message() or not getattr(e, "ctx", None):
        return None
    switches = {o for p in e.ctx.command.params if getattr(p, "is_flag", False) for o in p.opts}
    for flag, value in zip(args, args[1:]):
        if flag in switches and value.lower() in BOOL_WORDS:
            return (f"{flag} is a switch and takes no value (got {value!r}): give {flag} alone to turn it "
                    f"on, leave it out to keep it off")
    return None


def _set_without_equals(e, args: list[str]) -> str | None:
    """`--set train.lr 0.1`: Click reads 0.1 as an extra argument; say how to write it."""
    if "unexpected extra argument" not in e.format_message():
        return None
    for flag, key, value in zip(args, args[1:], args[2:]):
        if flag == "--set" and "=" not in key and not value.startswith("-"):
            return f"--set {key} {value}: did you mean --set {key}={value}? (one argument, no spaces around =)"
    return None


def _given(e, args: list[str]) -> str:
    """` (got 'x')`: the value a bad option had on the command line (Click's message leaves it out)."""
    if not isinstance(e, typer.BadParameter):
        return ""
    opts = getattr(getattr(e, "param", None), "opts", None) or []
    for i, a in enumerate(args):
        name, eq, value = str(a).partition("=")
        if name in opts:
            got = value if eq else (args[i + 1] if i + 1 < len(args) else None)
            return f" (got {got!r})" if got is not None else ""
    return ""


def _flag_display(display):
    """Typer 0.29's rich help shows `<bool>` beside every switch (--help and --install-completion
    included), as if it took a value; a switch shows nothing there."""
    def display_type_rich(self, ctx):
        return "" if getattr(self, "is_flag", False) and self.metavar is None else display(self, ctx)
    return display_type_rich


if hasattr(typer.core.TyperOption, "display_type_rich"):
    typer.core.TyperOption.display_type_rich = _flag_display(typer.core.TyperOption.display_type_rich)


app = typer.Typer(name="widecli", add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  cls=OneLineGroup,
                  help="Ablation studies on wide, sparse networks at a fixed number of weights.")
_debug = {"on": False}

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


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"widecli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(debug: bool = Switch("--debug", help="show Python tracebacks on errors"),
          version: bool = Switch("--version", callback=_show_version, is_eager=True,
                                       help="print the version and exit")) -> None:
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
        try:
            signal.signal(signal.SIGTERM, _on_sigterm)
        except ValueError:
            pass  # not the main thread (an embedding program): leave its signals alone
        try:
            return fn(*args, **kwargs)
        except WidecliError as e:
            if _debug["on"]:
                raise
            render.error(str(e))
            raise typer.Exit(2) from None
        except KeyboardInterrupt as e:
            again = shlex.join(["widecli", *sys.argv[1:]])
            render.interrupted(again)
            raise typer.Exit(143 if isinstance(e, Terminated) else 130) from None
    return wrapper


def _jobs(value: str, specs: list, device: str) -> int:
    """`--jobs N` or `auto` (engine.threads.auto_jobs)."""
    if value.strip() == "auto":
        return threads_mod.auto_jobs(specs, resolve_device(device))
    if not value.strip().isdigit() or int(value) < 1:
        raise RecipeError(f"--jobs: got {value!r}; expected auto or an integer >= 1")
    return int(value)


def _run_flags(factor: float | None, method: str | None, seed: int | None, gpus: int | None = None) -> dict:
    """Command-line options that set recipe keys, validated by the schema like the recipe itself."""
    flags = {"--factor": ("widen.factors", [factor]), "--method": ("widen.methods", [method]),
             "--seed": ("seeds", [seed]), "--gpus": ("train.gpus", gpus)}
    return {k: v for k, v in flags.items() if (v[1][0] if isinstance(v[1], list) else v[1]) is not None}


@app.command()
@handled
def check(recipe: Path = typer.Argument(..., help="recipe YAML file"), set_: Optional[List[str]] = SetOpt,
          as_json: bool = JsonOpt, device: str = DeviceOpt) -> None:
    """Validate a recipe and print every planned run with widths, nonzeros and connectivity; runs
    whose model cannot fit in the device's memory (the estimate train and sweep refuse) exit 2."""
    r = load_recipe(recipe, set_, warn=render.warning)
    shape, classes = shape_of(r.data)
    specs = expand(r)
    rows = [(s, plan_weights(s, shape, classes), METHODS.get(s.method).holds_budget) for s in specs]
    dev = resolve_device(device)
    too_big, free, what = preflight.unfit(specs, dev)
    per_model = {s.stack_key(): e.total for s, e in preflight.estimates(specs)}
    memory = {s.run_id: per_model[s.stack_key()] for s in specs}
    masks = preflight.mask_diagnostics(specs, shape, classes)
    if as_json:
        render.json_out({"recipe": r.name, "input_shape": list(shape), "num_classes": classes,
                         "runs": [{**render.run_record(s, p), "memory_bytes": memory[s.run_id]} for s, p, _ in rows],
                         "unfit": [{"run_id": s.run_id, "bytes": e.total} for s, e in too_big], "masks": masks})
    else:
        render.check_table(r.name, shape, classes, rows, memory, free if too_big else None)
        render.mask_table(r.name, masks)
    for d in masks:
        if d["warning"]:
            render.warning(f"{recipe}: {d['warning']}")
    if too_big:
        more = f" ({len(too_big)} such model{'s' if len(too_big) > 1 else ''}; the largest shown)"
        raise ResourceError(preflight.refusal(*too_big[0], dev, free, what) + more)


@app.command()
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
    r = load_recipe(recipe, set_, _run_flags(factor, method, seed, gpus), warn=render.warning)
    spec = make_spec(r, r.widen.factors[0], r.widen.methods[0], r.seeds[0])
    dev = dist.init_from_env(resolve_device(device))  # a torchrun rank joins its group
    if not dist.is_main():  # torchrun ranks > 0 train their share silently, write nothing
        run_group([spec], results, dev)
        return
    if not force and run_status(results, spec)[0] == "finished":
        out.print(f"{r.name} run {spec.run_id} is already finished in {results / r.name} (--force retrains)")
        render.run_summary(read_result(run_dir(results, spec)), run_dir(results, spec))
        return
    preflight.before_training([spec], results, dev, force=True)
    where = f"{spec.train.gpus} x {dev}" if spec.train.gpus > 1 else str(dev)
    out.print(f"[bold]{r.name}[/] run {spec.run_id}: factor {spec.factor:g}, {spec.method}, "
              f"seed {spec.seed}, on {where}")
    with render.RunProgress(r.name, results) as progress:
        # Another sweep (or train) holding the run: wait for it, take over if it died.
        report = run_group_when_free([spec], results, dev, force=force, emit=progress.on_event,
                                     record_failures=False, provenance=provenance.collect(recipe))
    if report.written:
        render.run_summary(report.results[0], report.written[0])
    elif report.trained and report.trained[0][1] == LOST_LEASE:
        out.print(f"[yellow]{LOST_LEASE}[/] {r.name} run {spec.run_id}: {escape(report.trained[0][2] or '')}")
        raise typer.Exit(1)
    else:
        out.print(f"{r.name} run {spec.run_id} was trained by another process")
        render.run_summary(read_result(run_dir(results, spec)), run_dir(results, spec))


@app.command()
@handled
def layers(recipe: Path = typer.Argument(..., help="recipe YAML file"), set_: Optional[List[str]] = SetOpt,
           factor: float = typer.Option(1.0, help="widening factor at which to show the layers"),
           method: str = typer.Option("sparse", help="sparse | dense | linear_bottleneck | nonlinear_bottleneck"),
           as_json: bool = JsonOpt) -> None:
    """List every weight layer: name, shape, weights, whether it can widen and whether it is masked."""
    r = load_recipe(recipe, set_, _run_flags(factor, method, None), warn=render.warning)
    shape, classes = shape_of(r.data)
    spec = make_spec(r, factor, method, r.seeds[0])
    if as_json:
        render.json_out({"recipe": r.name, "factor": factor, "method": spec.method, "widen_layers": spec.widen_layers,
                         "widenable": widenable_layers(r.model), "layers": layer_table(spec, shape, classes)})
        return
    layers_ = r.widen.layers if isinstance(r.widen.layers, str) else ",".join(r.widen.layers)
    at = "factor 1: the dense baseline, nothing widened" if spec.factor == 1 else f"factor {factor:g}, {spec.method}"
    title = f"{r.name}: {r.model.arch}, widen.layers {layers_}, scope {r.sparsity.scope} ({at})"
    render.layers_table(title, layer_table(spec, shape, classes), widenable_layers(r.model))


@app.command()
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
    r = load_recipe(recipe, set_, warn=render.warning)
    specs = expand(r)
    if break_locks:
        _break_locks(results, r.name, yes)
    if dry_run:
        preflight.results_dir(results, [r.name], write=False)
        shape, classes = shape_of(r.data)
        planned = plan_runs(specs, results, force, retry_failed)
        if as_json:
            render.json_out({"recipe": r.name, "runs": [
                {**render.run_record(p.spec, plan_weights(p.spec, shape, classes)), "status": p.status,
                 "todo": p.todo, "error": p.error} for p in planned]})
            return
        render.plan_table(r.name, planned, {p.run_id: plan_weights(p.spec, shape, classes).connectivity
                                            for p in planned})
        return
    if as_json:
        raise RecipeError("--json: sweep prints JSON with --dry-run only (the plan); training shows progress")
    given = [o for o, v in (("--mem", mem), ("--account", account), ("--qos", qos), ("--constraint", constraint),
                            ("--slurm-setup", slurm_setup), ("--slurm-option", slurm_option)) if v]
    if given and executor != "slurm":
        raise RecipeError(f"{given[0]}: a SLURM option; it applies with --executor slurm (got --executor {executor})")
    options = {"partition": partition, "gpus_per_run": gpus_per_run, "cpus_per_run": cpus_per_run,
               "time_min": slurm_minutes(time_limit), "array_parallelism": array_parallelism,
               "no_wait": no_wait, "cluster": slurm_cluster,
               "slurm": slurm_mod.check_options(mem, account, qos, constraint, slurm_setup or [], slurm_option or [])}
    if executor != "slurm":  # the memory check runs where the runs run: here, unless submitted
        preflight.before_training(specs, results, device, force)
    with render.RunProgress(r.name, results) as progress:
        summary = run_sweep(specs, results, jobs=_jobs(jobs, specs, device), executor=executor, address=address,
                            device=device, force=force, retry_failed=retry_failed, on_event=progress.on_event,
                            num_cpus=num_cpus, num_gpus=num_gpus, wait_timeout=wait_timeout, options=options,
                            fail_fast=fail_fast, threads=threads, provenance=provenance.collect(recipe))
    if no_wait and executor == "slurm":
        out.print(f"submitted; follow with `widecli sweep {recipe}` (re-attaches) or squeue")
        return
    render.sweep_summary(summary)
    if summary.ok:  # this sweep's own Table 1 rows; `report` shows every study in the folder
        out.print(render.table1_compact(report_mod.table1_of(results, [r.name]), render.width()))
        out.print(f"all studies in {results}, with report files: widecli report {results}  "
                  f"(plots: --plot, learning curves: --curves)")
    if summary.failed:
        raise typer.Exit(1)


def slurm_minutes(text: str) -> int:
    """`--time` [D-]HH:MM:SS (or MM) -> whole minutes, one-line error otherwise."""
    try:
        days, _, rest = text.rpartition("-")
        parts = [int(p) for p in rest.split(":")]
        if not 1 <= len(parts) <= 3 or any(p < 0 for p in parts):
            raise ValueError
        h, m, s = ([0] * (3 - len(parts)) + parts) if len(parts) > 1 else (0, parts[0], 0)
        minutes = int(days or 0) * 1440 + h * 60 + m + (1 if s else 0)
    except ValueError:
        raise RecipeError(f"--time: got {text!r}; expected [D-]HH:MM:SS, e.g. 4:00:00 or 1-12:00:00") from None
    if minutes < 1:
        raise RecipeError(f"--time: got {text!r}; the time limit must be at least one minute")
    return minutes


def _break_locks(results: Path, recipe: str, yes: bool) -> None:
    """Remove the leases whose owner is not a live process on this host, after asking."""
    found = lease_list(results, recipe)
    kept = [x for x in found if x["this_host"] and x["alive"]]
    gone = [x for x in found if x not in kept]
    render.leases_table(recipe, found)
    if kept:
        out.print(f"{len(kept)} lease(s) held by live processes on this host are kept")
    if not gone:
        out.print("no lease to break")
        return
    if not yes and not typer.confirm(f"break {len(gone)} lease(s)? (only if their owners are really gone)"):
        out.print("no lease broken")
        return
    broken = sum(break_lease(x["path"]) for x in gone)
    out.print(f"broke {broken} lease(s)")


@app.command()
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
    names, expected = [], []
    for item in recipe or []:
        if item.endswith((".yaml", ".yml")) or Path(item).is_file():
            r = load_recipe(item, warn=render.warning)
            names.append(r.name)
            expected += expand(r)
        else:
            names.append(item)
    both = not (table1 or runs or plot or curves or charts)
    rep = report_mod.build(results, table1_=table1 or both, runs=runs or both, plot=plot, fmt=fmt,
                           out=out_dir, recipes=names or None, expected=expected, curves=curves)
    for why in rep.rejected:  # never silently: a corrupt or foreign result.json is not counted
        render.warning(f"{why} (not counted)")
    for line in rep.notes:
        render.note(line)
    if as_json:
        render.json_out({name: render.records(t) for name, t in rep.tables.items()})
        render.written(rep.files, to_stderr=True)
        return
    for name, shown in rep.shown.items():
        if fmt:
            text = report_mod.render(rep.tables[name] if fmt == "csv" else shown, fmt)
            typer.echo(text if fmt == "csv" else f"{report_mod.TITLES[name]}\n\n{text}\n")
        elif name == "table1":  # fits the terminal; the files hold every column
            out.print(render.table1_compact(rep.tables[name], render.width()))
        else:
            out.print(render.table(shown, report_mod.TITLES[name]))
    if charts and not fmt:
        for s in rep.studies:
            chart = render.text_chart(s, min(out.width or 110, 110))
            if chart:
                out.print(chart, markup=False)
    render.written(rep.files, to_stderr=bool(fmt))


@app.command("runs")
@handled
def runs_cmd(results: Path = typer.Argument(Path("results"), envvar="WIDECLI_RESULTS", help="results directory"),
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
    found = manage.select(manage.scan(results, recipe or None), status, manage.parse_where(where or []), run_id)
    details = {r.path: manage.details(r) for r in found} if run_id else {}  # --id: provenance and execution
    if as_json and not (remove or archive):
        render.json_out([{"recipe": r.recipe, "run_id": r.run_id, "status": r.status, "path": str(r.path),
                          "error": r.error, **{k: r.row.get(k) for k in ("factor", "method", "seed",
                                                                         "test_accuracy", "epochs_run")},
                          **details.get(r.path, {})}
                         for r in found])
        return
    render.runs_list(results, found)
    for r in found if run_id else ():
        render.run_details(r.recipe, r.run_id, details[r.path])
    if not (remove or archive) or not found:
        return
    verb = "remove" if remove else f"move to {archive}"
    if not yes and not typer.confirm(f"{verb} these {len(found)} run(s)?"):
        out.print("nothing changed")
        return
    done, skipped = manage.remove(results, found, archive)
    for r in skipped:
        render.warning(f"{r.recipe} run {r.run_id} is being trained by a live process; left as it is")
    out.print(f"{'removed' if remove else f'archived to {archive}'}: {len(done)} run(s); runs.csv rebuilt")


@app.command()
@handled
def export(results: Path = typer.Argument(Path("results"), envvar="WIDECLI_RESULTS", help="results directory"),
           to: str = typer.Option(..., "--to", help="tensorboard | mlflow | wandb (offline runs)"),
           out_dir: Optional[Path] = typer.Option(None, "--out", help="where to write (default: RESULTS/export/TO)"),
           recipe: Optional[List[str]] = typer.Option(None, "--recipe", help="only this recipe (repeatable)")) -> None:
    """Every run's per-epoch metrics and flattened spec to TensorBoard, MLflow or W&B."""
    written = export_mod.export(results, to, out_dir, recipe or None)
    out.print(f"exported {len(written)} run(s) to {to}: {out_dir or Path(results) / 'export' / to}")


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
        out.print(f"[yellow]note:[/] {note}")
    if dry_run:
        out.print(render.table(ablate_mod.dry_run(arms, results), f"{arms[0].recipe.name}: "
                               f"{len(arms)} arm(s) from {path}"))
        return
    specs = ablate_mod.all_specs(arms)
    preflight.before_training(specs, results, device)
    with render.RunProgress(arms[0].recipe.name, results) as progress:
        summary = run_sweep(specs, results, jobs=_jobs(jobs, specs, device), executor=executor, address=address,
                            device=device, on_event=progress.on_event, threads=threads,
                            provenance=provenance.collect(path))
    out.print(f"trained {summary.trained}, {summary.skipped} already finished, {summary.failed} failed")
    comparison = ablate_mod.compare(arms, results)
    per_factor, per_arm = ablate_mod.display(comparison)
    out.print(render.table(per_factor, "test accuracy (%) per arm and factor, mean ± std over seeds", keep=2))
    out.print(render.table(per_arm, "Table 1 per arm; Δ = best wide accuracy minus the reference's (points)"))
    render.written(comparison.files)
    if summary.failed:
        raise typer.Exit(1)


@app.command()
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
    r = load_recipe(recipe, set_, warn=render.warning)
    spaces = [tune_mod.parse_range(x) for x in range_ or []] or [tune_mod.default_space(r)]
    s = tune_mod.setup(r, str(recipe), spaces, trials, results, prune=not no_prune,
                       provenance=provenance.collect(recipe), overrides=list(set_ or []))
    probe = tune_mod.probe_specs(s)
    preflight.before_training(probe, results, device)
    n_jobs = _jobs(jobs, probe, device)
    tuning.tune_start(s, n_jobs)
    with render.RunProgress(r.name, results) as progress:
        tune_mod.tune(s, device, n_jobs, threads, emit=progress.on_event)
    sums = tune_report.summarize(s)
    command = shlex.join(["widecli", "tune", str(recipe), *[f"--set={x}" for x in set_ or []],
                          *[f"--range={x}" for x in range_ or []], f"--trials={trials}",
                          *(["--no-prune"] if no_prune else [])])
    paths = tune_report.write(s, sums, command)
    tuning.tune_summary(s, sums)
    render.written(paths.values())


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
    overrides = list(set_ or [])
    if factors is not None:
        try:
            overrides.append(f"widen.factors=[{','.join(str(float(f)) for f in factors.split(','))}]")
        except ValueError:
            raise RecipeError(f"--factors {factors!r}: expected comma-separated numbers, e.g. 1,2,4") from None
    if split not in ("test", "train"):
        raise RecipeError(f"--split: unknown split {split!r}; allowed: test, train")
    r = load_recipe(recipe, overrides, warn=render.warning)
    dev = resolve_device(device)
    specs = kernel_mod.kernel_specs(r)
    out.print(f"[bold]{r.name}[/] kernel at init: {len(specs)} models, {samples} {split} inputs, "
              f"{inits} inits each, on {dev}")
    with render.RunProgress(r.name, results) as progress:
        advance = progress.count("kernel", len(specs))

        def on_row(row: dict) -> None:
            advance()
            render.kernel_row(row)
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
        render.err.print("[red]interrupted[/]", markup=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
