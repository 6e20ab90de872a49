"""Recipes checked against widecli's registries: the one way a recipe is loaded, validated and expanded.

`config/` validates a recipe's structure and values and imports no registry: it is the foundation,
so that every layer can name RunSpec. The names a recipe uses - data set, architecture, sparsity
rule, mask family, methods, layer names and the widths an architecture can be built at - are checked
against the Catalog it is handed (config.catalog). This module is where the registries meet the
schema: CATALOG, and `load_recipe`, `validate`, `expand` and `make_spec` bound to it. It sits just
above `methods` (the highest registry it reads); everything that reads a recipe (cli, analysis,
benchmarks, tests) calls these, and gets the same one-line errors the schema gives for any bad value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from widecli.config import expand as _expand
from widecli.config import load as _load
from widecli.config.schema import ModelConfig, Recipe, RunSpec
from widecli.data.registry import DATASETS
from widecli.methods import METHODS
from widecli.models.registry import ARCHS, base_widths
from widecli.registry import Registry
from widecli.sparsity.families import MASKS, family
from widecli.sparsity.rules import RULES


class RegistryCatalog:
    """The Catalog of widecli's registries (built-ins, entry points and `module:attr` paths)."""

    registries: dict[str, Registry] = {r.key: r for r in (DATASETS, ARCHS, RULES, METHODS, MASKS)}

    def check(self, key: str, name: str) -> None:
        if key == MASKS.key:
            family(name)  # a registered family, or an "N:M" pattern
        else:
            self.registries[key].get(name)

    def names(self, key: str) -> list[str]:
        return self.registries[key].names()

    def units(self, model: ModelConfig) -> dict[str, int]:
        return base_widths(model)

    def uses_sparsity(self, method: str) -> bool:
        return METHODS.get(method).uses_sparsity

    def moves_masks(self, mask: str) -> bool:
        return family(mask).dynamic


CATALOG = RegistryCatalog()


def load_recipe(path: str | Path, overrides: list[str] | None = None,
                flags: dict[str, tuple[str, object]] | None = None,
                warn: Callable[[str], None] | None = None) -> Recipe:
    """Read a YAML recipe (and its bases), apply `key.sub=value` overrides and validate it; see
    `config.load.load_recipe`."""
    return _load.load_recipe(path, overrides, flags, warn, catalog=CATALOG)


def validate(raw: dict, source: str) -> Recipe:
    """A Recipe from a raw mapping; a RecipeError naming `source` otherwise."""
    return _load.validate(raw, source, catalog=CATALOG)


def expand(recipe: Recipe) -> list[RunSpec]:
    """The recipe's grid as RunSpecs, deduplicated by run id, in a stable order (config.expand)."""
    return _expand.expand(recipe, catalog=CATALOG)


def make_spec(recipe: Recipe, factor: float, method: str, seed: int, axis_keys: list[str] = ()) -> RunSpec:
    """One grid point of a recipe as a RunSpec (config.expand.make_spec)."""
    return _expand.make_spec(recipe, factor, method, seed, axis_keys, catalog=CATALOG)
