"""Tables that fit the terminal without ever splitting a word or a number: cells never wrap (a header
may wrap between its words); when the columns are too wide, whole columns are left out (named in a
note below the table: `--json` or the report files have them) and, below the width of the columns
that tell rows apart, each row becomes a block of `column value` fields wrapped between fields.
"""

from __future__ import annotations

import pandas as pd
from rich import box
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from widecli.cli.render import console

GAP = 3   # columns between two cells: padding, the (blank) SIMPLE_HEAD rule, padding


def _len(cell: str, markup: bool) -> int:
    return Text.from_markup(cell).cell_len if markup else Text(cell).cell_len


def _header_min(name: str) -> int:
    return max(len(w) for w in str(name).split(" ")) if str(name).strip() else 1


def fit_columns(df: pd.DataFrame, width: int, keep: int = 1, order: list[str] | None = None,
                markup: bool = False) -> tuple[list[str], list[str], dict[str, int]]:
    """(columns shown, columns left out, width of each shown) for `width` terminal columns: cells at
    their full width; `order` says which columns go first (default: from the last), the first
    `keep` columns never go. Shown is [] when even those do not fit."""
    cols = [str(c) for c in df.columns]
    cells = {c: max([_len(str(v), markup) for v in df[c]] or [0]) for c in df.columns}
    full = {str(c): max(cells[c], len(str(c))) for c in df.columns}
    least = {str(c): max(cells[c], _header_min(c)) for c in df.columns}

    def need(shown):
        return sum(least[c] for c in shown) + GAP * (len(shown) - 1)
    removable = [c for c in (order or cols[::-1]) if c in cols[keep:]]
    shown, dropped = list(cols), []
    for c in removable:
        if need(shown) <= width:
            break
        shown.remove(c)
        dropped.append(c)
    if need(shown) > width:
        return [], cols, {}
    spare = width - need(shown)
    widths = {}
    for c in shown:   # headers get their full width back where there is room
        extra = min(spare, full[c] - least[c])
        widths[c], spare = least[c] + extra, spare - extra
    return shown, dropped, widths


def fitted(df: pd.DataFrame, title: str, width: int, keep: int = 1, order: list[str] | None = None,
           markup: bool = False, right: tuple[str, ...] = (), more: str = "--json has every column") -> RenderableType:
    """A DataFrame of display strings as a table fitting `width` (see fit_columns); cells are rich
    markup when `markup`, else plain text."""
    shown, dropped, widths = fit_columns(df, width, keep, order, markup)
    esc = (lambda v: str(v)) if markup else (lambda v: escape(str(v)))
    if not shown:   # narrower than the columns that tell rows apart: one block per row
        lines = [Text(title, style="bold")]
        for row in df.itertuples(index=False):
            fields = [f"{c} {v}" for c, v in zip(df.columns, row)]
            lines.append(Text.from_markup(esc(f"{fields[0]}\n  " + "; ".join(fields[1:]))))
        return Group(*lines)
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for c in shown:
        t.add_column(c, width=widths[c], no_wrap=False, overflow="fold", justify="right" if c in right else "left")
    for row in df.itertuples(index=False):
        values = dict(zip([str(c) for c in df.columns], row))
        t.add_row(*[esc(values[c]) for c in shown])
    if not dropped:
        return t
    note = Text(f"left out to fit {width} columns: {', '.join(dropped)} ({more})", style="dim")
    return Group(t, note)


def table(df: pd.DataFrame, title: str, keep: int = 1, more: str = "the report files have every column"):
    """A DataFrame of display strings as a table that fits the terminal (see fitted: no cell is ever
    split; columns are left out from the right, the first `keep` never)."""
    return fitted(df.astype(str), title, console.width(), keep=keep, more=more)
