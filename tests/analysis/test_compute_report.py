"""Compute columns (issue 29): forward multiply-accumulates per example at the kept weights and
dense, training seconds per epoch; in result.json, Table 1's CSV, the report and a Pareto plot."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import invoke

from widecli.analysis.frame import load_frame
from widecli.analysis.report import table1_of
from widecli.execute import sweep
from widecli.methods import macs, plan_weights
from widecli.recipes import expand, load_recipe

STUDIES = Path(__file__).resolve().parents[2] / "results" / "studies"


@pytest.fixture(scope="module")
def results(tmp_path_factory, data_root):
    """A tiny study with two mask families beside dense wide: 1 + 2 x (2 + 1) runs."""
    root = tmp_path_factory.mktemp("compute")
    recipe = root / "masks.yaml"
    recipe.write_text(f"""
name: masks
data: {{dataset: mnist1d, root: {data_root}, subset: 256}}
model: {{arch: mlp, hidden: [16]}}
widen: {{layers: first, factors: [1, 2, 4], methods: [sparse, dense]}}
train: {{epochs: 2, batch_size: 128, lr: 0.05}}
seeds: [0]
sweep: {{sparsity.mask: [random, rigl]}}
""")
    sweep.sweep(expand(load_recipe(recipe)), root / "results", device="cpu")
    return root / "results"


def test_table1_csv_carries_the_compute_of_each_cell(results, tmp_path):
    res = invoke("report", results, "--table1", "--runs", "--format", "csv", "--out", tmp_path)
    assert res.exit_code == 0, res.output
    t = pd.read_csv(tmp_path / "report-table1.csv")
    assert {"baseline_macs", "sparse_macs", "sparse_macs_dense", "dense_macs", "baseline_epoch_s",
            "sparse_epoch_s", "dense_epoch_s"} <= set(t.columns)
    assert set(t["sparsity.mask"]) == {"random", "rigl"}          # one Table 1 row per mask family
    budget = 40 * 16 + 16 * 10
    assert (t["baseline_macs"] == budget).all() and (t["sparse_macs"] == budget).all()
    f = t["sparse_factor"]
    assert (t["sparse_macs_dense"] == 40 * 16 * f + 16 * f * 10).all()
    assert (t["dense_macs"] == 40 * 16 * t["dense_factor"] + 16 * t["dense_factor"] * 10).all()
    assert (t["sparse_epoch_s"] > 0).all()
    md = (tmp_path / "report.md").read_text()
    assert "MACs/example: base, sparse (dense equiv.), dense" in md and "MACs (dense equiv.)" in md
    runs = pd.read_csv(tmp_path / "report-runs.csv")
    assert {"macs_nonzero", "macs_dense", "epoch_seconds"} <= set(runs.columns)


def test_report_plot_writes_the_pareto_view(results, tmp_path):
    res = invoke("report", results, "--table1", "--plot", "--out", tmp_path)
    assert res.exit_code == 0, res.output
    png = tmp_path / "plots" / "masks-pareto.png"
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"


def test_table1_of_old_runs_has_no_compute_columns():
    t = table1_of(STUDIES, ["digits_cnn"])
    assert not any(c.endswith("_macs") or c.endswith("_epoch_s") for c in t.columns)


def test_runs_stored_before_mask_families_read_as_random():
    df = load_frame(STUDIES, ["digits_cnn"])
    assert set(df["sparsity.mask"]) == {"random"}
    assert set(df["sparsity.update_every"]) == {"-"}   # a dynamic family's setting: not one of random's


def test_conv_macs_count_every_spatial_position(make_recipe):
    """cnn k = 4 on 8x8 digits at factor 2: conv1 on 8x8, conv2 on 4x4, conv3 on 2x2 (after pools)."""
    r = load_recipe(make_recipe({"data": {"dataset": "digits"}, "model": {"arch": "cnn", "width": 4},
                                 "widen": {"layers": "all", "factors": [1, 2]}}))
    spec = next(s for s in expand(r) if s.method == "sparse")
    plan = plan_weights(spec, (1, 8, 8), 10)
    positions = {"conv1": 64, "conv2": 16, "conv3": 4, "fc": 1}
    got = macs(spec, plan, (1, 8, 8), 10)
    assert got["macs_dense"] == sum(positions[n] * math.prod(s) for n, s in plan.shapes.items())
    assert got["macs_nonzero"] == sum(positions[n] * plan.counts[n] for n in plan.shapes)
    assert got["macs_nonzero"] < got["macs_dense"]
    # and against the layers run on a real input
    with torch.no_grad():
        from widecli.methods import build_model
        model = build_model(spec, plan, (1, 8, 8), 10).eval()
        out = {}
        hooks = [getattr(model, n).register_forward_hook(lambda m, i, o, n=n: out.__setitem__(n, o)) for n in positions]
        model(torch.zeros(1, 1, 8, 8))
        for h in hooks:
            h.remove()
    assert {n: o[0, 0].numel() for n, o in out.items()} == positions
