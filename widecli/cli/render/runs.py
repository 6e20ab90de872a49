"""What `widecli train`, `widecli sweep` and `widecli runs` print about runs: a run's result and
weight accounting, a sweep's summary, the stored runs and their provenance, the leases."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from rich.markup import escape
from rich.table import Table

from widecli.cli.render import console
from widecli.cli.render.console import fmt_count, pct
from widecli.cli.render.fit import fitted
from widecli.cli.render.previews import layer_summary
from widecli.execute.sweep import SweepSummary


def run_summary(result: dict, path: Path) -> None:
    """A run's status, accuracy, weight accounting and where it is stored."""
    w, f, status = result["weights"], result["final"], result["status"]
    colour = "green" if status == "ok" else "red"
    if status == "failed":
        console.out.print(f"[red]failed[/]: {escape(result.get('error') or '')}")
    else:
        console.out.print(f"[{colour}]{status}[/]: test accuracy {pct(f['test_accuracy'])}, train accuracy "
                          f"{pct(f['train_accuracy'])} after {f['epochs_run']} epochs ({f['wall_time_s']:.1f}s)")
    if w:
        console.out.print(f"weights: budget {fmt_count(w['budget'])}, nonzeros {fmt_count(w['nonzeros'])}, "
                          f"dense {fmt_count(w['dense_weights'])}, connectivity {w['connectivity']:.4f}; "
                          f"biases/BN {fmt_count(w['other_params'])} (never masked)")
        console.out.print(f"per layer: {layer_summary(w['layers'])}")
    masks = result.get("masks") or {}
    if masks:  # counted on the trained masks (issue 29); SET/RigL: the share of kept positions that moved
        console.out.print("masks at the end: " + ", ".join(
            f"{n} kept {x['kept']:,}" + (f" (moved {100 * x['moved']:.0f}%)" if "moved" in x else "")
            for n, x in masks.items()))
    console.out.print(f"written to {path}")


def sweep_summary(summary: SweepSummary, best: pd.DataFrame) -> None:
    """A sweep's counts, its best and mean test accuracy per method and factor (analysis.summary.
    best_table), its failures and its runs.csv."""
    lost = f", [yellow]{summary.lost_lease} lost lease[/] (taken over by another host)" if summary.lost_lease else ""
    console.out.print(f"trained {summary.trained}: [green]{summary.ok} ok[/], [yellow]{summary.diverged} diverged[/], "
                      f"[red]{summary.failed} failed[/]{lost}; {summary.skipped} skipped (already finished)")
    if not best.empty:
        t = Table(title="test accuracy (%) by method and factor")
        for col in best.columns:
            t.add_column(str(col).replace("_test_accuracy", " test acc %"), justify="right")
        for row in best.itertuples(index=False):
            t.add_row(*[pct(v)[:-1] if str(col).endswith("accuracy") else
                        (f"{v:g}" if isinstance(v, float) else str(v)) for col, v in zip(best.columns, row)])
        console.out.print(t)
    for run_id, error_ in summary.failures:
        console.out.print(f"[red]failed[/] {run_id}: {escape(error_)}")
    console.out.print(f"runs.csv: {summary.runs_csv}")


def runs_json(runs, details: dict) -> list[dict]:
    """`widecli runs --json`: one record per stored run (with --id, its provenance and execution)."""
    return [{"recipe": r.recipe, "run_id": r.run_id, "status": r.status, "path": str(r.path), "error": r.error,
             **{k: r.row.get(k) for k in ("factor", "method", "seed", "test_accuracy", "epochs_run")},
             **details.get(r.path, {})}
            for r in runs]


def runs_list(results: Path, runs) -> None:
    """`widecli runs`: one line per stored run."""
    colours = {"ok": "green", "diverged": "yellow", "failed": "red", "corrupt": "red", "partial": "dim"}
    records = []
    for r in runs:
        row = r.row
        records.append({"recipe": escape(r.recipe), "run_id": r.run_id, "status": f"[{colours[r.status]}]{r.status}[/]",
                        "factor": "-" if row.get("factor") is None else f"{row['factor']:g}",
                        "method": str(row.get("method", "-")), "seed": str(row.get("seed", "-")),
                        "test acc %": pct(row.get("test_accuracy"))[:-1] if row.get("test_accuracy") is not None
                        else "-", "epochs": str(row.get("epochs_run", "-")),
                        "written": time.strftime("%Y-%m-%d %H:%M", time.localtime(r.modified))})
    df = pd.DataFrame(records, columns=["recipe", "run_id", "status", "factor", "method", "seed", "test acc %",
                                        "epochs", "written"])
    console.out.print(fitted(df, f"{results}: {len(runs)} run(s)", console.width(), keep=2, markup=True,
                             order=["written", "epochs", "recipe", "seed", "method", "factor", "test acc %", "status"],
                             right=("factor", "seed", "test acc %", "epochs")))
    for r in runs:
        if r.error:
            console.out.print(f"[red]corrupt[/] {r.run_id}: {escape(r.error)}")


def run_details(recipe: str, run_id: str, details: dict) -> None:
    """`widecli runs --id`: where a run's code and recipe came from, and how it was executed."""
    console.out.print(f"[bold]{recipe}/{run_id}[/]")
    for line in provenance_lines(details.get("provenance")):
        console.out.print(f"  {escape(line)}")
    execution = details.get("execution") or {}
    if execution:
        console.out.print("  execution: " + escape(", ".join(f"{k} {v}" for k, v in execution.items())))


def provenance_lines(p: dict | None) -> list[str]:
    """`widecli: commit 1a2b3c4d5e6f (dirty, diff sha256 9f8e7d6c5b4a) in /src/widecli` ..."""
    if not p:
        return ["provenance: not recorded (a run from before widecli recorded it)"]

    def state(s: dict | None, what: str) -> str:
        if not s:
            return f"{what}: not a git checkout"
        tail = f"dirty, diff sha256 {s['diff_sha256'][:12]}" if s["dirty"] else "clean"
        return f"{what}: commit {s['commit'][:12]} ({tail}) in {s['root']}"
    recipe = f"recipe {p['recipe_file']}" if p.get("recipe_file") else "recipe folder"
    return [state(p.get("widecli"), "widecli"), state(p.get("recipe"), recipe),
            f"packages: sha256 {str(p.get('packages'))[:12]} (name==version of every installed distribution)"]


def leases_table(recipe: str, leases: list[dict]) -> None:
    """`widecli sweep --break-locks`: every lease of a recipe and whether its owner is alive."""
    t = Table(title=f"{recipe}: {len(leases)} lease(s)")
    for col in ("run_id", "host", "pid", "renewed", "owner"):
        t.add_column(col)
    for x in leases:
        renewed = "-" if x["renewed"] is None else f"{x['renewed']:.0f} s ago"
        owner = ("alive (this host)" if x["this_host"] else "renewing (another host)") if x["alive"] else "gone"
        t.add_row(x["run_id"], str(x["host"]), str(x["pid"]), renewed, owner)
    console.out.print(t)
