"""Small helpers every test module may import (`from helpers import CPU, invoke`)."""

from __future__ import annotations

import torch
from typer.testing import CliRunner

from widecli.cli.app import app

CPU = torch.device("cpu")


def invoke(*args, env: dict | None = None, **options):
    """Run the widecli CLI in this process (typer's CliRunner): exit code, stdout, stderr, output.
    options: CliRunner.invoke's, e.g. input="n\\n" (answers to a prompt) or terminal_width=200."""
    return CliRunner().invoke(app, [str(a) for a in args], env=env, **options)
