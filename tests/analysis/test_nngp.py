"""The NNGP kernel analysis (widecli.analysis.nngp, `widecli kernel`): closed form vs wide networks, width
and sparsity trends, determinism, CLI files."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from helpers import CPU, invoke

from widecli.analysis import nngp
from widecli.config.schema import Recipe
from widecli.execute import run as execute_run
from widecli.execute.run import run_group
from widecli.recipes import expand, load_recipe, make_spec


def _recipe(model: dict, factors=(1,), methods=("dense",), layers="first", root=None) -> Recipe:
    data = {"dataset": "mnist1d", **({"root": str(root)} if root else {})}
    return Recipe.model_validate({"name": "k", "data": data, "model": {"arch": "mlp", **model},
                                  "widen": {"layers": layers, "factors": list(factors), "methods": list(methods)}})


def _inputs(n=16, d=32) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("model, classes, inits", [
    ({"hidden": [256, 256], "parameterization": "ntk", "bias": False}, 128, 256),   # the paper's MLP style
    ({"hidden": [1024], "parameterization": "standard", "bias": True}, 128, 128),  # widecli's default init
])
def test_closed_form_matches_monte_carlo_of_a_wide_relu_mlp(model, classes, inits):
    r = _recipe(model)
    x = _inputs()
    limit = nngp.limit_kernel(x, r.model)
    est = nngp.monte_carlo_kernel(make_spec(r, 1, "dense", 0), x, classes, list(range(inits)), limit)
    # Tolerance: 4% relative Frobenius, and within 2.5 standard errors of the Monte Carlo mean
    # (init_distance / sqrt(M), about 0.02 here); the finite-width bias at these widths is < 0.5%.
    assert est.distance < 0.04
    assert est.distance < 2.5 * est.init_distance / math.sqrt(inits)
    # The tolerance discriminates: the same recursion with phi = identity is far outside it.
    linear = nngp.limit_kernel(x, r.model.model_copy(update={"activation": "linear"}))
    assert ((est.mean - linear).norm() / linear.norm()) > 0.3


def test_relu_arc_cosine_values():
    k = torch.tensor([[2.0, 0.0, -2.0], [0.0, 2.0, 0.0], [-2.0, 0.0, 2.0]], dtype=torch.float64)
    e = nngp.relu_expectation(k)
    # diagonal: E[relu(u)^2] = k/2; orthogonal: k/(2 pi); anti-parallel: 0
    assert torch.allclose(torch.diagonal(e), torch.full((3,), 1.0, dtype=torch.float64))
    assert e[0, 1].item() == pytest.approx(2 / (2 * math.pi))
    assert e[0, 2].item() == pytest.approx(0.0, abs=1e-12)


def test_quadrature_matches_closed_forms():
    x = _inputs(8, 16).double()
    k = x @ x.T / 16
    assert torch.allclose(nngp.quadrature_expectation(k, lambda t: t), k, atol=1e-10)
    relu = nngp.relu_expectation(k)
    assert ((nngp.quadrature_expectation(k, torch.relu) - relu).norm() / relu.norm()) < 0.02


def test_tanh_limit_matches_a_wide_mlp():
    r = _recipe({"hidden": [512], "parameterization": "ntk", "bias": False, "activation": "tanh"})
    x = _inputs()
    est = nngp.monte_carlo_kernel(make_spec(r, 1, "dense", 0), x, 128, list(range(64)), nngp.limit_kernel(x, r.model))
    assert est.distance < 0.05


def test_distance_shrinks_as_dense_width_grows(data_root):
    r = _recipe({"hidden": [4, 4], "parameterization": "ntk", "bias": False}, factors=(1, 4, 32),
                layers="all", root=data_root)
    df = nngp.analyze(r, samples=48, inits=64).sort_values("factor")
    d = df["distance"].tolist()
    assert d[0] > d[1] > d[2]
    assert d[2] < 0.5 * d[0]
    assert (df["reference"] == "closed_form").all()


def test_sparse_masks_at_fixed_width_raise_the_distance(data_root):
    r = _recipe({"hidden": [4], "parameterization": "ntk", "bias": False}, factors=(16,),
                methods=("sparse", "dense"), root=data_root)
    df = nngp.analyze(r, samples=48, inits=128).set_index("method")
    assert df.loc["sparse", "connectivity"] == pytest.approx(1 / 16)
    assert df.loc["dense", "connectivity"] == 1.0
    assert df.loc["sparse", "distance"] > 1.3 * df.loc["dense", "distance"]
    assert df.loc["sparse", "expected_distance"] > df.loc["dense", "expected_distance"]


def test_deterministic_for_a_seed(data_root):
    r = _recipe({"hidden": [8]}, factors=(1, 2), methods=("sparse", "dense"), root=data_root)
    a = nngp.analyze(r, samples=32, inits=16, seed=3)
    b = nngp.analyze(r, samples=32, inits=16, seed=3)
    c = nngp.analyze(r, samples=32, inits=16, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not (a["distance"].to_numpy() == c["distance"].to_numpy()).all()


def test_stacked_inits_equal_one_by_one(data_root):
    spec = make_spec(_recipe({"hidden": [8]}, factors=(2,), methods=("sparse",), root=data_root), 2, "sparse", 0)
    x = _inputs(8, 40)
    stacked = torch.cat(list(nngp.init_kernels(spec, x, 10, [0, 1, 2], "cpu")))
    alone = torch.cat([next(nngp.init_kernels(spec, x, 10, [s], "cpu")) for s in (0, 1, 2)])
    assert torch.allclose(stacked, alone, atol=1e-6)


def test_dense_reference_estimate_is_close_to_the_closed_form(data_root):
    r = _recipe({"hidden": [8], "parameterization": "ntk", "bias": False}, factors=(4,), root=data_root)
    x, classes = nngp.inputs(r, 24)
    est, name = nngp.reference_kernel(r, x, classes, 64, "cpu", how="dense")
    assert name.startswith("dense f=") and name.endswith("estimate")
    exact = nngp.limit_kernel(x, r.model)
    assert ((est - exact).norm() / exact.norm()) < 0.15


def test_cli_writes_csv_and_plots_with_accuracy_correlation(make_recipe, tmp_path):
    path = make_recipe()  # factors 1, 2 x sparse, dense: three models, each trained 2 epochs
    results = tmp_path / "results"
    r = load_recipe(path)
    specs = expand(r)
    ds = execute_run.dataset(specs[0], CPU)  # loaded once, reused by every run
    for spec in specs:
        run_group([spec], results, CPU, record_failures=False)
        assert execute_run.dataset(spec, CPU) is ds
    res = invoke("kernel", path, "--samples", "32", "--inits", "8", "--results", results)
    assert res.exit_code == 0, res.output
    assert "factor 2 sparse rule proportional" in res.output and "Spearman rho" in res.output
    folder = results / "tiny"
    df = pd.read_csv(folder / "kernel.csv")
    assert len(df) == 3 and set(df["method"]) == {"sparse", "dense"}
    assert {"factor", "method", "rule", "connectivity", "distance", "samples", "inits", "test_accuracy",
            "spearman_rho"} <= set(df.columns)
    assert (df["runs"] == 1).all() and df["test_accuracy"].between(0, 1).all()
    for png in ("kernel_vs_factor.png", "kernel_vs_accuracy.png"):
        assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_factors_option_and_errors(make_recipe, tmp_path):
    path = make_recipe()
    res = invoke("kernel", path, "--factors", "1,3", "--samples", "16", "--inits", "4", "--results", tmp_path)
    assert res.exit_code == 0, res.output
    df = pd.read_csv(tmp_path / "tiny" / "kernel.csv")
    assert sorted(df["factor"].unique()) == [1.0, 3.0]
    assert not (tmp_path / "tiny" / "kernel_vs_accuracy.png").exists()
    bad = invoke("kernel", path, "--samples", "999999", "--results", tmp_path)
    assert bad.exit_code == 2 and "--samples" in bad.output and "inputs" in bad.output
    bad = invoke("kernel", path, "--factors", "1,x", "--results", tmp_path)
    assert bad.exit_code == 2 and "--factors" in bad.output


def test_inputs_are_what_evaluation_feeds_the_model(tmp_path):
    """Official per-batch numerics: the kernel's N test inputs are the first rows of the first
    evaluation batch of 1,000, normalized as a whole (batch-constant pixels +1, as at test time)."""
    from widecli.data import normalize
    from widecli.data.resident import load_dataset

    r = Recipe.model_validate({"name": "k", "data": {"dataset": "mnist5k", "root": str(tmp_path),
                                                     "normalize": "pixelwise_batch_official"},
                               "model": {"hidden": [8]}, "train": {"batch_size": 256}})
    x, classes = nngp.inputs(r, 300, "test")
    ds = load_dataset(r.data)
    expected = normalize.per_batch("pixelwise_batch_official", ds.x_test[:1000], dim=0)[:300]
    assert classes == 10 and torch.equal(x, expected)
    assert (x.reshape(300, -1)[:, 0] == 1).all()                 # a background pixel: +1, not 0
    train, _ = nngp.inputs(r, 300, "train")                    # training-sized batches: 256 + 44 of the next
    assert torch.equal(train[256:], normalize.per_batch("pixelwise_batch_official", ds.x_train[256:512], dim=0)[:44])
    assert (train.reshape(300, -1)[:, 0] == -1).all()
