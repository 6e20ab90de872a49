"""Reading recipes: YAML with unique keys composed over its `base:` recipes (config.compose),
`--set key.sub=value` overrides, and validation errors turned into one line naming the file (or the
`--set`) that holds the bad key, the dotted key, the value and what is allowed.

Every function that validates takes the `catalog` the recipe's names are checked against
(config.catalog); `widecli.recipes` binds them to the registries.
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
from widecli.config.catalog import Catalog
from widecli.config.compose import BASE, Composed, compose, read_yaml, yaml_reason  # noqa: F401 (read_yaml: API)
from widecli.config.schema import Recipe
from widecli.errors import RecipeError


def load_recipe(path: str | Path, overrides: list[str] | None = None,
                flags: dict[str, tuple[str, object]] | None = None,
                warn: Callable[[str], None] | None = None, *, catalog: Catalog) -> Recipe:
    """Read a YAML recipe (and its bases), apply `key.sub=value` overrides and validate it.

    flags: command-line options that set recipe keys, `{"--factor": ("widen.factors", [2.0])}`:
    applied after the overrides and named in any error, so that they are validated by the schema
    like every other value. Settings without effect (config.effects) are an error, or passed to
    `warn` where only some sweep points ignore them."""
    path = Path(path)
    c = compose(path)
    for item in overrides or []:
        key, value = parse_override(item)
        if key == BASE or key.startswith(BASE + "."):
            raise RecipeError(f"--set {item}: base names the recipes a recipe file is composed over; "
                              f"give it in the file")
        c.set(key, value, source=f"--set {item}")
    # The recipe and its overrides must be valid on their own, before the flags replace keys; settings
    # without effect are judged here too (a flag such as --factor 1 narrows the grid legitimately).
    own = validate(c.raw, str(path), c, catalog=catalog)
    errors, warnings = effects.judge(sweep_points(own, catalog=catalog), catalog)
    if errors:
        raise RecipeError(f"{_blame(errors[0], c)}: {errors[0]}")
    for line in warnings if warn else ():
        warn(f"{_blame(line, c)}: {line}")
    given = []
    for flag, (key, value) in (flags or {}).items():
        shown = f"{flag} {value[0] if isinstance(value, list) and len(value) == 1 else value}"
        c.set(key, value, source=shown)
        given.append(shown)
    # own was valid: what fails now fails for the flags, named beside the recipe they narrow
    return validate(c.raw, f"{path} with {', '.join(given)}", catalog=catalog) if given else own


def _blame(line: str, c: Composed) -> str:
    """The origin of the dotted key a message starts with (`train.nesterov: has no effect ...`)."""
    m = re.match(r"([A-Za-z_][\w.]*):", line)
    return c.source(m.group(1)) if m else c.top


def sweep_points(recipe: Recipe, *, catalog: Catalog) -> list[Recipe]:
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
        points.append(validate(raw, f"{recipe.name}: sweep point {dict(zip(recipe.sweep, combo))}", catalog=catalog))
    return points


def parse_override(item: str) -> tuple[str, Any]:
    """`train.lr=0.1` -> ("train.lr", 0.1); the value is parsed as YAML."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*", key):
        raise RecipeError(f"--set {item!r}: expected dotted.key=value; did you mean --set {key}=VALUE? "
                          f"(no spaces around =)")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*", key):
        raise RecipeError(f"--set {item!r}: expected dotted.key=value, e.g. --set train.lr=0.1")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise RecipeError(f"--set {item!r}: the value is not valid YAML{yaml_reason(e)} (quote the whole "
                          f"option for the shell: --set '{key}=[1, 2]')") from None


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


def validate(raw: dict, source: str, composed: Composed | None = None, *, catalog: Catalog) -> Recipe:
    """A Recipe from `raw`, its names checked against `catalog`; RecipeError naming `source`, or
    with `composed` the file or `--set` in the chain that set the bad key."""
    try:
        return Recipe.model_validate(raw, context={"catalog": catalog})
    except ValidationError as e:
        err = e.errors()[0]
        message = _describe(err, raw)
        if composed is not None:
            key = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after"))
            named = re.match(r"([A-Za-z_][\w.]*):", message)  # a check naming a key below its loc
            source = composed.source(named.group(1) if named and named.group(1).startswith(key) else key)
        raise RecipeError(f"{source}: {message}") from None


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
