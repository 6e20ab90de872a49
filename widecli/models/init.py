"""Seeded initialization: layer `name` of run k draws from its own stream (seeds[k], "init", name),
so adding a layer or stacking runs never shifts the numbers drawn elsewhere."""

from __future__ import annotations

import math

import torch
from torch import nn

from widecli.models.layout import is_stacked, weight_modules
from widecli.rng import generator


def initialize(model: nn.Module, seeds: list[int]) -> None:
    """Seeded init of every weight layer of a model holding len(seeds) stacked runs (or one)."""
    for name, m in weight_modules(model):
        gens = [generator(s, "init", name) for s in seeds]
        if is_stacked(m):
            m.reset_parameters(gens)
        else:
            default_init(m, gens[0])


def default_init(m: nn.Module, g: torch.Generator) -> None:
    """PyTorch's default Linear/Conv init (uniform, bound 1/sqrt(fan_in)), from a given generator."""
    fan_in = math.prod(m.weight.shape[1:])
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        m.weight.copy_(torch.empty(m.weight.shape).uniform_(-bound, bound, generator=g))
        if m.bias is not None:
            m.bias.copy_(torch.empty(m.bias.shape).uniform_(-bound, bound, generator=g))
