"""What `widecli check`, `widecli layers` and `widecli sweep --dry-run` print: planned runs with their
weight accounting and memory, the planned masks, a model's weight layers, a sweep's plan (tables fitted
to the terminal, and their --json documents)."""

from __future__ import annotations

import pandas as pd
from rich.markup import escape
from rich.table import Table

from widecli.config.schema import RunSpec
from widecli.analysis.checks import LayerListing, RecipeCheck
from widecli.cli.render import console
from widecli.cli.render.console import fmt_count
from widecli.cli.render.fit import fitted
from widecli.config.schema import Recipe
from widecli.execute.worklist import RunStatus
from widecli.execute.preflight import size
from widecli.methods import WeightPlan


def run_record(spec: RunSpec, plan: WeightPlan) -> dict:
    """A planned run for --json: identity, widths and the weight accounting."""
    return {"run_id": spec.run_id, "factor": spec.factor, "method": spec.method, "seed": spec.seed,
            "axes": spec.axes, "widths": plan.widths, "budget": plan.budget, "nonzeros": plan.nonzeros,
            "dense_weights": plan.dense_weights, "connectivity": plan.connectivity, "ranks": plan.ranks,
            "layers": plan.layers()}


def layer_summary(layers: dict) -> str:
    return ", ".join(f"{n}:{v['connectivity']:.3g}" for n, v in layers.items())


def check_json(c: RecipeCheck) -> dict:
    """`widecli check --json`."""
    return {"recipe": c.name, "input_shape": list(c.shape), "num_classes": c.classes,
            "runs": [{**run_record(s, p), "memory_bytes": c.memory[s.run_id]} for s, p, _ in c.runs],
            "unfit": [{"run_id": s.run_id, "bytes": e.total} for s, e in c.unfit], "masks": c.masks}


def check_table(c: RecipeCheck) -> None:
    """`widecli check`: one line per planned run with its weight accounting and memory (red where
    over what the device has, when some model does not fit)."""
    name, shape, classes, rows, memory = c.name, c.shape, c.classes, c.runs, c.memory
    available = c.free if c.unfit else None
    records = []
    for s, p, budgeted in rows:
        gap = p.budget - p.nonzeros
        record = {"run_id": s.run_id, "factor": f"{s.factor:g}", "method": s.method, "seed": str(s.seed),
                  "connectivity": f"{p.connectivity:.4f}", "nonzeros": fmt_count(p.nonzeros),
                  "budget": fmt_count(p.budget),
                  "gap": "[green]0[/]" if gap == 0 else (f"{gap:+,}" if budgeted else "-"),
                  "widths": ",".join(str(w) for w in p.widths.values()),
                  "per-layer connectivity": escape(layer_summary(p.layers()))}
        if memory:
            need = memory.get(s.run_id)
            over = available is not None and need is not None and need > available
            record["memory"] = "-" if need is None else f"[red]{size(need)}[/]" if over else size(need)
        records.append(record)
    df = pd.DataFrame(records)
    # Left out first when the terminal is narrow; run_id .. seed tell the runs apart and stay.
    order = ["per-layer connectivity", "widths", "budget", "gap", "nonzeros", "memory", "connectivity"]
    console.out.print(fitted(df, f"{name}: {len(rows)} runs, input {shape}, {classes} classes", console.width(),
                             keep=4, order=[c for c in order if c in df], markup=True,
                             right=("factor", "seed", "connectivity", "nonzeros", "budget", "gap", "memory")))
    masked = [s for s, p, _ in rows if p.masked]
    if masked:
        short = [s for s in masked if s.sparsity.granularity == "kernel"]
        exact = f"for all {len(masked)}" if not short else \
            f"for {len(masked) - len(short)}; {len(short)} with granularity kernel may fall short by < one conv kernel"
        console.out.print(f"sparse runs: nonzeros == budget {exact} (gap column); "
                          "biases/BatchNorm are counted separately and never masked")


def mask_table(name: str, diagnostics: list[dict]) -> None:
    """Per masked model and layer: kept weights, fan-in / fan-out (min / median), units without any;
    fitted to the terminal like the check table (columns left out, never a cell split)."""
    if not diagnostics:
        return

    def fan(x: dict, key: str) -> str:
        return f"{x[key + '_min']:,}/{x[key + '_median']:,}" if key + "_min" in x else "-"

    def dead(x: dict, key: str) -> str:
        return "-" if key not in x else f"[red]{x[key]:,}[/]" if x[key] else "0"

    rows = [{"factor": f"{d['factor']:g}", "method": d["method"], "mask": d["mask"], "layer": layer,
             "kept": f"{x['kept']:,}", "out units": f"{x['units_out']:,}", "fan-in": fan(x, "fan_in"),
             "no inputs": dead(x, "no_inputs"), "in units": f"{x['units_in']:,}", "fan-out": fan(x, "fan_out"),
             "no outputs": dead(x, "no_outputs")}
            for d in diagnostics for layer, x in d["layers"].items()]
    title = f"{name}: planned masks (first seed of each model; fan = kept weights per unit, min/median)"
    console.out.print(fitted(pd.DataFrame(rows), title, console.width(), keep=4, markup=True,
                             order=["in units", "out units", "fan-out", "no outputs", "mask"],
                             right=("factor", "kept", "out units", "fan-in", "no inputs", "in units", "fan-out",
                                    "no outputs")))
    if any(not d["drawn"] for d in diagnostics):
        console.out.print("-: masks chosen when the run starts (snip, synflow: from the initialized model) or too "
                          "large to draw here; counts are checked all the same")


def layers_json(r: Recipe, factor: float, listing: LayerListing) -> dict:
    """`widecli layers --json`."""
    return {"recipe": r.name, "factor": factor, "method": listing.spec.method,
            "widen_layers": listing.spec.widen_layers, "widenable": listing.widenable, "layers": listing.layers}


def layers_table(r: Recipe, listing: LayerListing) -> None:
    """`widecli layers`: every weight layer, titled with what the recipe widens at this factor."""
    spec, rows, widenable = listing.spec, listing.layers, listing.widenable
    layers_ = r.widen.layers if isinstance(r.widen.layers, str) else ",".join(r.widen.layers)
    at = ("factor 1: the dense baseline, nothing widened" if spec.factor == 1
          else f"factor {spec.factor:g}, {spec.method}")
    t = Table(title=f"{r.name}: {r.model.arch}, widen.layers {layers_}, scope {r.sparsity.scope} ({at})")
    for col in ("layer", "shape", "weights", "nonzeros", "widens with", "masked"):
        t.add_column(col, justify="right" if col in ("weights", "nonzeros") else "left")
    for row in rows:
        t.add_row(row["name"], "x".join(map(str, row["shape"])), fmt_count(row["weights"]),
                  fmt_count(row["nonzeros"]), row["widens_with"] or "no", "yes" if row["masked"] else "no")
    console.out.print(t)
    console.out.print(f"{len(rows)} weight layers, {fmt_count(sum(x['weights'] for x in rows))} weights; "
                      f"widen.layers may name: {', '.join(widenable)} (or first, last, all)")


def dry_run_json(name: str, runs: list[tuple[RunStatus, WeightPlan]]) -> dict:
    """`widecli sweep --dry-run --json`."""
    return {"recipe": name, "runs": [{**run_record(p.spec, w), "status": p.status, "todo": p.todo, "error": p.error}
                                     for p, w in runs]}


def dry_run_table(name: str, runs: list[tuple[RunStatus, WeightPlan]]) -> None:
    """`widecli sweep --dry-run`: every run, its status in the store and whether the sweep trains it."""
    planned = [p for p, _ in runs]
    connectivity = {p.run_id: w.connectivity for p, w in runs}
    todo = sum(p.todo for p in planned)
    colours = {"finished": "green", "failed": "red", "corrupt": "red", "partial": "yellow"}
    records = []
    for p in planned:
        s = p.spec
        records.append({"run_id": s.run_id, "factor": f"{s.factor:g}", "method": s.method, "seed": str(s.seed),
                        "axes": escape(", ".join(f"{k}={v}" for k, v in s.axes.items())),
                        "connectivity": f"{connectivity[p.run_id]:.4f}",
                        "status": f"[{colours[p.status]}]{p.status}[/]" if p.status in colours else p.status,
                        "train": "yes" if p.todo else "-"})
    df = pd.DataFrame(records, columns=["run_id", "factor", "method", "seed", "axes", "connectivity", "status", "train"])
    if not any(df["axes"]):
        df = df.drop(columns="axes")
    console.out.print(fitted(df, f"{name}: {len(planned)} runs, {todo} to train", console.width(), keep=1,
                             markup=True, right=("factor", "seed", "connectivity"),
                             order=[c for c in ("connectivity", "seed", "method", "factor", "axes", "status")
                                    if c in df]))
    for p in planned:
        if p.error:
            console.out.print(f"[red]corrupt[/] {p.run_id}: {escape(p.error)}")
