"""The two consoles widecli writes to and the formats every printed number shares; cli.render and
the command-specific renderers (cli.tuning, cli.tables) print through these."""

from __future__ import annotations

import sys

from rich.console import Console

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
