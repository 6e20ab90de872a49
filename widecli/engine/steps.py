"""Training steps: one call trains on one batch (forward, loss, backward, update, masks enforced).

Every step has one interface, `losses, logits = step(x [K, B, ...], y [K, B], global_batch)`, where
`global_batch` is the size of the whole batch across ranks (this rank holds B of it; the loss is
scaled so that DDP's gradient average is the mean over the global batch):
  - AutogradStep: any model, any precision, DDP; the loss of K stacked runs is summed, whose
    gradient w.r.t. each run's weights is that run's own gradient.
  - FusedStep, SparseFusedStep (engine.fused): plain fp32 MLPs without autograd.
  - MaskUpdateStep: wraps either under dynamic masks (SET, RigL).
Masks are enforced after every update, so neither momentum nor weight decay can revive a pruned weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from widecli.engine.dist import Single
from widecli.engine.stack import Stack
from widecli.sparsity.dynamic import MaskUpdater
from widecli.sparsity.masks import MaskEnforcer


class AutogradStep:
    """forward -> cross-entropy -> backward -> optimizer step -> masks, for any model."""

    def __init__(self, model: nn.Module, forward: nn.Module, opt: torch.optim.Optimizer,
                 enforcer: MaskEnforcer, stack: Stack, amp, dist: Single):
        self.model, self.forward, self.opt, self.enforcer = model, forward, opt, enforcer
        self.stack, self.amp, self.dist = stack, amp, dist

    def __call__(self, x: torch.Tensor, y: torch.Tensor, global_batch: int,
                 update: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        k, b = y.shape
        with self.amp:
            out = self.stack.forward(self.forward, x)
        losses = F.cross_entropy(out.float().flatten(0, 1), y.flatten(), reduction="none").view(k, b).mean(1)
        self.opt.zero_grad(set_to_none=True)
        # The sum's gradient w.r.t. each run's weights is that run's own gradient.
        (losses.sum() * self.dist.grad_scale(b, global_batch)).backward()
        if update:  # not on a mask-update step (sparsity.dynamic): its gradient only grows connections
            self.opt.step()
            self.enforcer.apply()
        return losses, out


class MaskUpdateStep:
    """A step under dynamic masks (SET, RigL; sparsity.dynamic): on a mask-update step the inner step
    computes the gradients without updating the weights (as RigL's optimizer), then the masks drop
    and grow; every other step is the inner step itself. Works with AutogradStep and the fused steps (engine.fused): both
    leave the dense gradient of every masked weight in `.grad`."""

    def __init__(self, inner, updater: MaskUpdater):
        self.inner, self.updater = inner, updater

    def __call__(self, x: torch.Tensor, y: torch.Tensor, global_batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        due = self.updater.due()
        losses, out = self.inner(x, y, global_batch, update=not due)
        if due:
            self.updater.update()
        self.updater.advance()
        return losses, out
