"""Allocation rules: how many weights each maskable layer keeps at a budget. Pure functions: numbers
in, numbers out; no I/O, no global state.

Words (DESIGN.md): the *budget* N is the baseline's weight count; a wider model with D dense weights
keeps N of them; a *rule* decides how many each maskable layer keeps; *connectivity* = kept / size.
A rule is a function (sizes, keep, shapes=, connectivity=) -> per-layer counts; RULES is its
registry (entry point group `widecli.rules`, or `sparsity.rule: module:function`).
"""

from __future__ import annotations

import math
import numbers

from widecli.errors import BudgetError
from widecli.registry import Registry, user_function

# --------------------------------------------------------------------------- allocation


def allocate(rule: str, shapes: dict[str, tuple[int, ...]], keep: int,
             connectivity: dict[str, float] | None = None) -> dict[str, int]:
    """How many weights each layer keeps, summing to `keep` exactly.

    shapes: per-layer weight shapes of the maskable layers; keep: total nonzeros to keep.
    """
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    total = sum(sizes.values())
    if not 0 < keep <= total:
        raise BudgetError(f"sparsity: cannot keep {keep} of {total} maskable weights; the budget "
                          f"must be between 1 and the wide model's weights")
    counts = RULES.get(rule)(sizes, keep, shapes=shapes, connectivity=connectivity or {})
    if sum(counts.values()) != keep or any(not 0 <= counts.get(n, -1) <= sizes[n] for n in sizes):
        raise BudgetError(f"sparsity.rule: rule {rule!r} kept {sum(counts.values())} weights, not the "
                          f"budget's {keep}, or a layer count outside [0, size]: {counts}")
    return counts


def _proportional(sizes, keep, **_) -> dict[str, int]:
    """The paper's rule: every layer keeps the same connectivity keep/total."""
    total = sum(sizes.values())
    return _round_exact({n: s * keep / total for n, s in sizes.items()}, sizes, keep)


def _leveling(sizes, keep, **_) -> dict[str, int]:
    """Appendix D: remove from the largest layer until it equals the next largest, then from both
    equally, and so on. The kept counts are a water level: keep_l = min(size_l, L)."""
    return _waterfill(sizes, keep)


def _uniform(sizes, keep, **_) -> dict[str, int]:
    """Remove the same number of weights from every layer (small layers empty first)."""
    removed = _waterfill(sizes, sum(sizes.values()) - keep)
    return {n: sizes[n] - removed[n] for n in sizes}


def _erk(sizes, keep, shapes, **_) -> dict[str, int]:
    """Erdos-Renyi-Kernel (RigL, Evci et al. 2020): density_l proportional to sum(shape)/prod(shape),
    scaled so the total is `keep`; layers that would exceed density 1 stay dense."""
    raw = {n: sum(shapes[n]) / sizes[n] for n in sizes}
    dense: set[str] = set()
    while True:
        free = keep - sum(sizes[n] for n in dense)
        scale = free / sum(raw[n] * sizes[n] for n in sizes if n not in dense)
        over = {n for n in sizes if n not in dense and raw[n] * scale > 1}
        if not over:
            break
        dense |= over
    target = {n: float(sizes[n]) if n in dense else raw[n] * scale * sizes[n] for n in sizes}
    return _round_exact(target, sizes, keep)


def _custom(sizes, keep, connectivity, **_) -> dict[str, int]:
    """User connectivity for some layers; the others share the remaining budget proportionally.

    A key names a layer or a group of layers by prefix (`layer1` sets every layer1.* conv); the
    longest matching key wins."""
    given = {}
    for key in connectivity:
        hits = [n for n in sizes if n == key or n.startswith(key + ".")]
        if not hits:
            raise BudgetError(f"sparsity.connectivity: {key!r} is not a maskable layer or prefix; "
                              f"allowed: {', '.join(sizes)}")
        for n in hits:
            if n not in given or len(key) > len(given[n]):
                given[n] = key
    fixed = {n: round(connectivity[key] * sizes[n]) for n, key in given.items()}
    rest = {n: s for n, s in sizes.items() if n not in fixed}
    left = keep - sum(fixed.values())
    if not rest:
        if left != 0:
            raise BudgetError(f"sparsity.connectivity: connectivities for every layer keep "
                              f"{sum(fixed.values())} weights but the budget is {keep}; leave one "
                              f"layer out so it absorbs the rest")
        return fixed
    if not 0 < left <= sum(rest.values()):
        given = ", ".join(f"{k}={c}" for k, c in connectivity.items())
        raise BudgetError(f"sparsity.connectivity: {given} leaves {left} weights for "
                          f"{', '.join(rest)} ({sum(rest.values())} weights); the budget {keep} "
                          f"is not reachable with these connectivities")
    return {**fixed, **_proportional(rest, left)}


RULES: Registry = Registry("rules", "sparsity.rule", user_function(
    "sparsity.rule", "rule", "rule(sizes, keep, shapes=..., connectivity=...) -> {layer: weights kept}",
    returns=lambda r: isinstance(r, dict) and all(isinstance(v, numbers.Integral) for v in r.values())))
for _name, _rule in {"proportional": _proportional, "leveling": _leveling, "erk": _erk,
                     "uniform": _uniform, "custom": _custom}.items():
    RULES.add(_name, _rule)


def _round_exact(target: dict[str, float], sizes: dict[str, int], total: int) -> dict[str, int]:
    """Integer counts near `target` summing to `total` (largest remainder), each within [0, size]."""
    counts = {n: min(sizes[n], math.floor(t)) for n, t in target.items()}
    short = total - sum(counts.values())
    order = sorted(target, key=lambda n: (-(target[n] - math.floor(target[n])), -sizes[n], n))
    while short > 0:
        progressed = False
        for n in order:
            if short and counts[n] < sizes[n]:
                counts[n] += 1
                short -= 1
                progressed = True
        if not progressed:
            break
    return counts


def _waterfill(sizes: dict[str, int], total: int) -> dict[str, int]:
    """alloc_l = min(size_l, L) with sum(alloc) == total; ties broken toward the largest layers."""
    order = sorted(sizes, key=lambda n: (sizes[n], n))
    alloc: dict[str, int] = {}
    remaining = total
    for i, name in enumerate(order):
        left = len(order) - i
        if sizes[name] * left <= remaining:
            alloc[name] = sizes[name]
            remaining -= sizes[name]
            continue
        rest = order[i:]
        base, extra = divmod(remaining, len(rest))
        for j, n in enumerate(reversed(rest)):
            alloc[n] = base + (1 if j < extra else 0)
        break
    return alloc


def to_whole_conv_kernels(counts: dict[str, int], shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """Conv-kernel granularity: round each conv's count down to whole kh*kw kernels, then hand the
    shortfall back in whole units (kernels, or single weights of linear layers) to the layers with
    the largest remainders. What is left is under one kernel; the plan reports it as budget_gap."""
    units = {n: math.prod(s[2:]) if len(s) > 2 else 1 for n, s in shapes.items()}
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    out = {n: c - c % units[n] for n, c in counts.items()}
    short = sum(counts.values()) - sum(out.values())
    for n in sorted(counts, key=lambda n: (-(counts[n] % units[n]), units[n], n)):
        if short >= units[n] and out[n] < counts[n] and out[n] + units[n] <= sizes[n]:
            out[n] += units[n]   # round this layer up instead of down
            short -= units[n]
    for n in sorted(counts, key=lambda n: (units[n], n)):   # still short: fill with any room left
        extra = min(short // units[n], (sizes[n] - out[n]) // units[n])
        out[n] += extra * units[n]
        short -= extra * units[n]
    return out
