"""The two consoles widecli writes to, the formats every printed number shares, and the one-line
messages (error, warning, note, written files, one JSON document). Every renderer prints through
`console.out` / `console.err`, looked up when it prints, so that one swap (a test's recording
console) catches everything a command prints."""

from __future__ import annotations

import json
import sys

import pandas as pd
from rich.console import Console
from rich.markup import escape

out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def pct(fraction: float, decimals: int = 2) -> str:
    """THE accuracy format everywhere widecli prints one: a percentage with fixed decimals."""
    return "-" if fraction is None or fraction != fraction else f"{100 * fraction:.{decimals}f}%"


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def fmt_count(n: int) -> str:
    return f"{n:,}"


def width() -> int:
    """The terminal's columns (200 when stdout is not a terminal: a log keeps every column)."""
    return out.width or 120


# --------------------------------------------------------------------------- one-line messages


def error(message: str) -> None:
    """One red line on stderr (a value like [b] in the message is not markup)."""
    err.print(f"[red]error:[/] {escape(message)}", markup=True)


def interrupted(again: str) -> None:
    err.print("[red]interrupted[/]: finished runs are kept and the current run's partial files were "
              f"removed; resume with: {escape(again)}", markup=True)


def warning(message: str) -> None:
    err.print(f"[yellow]warning:[/] {escape(message)}", markup=True)


def note(message: str) -> None:
    err.print(f"[cyan]note:[/] {escape(message)}", markup=True)


def written(paths, to_stderr: bool = False) -> None:
    (err if to_stderr else out).print("written: " + ", ".join(str(f) for f in paths), markup=False)


# --------------------------------------------------------------------------- --json


def json_out(doc) -> None:
    """One JSON document on stdout, nothing else there (numbers as numbers, NaN as null)."""
    sys.stdout.write(json.dumps(_jsonable(doc), indent=1, default=str) + "\n")


def _jsonable(x):
    if isinstance(x, float) and x != x:
        return None
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):  # numpy scalars
        return _jsonable(x.item())
    return x


def records(df: pd.DataFrame) -> list[dict]:
    return df.to_dict(orient="records")
