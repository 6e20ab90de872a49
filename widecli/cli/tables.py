"""Tables that fit the terminal without ever splitting a word or a number: cells never wrap (a header
may wrap between its words); when the columns are too wide, whole columns are left out (named in a
note below the table: `--json` or the report files have them) and, below the width of the columns
that tell rows apart, each row becomes a block of `column value` fields wrapped between fields.

The terminal Table 1 groups its rows per recipe: a line names the recipe and what its studies share,
and each row is labelled by the settings that differ between them, all of them, never cut.
"""

from __future__ import annotations

import pandas as pd
from rich import box
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from widecli.analysis.frame import short_label
from widecli.analysis.report import with_interval

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


# --------------------------------------------------------------------------- Table 1

ABBREVIATIONS = {"epochs": "ep", "normalize": "norm", "batch_size": "bs", "weight_decay": "wd",
                 "parameterization": "param", "granularity": "gran", "optimizer": "opt", "schedule": "sched",
                 "connectivity": "conn", "momentum": "mom"}
LABELS = ("dataset", "model", "widened", "rule")
# The number columns a narrow terminal leaves out first (the report files keep them all).
OPTIONAL = ("note", "lin. bottl.", "nonlin. bottl.", "Δ sparse [95% CI]", "dense % (f)")


def _pm(mean, std, digits: int = 2) -> str:
    if mean is None or pd.isna(mean):
        return "-"
    return f"{100 * mean:.{digits}f}" + ("" if pd.isna(std) else f"±{100 * std:.{digits}f}")


def _value(v) -> str:
    """A setting's value as one unbreakable token: `[32,32]`, `fc1=0.5,out=1`, `per-factor`."""
    return short_label(v).replace(", ", ",").replace(" ", "-")


def _token(col: str, v) -> str:
    if col in LABELS:
        return _value(v)
    name = col.split(".")[-1]
    return f"{ABBREVIATIONS.get(name, name)}={_value(v)}"


def _numbers(r: pd.Series, t: pd.DataFrame) -> dict[str, str]:
    by_val = ", by val." if r.get("selected_by") == "validation" else ""
    row = {"base %": _pm(r["baseline"], r["baseline_std"]),
           "sparse % (f, conn.)": "-" if pd.isna(r["sparse"]) else
           f"{_pm(r['sparse'], r.get('sparse_std'))} (f{r['sparse_factor']:g}, {r['sparse_connectivity']:.2g}{by_val})",
           "dense % (f)": "-" if pd.isna(r["dense"]) else f"{_pm(r['dense'], r.get('dense_std'))} (f{r['dense_factor']:g})",
           "Δ sparse [95% CI]": with_interval(r.get("delta"), r.get("delta_ci95", ""), 100.0, sign=True, digits=1),
           "fraction [95% CI]": with_interval(r["fraction"], r.get("fraction_ci95", ""), 1.0)}
    for m, name in (("linear_bottleneck", "lin. bottl."), ("nonlinear_bottleneck", "nonlin. bottl.")):
        if m in t:
            row[name] = "-" if pd.isna(r[m]) else f"{_pm(r[m], r[f'{m}_std'], 1)} (f{r[f'{m}_factor']:g})"
    row["note"] = r.get("note") or "-"
    return row


def table1_groups(t: pd.DataFrame) -> list[tuple[str, list[tuple[str, dict]]]]:
    """Table 1 rows grouped per recipe: (the recipe and what its studies share, [(the row's label:
    every setting that differs between the recipe's studies, its number cells)]). Labels are unique
    within a recipe."""
    settings = [c for c in LABELS if c in t] + [c for c in t.columns if "." in c]
    given = lambda v: str(v) not in ("-", "nan", "None")  # noqa: E731
    groups = []
    for recipe, g in t.groupby("recipe", sort=False):
        varying = [c for c in settings if g[c].map(str).nunique() > 1]
        shared = [c for c in LABELS if c in g and c not in varying and given(g[c].iloc[0])]
        if len(g) == 1:   # one study: its widening and rule label the row, as in a longer recipe
            shared, varying = [c for c in shared if c not in ("widened", "rule")], ["widened", "rule"]
        head = " · ".join([str(recipe), *[str(g[c].iloc[0]) for c in shared]])
        rows = [(" ".join(_token(c, r[c]) for c in varying if c in r and given(r[c])) or "-", _numbers(r, t))
                for _, r in g.iterrows()]
        labels = [lab for lab, _ in rows]
        rows = [(lab if labels.count(lab) == 1 else f"{lab} #{labels[:i + 1].count(lab)}", cells)
                for i, (lab, cells) in enumerate(rows)]   # identical in every setting shown: numbered
        n = len(g)
        groups.append((f"{head}  ({n} stud{'y' if n == 1 else 'ies'})", rows))
    return groups


def table1_compact(t: pd.DataFrame, width: int) -> RenderableType:
    """Table 1 for a terminal of `width` columns, grouped per recipe (see table1_groups); number
    columns at full width, the label column wrapping between its settings; optional columns left out
    first when too narrow, and one block per study below that. The report files keep every column."""
    groups = table1_groups(t)
    cells = pd.DataFrame([c for _, rows in groups for _, c in rows])
    cells = cells[[c for c in cells.columns if c in ("base %", "fraction [95% CI]") or (cells[c] != "-").any()]]
    labels = [lab for _, rows in groups for lab, _ in rows]
    label_min = max(8, max(len(w) for lab in labels for w in lab.split(" ")))
    shown, dropped, widths = fit_columns(cells, width - label_min - GAP, keep=2,
                                         order=[c for c in OPTIONAL if c in cells])
    title = (f"Table 1: {len(t)} studies of {len(groups)} recipe(s); test accuracy in %, mean±std over seeds"
             + (f"; left out to fit {width} columns: {', '.join(dropped)}" if dropped else "")
             + " (all columns: the report files)")
    if not shown:
        return _blocks(groups, title)
    numbers = sum(widths.values()) + GAP * len(shown)
    label_w = min(max(label_min, max(len(lab) for lab in labels), len("study")), width - numbers)
    parts: list[RenderableType] = [Text(title)]
    for i, (head, rows) in enumerate(groups):
        parts.append(Text(head, style="bold"))
        tab = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, show_header=i == 0)
        tab.add_column("study", width=label_w, no_wrap=False, overflow="fold")
        for c in shown:
            tab.add_column(c, width=widths[c], no_wrap=False, overflow="fold", justify="right")
        for label, row in rows:
            tab.add_row(escape(label), *[escape(row.get(c, "-")) for c in shown])
        parts.append(tab)
    return Group(*parts)


def _blocks(groups, title: str) -> Text:
    lines = [title]
    for head, rows in groups:
        lines.append(head)
        for label, row in rows:
            lines.append(f"  {label}\n    " + "; ".join(f"{c} {v}" for c, v in row.items() if v != "-"))
    return Text("\n".join(lines))

