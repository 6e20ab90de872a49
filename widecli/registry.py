"""One registry shape for every extension point: data sets, models, sparsity rules, methods, executors.

A registry maps a name to an object. Names come from three places, looked up in this order:
  1. widecli's built-ins (`registry.add(name, obj)` at import time);
  2. installed packages, through the Python entry point group `widecli.<kind>` (e.g. a package's
     pyproject.toml: `[project.entry-points."widecli.models"] mynet = "mypkg.nets:MyNet"`);
  3. for quick work, a dotted path in the recipe itself: `model.arch: mypkg.nets:MyNet`.
An unknown name is a RecipeError naming the recipe key and what is allowed (open_lth's
`registry.get`, with entry points as the way in for users' packages).
"""

from __future__ import annotations

import difflib
import functools
import importlib
import re
from importlib.metadata import entry_points
from typing import Any, Callable, Generic, TypeVar

from widecli.errors import RecipeError, WidecliError

T = TypeVar("T")
DOTTED = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


class Registry(Generic[T]):
    """name -> object, open to entry points (group `widecli.<kind>`) and `module:attr` paths.

    `key` is the recipe key the names appear under (for error messages); `adapt` turns what an
    entry point or dotted path names into the registry's object type (e.g. a user's model class
    into the model protocol)."""

    def __init__(self, kind: str, key: str, adapt: Callable[[str, Any], T] | None = None):
        self.kind, self.key, self.group = kind, key, f"widecli.{kind}"
        self._items: dict[str, T] = {}
        self._adapt = adapt or (lambda name, obj: obj)
        self._loaded_entry_points = False

    def add(self, name: str, obj: T) -> T:
        self._items[name] = obj
        return obj

    def names(self) -> list[str]:
        """Built-in and installed names (dotted paths are not listed: any importable one works)."""
        self._load_entry_points()
        return list(self._items)

    def __contains__(self, name: str) -> bool:
        try:
            self.get(name)
            return True
        except RecipeError:
            return False

    def get(self, name: str) -> T:
        """The object registered as `name`, or imported from `module:attr`; RecipeError otherwise."""
        if name in self._items:
            return self._items[name]
        self._load_entry_points()
        if name in self._items:
            return self._items[name]
        if DOTTED.fullmatch(name):
            obj = self._adapt(name, import_dotted(name, self.key))
            return self.add(name, obj)
        hint = difflib.get_close_matches(name, self.names(), n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise RecipeError(f"{self.key}: unknown {self.kind[:-1] if self.kind.endswith('s') else self.kind} "
                          f"{name!r}{did}; allowed: {', '.join(self.names())}, or a module:attr path")

    def _load_entry_points(self) -> None:
        if self._loaded_entry_points:
            return
        self._loaded_entry_points = True
        for ep in entry_points(group=self.group):
            if ep.name in self._items:
                continue  # built-ins win: an installed package cannot silently replace them
            try:
                self._items[ep.name] = self._adapt(ep.name, ep.load())
            except Exception as e:  # a broken plugin must not break every command
                raise RecipeError(f"entry point {self.group}:{ep.name} ({ep.value}) cannot be loaded: "
                                  f"{type(e).__name__}: {e}") from None


def user_function(key: str, kind: str, signature: str,
                  returns: Callable[[Any], bool] = lambda result: True) -> Callable[[str, Any], Callable]:
    """An `adapt` for the registries of plain functions (data set loaders, sparsity rules): what a
    dotted path or an entry point names must be callable, and an exception it raises, or a result
    `returns` refuses, is one RecipeError line naming it (`--debug` shows the traceback), as for
    every other bad recipe value. `signature` says how widecli calls it and what it must return."""
    def adapt(name: str, obj: Any) -> Callable:
        if not callable(obj):
            raise RecipeError(f"{key}: {name!r} is a {type(obj).__name__}, not a {kind}: widecli calls it as "
                              f"{signature}")

        @functools.wraps(obj)
        def call(*args, **kwargs):
            try:
                result = obj(*args, **kwargs)
            except (WidecliError, KeyboardInterrupt):
                raise
            except Exception as e:
                first = (str(e).strip().splitlines() or [""])[0]
                raise RecipeError(f"{key}: {kind} {name!r} failed: {type(e).__name__}: {first} (called as "
                                  f"{signature}; --debug shows the traceback)") from e
            if not returns(result):
                raise RecipeError(f"{key}: {kind} {name!r} returned a {type(result).__name__}; widecli calls it "
                                  f"as {signature}")
            return result
        return call
    return adapt


def import_dotted(path: str, key: str) -> Any:
    """`package.module:attr.sub` -> the object; RecipeError naming the recipe key otherwise."""
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise RecipeError(f"{key}: cannot import module {module_name!r} of {path!r} ({e}); is it "
                          f"installed or on PYTHONPATH?") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise RecipeError(f"{key}: module {module_name!r} has no attribute {attr!r} (from {path!r})")
        obj = getattr(obj, part)
    return obj
