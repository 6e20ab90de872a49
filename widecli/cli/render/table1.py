"""Table 1 in the terminal: grouped per recipe, a line names the recipe and what its studies share,
and each row is labelled by the settings that differ between them, all of them, never cut; number
columns at full width, optional ones left out first when the terminal is narrow (the report files
keep every column). Which settings are shared or differ is computed in analysis.table1."""

from __future__ import annotations

import pandas as pd
from rich import box
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from widecli.analysis.formats import pm, with_interval
from widecli.analysis.frame import short_label
from widecli.analysis.table1 import LABELS, by_recipe
from widecli.cli.render.fit import GAP, fit_columns
from widecli.methods import METHODS, bottlenecks

ABBREVIATIONS = {"epochs": "ep", "normalize": "norm", "batch_size": "bs", "weight_decay": "wd",
                 "parameterization": "param", "granularity": "gran", "optimizer": "opt", "schedule": "sched",
                 "connectivity": "conn", "momentum": "mom"}
# Short headers of the bottleneck methods' columns (another factored method: its label).
SHORT = {"linear_bottleneck": "lin. bottl.", "nonlinear_bottleneck": "nonlin. bottl."}
# The number columns a narrow terminal leaves out first (the report files keep them all).
OPTIONAL = ("note", "lin. bottl.", "nonlin. bottl.", "Δ sparse [95% CI]", "dense % (f)")


def _pm(mean, std, digits: int = 2) -> str:
    return pm(mean, std, digits=digits, sep="±")


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
    for m in bottlenecks():
        if m in t:
            row[SHORT.get(m, METHODS.get(m).label)] = ("-" if pd.isna(r[m]) else
                                                       f"{_pm(r[m], r[f'{m}_std'], 1)} (f{r[f'{m}_factor']:g})")
    row["note"] = r.get("note") or "-"
    return row


def table1_groups(t: pd.DataFrame) -> list[tuple[str, list[tuple[str, dict]]]]:
    """Table 1 rows grouped per recipe (analysis.table1.by_recipe) as the terminal shows them: (the
    recipe and what its studies share, [(the row's label: every setting that differs between the
    recipe's studies, its number cells)]). Labels are unique within a recipe."""
    groups = []
    for g in by_recipe(t):
        head = " · ".join([str(g.recipe), *[str(v) for v in g.shared.values()]])
        rows = [(" ".join(_token(c, v) for c, v in settings.items()) or "-", _numbers(r, t)) for settings, r in g.rows]
        labels = [lab for lab, _ in rows]
        rows = [(lab if labels.count(lab) == 1 else f"{lab} #{labels[:i + 1].count(lab)}", cells)
                for i, (lab, cells) in enumerate(rows)]   # identical in every setting shown: numbered
        n = len(rows)
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

