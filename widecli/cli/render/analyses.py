"""What `widecli report`, `widecli ablate` and `widecli kernel` print: the report's tables (fitted to
the terminal, or in a text format) and charts, the ablation's comparison, the kernel's rows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import typer

from widecli.analysis.formats import table_text
from widecli.analysis.report import TITLES, ReportOutput
from widecli.analysis.summary import AccuracyBars
from widecli.cli.render import console
from widecli.cli.render.charts import text_chart
from widecli.cli.render.fit import table
from widecli.cli.render.table1 import table1_compact


def report(rep: ReportOutput, fmt: str | None, charts: list[AccuracyBars], as_json: bool = False) -> None:
    """Rejected result files and execution notes on stderr; then the tables (--json: one document;
    --format: the text format, the csv with every column; else fitted to the terminal, Table 1 grouped
    per recipe) and the charts; the files written."""
    for why in rep.rejected:  # never silently: a corrupt or foreign result.json is not counted
        console.warning(f"{why} (not counted)")
    for line in rep.notes:
        console.note(line)
    if as_json:
        console.json_out({name: console.records(t) for name, t in rep.tables.items()})
        console.written(rep.files, to_stderr=True)
        return
    for name, shown in rep.shown.items():
        if fmt:
            text = table_text(rep.tables[name] if fmt == "csv" else shown, fmt)
            typer.echo(text if fmt == "csv" else f"{TITLES[name]}\n\n{text}\n")
        elif name == "table1":  # fits the terminal; the files hold every column
            console.out.print(table1_compact(rep.tables[name], console.width()))
        else:
            console.out.print(table(shown, TITLES[name]))
    for bars in charts:
        console.out.print(text_chart(bars, min(console.out.width or 110, 110)), markup=False)
    console.written(rep.files, to_stderr=bool(fmt))


def ablation(per_factor: pd.DataFrame, per_arm: pd.DataFrame, files: list[Path]) -> None:
    """`widecli ablate`: accuracy per arm and factor, and Table 1 per arm (analysis.ablate.display)."""
    console.out.print(table(per_factor, "test accuracy (%) per arm and factor, mean ± std over seeds", keep=2))
    console.out.print(table(per_arm, "Table 1 per arm; Δ = best wide accuracy minus the reference's (points)"))
    console.written(files)


def kernel_row(row: dict) -> None:
    """`widecli kernel`: one model's kernel distance as it is measured."""
    console.out.print(f"factor {row['factor']:g} {row['method']} rule {row['rule']}: connectivity "
                      f"{row['connectivity']:.4f}, distance {row['distance']:.4f} (expected "
                      f"{row['expected_distance']:.4f}, one init {row['init_distance']:.4f})")


def kernel_summary(written: dict, name: str, results: Path) -> None:
    """`widecli kernel`: the correlation of distance with test accuracy, and the files written."""
    rho, p, n = written["spearman"]
    if n:
        console.out.print(f"distance vs test accuracy over {n} models with finished runs: Spearman rho "
                          f"{rho:.3f} (p {p:.3g})")
    else:
        console.out.print(f"no finished runs of {name} under {results}: no accuracy correlation")
    for path in written["paths"].values():
        console.out.print(f"written {path}")
