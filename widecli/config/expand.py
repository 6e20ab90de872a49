"""Expansion: a recipe's grid factors x methods x seeds x sweep axes as frozen, machine-independent
RunSpecs, canonicalized so that runs computing the same thing share one run id.

Expansion lives in config, beside the schema it resolves, and needs one fact of the methods layer:
whether a method uses the sparsity settings (only those runs' ids depend on them). That fact comes
from the `catalog` it is handed (config.catalog), as the names do in validation, rather than from
an import of widecli.methods, which would put config above the layers that annotate RunSpec.
`widecli.recipes.expand` binds it to the registries."""

from __future__ import annotations

import itertools
from typing import Any

from widecli.config.catalog import Catalog
from widecli.config.effects import MASK_SETTINGS
from widecli.config.load import get_dotted, set_dotted, sweep_points, validate
from widecli.config.schema import Recipe, RunSpec, SparsityConfig


def expand(recipe: Recipe, *, catalog: Catalog) -> list[RunSpec]:
    """The recipe's grid as RunSpecs, deduplicated by run id, in a stable order.

    Runs that compute the same thing share an id: at factor 1 every method is the dense baseline,
    and only methods that use them (`sparse`) depend on the sparsity settings.
    """
    keys = list(recipe.sweep)
    specs: dict[str, RunSpec] = {}
    for point in sweep_points(recipe, catalog=catalog):
        for factor, method, seed in itertools.product(point.widen.factors, point.widen.methods, point.seeds):
            spec = make_spec(point, factor, method, seed, keys, catalog=catalog)
            specs.setdefault(spec.run_id, spec)
    return list(specs.values())


def with_factor_values(recipe: Recipe, factor: float, method: str, *, catalog: Catalog) -> Recipe:
    """The recipe with every `widen.per_factor` key set to its value at this factor, then the
    method's own `widen.per_method_factor` values (factors > 1: factor 1 is the dense baseline)."""
    tables = dict(recipe.widen.per_factor)
    if factor != 1:
        tables.update(recipe.widen.per_method_factor.get(method, {}))
    if not tables:
        return recipe
    raw = recipe.model_dump(mode="json")
    for key, table in tables.items():
        set_dotted(raw, key, table[float(factor)], source=f"widen.per_factor.{key}")
    return validate(raw, f"{recipe.name}: the values of widen.per_factor at factor {factor:g} ({method})",
                    catalog=catalog)


def make_spec(recipe: Recipe, factor: float, method: str, seed: int, axis_keys: list[str] = (), *,
              catalog: Catalog) -> RunSpec:
    """Resolve one grid point, canonicalizing what does not affect the computation."""
    layers = recipe.widen.layers
    if factor == 1:
        method, layers = "dense", "first"
    recipe = with_factor_values(recipe, factor, method, catalog=catalog)
    sparsity = recipe.sparsity
    if not catalog.uses_sparsity(method):
        sparsity = SparsityConfig()
    else:  # a mask family's own settings (sparsity.update_every, ...) do nothing for the other families
        unused = {k: SparsityConfig.model_fields[k].default for k, families in MASK_SETTINGS.items()
                  if sparsity.mask not in families}
        sparsity = SparsityConfig.model_validate({**sparsity.model_dump(exclude_unset=True), **unused})
    spec = RunSpec(recipe=recipe.name, data=recipe.data, model=recipe.model, widen_layers=layers,
                   factor=float(factor), method=method, sparsity=sparsity, train=recipe.train, seed=seed)
    if not axis_keys:
        return spec
    dumped = spec.model_dump(mode="json")
    dumped["widen"] = {"layers": layers}
    axes = {k: _get_or_none(dumped, k) for k in axis_keys}
    return spec.model_copy(update={"axes": axes})


def _get_or_none(d: dict, key: str) -> Any:
    try:
        return get_dotted(d, key)
    except (KeyError, TypeError):
        return None
