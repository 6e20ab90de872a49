"""Reading recipes: YAML with unique keys, `--set key.sub=value` overrides, and validation errors
turned into one line naming the file, the dotted key, the value and what is allowed.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import json
import re
from pathlib import Path
from typing import Any, Callable

import yaml
from pydantic import BaseModel, ValidationError

from widecli.config import effects
from widecli.config.schema import Recipe
from widecli.errors import RecipeError


def load_recipe(path: str | Path, overrides: list[str] | None = None,
                flags: dict[str, tuple[str, object]] | None = None,
                warn: Callable[[str], None] | None = None) -> Recipe:
    """Read a YAML recipe, apply `key.sub=value` overrides and validate it.

    flags: command-line options that set recipe keys, `{"--factor": ("widen.factors", [2.0])}`:
    applied after the overrides and named in any error, so that they are validated by the schema
    like every other value. Settings without effect (config.effects) are an error, or passed to
    `warn` where only some sweep points ignore them."""
    path = Path(path)
    raw = read_yaml(path)
    for item in overrides or []:
        key, value = parse_override(item)
        set_dotted(raw, key, value, source=f"--set {item}")
    # The recipe and its overrides must be valid on their own, before the flags replace keys; settings
    # without effect are judged here too (a flag such as --factor 1 narrows the grid legitimately).
    own = validate(raw, str(path))
    errors, warnings = effects.judge(sweep_points(own))
    if errors:
        raise RecipeError(f"{path}: {errors[0]}")
    for line in warnings if warn else ():
        warn(f"{path}: {line}")
    given = []
    for flag, (key, value) in (flags or {}).items():
        set_dotted(raw, key, value, source=flag)
        given.append(f"{flag} {value[0] if isinstance(value, list) and len(value) == 1 else value}")
    return validate(raw, f"{path} with {', '.join(given)}") if given else own


def sweep_points(recipe: Recipe) -> list[Recipe]:
    """The recipe at each point of its sweep axes (the recipe itself without axes), validated; each
    keeps which keys were given explicitly (what config.effects judges)."""
    if not recipe.sweep:
        return [recipe]
    base = recipe.model_dump(mode="json", exclude_unset=True)
    points = []
    for combo in itertools.product(*recipe.sweep.values()):
        raw = copy.deepcopy(base)
        for key, value in zip(recipe.sweep, combo):
            set_dotted(raw, key, value, source=f"sweep.{key}")
        points.append(validate(raw, f"{recipe.name}: sweep point {dict(zip(recipe.sweep, combo))}"))
    return points


def read_yaml(path: Path) -> dict:
    if not path.exists():
        raise RecipeError(f"{path}: no such recipe file")
    if path.is_dir():
        raise RecipeError(f"{path}: is a directory; give a recipe .yaml file")
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RecipeError(f"{path}: malformed YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"{path}: cannot read recipe: {e}") from None
    if raw is None:
        raise RecipeError(f"{path}: the recipe is empty; it needs at least name and data")
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: the recipe must be a mapping of keys (name, data, model, ...), "
                          f"got {type(raw).__name__}")
    return raw


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (plain YAML silently keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice in one mapping; give each key once",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse_override(item: str) -> tuple[str, Any]:
    """`train.lr=0.1` -> ("train.lr", 0.1); the value is parsed as YAML."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*", key):
        raise RecipeError(f"--set {item!r}: expected dotted.key=value, e.g. --set train.lr=0.1")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError:
        raise RecipeError(f"--set {item!r}: the value is not valid YAML") from None


def set_dotted(d: dict, key: str, value: Any, source: str = "") -> None:
    parts = key.split(".")
    node = d
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise RecipeError(f"{source or key}: {'.'.join(parts[: i + 1])} is not a mapping")
        node = nxt
    node[parts[-1]] = value


def get_dotted(d: dict, key: str) -> Any:
    node: Any = d
    for part in key.split("."):
        node = node[part]
    return node


def validate(raw: dict, source: str) -> Recipe:
    try:
        return Recipe.model_validate(raw)
    except ValidationError as e:
        raise RecipeError(f"{source}: {_describe(e.errors()[0], raw)}") from None


def _describe(err: dict, raw: dict) -> str:
    """One line for the first pydantic error: dotted key, value, what is allowed."""
    loc = [str(p) for p in err["loc"] if not str(p).startswith("function-after")]
    key = ".".join(loc) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = _schema_at(loc[:-1])
        allowed = list(parent.model_fields) if parent else []
        hint = difflib.get_close_matches(loc[-1], allowed, n=1)
        did = f"; did you mean {hint[0]!r}?" if hint else ""
        return f"unknown key {key!r}{did} (allowed: {', '.join(allowed)})"
    if kind == "missing":
        return f"missing required key {key!r}"
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "value_error" and (not loc or msg.startswith(f"{key}.")):
        return msg  # the message names its own key (as every whole-recipe check does)
    value = err.get("input")
    shown = json.dumps(value, default=str) if not isinstance(value, dict) else "{...}"
    return f"{key}: got {shown}; {msg[0].lower() + msg[1:]}"


def _schema_at(loc: list[str]):
    model: Any = Recipe
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        model = field.annotation
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None
