"""What `widecli tune` leaves behind, from its Optuna storage: per cell the best value and its
validation accuracy, a recipe overlay with the values as `widen.per_factor` / `per_method_factor`
(runnable as it is: its `base:` is the tuned recipe), and a report (markdown + PNG search curves)."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from widecli.analysis import plots
from widecli.analysis.formats import pm, table_text
from widecli.analysis.tune import Cell, Setup, _optuna, open_study
from widecli.config.load import get_dotted, parse_override, set_dotted
from widecli.errors import RecipeError
from widecli.recipes import load_recipe, make_spec
from widecli.store.runs import atomic_write


@dataclass
class CellSummary:
    cell: Cell
    trials: list[dict] = field(default_factory=list)   # number, values, state, value, epoch, test, val_per_seed
    best: dict | None = None                           # the complete trial of highest value

    def count(self, state: str) -> int:
        return sum(t["state"] == state for t in self.trials)


def summarize(s: Setup) -> list[CellSummary]:
    """Every cell's trials, read back from the storage (whichever processes ran them)."""
    _optuna()
    out = []
    for cell in s.cells:
        rows = []
        for t in open_study(s, cell).get_trials(deepcopy=False):
            steps = t.intermediate_values
            last = max(steps) if steps else None
            # a waiting trial (an interrupted one queued again) holds its values as fixed params
            values = dict(t.params) or dict(t.system_attrs.get("fixed_params", {}))
            rows.append({"number": t.number + 1, "values": values, "state": t.state.name.lower(),
                         "value": t.value, "epoch": last, "last": steps[last] if last else None,
                         "test": t.user_attrs.get("test_accuracy"), "val_per_seed": t.user_attrs.get("val_per_seed"),
                         "diverged": t.user_attrs.get("diverged", 0)})
        done = [r for r in rows if r["state"] == "complete"]
        best = max(done, key=lambda r: (r["value"], -r["number"])) if done else None
        out.append(CellSummary(cell, rows, best))
    return out


def _recipe_value(s: Setup, cell: Cell, key: str):
    """The value the recipe itself gives this cell (where no trial finished)."""
    spec = make_spec(s.recipe, cell.factor, cell.method, s.recipe.seeds[0])
    return get_dotted(spec.model_dump(mode="json"), key)


def overlay(s: Setup, sums: list[CellSummary], folder: Path) -> dict:
    """The recipe overlay: base (the tuned recipe), the --set values the search ran with, and per
    searched key the best value per cell (exact, so that sweeping the overlay finds the best trials'
    runs finished)."""
    doc: dict = {"base": os.path.relpath(Path(s.source).resolve(), folder.resolve())}
    for item in s.overrides:
        key, value = parse_override(item)
        set_dotted(doc, key, value)
    widen = doc.setdefault("widen", {})
    first = next((m for m in s.recipe.widen.methods), "sparse")
    for sp in s.spaces:
        table, per_method = {}, {}
        for c in sums:
            value = c.best["values"][sp.key] if c.best else _recipe_value(s, c.cell, sp.key)
            if c.cell.factor == 1 or c.cell.method == first:
                table[float(c.cell.factor)] = value
            if c.cell.factor != 1 and (c.cell.method != first or c.cell.method in s.recipe.widen.per_method_factor):
                per_method.setdefault(c.cell.method, {})[float(c.cell.factor)] = value
        for f in s.recipe.widen.factors:   # per_factor must cover every factor: the first method's
            table.setdefault(float(f), per_method.get(first, {}).get(float(f)))
        widen.setdefault("per_factor", {})[sp.key] = {f: v for f, v in table.items() if v is not None}
        for m, t in per_method.items():
            widen.setdefault("per_method_factor", {}).setdefault(m, {})[sp.key] = t
    return doc


def write(s: Setup, sums: list[CellSummary], command: str) -> dict[str, Path]:
    """overlay.yaml, tune.md and tune.png in results/<recipe>/tune/; the overlay is loaded back."""
    folder = s.folder
    doc = overlay(s, sums, folder)
    lines = [f"# Tuned values from `{command}` ({datetime.date.today()}); best validation accuracy per cell",
             "# (mean over seeds of the last epoch's):"]
    for c in sums:
        best = (f"{_values(c.best['values'])} (validation {100 * c.best['value']:.2f}%)" if c.best
                else "not tuned: no finished trial, the recipe's own value kept")
        lines.append(f"#   {c.cell.name}: {best}")
    lines += ["# Sweep it as it is (the best trials' runs are already stored: nothing to train), or name it",
              "# in another recipe's base: list."]
    paths = {"overlay": folder / "overlay.yaml", "report": folder / "tune.md", "plot": folder / "tune.png"}
    atomic_write(paths["overlay"], ("\n".join(lines) + "\n" + yaml.safe_dump(doc, sort_keys=False)).encode())
    try:
        load_recipe(paths["overlay"])
    except RecipeError as e:  # a bug here, not the user's: say so plainly
        raise RecipeError(f"{paths['overlay']}: the written overlay does not load ({e})") from None
    atomic_write(paths["plot"], plots.plot_tuning(curves(s, sums), f"{s.recipe.name}: {_space_text(s)}"))
    atomic_write(paths["report"], markdown(s, sums, command, paths).encode())
    return paths


def _values(values: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in values.items())


def _space_text(s: Setup) -> str:
    return "; ".join(sp.text() for sp in s.spaces)


def curves(s: Setup, sums: list[CellSummary]) -> list[dict]:
    """Per cell what the plot draws: trial numbers, values (pruned: the last per-epoch value)."""
    key = s.spaces[0].key
    out = []
    for c in sums:
        done = [t for t in c.trials if t["state"] == "complete"]
        pruned = [t for t in c.trials if t["state"] == "pruned" and t["last"] is not None]
        best = np.maximum.accumulate([t["value"] for t in done]) if done else []
        out.append({"name": c.cell.name, "key": key, "log": s.spaces[0].log,
                    "complete": [(t["number"], t["values"].get(key), t["value"]) for t in done],
                    "pruned": [(t["number"], t["values"].get(key), t["last"]) for t in pruned],
                    "best_so_far": [(t["number"], b) for t, b in zip(done, best)],
                    "best": (c.best["values"].get(key), c.best["value"]) if c.best else None})
    return out


def markdown(s: Setup, sums: list[CellSummary], command: str, paths: dict[str, Path]) -> str:
    seeds = ", ".join(map(str, s.recipe.seeds))
    head = [f"# Tuning {_space_text(s)}: {s.recipe.name}", "",
            f"`{command}`", "",
            f"Objective: validation accuracy ({s.recipe.data.validation} held-out images), mean over seeds "
            f"{seeds} of the last epoch's; {s.trials} trials per cell (Optuna TPE); "
            + ("pruned when in the bottom quarter of the finished trials at the same epoch, after the first "
               "tenth of the epochs" if s.prune else "no pruning") + f". Storage: `{s.folder / 'optuna.db'}`; "
            f"overlay: `{paths['overlay'].name}`.", ""]
    rows = []
    for c in sums:
        b = c.best
        spread = np.std(b["val_per_seed"], ddof=1) if b and len(b["val_per_seed"] or []) > 1 else None
        val = pm(b["value"], spread) if b else "-"
        rows.append({"cell": c.cell.name, **{f"best {sp.key}": f"{b['values'][sp.key]:.4g}" if b else "-"
                                             for sp in s.spaces},
                     "validation %": val, "test % (at the best)": f"{100 * b['test']:.2f}" if b and b["test"] else "-",
                     "trials: complete / pruned / failed": f"{c.count('complete')} / {c.count('pruned')} / "
                                                           f"{c.count('fail')}"})
    body = [table_text(pd.DataFrame(rows), "md"), "", f"![search curves]({paths['plot'].name})", ""]
    for c in sums:
        body += [f"## {c.cell.name}: every trial", ""]
        trials = [{"trial": t["number"], **{k: f"{v:.4g}" for k, v in t["values"].items()}, "state": t["state"],
                   "validation %": (f"{100 * t['last']:.2f} at epoch {t['epoch']}" if t["state"] == "pruned"
                                    and t["last"] is not None else f"{100 * t['value']:.2f}"
                                    if t["value"] is not None else "-"),
                   "test %": f"{100 * t['test']:.2f}" if t["test"] is not None else "-",
                   "diverged runs": str(t["diverged"] or "-")} for t in sorted(c.trials, key=lambda t: t["number"])]
        body += [table_text(pd.DataFrame(trials), "md") if trials else "(no trials)", ""]
    return "\n".join(head + body)
