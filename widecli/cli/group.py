"""Click, as Typer vendors it, made to answer in widecli's one-line way: a usage error (missing
argument, unknown option or command, bad option value) is one red line naming the command and the
value, with exit code 2; a switch shows no `<bool>` placeholder in --help."""

from __future__ import annotations

import difflib
import sys

import typer
import typer.core
from typer.exceptions import TyperException

from widecli.cli.render import console


class OneLineGroup(typer.core.TyperGroup):
    """Usage errors (missing argument, unknown option or command, bad option value) as one red line
    and exit code 2, instead of Click's multi-line usage box: Click's documented way is to run
    `main(standalone_mode=False)` and handle the exception ourselves. Typer vendors Click; its
    exceptions all derive from the public `typer.exceptions.TyperException`."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Abort:
            console.err.print("[red]interrupted[/]", markup=True)
            sys.exit(130)
        except TyperException as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # bare `widecli`: the help was printed
                sys.exit(e.exit_code)
            where = e.ctx.command_path if getattr(e, "ctx", None) else "widecli"
            argv = [str(a) for a in (sys.argv[1:] if args is None else args)]
            message = (_set_without_equals(e, argv) or _switch_value(e, argv)
                       or " ".join(e.format_message().split()) + _given(e, argv))
            console.error(f"{where}: {message} (see {where} --help)")
            sys.exit(e.exit_code)
        sys.exit(code if isinstance(code, int) else 0)

    def resolve_command(self, ctx, args):
        name = args[0] if args else None
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            commands = self.list_commands(ctx)
            close = difflib.get_close_matches(name, commands, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            ctx.fail(f"no such command {name!r}{hint} (commands: {', '.join(commands)})")
        return super().resolve_command(ctx, args)


BOOL_WORDS = ("true", "false", "yes", "no", "on", "off", "1", "0")


def _switch_value(e, args: list[str]) -> str | None:
    """`--dry-run true`: Click reads `true` as an extra argument; say that switches take no value."""
    if "unexpected extra argument" not in e.format_message() or not getattr(e, "ctx", None):
        return None
    switches = {o for p in e.ctx.command.params if getattr(p, "is_flag", False) for o in p.opts}
    for flag, value in zip(args, args[1:]):
        if flag in switches and value.lower() in BOOL_WORDS:
            return (f"{flag} is a switch and takes no value (got {value!r}): give {flag} alone to turn it "
                    f"on, leave it out to keep it off")
    return None


def _set_without_equals(e, args: list[str]) -> str | None:
    """`--set train.lr 0.1`: Click reads 0.1 as an extra argument; say how to write it."""
    if "unexpected extra argument" not in e.format_message():
        return None
    for flag, key, value in zip(args, args[1:], args[2:]):
        if flag == "--set" and "=" not in key and not value.startswith("-"):
            return f"--set {key} {value}: did you mean --set {key}={value}? (one argument, no spaces around =)"
    return None


def _given(e, args: list[str]) -> str:
    """` (got 'x')`: the value a bad option had on the command line (Click's message leaves it out)."""
    if not isinstance(e, typer.BadParameter):
        return ""
    opts = getattr(getattr(e, "param", None), "opts", None) or []
    for i, a in enumerate(args):
        name, eq, value = str(a).partition("=")
        if name in opts:
            got = value if eq else (args[i + 1] if i + 1 < len(args) else None)
            return f" (got {got!r})" if got is not None else ""
    return ""


def _flag_display(display):
    """Typer 0.29's rich help shows `<bool>` beside every switch (--help and --install-completion
    included), as if it took a value; a switch shows nothing there."""
    def display_type_rich(self, ctx):
        return "" if getattr(self, "is_flag", False) and self.metavar is None else display(self, ctx)
    return display_type_rich


if hasattr(typer.core.TyperOption, "display_type_rich"):
    typer.core.TyperOption.display_type_rich = _flag_display(typer.core.TyperOption.display_type_rich)
