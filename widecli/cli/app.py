"""The command line: the Typer app and its root options. Each command (cli.commands) parses its
arguments, calls one function of the packages below and renders the result (cli.render); every
WidecliError becomes one red line on stderr and exit code 2 (cli.exits), and so does a usage error
(cli.group).
"""

from __future__ import annotations

import sys

import typer

from widecli import __version__
from widecli.cli.commands import preview, results, studies, training
from widecli.cli.exits import DEBUG
from widecli.cli.group import OneLineGroup
from widecli.cli.options import Switch
from widecli.cli.render import console

app = typer.Typer(name="widecli", add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  cls=OneLineGroup,
                  help="Ablation studies on wide, sparse networks at a fixed number of weights.")

# In this order in --help and in the list an unknown command's error gives.
COMMANDS = {"check": preview.check, "train": training.train, "layers": preview.layers, "sweep": training.sweep,
            "report": results.report, "runs": results.runs, "export": results.export, "ablate": studies.ablate,
            "tune": studies.tune, "kernel": studies.kernel}
for _name, _command in COMMANDS.items():
    app.command(_name)(_command)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"widecli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(debug: bool = Switch("--debug", help="show Python tracebacks on errors"),
          version: bool = Switch("--version", callback=_show_version, is_eager=True,
                                 help="print the version and exit")) -> None:
    DEBUG["on"] = debug


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.err.print("[red]interrupted[/]", markup=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
