"""What `widecli tune` prints: its start line, one line per trial, the best value per cell."""

from __future__ import annotations

from rich import box
from rich.markup import escape
from rich.table import Table

from widecli.cli.render import console
from widecli.cli.render.console import pct


def trial_line(status: str, t: dict, best: dict[str, float]) -> str:
    """`f=4 sparse trial 3/12 train.lr=136.2: validation 84.20% (best so far)`"""
    values = ", ".join(f"{k}={v:.4g}" for k, v in t["values"].items())
    head = f"{t['cell']} trial {t['trial']}/{t['budget']} {values}"
    if status == "pruned":
        at = f" (validation {pct(t['value'])} at epoch {t['epoch']})" if t.get("value") is not None else ""
        return f"{head}: pruned{at}"
    if status == "failed":
        return f"{head}: failed: {t.get('error')}"
    mark = ""
    if t["value"] > best.get(t["cell"], -1.0):
        best[t["cell"]] = t["value"]
        mark = " (best so far)"
    diverged = f", {t['diverged']} run(s) diverged" if t.get("diverged") else ""
    return f"{head}: validation {pct(t['value'])}{diverged}{mark}"


def tune_start(s, jobs: int) -> None:
    cells = ", ".join(c.name for c in s.cells)
    space = "; ".join(sp.text() for sp in s.spaces)
    console.out.print(f"[bold]{s.recipe.name}[/]: tuning {escape(space)} per cell ({cells}): up to {s.trials} "
                      f"trials each, {len(s.recipe.seeds)} seed(s) per trial, {jobs} process(es); runs in "
                      f"{s.results / s.recipe.name}, the search in {s.folder / 'optuna.db'} (interrupt and rerun to "
                      f"resume)")


def tune_summary(s, sums) -> None:
    t = Table(title=f"{s.recipe.name}: best per cell (validation accuracy, mean over seeds)", title_justify="left",
              box=box.SIMPLE_HEAD)
    for col in ("cell", *[f"best {sp.key}" for sp in s.spaces], "validation", "test at best", "complete",
                "pruned", "failed"):
        t.add_column(col, no_wrap=True, justify="left" if col == "cell" else "right")
    for c in sums:
        b = c.best
        t.add_row(c.cell.name, *[f"{b['values'][sp.key]:.4g}" if b else "-" for sp in s.spaces],
                  pct(b["value"]) if b else "-", pct(b["test"]) if b and b["test"] is not None else "-",
                  str(c.count("complete")), str(c.count("pruned")), str(c.count("fail")))
    console.out.print(t)
