"""`widecli check` mask diagnostics (issue 29): per masked layer the fan-in and fan-out of the
planned mask, units with no inputs or outputs, and a warning for planned models with dead units
or fewer kept weights than units (the paper recipe at width 635 keeps 2 weights in fc1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import invoke

from widecli.execute.preflight import mask_diagnostics
from widecli.methods import plan_weights, planned_masks
from widecli.recipes import expand, load_recipe
from widecli.sparsity.masks import fan_stats

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "recipes" / "paper" / "mlp_mnist.yaml"
def test_the_paper_recipe_warns_about_width_635():
    result = invoke("check", PAPER)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    at_635 = [w for w in warnings if "factor 79.375" in w]
    assert at_635 and "fc1 keeps 2 weights for 635 output units" in at_635[0]
    assert "633 of 635 units of fc1 have no inputs" in at_635[0]
    assert not any("factor 4 " in w or "factor 16 " in w for w in warnings)  # healthy widths: no warning
    assert "planned masks" in result.output and "fan-in" in result.output


def test_check_json_carries_the_diagnostics():
    result = invoke("check", PAPER, "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    by_factor = {d["factor"]: d for d in doc["masks"]}
    fc1 = by_factor[79.375]["layers"]["fc1"]
    assert fc1["kept"] == 2 and fc1["units_out"] == 635 and fc1["no_inputs"] == 633 and fc1["fan_in_min"] == 0
    assert by_factor[79.375]["warning"] and by_factor[4.0]["warning"] is None
    assert len(by_factor[4.0]["run_ids"]) == 5   # one entry per model, naming its runs (seeds)


def test_fan_stats_against_an_independent_count():
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(7, 5, 3, 3, generator=g) < 0.05          # a conv: 7 out, 5 in channels
    stats = fan_stats(mask)
    rows = [sum(mask[o].flatten().tolist()) for o in range(7)]
    cols = [sum(mask[:, i].flatten().tolist()) for i in range(5)]
    assert stats["fan_in_min"] == min(rows) and stats["no_inputs"] == rows.count(0)
    assert stats["fan_out_min"] == min(cols) and stats["no_outputs"] == cols.count(0)
    assert stats["fan_in_median"] == sorted(rows)[(len(rows) - 1) // 2]


def test_diagnostics_use_the_mask_the_run_will_start_with(make_recipe):
    specs = expand(load_recipe(make_recipe({"widen": {"factors": [1, 8]}, "sparsity": {"rule": "proportional"}})))
    [d] = mask_diagnostics(specs, (40,), 10)
    spec = next(s for s in specs if s.method == "sparse")
    masks = planned_masks(spec, plan_weights(spec, (40,), 10))
    assert d["layers"]["fc1"] == {"kept": int(masks["fc1"].sum()), "weights": 40 * 128, "units_out": 128,
                                  "units_in": 40, **fan_stats(masks["fc1"])}


@pytest.mark.parametrize("mask, drawn", [("snip", False), ("rigl", True), ('"2:4"', True)])
def test_scored_families_get_counts_only(make_recipe, mask, drawn):
    specs = expand(load_recipe(make_recipe({"widen": {"factors": [1, 2]}, "sparsity": {"rule": "proportional"}}),
                               [f"sparsity.mask={mask}"]))
    [d] = mask_diagnostics(specs, (40,), 10)
    assert d["drawn"] is drawn and ("fan_in_min" in d["layers"]["fc1"]) is drawn


def test_few_weights_warn_even_without_a_drawn_mask(make_recipe):
    # budget 40*8 + 8*10 = 400; at width 38 the dense `out` takes 380: fc1 keeps 20 weights for 38 units
    r = load_recipe(make_recipe({"model": {"hidden": [8]}, "widen": {"factors": [1, 4.75]},
                                 "sparsity": {"rule": "custom", "connectivity": {"out": 1.0}, "mask": "snip"}}))
    [d] = mask_diagnostics(expand(r), (40,), 10)
    assert not d["drawn"] and d["warning"] and "fc1 keeps 20 weights for 38 output units" in d["warning"]
