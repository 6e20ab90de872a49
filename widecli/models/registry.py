"""Model registry: `model.arch` -> an Arch, the one protocol every model follows.

An Arch declares its widenable *units* (name -> baseline width, in order: `widen.layers: first`
is the first) and builds an nn.Module for given per-unit widths. Layer names are the names of the
weight modules in `named_modules()`; masks, budgets and reports key on them.

Built-ins: mlp, cnn, resnet18, resnet18_imagenet. A user's model is any callable (usually an
nn.Module class) with a `units` dict, taking (widths, input_shape, num_classes):

    class MyNet(nn.Module):
        units = {"hidden": 64}                      # widenable units and their baseline widths
        def __init__(self, widths, input_shape, num_classes):
            ...                                     # widths["hidden"] is round(f * 64) when widened

named in a recipe as `model.arch: mypkg.nets:MyNet`, or registered under a short name through the
entry point group `widecli.models`. It supports the bottleneck methods if it also accepts the
keyword arguments `ranks` (layer name -> inner width) and `rank_nonlinear`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from widecli.config.schema import ModelConfig
from widecli.errors import RecipeError
from widecli.models import cnn, mlp, resnet, resnet_imagenet
from widecli.models.stacked_conv import stack_convnet
from widecli.registry import Registry


@dataclass(frozen=True)
class Arch:
    """A model family: its units (`units(cfg)`) and its builder.

    build(cfg, widths, input_shape, num_classes, stack=1, ranks=None, rank_nonlinear=False).
    stackable: K seeds can train as one model (`build(..., stack=K)`).
    grouped: they stack as grouped convolutions (models.stacked_conv): run j's own state is the
    stacked state's slice j, without a stack dimension (an MLP's keeps one: slice j:j+1).
    bottlenecks: the builder accepts `ranks` (the bottleneck methods can factor its layers)."""

    name: str
    units: Callable[[ModelConfig], dict[str, int]]
    build: Callable[..., nn.Module]
    stackable: bool = False
    bottlenecks: bool = True
    grouped: bool = False


def _builtin(name: str, module, stackable: bool = False, grouped: bool = False) -> Arch:
    """grouped: a convnet whose K seeds stack through grouped convolutions (models.stacked_conv)."""
    def build(cfg: ModelConfig, widths, input_shape, num_classes, stack: int = 1, ranks=None, rank_nonlinear=False):
        if grouped:
            model = module.build(cfg, widths, input_shape, num_classes, ranks=ranks, rank_nonlinear=rank_nonlinear)
            if stack > 1:
                if ranks:
                    raise RecipeError(f"model.arch: {name} with bottleneck layers cannot train stacked; "
                                      f"set train.stack: off")
                stack_convnet(model, stack)
            return model
        kw = {"stack": stack} if stackable else {}
        return module.build(cfg, widths, input_shape, num_classes, ranks=ranks,
                            rank_nonlinear=rank_nonlinear, **kw)
    return Arch(name, module.base_widths, build, stackable or grouped, grouped=grouped)


def user_model(name: str, factory: Any) -> Arch:
    """Adapt a user's model class or factory (see the module docstring) to the Arch protocol."""
    if isinstance(factory, Arch):
        return factory
    units = getattr(factory, "units", None)
    if not callable(factory) or not isinstance(units, dict) or not units or not all(
            isinstance(k, str) and isinstance(v, int) and v >= 1 for k, v in units.items()):
        raise RecipeError(f"model.arch: {name!r} is not a widecli model: it must be callable as "
                          f"(widths, input_shape, num_classes) and have a `units` dict of unit name -> "
                          f"baseline width (positive int)")
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    takes_ranks = "ranks" in params
    # A convnet opts in to stacked seeds by naming its classifier (models.stacked_conv).
    classifier = getattr(factory, "stack_classifier", None)

    def build(cfg: ModelConfig, widths, input_shape, num_classes, stack: int = 1, ranks=None, rank_nonlinear=False):
        if ranks and not takes_ranks:
            raise RecipeError(f"widen.methods: model {name!r} does not accept `ranks`, so the bottleneck "
                              f"methods cannot factor its layers; use sparse or dense")
        kw = {"ranks": ranks, "rank_nonlinear": rank_nonlinear} if takes_ranks else {}
        model = factory(dict(widths), tuple(input_shape), num_classes, **kw)
        if not isinstance(model, nn.Module):
            raise RecipeError(f"model.arch: {name!r} returned {type(model).__name__}, not an nn.Module")
        if stack > 1:
            try:
                stack_convnet(model, stack, classifier)
            except ValueError as e:
                raise RecipeError(f"model.arch: {name!r} cannot train stacked seeds ({e}); set train.stack: off "
                                  f"or remove its stack_classifier") from None
        return model
    return Arch(name, lambda cfg: dict(units), build, stackable=classifier is not None, bottlenecks=takes_ranks,
                grouped=classifier is not None)


ARCHS: Registry[Arch] = Registry("models", "model.arch", user_model)
ARCHS.add("mlp", _builtin("mlp", mlp, stackable=True))
ARCHS.add("cnn", _builtin("cnn", cnn, grouped=True))
ARCHS.add("resnet18", _builtin("resnet18", resnet, grouped=True))
ARCHS.add("resnet18_imagenet", _builtin("resnet18_imagenet", resnet_imagenet, grouped=True))


def arch(cfg: ModelConfig) -> Arch:
    return ARCHS.get(cfg.arch)


def widenable_layers(cfg: ModelConfig) -> list[str]:
    return list(arch(cfg).units(cfg))


def base_widths(cfg: ModelConfig) -> dict[str, int]:
    return dict(arch(cfg).units(cfg))


def build(cfg: ModelConfig, widths, input_shape, num_classes, **kw) -> nn.Module:
    return arch(cfg).build(cfg, widths, input_shape, num_classes, **kw)
