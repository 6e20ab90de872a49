"""Model registry: architecture name -> module with the model interface.

Each architecture module provides
  widenable_layers(cfg) -> [name]          hidden layers that `widen.layers` may select, in order
  base_widths(cfg) -> {name: width}        baseline units/channels of each widenable layer
  build(cfg, widths, input_shape, num_classes, stack=1, ranks=None, rank_nonlinear=False) -> nn.Module
with stable layer names (the names of the weight modules in `named_modules()`). Convnets take no
`stack` (only models with a `stack` attribute train stacked).
"""

from widecli.models import cnn, mlp, resnet, resnet_imagenet

ARCHS = {"mlp": mlp, "resnet18": resnet, "cnn": cnn}
ARCHS["resnet18_imagenet"] = resnet_imagenet  # issue 13


def arch(cfg):
    return ARCHS[cfg.arch]


def widenable_layers(cfg) -> list[str]:
    return arch(cfg).widenable_layers(cfg)


def base_widths(cfg) -> dict[str, int]:
    return arch(cfg).base_widths(cfg)


def build(cfg, widths, input_shape, num_classes, **kw):
    return arch(cfg).build(cfg, widths, input_shape, num_classes, **kw)
