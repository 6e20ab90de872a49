"""What a recipe's names are checked against: the Catalog protocol.

config/ is the foundation: every layer names RunSpec, so config imports none of the registries
(data sets, models, rules, mask families, methods). The names a recipe uses are checked against a
Catalog handed to validation instead (`widecli.recipes.CATALOG`: the registries, and the plugins
they find); its errors are the same one-line RecipeErrors, raised from inside the schema's
validators, so they name the file or `--set`, the key, the value and what is allowed.
"""

from __future__ import annotations

from typing import Protocol

from widecli.config.schema import ModelConfig


class Catalog(Protocol):
    """The registries as far as a recipe needs them."""

    def check(self, key: str, name: str) -> None:
        """RecipeError `"{key}: unknown ...; allowed: ..."` unless `name` is known under recipe key
        `key` (data.dataset, model.arch, sparsity.rule, sparsity.mask, widen.methods)."""

    def names(self, key: str) -> list[str]:
        """The names known under recipe key `key` (built-ins and installed plugins)."""

    def units(self, model: ModelConfig) -> dict[str, int]:
        """The widenable units of a (known) architecture and their baseline widths, in order."""

    def uses_sparsity(self, method: str) -> bool:
        """Whether the sparsity settings apply to a (known) method, and so enter its run id."""

    def moves_masks(self, mask: str) -> bool:
        """Whether a (known) mask family changes the mask during training (set, rigl)."""
