"""Ablations: one recipe, several arms (widened layers x sparsity rule x method), each a full sweep.

An arm changes `widen.layers`, `sparsity.rule` and/or the wide method of a recipe; the recipe's own
setting is the reference arm. Arms are compared per factor (mean ± std test accuracy over seeds) and
by their Table 1 row (see widecli.analysis.table1), with the difference of each arm's best wide accuracy to
the reference's. Arms share the store with `sweep`: a run already trained is never trained again.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from widecli.analysis import plots, stats
from widecli.analysis.formats import pm, table_text, with_interval
from widecli.analysis.frame import load_frame, ok_runs, studies
from widecli.analysis.table1 import best_wide, study_row
from widecli.config.schema import Recipe, RunSpec
from widecli.errors import RecipeError, StoreError
from widecli.execute.worklist import run_statuses
from widecli.methods import METHODS
from widecli.models.layout import selected_layers
from widecli.recipes import expand, load_recipe, validate
from widecli.sparsity.rules import RULES
from widecli.store.runs import atomic_write


@dataclass
class Arm:
    name: str
    recipe: Recipe
    method: str                       # the wide method compared with the baseline and dense wide
    specs: list[RunSpec] = field(default_factory=list)

    @property
    def run_ids(self) -> list[str]:
        return [s.run_id for s in self.specs]


def default_recipe() -> Path:
    """The bundled offline quickstart: package data in an installed wheel, else the repo's recipes/."""
    candidates = [Path(str(resources.files("widecli") / "recipes" / "quickstart.yaml")),
                  Path(__file__).resolve().parents[2] / "recipes" / "quickstart.yaml"]
    for path in candidates:
        if path.is_file():
            return path
    raise RecipeError(f"no RECIPE given and the bundled quickstart recipe is missing (looked in "
                      f"{', '.join(str(c.parent) for c in candidates)}); pass a recipe file")


def _check(values: list[str], registry, option: str) -> None:
    for v in values:
        try:
            registry.get(v)
        except RecipeError as e:
            detail = re.sub(r"^unknown \w+ ", "unknown value ", str(e).split(": ", 1)[-1])
            raise RecipeError(f"{option}: {detail}") from None


def _layers_value(v: str):
    """`first|last|all` stay names; `fc1,fc2` becomes a list of layer names."""
    return v if v in ("first", "last", "all") else [p.strip() for p in v.split(",") if p.strip()]


def arms(path: str | Path, widen_layers: list[str] = (), rules: list[str] = (), methods: list[str] = (),
         overrides: list[str] = (), reference: bool = True) -> tuple[list[Arm], list[str]]:
    """The arms (reference first) and notes on requested arms dropped as identical to another."""
    _check(list(rules), RULES, "--rule")
    _check(list(methods), METHODS, "--method")
    path = Path(path)
    base = load_recipe(path, list(overrides))
    raw = base.model_dump(mode="json")
    wide = next((m for m in base.widen.methods if m != "dense"), "dense")
    candidates = [("reference", raw, wide)] if reference else []
    for layers, rule, method in itertools.product(widen_layers or [None], rules or [None], methods or [None]):
        if layers is rule is method is None:
            continue
        arm_raw, parts = copy.deepcopy(raw), []
        if layers is not None:
            arm_raw["widen"]["layers"] = _layers_value(layers)
            parts.append(f"widen={layers}")
        if rule is not None:
            arm_raw["sparsity"]["rule"] = rule
            parts.append(f"rule={rule}")
        if method is not None:
            arm_raw["widen"]["methods"] = list(dict.fromkeys([method, "dense"]))
            parts.append(f"method={method}")
        candidates.append((" ".join(parts), arm_raw, method or wide))
    if not candidates:
        raise RecipeError("--no-reference needs at least one --widen-layers, --rule or --method")
    out: dict[tuple, Arm] = {}
    notes: list[str] = []
    base_layers = selected_layers(base.model, base.widen.layers)
    for name, arm_raw, method in candidates:
        r = validate(arm_raw, f"{path} (arm {name})")
        renamed = r.widen.layers != base.widen.layers and selected_layers(r.model, r.widen.layers) == base_layers
        if renamed:
            # Same layers under another name (`all` of a one-hidden-layer MLP is `first`): use the
            # recipe's spelling so the run ids, hence the runs, are shared with the reference.
            r = r.model_copy(update={"widen": r.widen.model_copy(update={"layers": base.widen.layers})})
        key = _identity(r, method)
        if key in out:
            notes.append(f"arm {name!r} trains the same runs as {out[key].name!r} "
                         f"(widens {', '.join(key[0])}); dropped")
            continue
        if renamed:
            notes.append(f"arm {name!r} widens {', '.join(base_layers)}, the same layers as the recipe's "
                         f"{_show(base.widen.layers)!r}: its runs use that setting")
        out[key] = Arm(name, r, method, expand(r))
    return list(out.values()), notes


def _identity(r: Recipe, method: str) -> tuple:
    """What an arm computes: resolved widened layers, sparsity settings, methods and the rest."""
    rest = r.model_dump(mode="json")
    rest["widen"].pop("layers")
    return (tuple(selected_layers(r.model, r.widen.layers)), method,
            json.dumps(rest, sort_keys=True))


def all_specs(items: list[Arm]) -> list[RunSpec]:
    """Every distinct run of the arms (shared runs, like the baseline, once)."""
    return list({s.run_id: s for a in items for s in a.specs}.values())


def dry_run(items: list[Arm], results: str | Path) -> pd.DataFrame:
    """Per arm: runs, already finished, new; plus a total of distinct runs."""
    status = {p.run_id: p.status for p in run_statuses(all_specs(items), results)}
    rows = [{"arm": a.name, "widen": _show(a.recipe.widen.layers), "rule": a.recipe.sparsity.rule,
             "methods": ",".join(a.recipe.widen.methods), "runs": len(a.specs),
             "finished": sum(status[i] == "finished" for i in a.run_ids),
             "new": sum(status[i] != "finished" for i in a.run_ids)} for a in items]
    rows.append({"arm": "total (distinct runs)", "widen": "", "rule": "", "methods": "",
                 "runs": len(status), "finished": sum(s == "finished" for s in status.values()),
                 "new": sum(s != "finished" for s in status.values())})
    return pd.DataFrame(rows)


def _show(v) -> str:
    return ",".join(v) if isinstance(v, list) else str(v)


# --------------------------------------------------------------------------- comparison


@dataclass
class Comparison:
    factors: pd.DataFrame    # arm x method x factor: mean, std, seeds
    summary: pd.DataFrame    # arm: Table 1 figures, delta to the reference and its paired interval
    files: list[Path]


def compare(items: list[Arm], results: str | Path, name: str | None = None) -> Comparison:
    """Per-factor and Table 1 comparison of the arms; writes ablate-<hash>.md/.csv and a PNG."""
    df = load_frame(results, [items[0].recipe.name], all_specs(items))
    frames = {a.name: df[df["run_id"].isin(set(a.run_ids))] for a in items}
    factors = pd.concat([_factor_rows(a, frames[a.name]) for a in items], ignore_index=True)
    rows, per_seed = zip(*[_summary_row(a, frames[a.name]) for a in items])
    summary = pd.DataFrame(list(rows))
    ref = summary.iloc[0]
    summary["delta"] = summary["best"] - ref["best"]
    # Whether an arm differs from the reference: the paired-by-seed bootstrap interval of the
    # difference of their best wide accuracies (the arms share seeds) excludes 0.
    intervals = [stats.delta_interval(per_seed[0], p)[:2] for p in per_seed]
    summary["delta_ci95"] = [stats.as_text(*ci) for ci in intervals]
    summary["ci_excludes_0"] = [{True: "yes", False: "no", None: "n/a (< 2 paired seeds)"}[stats.excludes_zero(*ci)]
                                for ci in intervals]
    # Without the reference arm (--no-reference) the first arm is the one compared against.
    first = "reference" if items[0].name == "reference" else "compared against"
    summary.loc[0, ["delta", "delta_ci95", "ci_excludes_0"]] = [0.0, "", first]
    out = Path(results) / items[0].recipe.name
    stem = f"ablate-{_hash(items)}"
    files = _write(factors, summary, out, stem, name or title(items))
    files.append(plots.plot_ablation(items, frames, out / f"{stem}.png"))
    return Comparison(factors, summary, files)


def title(items: list[Arm]) -> str:
    """The recipe and the settings every arm shares that tell this ablation from another of it."""
    r = items[0].recipe
    factors = ", ".join(f"{f:g}" for f in r.widen.factors)
    return (f"{r.name} (epochs={r.train.epochs}, scope={r.sparsity.scope}, factors {factors}, "
            f"{len(r.seeds)} seeds)")


def _factor_rows(arm: Arm, df: pd.DataFrame) -> pd.DataFrame:
    g = ok_runs(df).groupby(["method", "factor"])["test_accuracy"].agg(mean="mean", std="std", seeds="size").reset_index()
    g.loc[g["factor"] == 1, "method"] = "baseline"
    g.insert(0, "arm", arm.name)
    return g


def _summary_row(arm: Arm, df: pd.DataFrame) -> tuple[dict, pd.Series]:
    """An arm's Table 1 figures, and the per-seed test accuracies of its best wide cell."""
    found = studies(df)
    study = next((s for s in found if s.sparse or not METHODS.get(arm.method).uses_sparsity), found[0])
    row = study_row(study, arm.method)
    best = best_wide(study.rows, arm.method)
    return ({"arm": arm.name, "widened": _show(arm.recipe.widen.layers), "rule": arm.recipe.sparsity.rule,
             "method": arm.method, "baseline": row["baseline"], "baseline_std": row["baseline_std"],
             "best": row["sparse"], "best_std": row["sparse_std"], "best_factor": row["sparse_factor"],
             "selected_by": row["selected_by"], "connectivity": row["sparse_connectivity"], "dense": row["dense"],
             "dense_factor": row["dense_factor"], "fraction": row["fraction"], "fraction_std": row["fraction_std"],
             "fraction_ci95": row["fraction_ci95"], "note": row["note"]},
            best["per_seed"] if best else pd.Series(dtype=float))


def _hash(items: list[Arm]) -> str:
    ids = [sorted(a.run_ids) for a in items]
    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:8]


def display(c: Comparison) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two comparison tables for people (accuracy in %)."""
    f = c.factors.copy()
    f["cell"] = [pm(m, s) for m, s in zip(f["mean"], f["std"])]
    wide = f.pivot_table(index=["arm", "method"], columns="factor", values="cell", aggfunc="first", sort=False)
    wide.columns = [f"f={x:g}" for x in wide.columns]
    wide = wide.fillna("-").reset_index()
    s = c.summary
    d = s[["arm", "widened", "rule", "method"]].copy()
    d["baseline"] = [pm(m, x) for m, x in zip(s["baseline"], s["baseline_std"])]
    d["best wide (f, connectivity)"] = ["-" if pd.isna(m) else f"{pm(m, x)} (f={f_:g}, {c_:.3g})"
                                        for m, x, f_, c_ in zip(s["best"], s["best_std"], s["best_factor"],
                                                                s["connectivity"])]
    d["dense wide"] = ["-" if pd.isna(m) else f"{pm(m, np.nan)} (f={f_:g})"
                       for m, f_ in zip(s["dense"], s["dense_factor"])]
    d["selected by"] = s["selected_by"].replace("", "-")
    d["fraction [95% CI]"] = [with_interval(m, ci, 1.0) for m, ci in zip(s["fraction"], s["fraction_ci95"])]
    d["Δ best vs reference [95% CI]"] = [with_interval(v, ci, 100.0, sign=True) for v, ci in zip(s["delta"], s["delta_ci95"])]
    d["CI excludes 0"] = s["ci_excludes_0"]
    d["note"] = s["note"].replace("", "-")
    return wide, d


def _write(factors: pd.DataFrame, summary: pd.DataFrame, out: Path, stem: str, name: str) -> list[Path]:
    c = Comparison(factors, summary, [])
    wide, d = display(c)
    md = (f"# Ablation of {name}\n\n## Test accuracy (%) per arm and factor, mean ± std over seeds\n\n"
          f"{table_text(wide, 'md')}\n\n## Table 1 per arm (Δ: best wide accuracy minus the reference's, "
          f"in points)\n\n{table_text(d, 'md')}\n")
    try:
        atomic_write(out / f"{stem}.md", md.encode())
        atomic_write(out / f"{stem}.csv", summary.to_csv(index=False).encode())
        atomic_write(out / f"{stem}-factors.csv", factors.to_csv(index=False).encode())
    except OSError as e:
        raise StoreError(f"{out}: cannot write the ablation report ({e.strerror or e})") from None
    return [out / f"{stem}.md", out / f"{stem}.csv", out / f"{stem}-factors.csv"]
