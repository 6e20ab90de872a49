"""Mask families: WHICH weights a masked layer keeps; the rule (sparsity.rules) says HOW MANY.

  random   uniformly random, fixed at init: the paper's static random sparsity (masks.make_masks)
  snip     pruning at init on data: connection sensitivity |dL/dw * w| summed over training batches
           of the dense initialized model (Lee et al. 2019, "SNIP")
  synflow  pruning at init without data: iterative synaptic flow |dR/dw * w|, R the output sum of the
           linearized (|w|) network on an all-ones input, pruned over `synflow_iterations` rounds on an
           exponential schedule (Tanaka et al. 2020; ganguli-lab/Synaptic-Flow)
  set      dynamic: random at init; during training drop the smallest magnitudes, regrow at random
           (Mocanu et al. 2018); see sparsity.dynamic
  rigl     dynamic: random at init; drop the smallest magnitudes, regrow the largest dense gradients
           (Evci et al. 2020)
  "N:M"    at most N kept weights in every M consecutive input weights of a row (NVIDIA's 2:4 pattern),
           random within the pattern

Every family keeps exactly counts[layer] weights in every layer: the scoring papers rank globally
(and so pick the per-layer counts themselves); here the counts are the rule's, so each family meets
the budget layer by layer and only *which* weights are kept differs. Ties are broken by a seeded
random key (the run's seed, "tiebreak", layer): the masks are a pure function of the seed.
MASKS is the registry (entry point group `widecli.masks`, or `sparsity.mask: module:attr`).
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from widecli.config.schema import RunSpec
from widecli.errors import BudgetError, RecipeError
from widecli.models.layout import is_stacked, weight_modules
from widecli.registry import Registry
from widecli.rng import generator
from widecli.sparsity.masks import make_masks

NM = re.compile(r"(\d+):(\d+)")

# --------------------------------------------------------------------------- pure selection


def top_k(scores: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
    """Boolean mask (shape of `scores`) of the k highest scores; ties go to a seeded random order.

    The entries are visited in a random permutation drawn from `g` and sorted stably, so equal
    scores keep the permutation's order: a deterministic tie-break from the run's seed. NaN ranks last."""
    flat = torch.nan_to_num(scores.detach().reshape(-1).double(), nan=-math.inf)
    perm = torch.randperm(flat.numel(), generator=g).to(flat.device)
    order = torch.sort(flat[perm], descending=True, stable=True).indices
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    mask[perm[order[:k]]] = True
    return mask.view(scores.shape)


def nm_groups(shape: tuple[int, ...]) -> tuple[int, int]:
    """(groups, M-free size) layout of a weight for the N:M pattern: the input dimension (dim 1)
    is cut into groups of M consecutive weights, per output unit (and per kernel position)."""
    return math.prod(shape) // shape[1], shape[1]


def _to_rows(t: torch.Tensor) -> torch.Tensor:
    """[out, in, *k] -> [out * prod(k), in]: each row one (output, kernel position)'s inputs."""
    return t.movedim(1, -1).reshape(-1, t.shape[1])


def _from_rows(rows: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    moved = (shape[0], *shape[2:], shape[1])
    return rows.reshape(moved).movedim(-1, 1)


def nm_problem(shape: tuple[int, ...], count: int, n: int, m: int) -> str | None:
    """Why a layer of `shape` keeping `count` weights cannot carry the N:M pattern (None: it can).

    Precise rule: the layer's inputs per output (dim 1: in-features, or input channels of a conv)
    divide by M, and count <= size * N / M. At count == size * N / M every group keeps exactly N;
    below, the groups' counts differ by at most one (balanced), each at most N. A layer the rule
    keeps whole (count == size) is dense and carries no mask pattern."""
    size = math.prod(shape)
    if count >= size:
        return None
    if len(shape) < 2 or shape[1] % m:
        return f"its {shape[1] if len(shape) > 1 else 1} inputs per output are not divisible by M = {m}"
    if count * m > size * n:
        return f"it keeps {count:,} of {size:,} weights (connectivity {count / size:.3g} > N/M = {n / m:.3g})"
    return None


def nm_mask(shape: tuple[int, ...], count: int, n: int, m: int, g: torch.Generator) -> torch.Tensor:
    """A mask with exactly `count` ones and at most n in every group of m consecutive inputs
    (nm_problem must be None). Which groups get one more (when count is not a multiple of the
    number of groups) and which positions within a group are kept are drawn from `g`."""
    size = math.prod(shape)
    if count >= size:
        return torch.ones(shape, dtype=torch.bool)
    rows = size // shape[1]
    groups = rows * (shape[1] // m)
    base, extra = divmod(count, groups)
    per_group = torch.full((groups,), base, dtype=torch.long)
    per_group[torch.randperm(groups, generator=g)[:extra]] += 1
    rank = torch.rand(groups, m, generator=g).argsort(1).argsort(1)   # a random order within each group
    keep = rank < per_group[:, None]
    return _from_rows(keep.reshape(rows, shape[1]), shape)


def nm_satisfied(mask: torch.Tensor, n: int, m: int) -> bool:
    """Whether every group of m consecutive inputs of every row keeps at most n weights (a dense
    mask passes: it carries no pattern)."""
    if bool(mask.all()):
        return True
    rows = _to_rows(mask)
    return bool((rows.reshape(rows.shape[0], -1, m).sum(-1) <= n).all())


# --------------------------------------------------------------------------- scores on a model


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[K, B, classes] from a [K, B, ...] batch: stacked models take it whole, others one run's."""
    if any(is_stacked(m) for m in model.modules()):
        return model(x)
    return model(x[0])[None]


def _per_run(t: torch.Tensor, stacked: bool) -> torch.Tensor:
    return t if stacked else t.unsqueeze(0)


def snip_scores(model: torch.nn.Module, names: list[str],
                batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """|dL/dw * w| per weight of each named layer, [K, *shape], on the dense model as initialized
    (a copy, in training mode, as the first step sees it); gradients summed over the batches."""
    probe = copy.deepcopy(model).train()
    layers = dict(weight_modules(probe))
    for x, y in batches:
        probe.to(x.device)
        out = _logits(probe, x)
        k, b = y.shape
        # The sum over runs: each run's weights get that run's own gradient (engine.steps).
        F.cross_entropy(out.float().flatten(0, 1), y.flatten(), reduction="none").view(k, b).mean(1).sum().backward()
    scores = {}
    for n in names:
        w = layers[n].weight
        grad = w.grad if w.grad is not None else torch.zeros_like(w)
        scores[n] = _per_run((grad * w).abs().detach().cpu(), is_stacked(layers[n]))
    return scores


def synflow_masks(model: torch.nn.Module, counts: dict[str, int], seeds: list[int], input_shape,
                  iterations: int) -> list[dict[str, torch.Tensor]]:
    """SynFlow's iterative pruning, each layer to exactly counts[layer] on an exponential schedule.

    As ganguli-lab/Synaptic-Flow: eval mode, every parameter and buffer replaced by its absolute
    value, an all-ones input, R = sum of the outputs, score |dR/dw * w|, the layer pruned to
    size * (count/size)^(t/T) after round t (here per layer, so the last round meets the count
    exactly); float64, since R is a product over the layers' weights."""
    probe = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for t in probe.state_dict().values():
            if t.is_floating_point():
                t.abs_()
    layers = {n: m for n, m in weight_modules(probe) if n in counts}
    start = {n: m.weight.detach().clone() for n, m in layers.items()}
    k = len(seeds)
    masks = {n: torch.ones_like(_per_run(m.weight, is_stacked(m)), dtype=torch.bool) for n, m in layers.items()}
    x = torch.ones(k, 1, *input_shape, dtype=torch.float64)
    for t in range(1, iterations + 1):
        with torch.no_grad():
            for n, m in layers.items():
                m.weight.copy_(start[n] * masks[n].view(m.weight.shape))
        probe.zero_grad(set_to_none=True)
        _logits(probe, x).sum().backward()
        for n, m in layers.items():
            size = masks[n][0].numel()
            keep = max(counts[n], round(size * (counts[n] / size) ** (t / iterations)))
            score = _per_run((m.weight.grad * m.weight).abs().detach(), is_stacked(m))
            score = torch.where(masks[n], score, torch.full_like(score, -1.0))  # pruned stay pruned
            masks[n] = torch.stack([top_k(score[j], keep, generator(s, "tiebreak", n, str(t)))
                                    for j, s in enumerate(seeds)])
    return [{n: masks[n][j] for n in layers} for j in range(k)]


# --------------------------------------------------------------------------- the families


Batches = Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]]   # n -> the first n training batches


@dataclass(frozen=True)
class MaskFamily:
    """Random masks, fixed at init. A family answers: may these counts carry it (check), what each
    run's mask is at step 0 (initial), and whether the mask changes during training (dynamic)."""

    name: str
    dynamic: bool = False          # the mask changes during training (sparsity.dynamic)
    needs_data: bool = False       # the initial mask is scored on training batches
    grow: str = ""                 # dynamic: "random" (SET) or "gradient" (RigL)
    scored: bool = False           # the initial mask depends on the initialized model (snip, synflow)

    def check(self, shapes: dict[str, tuple[int, ...]], counts: dict[str, int], spec: RunSpec) -> None:
        """Raise BudgetError (naming sparsity.mask) where the planned counts cannot carry the family."""
        if spec.sparsity.granularity != "weight" and self.name != "random":
            raise BudgetError(f"sparsity.granularity: kernel applies to sparsity.mask random only, not "
                              f"{self.name!r}")

    def initial(self, shapes: dict[str, tuple[int, ...]], counts: dict[str, int], specs: list[RunSpec],
                model: torch.nn.Module | None = None, input_shape=None,
                batches: Batches | None = None) -> list[dict[str, torch.Tensor]]:
        """Each run's masks at step 0 (one dict per spec, exactly counts[layer] ones per layer)."""
        return [make_masks(shapes, counts, s.seed, s.sparsity.granularity) for s in specs]


class Snip(MaskFamily):
    def initial(self, shapes, counts, specs: list[RunSpec], model=None, input_shape=None, batches=None):
        if batches is None:  # e.g. `widecli kernel`: models at init without the training data
            raise RecipeError("sparsity.mask: snip chooses its masks on training batches, which this command "
                              "does not load; use random, synflow or N:M masks here")
        scores = snip_scores(model, list(shapes), batches(specs[0].sparsity.snip_batches))
        return [{n: top_k(scores[n][j], counts[n], generator(s.seed, "tiebreak", n)) for n in shapes}
                for j, s in enumerate(specs)]


class SynFlow(MaskFamily):
    def initial(self, shapes, counts, specs: list[RunSpec], model=None, input_shape=None, batches=None):
        return synflow_masks(model, {n: counts[n] for n in shapes}, [s.seed for s in specs], input_shape,
                             specs[0].sparsity.synflow_iterations)


@dataclass(frozen=True)
class NMFamily(MaskFamily):
    n: int = 2
    m: int = 4

    def check(self, shapes, counts, spec: RunSpec) -> None:
        super().check(shapes, counts, spec)
        for name, shape in shapes.items():
            why = nm_problem(shape, counts[name], self.n, self.m)
            if why:
                raise BudgetError(
                    f"sparsity.mask: {self.name!r} does not fit {name} at factor {spec.factor:g} (rule "
                    f"{spec.sparsity.rule}): {why}; N:M needs every layer the rule thins at connectivity "
                    f"<= N/M with inputs per output divisible by M: choose other widen.factors, rule or N:M, "
                    f"or mask random")

    def initial(self, shapes, counts, specs: list[RunSpec], model=None, input_shape=None, batches=None):
        return [{n: nm_mask(shape, counts[n], self.n, self.m, generator(s.seed, "mask", n))
                 for n, shape in shapes.items()} for s in specs]


def _adapt(name: str, obj) -> MaskFamily:
    """A user's family: a MaskFamily instance, or a class of one (instantiated with its name)."""
    family_ = obj(name) if isinstance(obj, type) else obj
    if not callable(getattr(family_, "initial", None)):
        raise RecipeError(f"sparsity.mask: {name!r} is not a mask family (it needs initial(), check() "
                          f"and the dynamic/needs_data flags of widecli.sparsity.families.MaskFamily)")
    return family_


MASKS: Registry[MaskFamily] = Registry("masks", "sparsity.mask", _adapt)
MASKS.add("random", MaskFamily("random"))
MASKS.add("snip", Snip("snip", needs_data=True, scored=True))
MASKS.add("synflow", SynFlow("synflow", scored=True))
MASKS.add("set", MaskFamily("set", dynamic=True, grow="random"))
MASKS.add("rigl", MaskFamily("rigl", dynamic=True, grow="gradient"))


def family(name: str) -> MaskFamily:
    """The family named `name`: a registered one, or "N:M" with 1 <= N < M; RecipeError otherwise."""
    hit = NM.fullmatch(str(name))
    if hit:
        n, m = int(hit.group(1)), int(hit.group(2))
        if not 1 <= n < m <= 1024:
            raise RecipeError(f"sparsity.mask: {name!r} is not a valid N:M pattern; allowed: 1 <= N < M <= 1024, "
                              f"e.g. \"2:4\"")
        return NMFamily(name, n=n, m=m)
    try:
        return MASKS.get(name)
    except RecipeError as e:
        raise RecipeError(f"{e}, or \"N:M\" (e.g. \"2:4\")") from None
