"""The NNGP kernel at initialization and its distance to the infinite-width kernel (paper Section 3,
Fig. 7; the command `widecli kernel`).

For every planned (factor, method, rule) of a recipe: the empirical kernel K_f(x, x') =
E_init[f(x) . f(x')] / C of the pre-softmax logits on N fixed inputs, estimated over M seeded inits
(each with its own masks, built exactly as training builds them), and its relative Frobenius distance
||K_f - K_inf|| / ||K_inf|| to the infinite-width kernel: the arc-cosine recursion for MLPs (Gauss-
Hermite quadrature for activations other than relu/linear), or for other architectures an estimate
from the widest affordable dense model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from widecli.analysis.plots import plot_kernel_accuracy, plot_kernel_distance
from widecli.config.schema import Recipe, RunSpec
from widecli.data.resident import ResidentBatches, load_dataset
from widecli.errors import RecipeError
from widecli.methods import METHODS, build, plan_weights
from widecli.models.registry import arch
from widecli.store.runs import atomic_write, iter_runs
from widecli.recipes import expand, make_spec

CSV, FACTOR_PNG, ACCURACY_PNG = "kernel.csv", "kernel_vs_factor.png", "kernel_vs_accuracy.png"
CHUNK_FLOATS = 3 * 10**7           # weights of the inits built at once (~120 MB in fp32)
REFERENCE_WEIGHTS = {"cpu": 4 * 10**6, "cuda": 10**8}   # "affordable" dense reference, per init
REFERENCE_SEED = 10**6             # reference inits never share a seed with the measured ones


# --------------------------------------------------------------------------- infinite width (MLP)


def mlp_variances(model_cfg, input_dim: int) -> tuple[float, float]:
    """(sigma_w^2, first-layer sigma_b^2) of widecli's MLP init, as Var(W_ij) = sigma_w^2 / fan_in.

    Weights are drawn at scale s (model.init): normal N(0, s^2) has variance s^2, uniform U(-s, s)
    s^2 / 3. standard: s = 1/sqrt(fan_in) (uniform: PyTorch's default), biases U(-1/sqrt(fan_in), ..),
    variance 1/(3 fan_in); every later layer's bias variance, 1/(3 width), vanishes at infinite
    width. ntk: s = 1 times 1/sqrt(fan_in) in the forward, zero biases.
    """
    ntk = model_cfg.parameterization == "ntk"
    init = model_cfg.init if model_cfg.init != "auto" else ("normal" if ntk else "uniform")
    sw2 = 1.0 if init == "normal" else 1.0 / 3.0
    if ntk:
        return sw2, 0.0
    return sw2, (1.0 / (3.0 * input_dim) if model_cfg.bias else 0.0)


def relu_expectation(k: torch.Tensor) -> torch.Tensor:
    """E[relu(u) relu(v)] for (u, v) ~ N(0, [[k_xx, k_xy], [k_xy, k_yy]]): arc-cosine kernel of
    order 1 (Cho & Saul 2009): sqrt(k_xx k_yy) / (2 pi) * (sin t + (pi - t) cos t), cos t = rho."""
    d = torch.sqrt(torch.diagonal(k))
    norm = d[:, None] * d[None, :]
    theta = torch.arccos(torch.clamp(k / norm, -1.0, 1.0))
    return norm / (2 * math.pi) * (torch.sin(theta) + (math.pi - theta) * torch.cos(theta))


def quadrature_expectation(k: torch.Tensor, act: Callable, degree: int = 48,
                           block: int = 4096) -> torch.Tensor:
    """E[act(u) act(v)] by 2-D Gauss-Hermite quadrature, u = a z1, v = b (rho z1 + sqrt(1-rho^2) z2)."""
    z, w = np.polynomial.hermite_e.hermegauss(degree)   # weight exp(-z^2/2)
    z, w = torch.tensor(z, dtype=k.dtype), torch.tensor(w / math.sqrt(2 * math.pi), dtype=k.dtype)
    z1, z2 = z[:, None], z[None, :]
    w2 = (w[:, None] * w[None, :]).reshape(-1)
    d = torch.sqrt(torch.diagonal(k))
    a, b = (d[:, None].expand_as(k)).reshape(-1), (d[None, :].expand_as(k)).reshape(-1)
    rho = torch.clamp(k.reshape(-1) / (a * b), -1.0, 1.0)
    out = torch.empty_like(rho)
    for i in range(0, rho.numel(), block):  # blocks of pairs keep the (pairs x nodes) grid small
        s = slice(i, i + block)
        u = a[s, None, None] * z1
        v = b[s, None, None] * (rho[s, None, None] * z1 + torch.sqrt(1 - rho[s, None, None] ** 2) * z2)
        out[s] = (act(u) * act(v)).reshape(rho[s].numel(), -1) @ w2
    return out.reshape(k.shape)


# Activations whose infinite-width expectation is computed by quadrature (relu and linear have closed forms).
QUADRATURE_ACTIVATIONS = {"tanh": torch.tanh, "gelu": torch.nn.functional.gelu}


def activation_expectation(k: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "relu":
        return relu_expectation(k)
    if activation == "linear":
        return k.clone()
    if activation in QUADRATURE_ACTIVATIONS:
        return quadrature_expectation(k, QUADRATURE_ACTIVATIONS[activation])
    raise RecipeError(f"model.activation: no infinite-width kernel for {activation!r}; "
                      f"allowed: relu, linear, {', '.join(QUADRATURE_ACTIVATIONS)}")


def limit_kernel(x: torch.Tensor, model_cfg) -> torch.Tensor:
    """The infinite-width NNGP kernel of widecli's MLP on inputs x [N, ...] (float64, [N, N]).

    K_1 = sigma_w^2 x.x'/d + sigma_b^2, then once per hidden layer K <- sigma_w^2 E[phi(u) phi(v)].
    """
    x = x.reshape(len(x), -1).double()
    sw2, sb2 = mlp_variances(model_cfg, x.shape[1])
    k = sw2 * (x @ x.T) / x.shape[1] + sb2
    for _ in model_cfg.hidden:
        k = sw2 * activation_expectation(k, model_cfg.activation)
    return k


# --------------------------------------------------------------------------- finite width (Monte Carlo)


@dataclass
class KernelEstimate:
    """The distances of one model's kernel to a reference, over M inits."""

    mean: torch.Tensor          # K_f: the Monte Carlo mean kernel [N, N]
    distance: float             # ||K_f - K_inf|| / ||K_inf||, K_f averaged over M inits
    expected_distance: float    # unbiased estimate of ||E K_f - K_inf|| / ||K_inf|| (M -> infinity)
    init_distance: float        # mean over inits of one network's ||K_m - K_inf|| / ||K_inf||


def init_kernels(spec: RunSpec, x: torch.Tensor, num_classes: int, seeds: list[int], device):
    """Yield [k, N, N] batches of per-init kernels f f^T / C, one init per seed (masks included)."""
    shape = tuple(x.shape[1:])
    per_init = max(plan_weights(spec, shape, num_classes).dense_weights, 1)
    chunk = max(1, CHUNK_FLOATS // per_init) if arch(spec.model).stackable else 1
    for i in range(0, len(seeds), chunk):
        group = [spec.model_copy(update={"seed": s}) for s in seeds[i:i + chunk]]
        model = build(group, shape, num_classes, device).model.eval()  # eval: BN uses its init stats
        with torch.no_grad():
            f = model(x).float()
        f = f if f.dim() == 3 else f.unsqueeze(0)
        yield (f @ f.transpose(1, 2)).double() / num_classes


def monte_carlo_kernel(spec: RunSpec, x: torch.Tensor, num_classes: int, seeds: list[int],
             reference: torch.Tensor, device="cpu") -> KernelEstimate:
    """Monte Carlo kernel of `spec` over one init per seed and its distances to `reference`."""
    ref = reference.to(device)
    total, sq, norms = torch.zeros_like(ref), 0.0, 0.0
    for k in init_kernels(spec, x.to(device), num_classes, seeds, device):
        diff = k - ref
        total += diff.sum(0)
        per = diff.flatten(1).norm(dim=1)
        sq, norms = sq + float((per ** 2).sum()), norms + float(per.sum())
    m, scale = len(seeds), float(ref.norm())
    # sum_{m != m'} <D_m, D_m'> / (M (M-1)) is an unbiased estimate of ||E K - K_inf||^2.
    cross = (float(total.norm()) ** 2 - sq) / (m * (m - 1)) if m > 1 else float("nan")
    return KernelEstimate((total / m + ref).cpu(), float(total.norm()) / m / scale,
                          math.sqrt(max(cross, 0.0)) / scale, norms / m / scale)


# --------------------------------------------------------------------------- the study


def kernel_specs(recipe: Recipe) -> list[RunSpec]:
    """One spec per (factor, method, rule, sweep point): the recipe's grid without its seeds."""
    out: dict[str, RunSpec] = {}
    for s in expand(recipe):
        out.setdefault(s.stack_key(), s)
    return list(out.values())


def inputs(recipe: Recipe, samples: int, split: str = "test") -> tuple[torch.Tensor, int]:
    """The first `samples` inputs of a split exactly as evaluation feeds them to the model, and the
    number of classes. (Per-batch normalization: each evaluation batch by itself - batches of 1,000
    of the test split, training-sized batches of the training split - so the kernel sees what the
    model sees; with the official numerics, +1 or -1 on batch-constant pixels.)"""
    ds = load_dataset(recipe.data)
    if samples > len(ds.split(split)[1]):
        raise RecipeError(f"--samples: got {samples}; the {split} split of {recipe.data.dataset} has "
                          f"{len(ds.split(split)[1])} inputs")
    source = ResidentBatches(ds, [recipe.seeds[0]], recipe.train.batch_size, False, lambda i: i)
    first, got = [], 0
    for x, _ in source.eval_batches(split):
        first.append(x)
        got += len(x)
        if got >= samples:
            break
    return torch.cat(first)[:samples], ds.num_classes


def reference_factor(recipe: Recipe, x: torch.Tensor, num_classes: int, device) -> float:
    """The widest dense model the machine can afford: the recipe's largest factor times 8, 4, 2 or 1."""
    limit = REFERENCE_WEIGHTS["cuda" if torch.device(device).type == "cuda" else "cpu"]
    top = max(recipe.widen.factors)
    for mult in (8, 4, 2, 1):
        spec = make_spec(recipe, top * mult, "dense", 0)
        if plan_weights(spec, tuple(x.shape[1:]), num_classes).dense_weights <= limit:
            return top * mult
    return top


def reference_kernel(recipe: Recipe, x: torch.Tensor, num_classes: int, inits: int, device,
                     how: str = "auto", factor: float | None = None) -> tuple[torch.Tensor, str]:
    """K_inf and a description: the closed form for MLPs, else the mean kernel of a wide dense model."""
    if how == "auto":
        how = "closed_form" if recipe.model.arch == "mlp" else "dense"
    if how == "closed_form":
        if recipe.model.arch != "mlp":
            raise RecipeError(f"--reference closed_form: only for model.arch mlp (got "
                              f"{recipe.model.arch!r}); use --reference dense")
        return limit_kernel(x, recipe.model), "closed_form"
    if how != "dense":
        raise RecipeError(f"--reference: unknown {how!r}; allowed: auto, closed_form, dense")
    f = factor or reference_factor(recipe, x, num_classes, device)
    spec = make_spec(recipe, f, "dense", 0)
    seeds = [REFERENCE_SEED + i for i in range(inits)]
    k = sum(kk.sum(0).cpu() for kk in init_kernels(spec, x.to(device), num_classes, seeds, device))
    return k / inits, f"dense f={f:g} estimate"


def method_uses_sparsity(spec: RunSpec) -> bool:
    return spec.factor > 1 and METHODS.get(spec.method).uses_sparsity


def analyze(recipe: Recipe, samples: int = 256, inits: int = 128, device="cpu", seed: int | None = None,
            reference: str = "auto", reference_factor_: float | None = None, split: str = "test",
            on_row: Callable[[dict], None] | None = None,
            on_reference: Callable[[str], None] | None = None) -> pd.DataFrame:
    """The kernel table of a recipe: one row per (factor, method, rule, sweep point)."""
    if inits < 2 or samples < 2:
        raise RecipeError(f"--inits/--samples: need at least 2 (got inits={inits}, samples={samples})")
    x, classes = inputs(recipe, samples, split)
    ref, ref_name = reference_kernel(recipe, x, classes, inits, device, reference, reference_factor_)
    if on_reference:
        on_reference(ref_name)
    first = recipe.seeds[0] if seed is None else seed
    seeds = list(range(first, first + inits))  # seed s is the init (and masks) of the run with seed s
    rows = []
    for spec in kernel_specs(recipe):
        p = plan_weights(spec, tuple(x.shape[1:]), classes)
        est = monte_carlo_kernel(spec, x, classes, seeds, ref, device)
        row = {"factor": spec.factor, "method": spec.method,
               "rule": spec.sparsity.rule if method_uses_sparsity(spec) else "-",
               "connectivity": p.connectivity, "nonzeros": p.nonzeros,
               "widths": ",".join(str(w) for w in p.widths.values()),
               "distance": est.distance, "expected_distance": est.expected_distance,
               "init_distance": est.init_distance, "samples": samples, "inits": inits,
               "split": split, "reference": ref_name, "stack_key": spec.stack_key()}
        row.update({f"axis:{k}": v for k, v in spec.axes.items()})
        rows.append(row)
        if on_row:
            on_row(row)
    return pd.DataFrame(rows)


def attach_accuracy(df: pd.DataFrame, results: str | Path, recipe_name: str) -> pd.DataFrame:
    """Add the number of finished ok runs of each row and their mean final test/train accuracy."""
    runs = pd.DataFrame([{"stack_key": RunSpec.model_validate(r["spec"]).stack_key(),
                          "test_accuracy": r["final"]["test_accuracy"],
                          "train_accuracy": r["final"].get("train_accuracy", math.nan)}
                         for r in iter_runs(results, [recipe_name]) if r.get("status") == "ok"],
                        columns=["stack_key", "test_accuracy", "train_accuracy"])
    acc = runs.groupby("stack_key").agg(runs=("test_accuracy", "size"), test_accuracy=("test_accuracy", "mean"),
                                        train_accuracy=("train_accuracy", "mean"))
    df = df.join(acc, on="stack_key")
    df["runs"] = df["runs"].fillna(0).astype(int)
    return df


def spearman(df: pd.DataFrame) -> tuple[float, float, int]:
    """Spearman rho and p-value of distance vs test accuracy over rows with finished runs."""
    from scipy.stats import spearmanr  # lazy: scipy.stats takes ~0.5 s to import

    d = df.dropna(subset=["test_accuracy"])
    if len(d) < 3 or d["test_accuracy"].nunique() < 2:
        return math.nan, math.nan, len(d)
    res = spearmanr(d["distance"], d["test_accuracy"])
    return float(res.statistic), float(res.pvalue), len(d)


# --------------------------------------------------------------------------- output


def write(df: pd.DataFrame, results: str | Path, recipe_name: str) -> dict[str, object]:
    """kernel.csv, the distance-vs-factor PNG and, with finished runs, distance vs accuracy."""
    folder = Path(results) / recipe_name
    df = attach_accuracy(df, results, recipe_name)
    rho, p, n = spearman(df)
    df = df.assign(spearman_rho=rho, spearman_p=p).drop(columns=["stack_key"])
    written = {"csv": folder / CSV, "factor_png": folder / FACTOR_PNG}
    atomic_write(written["csv"], df.to_csv(index=False).encode())
    atomic_write(written["factor_png"], plot_kernel_distance(df, recipe_name))
    if n:
        written["accuracy_png"] = folder / ACCURACY_PNG
        atomic_write(written["accuracy_png"], plot_kernel_accuracy(df, recipe_name, rho))
    return {"paths": written, "spearman": (rho, p, n), "table": df}
