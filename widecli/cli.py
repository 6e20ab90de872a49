"""Command-line interface: parses arguments, loads recipes and delegates. The only module that knows
about terminals and exit codes: every WidecliError becomes one red line on stderr and exit code 2.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable, List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from widecli.errors import WidecliError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Ablation studies on wide, sparse networks at a fixed number of weights.")
out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)
_debug = {"on": False}

SetOpt = typer.Option(None, "--set", help="override a recipe key: dotted.key=value (YAML value); repeatable")
ResultsOpt = typer.Option(Path("results"), "--results", help="results directory")
DeviceOpt = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N")


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="show Python tracebacks on errors")) -> None:
    _debug["on"] = debug


def handled(fn: Callable) -> Callable:
    """Turn WidecliError into one red line and exit code 2 (a traceback only with --debug)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except WidecliError as e:
            if _debug["on"]:
                raise
            err.print(f"[red]error:[/] {e}", markup=True)
            raise typer.Exit(2) from None
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
                      layer_summary(p.layers()), *[])
    out.print(table)
    sparse = [s for s in specs if s.method == "sparse"]
    if sparse:
        out.print(f"sparse runs: nonzeros == budget for all {len(sparse)} (gap column); "
                  "biases/BatchNorm are counted separately and never masked")


@app.command()
@handled
def train(recipe: Path = typer.Argument(..., help="recipe YAML file"),
          factor: Optional[float] = typer.Option(None, help="widening factor (default: the recipe's first)"),
          method: Optional[str] = typer.Option(None, help="sparse | dense | linear_bottleneck | nonlinear_bottleneck"),
          seed: Optional[int] = typer.Option(None, help="seed (default: the recipe's first)"),
          set_: Optional[List[str]] = SetOpt, device: str = DeviceOpt, results: Path = ResultsOpt) -> None:
    """Train one run of a recipe and write it to the results directory."""
    from widecli import recipe as recipe_mod, runner
    from widecli.errors import RecipeError
    from widecli.train import resolve_device

    r = recipe_mod.load(recipe, set_)
    if method is not None and method not in recipe_mod.METHODS:
        raise RecipeError(f"--method: unknown method {method!r}; allowed: {', '.join(recipe_mod.METHODS)}")
    if factor is not None and factor < 1:
        raise RecipeError(f"--factor: got {factor:g}; widening factors must be >= 1")
    spec = recipe_mod.make_spec(r, factor if factor is not None else r.widen.factors[0],
                                method or r.widen.methods[0], r.seeds[0] if seed is None else seed)
    dev = resolve_device(device)
    out.print(f"[bold]{r.name}[/] run {spec.run_id}: factor {spec.factor:g}, {spec.method}, "
              f"seed {spec.seed}, on {dev}")
    with epoch_progress() as on_epoch:
        [(outcome, path)] = runner.run([spec], results, dev, on_epoch=on_epoch)
    print_run_summary(outcome, path)


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

# --- sweep command (issue 6) ---

# --- report command (issue 7) ---

# --- ablate command (issue 8) ---

# --- kernel command (issue 9) ---


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("[red]interrupted[/]", markup=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
