"""Dynamic sparse training (SET, RigL): drop by magnitude, grow by gradient (RigL) or at random
(SET), each layer's count exactly unchanged, new connections initialized as the papers say."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from widecli.models.mlp import StackedLinear
from widecli.rng import generator
from widecli.sparsity.dynamic import MaskUpdater, drop_fraction_at, regrow
from widecli.sparsity.masks import MaskEnforcer


def count(mask: torch.Tensor) -> int:
    return sum(1 for v in mask.flatten().tolist() if v)


def test_drop_fraction_decays_by_a_cosine_to_zero():
    assert drop_fraction_at(0.3, 0, 100) == pytest.approx(0.3)
    assert drop_fraction_at(0.3, 50, 100) == pytest.approx(0.15)
    assert drop_fraction_at(0.3, 100, 100) == pytest.approx(0.0)
    assert drop_fraction_at(0.3, 150, 100) == pytest.approx(0.0)


def test_regrow_drops_the_smallest_magnitudes_and_grows_the_largest_scores():
    mask = torch.tensor([True, True, True, True, False, False, False, False])
    weight = torch.tensor([0.5, -0.1, 2.0, 0.05, 0.0, 0.0, 0.0, 0.0])
    score = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.1, 3.0, 0.2, 5.0])
    new = regrow(mask, weight, score, 2, generator(0))
    # dropped: -0.1 and 0.05 (smallest |w|); grown: positions 7 (5.0) and 5 (3.0)
    assert new.tolist() == [True, False, True, False, False, True, False, True]
    assert count(new) == count(mask)


def test_regrow_may_grow_back_what_it_dropped_and_keeps_the_count():
    mask = torch.tensor([True, True, False])
    weight = torch.tensor([1.0, 0.01, 0.0])
    new = regrow(mask, weight, torch.tensor([0.0, 10.0, 1.0]), 1, generator(0))
    assert new.tolist() == [True, True, False]  # RigL: a dropped weight with the best gradient returns


@pytest.mark.parametrize("seed", range(5))
def test_regrow_keeps_the_count_exactly_with_ties_everywhere(seed):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(50, 40, generator=g) < 0.1
    weight = torch.zeros(50, 40)                     # every magnitude tied
    score = torch.zeros(50, 40)                      # every gradient tied (dead inputs)
    a = regrow(mask, weight, score, 30, generator(seed, "r"))
    b = regrow(mask, weight, score, 30, generator(seed, "r"))
    assert count(a) == count(mask) and torch.equal(a, b)


def make(grow: str, init: str = "fan_in"):
    torch.manual_seed(0)
    layer = StackedLinear(20, 10, stack=2)
    layer.reset_parameters([generator(s, "init", "fc") for s in (0, 1)])
    model = torch.nn.Sequential()
    model.add_module("fc", layer)
    masks = {"fc": torch.stack([torch.rand(10, 20, generator=generator(s, "m")) < 0.3 for s in (0, 1)])}
    with torch.no_grad():
        layer.weight.mul_(masks["fc"])
    enforcer = MaskEnforcer(model, masks)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    cfg = SimpleNamespace(update_every=2, drop_fraction=0.5, update_end=1.0)
    updater = MaskUpdater(model, masks, enforcer, opt, [0, 1], cfg, grow, total_steps=10,
                          init_scale={"fc": 2.0})
    return layer, masks, enforcer, opt, updater


def one_step(layer, opt, enforcer):
    opt.zero_grad()
    layer(torch.randn(2, 8, 20)).pow(2).sum().backward()
    opt.step()
    enforcer.apply()


@pytest.mark.parametrize("grow", ["gradient", "random"])
def test_updater_swaps_at_exact_counts_and_inits_new_connections(grow):
    layer, masks, enforcer, opt, updater = make(grow)
    before = [count(m) for m in masks["fc"]]
    one_step(layer, opt, enforcer)                      # momentum buffers everywhere, masked ones too
    assert not updater.due()                            # step 1 of every 2
    updater.advance()
    assert updater.due()
    old = masks["fc"].clone()
    layer.weight.grad = torch.randn_like(layer.weight)  # the dense gradient a step left
    updater.update()
    grown = masks["fc"] & ~old
    assert [count(m) for m in masks["fc"]] == before    # exactly the same count per run
    assert grown.any() and (old & ~masks["fc"]).any()
    new_w = layer.weight[grown]
    if grow == "gradient":
        assert (new_w == 0).all()                       # RigL: new connections start at zero
    else:
        assert (new_w != 0).all()                       # SET: new random weights
        bound = 2.0 * 1.0 / math.sqrt(20)               # the layer's own init U(+-1/sqrt(fan_in)) x scale
        assert new_w.abs().max() <= bound
    momentum = opt.state[layer.weight]["momentum_buffer"]
    assert (momentum[grown] == 0).all()                 # no stale momentum on a new connection
    assert not bool(((layer.weight != 0) & ~masks["fc"]).any())
    assert torch.equal(enforcer.masks[0].bool(), masks["fc"])   # the enforcer holds the new masks
    assert updater.moved()["fc"].gt(0).all()


def test_gradient_growth_picks_the_largest_gradients_of_each_run():
    layer, masks, enforcer, opt, updater = make("gradient")
    old = masks["fc"].clone()
    grad = torch.zeros_like(layer.weight)
    free = (~old[1]).nonzero()[:3]
    for r, c in free.tolist():
        grad[1, r, c] = 100.0                           # run 1: three outstanding gradients
    layer.weight.grad = grad
    updater.step = 1
    updater.update()
    for r, c in free.tolist():
        assert masks["fc"][1, r, c]


def test_no_update_after_update_end():
    layer, masks, enforcer, opt, updater = make("gradient")
    updater.end = 4
    due = []
    for _ in range(10):
        due.append(updater.due())
        updater.advance()
    assert due == [False, True, False, True, False, False, False, False, False, False]


def test_state_dict_round_trip_restores_masks_and_counters():
    layer, masks, enforcer, opt, updater = make("gradient")
    layer.weight.grad = torch.randn_like(layer.weight)
    updater.step = 1
    updater.update()
    updater.advance()
    state, current = updater.state_dict(), {n: m.clone() for n, m in masks.items()}
    layer2, masks2, enforcer2, opt2, fresh = make("gradient")
    fresh.load_state_dict(state, current)
    assert fresh.step == 2 and fresh.updates == 1
    assert torch.equal(masks2["fc"], current["fc"]) and torch.equal(enforcer2.masks[0].bool(), current["fc"])
    assert torch.equal(fresh.initial["fc"], updater.initial["fc"])


def test_a_mask_update_step_replaces_the_weight_update():
    """As RigL's optimizer: on an update step the inner step only computes gradients (update=False)."""
    from widecli.engine.steps import MaskUpdateStep

    calls = []

    def inner(x, y, global_batch, update=True):
        calls.append(update)
        return torch.zeros(1), torch.zeros(1, 1, 2)
    updated = []
    updater = SimpleNamespace(step=0, due=lambda: (updater.step + 1) % 3 == 0,
                              update=lambda: updated.append(updater.step))
    updater.advance = lambda: setattr(updater, "step", updater.step + 1)
    step = MaskUpdateStep(inner, updater)
    for _ in range(6):
        step(None, None, 1)
    assert calls == [True, True, False, True, True, False] and updated == [2, 5]
