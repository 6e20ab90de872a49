"""How a command ends: a WidecliError becomes one red line on stderr and exit code 2 (a traceback
only with --debug); Ctrl-C and SIGTERM say how to resume and exit 130 / 143 (the runner has removed
the current run's partial files by then)."""

from __future__ import annotations

import functools
import shlex
import signal
import sys
from typing import Callable

import typer

from widecli.cli.render import console
from widecli.errors import WidecliError

DEBUG = {"on": False}   # --debug (the root callback sets it): show Python tracebacks


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the current run cleans up its partial files."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated


def handled(fn: Callable) -> Callable:
    """Turn WidecliError into one red line and exit code 2 (a traceback only with --debug).

    Ctrl-C / SIGTERM: the runner has removed the current run's partial files; say how to resume
    and exit 130 / 143.
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            signal.signal(signal.SIGTERM, _on_sigterm)
        except ValueError:
            pass  # not the main thread (an embedding program): leave its signals alone
        try:
            return fn(*args, **kwargs)
        except WidecliError as e:
            if DEBUG["on"]:
                raise
            console.error(str(e))
            raise typer.Exit(2) from None
        except KeyboardInterrupt as e:
            again = shlex.join(["widecli", *sys.argv[1:]])
            console.interrupted(again)
            raise typer.Exit(143 if isinstance(e, Terminated) else 130) from None
    return wrapper
