"""MkDocs hooks: the pages that must not drift from the code are generated at build time.

- A fenced block ```` ```widecli:recipe-keys ```` becomes the recipe reference, read from the pydantic
  models in `widecli/config/schema.py` (key, type, default, constraints, description) and the
  execution-only keys of `widecli/config/identity.py`.
- ```` ```widecli:cli ```` becomes the CLI reference, read from the Typer app `widecli.cli.app.app`
  (each command's usage, help and options, as `--help` shows them).
- ```` ```widecli:layers ```` (body: one `package: what lives there` line per layer) becomes the layer
  table, in the order `tests/test_architecture.py` enforces (its `LAYERS`); a layer without a line,
  or a line for no layer, fails the build.
- ```` ```widecli:include PATH ```` becomes the text of PATH (relative to the repository), verbatim in
  a code block: benchmark outputs are quoted from `benchmarks/results/`, never copied by hand.
- The committed studies (`results/studies/README.md`, `report.md`, their plots) are mounted into the
  site at the same path, `results/studies/`: one source of truth, read on GitHub and on the site.
"""

from __future__ import annotations

import ast
import html
import re
import types
import typing
from pathlib import Path

import typer
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files
from pydantic import BaseModel

# The code itself, so the generated pages cannot drift from it.
from widecli.cli.app import app
from widecli.config.identity import EXECUTION_KEYS
from widecli.config.schema import Recipe

ROOT = Path(__file__).resolve().parents[1]

# Repository folders published into the site at the same path (pages and images), so that the
# links inside them, and links to them from docs/, work on GitHub and on the site alike.
MOUNTS = ("results/studies",)
MOUNT_SUFFIXES = (".md", ".png")

FENCE = re.compile(r"^(?P<indent>[ \t]*)```widecli:(?P<kind>[\w-]+)(?P<arg>[^\n]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
                   re.M | re.S)


# --------------------------------------------------------------------------- mkdocs events

def on_config(config):
    config.watch.extend(str(ROOT / m) for m in MOUNTS)
    config.watch.append(str(ROOT / "widecli"))
    return config


def on_files(files: Files, config) -> Files:
    for mount in MOUNTS:
        for path in sorted((ROOT / mount).rglob("*")):
            if path.suffix in MOUNT_SUFFIXES and path.is_file():
                files.append(File.generated(config, path.relative_to(ROOT).as_posix(), abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    def expand(m: re.Match) -> str:
        text = generate(m["kind"], m["arg"].strip(), m["body"])
        return "\n".join(m["indent"] + line if line else line for line in text.splitlines())

    def generate(kind: str, arg: str, body: str) -> str:
        try:
            if kind == "recipe-keys":
                return recipe_keys()
            if kind == "cli":
                return cli_reference()
            if kind == "layers":
                return layer_table(body)
            if kind == "include":
                return include(arg)
        except PluginError as e:
            raise PluginError(f"{page.file.src_uri}: {e}") from None
        raise PluginError(f"{page.file.src_uri}: unknown generated block widecli:{kind}")

    return FENCE.sub(expand, markdown)


# --------------------------------------------------------------------------- recipe keys

def recipe_keys() -> str:
    """One table per section of the recipe: top-level keys first, then each nested model."""
    top, sections = [], []
    for name, field in Recipe.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            sections.append((name, field.annotation, field))
        else:
            top.append((name, field))
    out = ["| key | type | default | meaning |", "|---|---|---|---|"]
    out += [_row(name, field) for name, field in top]
    out += [f"| `{name}` | section | {_default(f)} | see [`{name}`](#{name}) |" for name, _, f in sections]
    for name, model, _ in sections:
        out += ["", f"## `{name}` {{ #{name} }}", ""]
        if model.__doc__ and "Usage docs" not in model.__doc__:
            out += [_text(model.__doc__), ""]
        out += ["| key | type | default | meaning |", "|---|---|---|---|"]
        out += [_row(f"{name}.{key}", field, execution=key in EXECUTION_KEYS.get(name, ()))
                for key, field in model.model_fields.items()]
    return "\n".join(out)


def _row(key: str, field, execution: bool = False) -> str:
    limits = _constraints(field)
    meaning = _cell(field.description or "") + (f" ({limits})" if limits else "")
    if execution:
        meaning += " *Execution key: not part of the run id.*"
    return f"| `{key}` | {_type(field.annotation)} | {_default(field)} | {meaning} |"


def _default(field) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(its defaults)"
    return "`" + _yaml(value) + "`"


def _yaml(value) -> str:
    """A default as it would be written in a recipe (YAML flow style)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_yaml(k)}: {_yaml(v)}" for k, v in value.items()) + "}"
    return str(value)


def _type(annotation) -> str:
    return _cell(_type_name(annotation), code=True)


def _type_name(t) -> str:
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is typing.Literal:
        return " | ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if t is type(None):
        return "null"
    if origin in (list, tuple, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    if t is typing.Any:
        return "any"
    return getattr(t, "__name__", str(t))


def _constraints(field) -> str:
    words = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    found = []
    for meta in field.metadata:
        for attr, sign in words.items():
            value = getattr(meta, attr, None)
            if value is not None:
                found.append(f"{sign} {value:,}" if isinstance(value, int) else f"{sign} {value}")
    return ", ".join(found)


# --------------------------------------------------------------------------- CLI

def cli_reference() -> str:
    """Every command of the Typer app: usage, help and options, as `--help` shows them."""
    root = typer.main.get_command(app)
    ctx = root.context_class(root, info_name="widecli")
    out = [_cell(root.help or ""), "", "```", _usage(root, ctx), "```", "", *_options(root, ctx)]
    for name in root.list_commands(ctx):
        cmd = root.get_command(ctx, name)
        if cmd is None or cmd.hidden:
            continue
        sub = cmd.context_class(cmd, info_name=name, parent=ctx)
        out += ["", f"## `widecli {name}` {{ #{name} }}", "", _text(cmd.help or ""), "",
                "```", _usage(cmd, sub), "```", "", *_options(cmd, sub)]
    return "\n".join(out)


def _usage(cmd, ctx) -> str:
    return " ".join(cmd.get_usage(ctx).split())


def _options(cmd, ctx) -> list[str]:
    rows = []
    for param in cmd.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None or param.hidden:
            continue
        flags, help_ = record
        if param.param_type_name == "argument":
            flags = flags.split()[0].upper()
        rows.append(f"| `{flags}` | {_cell(help_)} |")
    return ["| argument / option | meaning |", "|---|---|", *rows] if rows else []


# --------------------------------------------------------------------------- layers

def layer_table(body: str) -> str:
    """The layer order of tests/test_architecture.py with this page's one line per layer."""
    layers = architecture_layers()
    described = {}
    for line in body.strip().splitlines():
        name, sep, text = line.partition(":")
        if not sep:
            raise PluginError(f"widecli:layers: expected 'package: what lives there', got {line!r}")
        described[name.strip()] = text.strip()
    keys = [names[0] for names in layers]
    extra = sorted(set(described) - set(keys))
    missing = [k for k in keys if k not in described]
    if extra or missing:
        raise PluginError(f"widecli:layers does not match LAYERS in tests/test_architecture.py: "
                          f"no line for {missing or 'none'}; lines for no layer: {extra or 'none'}")
    out = ["| layer | modules | what lives there |", "|---|---|---|"]
    for i, names in enumerate(layers):
        shown = ", ".join(f"`{_module_path(n)}`" for n in names if n not in ("__init__", "__main__"))
        out.append(f"| {i} | {shown} | {_text(described[names[0]])} |")
    return "\n".join(out)


def architecture_layers() -> list[tuple[str, ...]]:
    """LAYERS, read from tests/test_architecture.py without importing it."""
    path = ROOT / "tests" / "test_architecture.py"
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "LAYERS" for t in node.targets):
            return [tuple(names) for names in ast.literal_eval(node.value)]
    raise PluginError(f"{path}: no LAYERS list")


def _module_path(name: str) -> str:
    return f"{name}/" if (ROOT / "widecli" / name).is_dir() else f"{name}.py"


# --------------------------------------------------------------------------- include

def include(arg: str) -> str:
    path = ROOT / arg
    if not arg or not path.is_file():
        raise PluginError(f"widecli:include: no file {arg!r} in the repository")
    return "```text\n" + path.read_text().rstrip("\n") + "\n```"


# --------------------------------------------------------------------------- text helpers

def _text(text: str) -> str:
    """Prose from a docstring or help text: paragraphs kept, HTML escaped outside code spans."""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text.strip())]
    return "\n\n".join(_escape(p) for p in paragraphs)


def _cell(text: str, code: bool = False) -> str:
    """Text for a Markdown table cell: one line, pipes escaped (Python-Markdown leaves a pipe inside
    a code span alone, and would show the backslash there)."""
    text = " ".join(text.split())
    if code:
        return "`" + text + "`"
    parts = _escape(text).split("`")
    return "`".join(p if i % 2 else p.replace("|", "\\|") for i, p in enumerate(parts))


def _escape(text: str) -> str:
    parts = text.split("`")
    return "`".join(p if i % 2 else html.escape(p, quote=False) for i, p in enumerate(parts))
