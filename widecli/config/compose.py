"""Recipe composition: a recipe may name `base:` recipes (one path or a list, relative to itself)
that it is deep-merged over, and every key remembers where it was set, so an error names the file
in the chain (or the `--set`) that holds the bad value.

Merging follows Hydra's / OmegaConf's rules: mappings merge key by key, everything else (lists
included) is replaced; later bases win over earlier ones and the recipe over all of its bases. A key
set to `null` over a base removes the base's value (the schema default applies again), e.g.
`sweep: null` to drop the base's sweep axes. Composition happens before validation, so the run id
depends on the resolved recipe only, never on how it was composed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from widecli.errors import RecipeError

BASE = "base"


@dataclass
class Composed:
    """A raw recipe mapping and, per key path, where its value was set (a file or a `--set`)."""

    raw: dict
    origins: dict[tuple, str] = field(default_factory=dict)
    top: str = ""   # the recipe file itself: where keys that nobody set (a missing key) are blamed

    def source(self, key: str) -> str:
        """Who set dotted `key` (or the nearest mapping above it); the recipe file if nobody did."""
        best, where = -1, self.top
        for path, origin in self.origins.items():
            dotted = ".".join(str(p) for p in path)
            if (key == dotted or key.startswith(dotted + ".")) and len(dotted) > best:
                best, where = len(dotted), origin
        return where

    def set(self, key: str, value: Any, source: str) -> None:
        """Set a dotted key (`--set`, a command-line flag) and remember who set it."""
        parts = key.split(".")
        node = self.raw
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise RecipeError(f"{source}: {'.'.join(parts[: i + 1])} is not a mapping")
            node = nxt
        node[parts[-1]] = value
        _forget(self.origins, tuple(parts))
        _remember(self.origins, tuple(parts), value, source)


def compose(path: Path, _chain: tuple[Path, ...] = (), label: str | None = None) -> Composed:
    """Read `path` and the bases it names (recursively), merged; origins per key."""
    raw = read_yaml(path, label)
    here = label or str(path)
    bases = raw.pop(BASE, None)
    if bases is None:
        return Composed(raw, _origins(raw, here), here)
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not bases or not all(isinstance(b, str) and b.strip() for b in bases):
        raise RecipeError(f"{here}: base: got {bases!r}; expected a recipe path or a non-empty list of "
                          f"paths, relative to {path.parent}")
    chain = (*_chain, path.resolve())
    merged = Composed({}, {}, here)
    for name in bases:
        base = (path.parent / Path(name).expanduser()).resolve() if not Path(name).is_absolute() else Path(name)
        if base in chain:
            loop = " -> ".join(p.name for p in (*chain, base))
            raise RecipeError(f"{here}: base {name!r} makes a cycle ({loop}); a recipe cannot be its own base")
        if not base.is_file():
            raise RecipeError(f"{here}: base {name!r}: no such recipe file ({base})")
        part = compose(base, chain, f"{base} (base of {path})")
        merge(merged, part.raw, part.origins)
    merge(merged, raw, _origins(raw, here))
    return merged


def merge(into: Composed, raw: dict, origins: dict[tuple, str], prefix: tuple = ()) -> None:
    """Deep-merge `raw` (whose keys `origins` tells) into `into`, in place."""
    node = into.raw
    for p in prefix:
        node = node[p]
    for key, value in raw.items():
        path = (*prefix, key)
        if value is None and key in node:   # null over a base: back to the schema default
            del node[key]
            _forget(into.origins, path)
        elif isinstance(value, dict) and isinstance(node.get(key), dict):
            into.origins[path] = origins.get(path, into.origins.get(path, ""))
            merge(into, value, origins, path)
        else:
            node[key] = copy.deepcopy(value)
            _forget(into.origins, path)
            into.origins.update({k: v for k, v in origins.items() if k[: len(path)] == path})


def _origins(raw: dict, source: str) -> dict[tuple, str]:
    out: dict[tuple, str] = {}
    for key, value in raw.items():
        _remember(out, (key,), value, source)
    return out


def _remember(origins: dict, path: tuple, value: Any, source: str) -> None:
    origins[path] = source
    for key, sub in (value.items() if isinstance(value, dict) else ()):
        _remember(origins, (*path, key), sub, source)


def _forget(origins: dict, path: tuple) -> None:
    for k in [k for k in origins if k[: len(path)] == path]:
        del origins[k]


def read_yaml(path: Path, label: str | None = None) -> dict:
    """A recipe file as a mapping; one-line RecipeError with the parser's reason otherwise."""
    here = label or str(path)
    if not path.exists():
        raise RecipeError(f"{here}: no such recipe file")
    if path.is_dir():
        raise RecipeError(f"{here}: is a directory; give a recipe .yaml file")
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise RecipeError(f"{here}: malformed YAML{yaml_reason(e)}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"{here}: cannot read recipe: {e}") from None
    if raw is None:
        raise RecipeError(f"{here}: the recipe is empty; it needs at least name and data")
    if not isinstance(raw, dict):
        raise RecipeError(f"{here}: the recipe must be a mapping of keys (name, data, model, ...), "
                          f"got {type(raw).__name__}")
    return raw


def yaml_reason(e: yaml.YAMLError) -> str:
    """` (line 3, column 7): found unexpected end of stream`: where and why the parser stopped."""
    mark = getattr(e, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    return f"{where}: {problem}"


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
