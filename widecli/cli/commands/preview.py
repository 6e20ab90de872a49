"""`widecli check` and `widecli layers`: what a recipe will train (planned runs, weights, memory, masks)
and a model's layers, before anything trains."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from widecli.analysis import checks
from widecli.cli.exits import handled
from widecli.cli.options import DeviceOpt, JsonOpt, SetOpt, run_flags
from widecli.cli.render import console, previews
from widecli.recipes import load_recipe
from widecli.errors import ResourceError


@handled
def check(recipe: Path = typer.Argument(..., help="recipe YAML file"), set_: Optional[List[str]] = SetOpt,
          as_json: bool = JsonOpt, device: str = DeviceOpt) -> None:
    """Validate a recipe and print every planned run with widths, nonzeros and connectivity; runs
    whose model cannot fit in the device's memory (the estimate train and sweep refuse) exit 2."""
    r = load_recipe(recipe, set_, warn=console.warning)
    c = checks.check_recipe(r, device)
    if as_json:
        console.json_out(previews.check_json(c))
    else:
        previews.check_table(c)
        previews.mask_table(r.name, c.masks)
    for d in c.masks:
        if d["warning"]:
            console.warning(f"{recipe}: {d['warning']}")
    if c.unfit:
        raise ResourceError(c.refusal())


@handled
def layers(recipe: Path = typer.Argument(..., help="recipe YAML file"), set_: Optional[List[str]] = SetOpt,
           factor: float = typer.Option(1.0, help="widening factor at which to show the layers"),
           method: str = typer.Option("sparse", help="sparse | dense | linear_bottleneck | nonlinear_bottleneck"),
           as_json: bool = JsonOpt) -> None:
    """List every weight layer: name, shape, weights, whether it can widen and whether it is masked."""
    r = load_recipe(recipe, set_, run_flags(factor, method, None), warn=console.warning)
    listing = checks.layer_listing(r, factor, method)
    if as_json:
        console.json_out(previews.layers_json(r, factor, listing))
    else:
        previews.layers_table(r, listing)
