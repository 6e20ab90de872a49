"""The stacking dimension: how the loop sees K runs in one model, or one run in a plain model."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Stack:
    """The stacking dimension: K runs in one model with a stack dimension (MLPs), or one run in a
    plain model, seen by the loop alike as [K, B, ...] -> [K, B, classes]."""

    k: int
    stacked: bool
    squeeze: bool = False        # run j's solo state is state[j] (grouped convnets), not state[j:j+1] (MLPs)
    channels_last: bool = False  # the model was converted to NHWC (CUDA convnets): image batches follow

    def forward(self, forward: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Logits [K, B, C] of a training batch [K, B, ...]."""
        return forward(x) if self.stacked else forward(self.layout(x[0]))[None]

    def forward_shared(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Logits [K, B, C] of one batch [B, ...] shown to every run (evaluation)."""
        if self.stacked:
            return model(x.unsqueeze(0).expand(self.k, *x.shape))
        return model(self.layout(x))[None]

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        """An image batch in channels_last where the model is (a plain model's batch [B, C, H, W])."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def slice_state(self, model: nn.Module, j: int) -> dict:
        """State dict of run j alone (stacked tensors keep a leading dimension of 1)."""
        return {n: self._slice(t, j).detach().cpu().clone() for n, t in model.state_dict().items()}

    def slice_masks(self, masks: dict[str, torch.Tensor], j: int) -> dict[str, torch.Tensor]:
        return {n: self._slice(m, j).cpu() for n, m in masks.items()}

    def _slice(self, t: torch.Tensor, j: int) -> torch.Tensor:
        if not self.stacked:
            return t
        if self.squeeze:
            return t[j] if t.dim() > 0 else t  # num_batches_tracked: shared, the runs step together
        return t[j:j + 1]
