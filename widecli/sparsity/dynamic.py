"""Dynamic sparse training (SET, RigL): the mask changes during training, each layer's count never.

Every `update_every` training steps until `update_end` of the training steps, each masked layer of
each run swaps n = floor(f_t * kept) of its kept weights (RigL, Evci et al. 2020, Algorithm 1):
  drop  the n kept weights of smallest magnitude;
  grow  n positions among those not kept after the drop: the largest |dense gradient| of the
        current batch (rigl), or uniformly at random (set, Mocanu et al. 2018);
  f_t = drop_fraction / 2 * (1 + cos(pi * t / t_end))   (RigL's cosine decay, used for both).
A position dropped and grown again is not new (RigL's `new_connections`). New connections start at
zero with zeroed optimizer state for rigl (RigL's `grow_init: zeros` and momentum reset); for set at
a fresh draw from the layer's own initialization (SET: "new random weights"), optimizer state zeroed.
As RigL's optimizer, a mask-update step replaces that step's weight update (the step's gradient is
only used to grow). Ties (equal magnitudes, equal gradients: e.g. the zero gradients of inputs that
are always 0) go to a seeded random order (seed, "regrow", layer, step): the masks are a pure
function of the seed, and a run resumed from a checkpoint redraws nothing it already drew.

The masks are dense [out, in, ...] booleans (stacked [K, ...] for K seeds trained as one model):
dynamic masks train dense masked weights; the CSR backend (a fixed pattern) is never used with them.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from widecli.config.schema import SparsityConfig
from widecli.models.init import default_init
from widecli.models.layout import is_stacked, weight_modules
from widecli.rng import generator
from widecli.sparsity.families import top_k
from widecli.sparsity.masks import MaskEnforcer


def drop_fraction_at(initial: float, step: int, end: int) -> float:
    """RigL's cosine decay of the swapped fraction: `initial` at step 0, 0 at step `end`."""
    return initial / 2 * (1 + math.cos(math.pi * min(step, end) / end)) if end > 0 else 0.0


def regrow(mask: torch.Tensor, weight: torch.Tensor, grow_score: torch.Tensor, n: int,
           g: torch.Generator) -> torch.Tensor:
    """The new mask of one layer of one run: drop the n kept weights of smallest |weight|, grow the
    n highest grow_score among the positions not kept after the drop. Exactly mask.sum() ones."""
    kept = int(mask.sum())
    n = min(n, kept)
    magnitude = weight.detach().abs().to(torch.float64)
    keep = top_k(torch.where(mask, magnitude, torch.full_like(magnitude, -1.0)), kept - n, g)
    grow = top_k(torch.where(keep, torch.full_like(grow_score, -1.0), grow_score), n, g)
    return keep | grow


def fresh_init(module: nn.Module, seeds: list[int], *tags: str) -> torch.Tensor:
    """A new draw of a layer's weights from its own initialization (per run: seeds[k])."""
    probe = copy.deepcopy(module)
    gens = [generator(s, *tags) for s in seeds]
    if is_stacked(probe):
        probe.reset_parameters(gens)
    else:
        default_init(probe, gens[0])
    return probe.weight.detach()


class MaskUpdater:
    """The masks of one (stacked) model under SET or RigL: `due()` says whether the coming step
    updates them, `update()` does it, `advance()` counts the step. The bool masks and the enforcer's
    float masks are changed in place (the checkpoint and the enforcer hold the same tensors)."""

    def __init__(self, model: nn.Module, masks: dict[str, torch.Tensor], enforcer: MaskEnforcer,
                 opt: torch.optim.Optimizer, seeds: list[int], cfg: SparsityConfig, grow: str, total_steps: int,
                 init_scale: dict[str, float]):
        self.layers = [(n, m) for n, m in weight_modules(model) if n in masks]
        self.masks, self.enforcer, self.opt, self.seeds = masks, enforcer, opt, seeds
        self.every, self.fraction, self.grow = cfg.update_every, cfg.drop_fraction, grow
        self.end = math.floor(cfg.update_end * total_steps)
        self.init_scale = init_scale      # set: the fan_in rescale a layer's init had (sparsity.init)
        self.step = 0                     # training steps taken
        self.updates = 0                  # mask updates made
        self.initial = {n: m.detach().clone() for n, m in masks.items()}

    def due(self) -> bool:
        t = self.step + 1
        return t % self.every == 0 and t <= self.end

    def advance(self) -> None:
        self.step += 1

    @torch.no_grad()
    def update(self) -> None:
        """Drop and grow in every masked layer of every run (after the step's backward, before any update)."""
        t = self.step + 1
        f = drop_fraction_at(self.fraction, t, self.end)
        for name, module in self.layers:
            stacked = is_stacked(module)
            w = module.weight if stacked else module.weight.unsqueeze(0)
            grad = module.weight.grad if module.weight.grad is not None else torch.zeros_like(module.weight)
            grad = grad if stacked else grad.unsqueeze(0)
            mask = self.masks[name] if stacked else self.masks[name].unsqueeze(0)
            fresh = None
            if self.grow == "random":
                fresh = fresh_init(module, self.seeds, "set-grow", name, str(t)).to(w.device)
                fresh = (fresh if stacked else fresh.unsqueeze(0)) * self.init_scale.get(name, 1.0)
            state = [s for s in self.opt.state.get(module.weight, {}).values()
                     if torch.is_tensor(s) and s.shape == module.weight.shape]
            for j, seed in enumerate(self.seeds):
                n = math.floor(f * int(mask[j].sum()))
                if n == 0:
                    continue
                g = generator(seed, "regrow", name, str(t))
                score = (grad[j].abs() if self.grow == "gradient"
                         else torch.rand(mask[j].shape, generator=g, dtype=torch.float64).to(w.device))
                new = regrow(mask[j], w[j], score, n, g)
                grown = new & ~mask[j]
                mask[j].copy_(new)
                w[j][grown] = 0.0 if fresh is None else fresh[j][grown]
                for s in state:
                    (s if stacked else s.unsqueeze(0))[j][grown] = 0.0
            self.enforcer.set(name, self.masks[name])
        self.enforcer.apply()
        self.updates += 1

    def moved(self) -> dict[str, torch.Tensor]:
        """Per layer, per run [K]: the fraction of the kept positions that were not kept at step 0."""
        out = {}
        for name, module in self.layers:
            now, start = self.masks[name], self.initial[name]
            if not is_stacked(module):
                now, start = now.unsqueeze(0), start.unsqueeze(0)
            kept = now.flatten(1).sum(1).clamp(min=1)
            out[name] = ((now & ~start).flatten(1).sum(1) / kept).cpu()
        return out

    def state_dict(self) -> dict:
        return {"step": self.step, "updates": self.updates, "initial": {n: m.cpu() for n, m in self.initial.items()}}

    def load_state_dict(self, state: dict, masks: dict[str, torch.Tensor]) -> None:
        """Resume: the step counters, the initial masks and the current (changed) masks."""
        self.step, self.updates = int(state["step"]), int(state["updates"])
        for n, m in self.masks.items():
            self.initial[n].copy_(state["initial"][n].to(m.device))
            m.copy_(masks[n].to(m.device))
            self.enforcer.set(n, m)
