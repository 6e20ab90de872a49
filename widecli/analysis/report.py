"""Reports: the paper's Table 1 (analysis.table1), a runs table (analysis.summary) and their text
formats (analysis.formats) from the finished runs of a results directory (analysis.frame), written as
report.md / report.txt (+ csv, latex), and plots through analysis.plots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from widecli.analysis import plots
from widecli.analysis.formats import FORMATS, display_runs, display_table1, table_text
from widecli.analysis.frame import Study, load_frame, mixed_execution, studies
from widecli.analysis.summary import runs_table
from widecli.analysis.table1 import table1
from widecli.recipes import expand, load_recipe
from widecli.config.schema import RunSpec
from widecli.errors import StoreError
from widecli.store import runs as store


def select_recipes(items: list[str], warn: Callable[[str], None] | None = None) -> tuple[list[str], list[RunSpec]]:
    """`--recipe` items, each a recipe NAME or a recipe FILE (a .yaml/.yml name or an existing file):
    (the recipes' names, the runs the files expand to, so that a report also counts the missing ones)."""
    names, expected = [], []
    for item in items:
        if item.endswith((".yaml", ".yml")) or Path(item).is_file():
            r = load_recipe(item, warn=warn)
            names.append(r.name)
            expected += expand(r)
        else:
            names.append(item)
    return names, expected


# --------------------------------------------------------------------------- the whole report


@dataclass
class ReportOutput:
    tables: dict[str, pd.DataFrame]     # numeric tables: "table1", "runs"
    shown: dict[str, pd.DataFrame]      # the same for people (formatted strings)
    studies: list[Study]
    files: list[Path]
    rejected: list[str] = field(default_factory=list)   # corrupt/foreign result files, left out
    notes: list[str] = field(default_factory=list)      # studies whose cells mix execution choices


def build(results: str | Path, *, table1_: bool = True, runs: bool = True, plot: bool = False,
          fmt: str | None = None, out: str | Path | None = None, recipes: list[str] | None = None,
          expected: list[RunSpec] | None = None, curves: bool = False) -> ReportOutput:
    """Load, compute, and write report.md/report.txt (+ csv/latex when asked) and plots into `out`.

    Report files are written only when there is a table to put in them (never an empty file). A
    report filtered to some recipes and written to the results directory itself (no `out`) is
    named report-<recipe>[+<recipe>...].md, so it never replaces the report of everything there."""
    if fmt is not None and fmt not in FORMATS:
        raise StoreError(f"--format: unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
    df = load_frame(results, recipes, expected)
    items = studies(df)
    tables, shown = {}, {}
    if table1_:
        tables["table1"] = table1(items)
        shown["table1"] = display_table1(tables["table1"])
    if runs:
        tables["runs"] = runs_table(df)
        shown["runs"] = display_runs(tables["runs"])
    stem = "report" if out is not None or not recipes else "report-" + "+".join(sorted(set(recipes)))
    out = Path(out or results)
    files = write_tables(tables, shown, out, fmt, stem) if tables else []
    if plot:
        files += [plots.plot_study(s, out / "plots" / f"{s.name}.png") for s in items]
        files += plots.pareto(df, out / "plots")
        files += plots.heatmaps(df, out / "plots")
    if curves:
        metrics = store.read_metrics(results, sorted(set(df["recipe"])))
        files += [plots.plot_curves(s, metrics, out / "plots" / f"{s.name}-curves.png") for s in items]
    return ReportOutput(tables, shown, items, files, df.attrs.get("rejected", []), mixed_execution(items))


def table1_of(results: str | Path, recipes: list[str]) -> pd.DataFrame:
    """Table 1 of some recipes' finished runs, nothing written (what a sweep shows at its end)."""
    return table1(studies(load_frame(results, recipes)))


def write_tables(tables: dict, shown: dict, out: Path, fmt: str | None, stem: str = "report") -> list[Path]:
    """<stem>.md and <stem>.txt always; <stem>-<table>.csv / .tex for --format csv / latex."""
    files = []
    texts = {"md": "", "txt": ""}
    for name, d in shown.items():
        texts["md"] += f"## {TITLES[name]}\n\n{table_text(d, 'md')}\n\n"
        texts["txt"] += f"{TITLES[name]}\n\n{table_text(d, 'txt')}\n\n"
    try:
        out.mkdir(parents=True, exist_ok=True)
        for ext, text in texts.items():
            store.atomic_write(out / f"{stem}.{ext}", text.encode())
            files.append(out / f"{stem}.{ext}")
        for name in tables if fmt in ("csv", "latex") else []:
            text = table_text(tables[name], "csv") if fmt == "csv" else table_text(shown[name], "latex")
            path = out / f"{stem}-{name}.{'csv' if fmt == 'csv' else 'tex'}"
            store.atomic_write(path, text.encode())
            files.append(path)
    except OSError as e:
        raise StoreError(f"{out}: cannot write the report ({e.strerror or e})") from None
    return files


TITLES = {"table1": "Table 1: width alone vs dense widening at a fixed number of weights",
          "runs": "Runs: mean ± std over seeds (accuracy in %)"}
