"""Evaluation: mean loss and accuracy of every stacked run on a split, from any batch source."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from widecli.engine.dist import Single
from widecli.engine.stack import Stack


@torch.no_grad()
def evaluate(model: nn.Module, source, split: str, stack: Stack, amp, dist: Single) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss and accuracy per run ([K] tensors on the CPU), in eval mode, summed over ranks.

    `source` yields this rank's share of the split as (x [B, ...], y [B]) (data.resident or
    data.stream); every run sees the same inputs."""
    model.eval()
    device = next(model.parameters()).device
    loss_sum = torch.zeros(stack.k, device=device)
    correct = torch.zeros(stack.k, device=device)
    for x, y in source.eval_batches(split):
        with amp:
            out = stack.forward_shared(model, x).float()
        yk = y.unsqueeze(0).expand(stack.k, -1)
        # Classes in dim 1: CPU log_softmax over a contiguous last dim of 10 is ~10x slower.
        loss_sum += F.cross_entropy(out.transpose(1, 2).contiguous(), yk, reduction="none").sum(1)
        correct += (out.argmax(-1) == yk).sum(1)
    dist.all_reduce(loss_sum, correct)
    n = source.eval_size(split)
    return (loss_sum / n).cpu(), (correct / n).cpu()
