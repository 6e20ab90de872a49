"""The typed schema of a recipe and of a RunSpec (one fully resolved run).

Validated by pydantic with extra="forbid". The names a recipe uses (data set, architecture, rule,
mask family, methods, layer names) are checked against the Catalog that validation is handed
(`config.catalog`; `widecli.recipes` hands it the registries), so this module imports no registry
and every layer can name RunSpec. Without a catalog (a stored RunSpec read back) names are not
checked. Loading and error wording live in `config.load`, expansion into RunSpecs in
`config.expand`, the run id in `config.identity`.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from widecli.config import identity
from widecli.errors import RecipeError

# pixelwise_batch_official repeats MNIST's own global Normalize: meaningful for MNIST digits only.
OFFICIAL_DATASETS = ("mnist", "mnist5k")


def _catalog(info: ValidationInfo):
    """The Catalog this validation checks names against (config.load passes it); None: unchecked."""
    return (info.context or {}).get("catalog")


def _known(info: ValidationInfo, key: str, name: str, keep_key: bool = False) -> str:
    """`name` if the catalog knows it under `key`, else a ValueError saying what is allowed (without
    the key, which config.load adds; keep_key: for whole-recipe checks, whose message names it)."""
    catalog = _catalog(info)
    if catalog is not None:
        try:
            catalog.check(key, name)
        except RecipeError as e:
            raise ValueError(str(e) if keep_key else str(e).split(": ", 1)[-1]) from None
    return name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DataConfig(_Strict):
    dataset: str = Field(description="data set name (widecli.data.registry), or module:function")
    root: str = Field("~/.cache/widecli", description="folder where data sets are read/downloaded")
    download: bool = Field(True, description="download torchvision data sets if missing")
    subset: int | None = Field(None, ge=1, description="use only this many training examples")
    path: str | None = Field(None, description="npz file (dataset: npz) with x_train, y_train, x_test, y_test")
    subset_draw: Literal["fixed", "seed"] = Field(
        "fixed", description="fixed: the same data.subset for every run; seed: drawn with the run's seed "
                             "(the official MLP code's protocol; such runs do not stack)")
    validation: int | None = Field(
        None, ge=1, description="hold this many training-side images out as a validation split, evaluated "
                                "every epoch; reports then choose the best widening factor by it (mnist5k: "
                                "taken from its 2,952 non-training digits, so training keeps 2,048)")
    normalize: Literal["standard", "pixelwise", "pixelwise_batch_official", "pixelwise_batch_zero", "none"] = Field(
        "standard", description="standard: per-channel mean/std of the training set; pixelwise: per-pixel "
                                "mean/std of the training set; pixelwise_batch_official: each batch by its own "
                                "per-pixel statistics exactly as the official MLP code computes them (global "
                                "MNIST Normalize first, numpy float32: batch-constant pixels become -1 in "
                                "training batches of 256 and +1 in test batches of 1,000); "
                                "pixelwise_batch_zero: the same on raw pixels, batch-constant pixels become 0 "
                                "(what the code meant). Per-batch variants evaluate in batches of 1,000")

    @field_validator("normalize", mode="before")
    @classmethod
    def _renamed(cls, v):
        if v == "pixelwise_batch":
            raise ValueError("pixelwise_batch was split in two: pixelwise_batch_official (what the official "
                             "MLP code computes: batch-constant pixels become +-1) or pixelwise_batch_zero "
                             "(batch-constant pixels become 0)")
        return v

    @model_validator(mode="after")
    def _official_is_mnist(self) -> "DataConfig":
        if self.normalize == "pixelwise_batch_official" and self.dataset not in OFFICIAL_DATASETS:
            raise ValueError(f"data.normalize: pixelwise_batch_official repeats the official MNIST loader "
                             f"(Normalize((0.1307,), (0.3081,)) first); allowed with data.dataset "
                             f"{' or '.join(OFFICIAL_DATASETS)}, not {self.dataset}; use pixelwise_batch_zero")
        return self

    pipeline: Literal["auto", "device", "stream"] = Field(
        "auto", description="device: whole data set resident on the device; stream: DataLoader workers")
    workers: int = Field(4, ge=0, description="DataLoader worker processes for the stream pipeline")


class ModelConfig(_Strict):
    arch: str = Field("mlp", description="model architecture (widecli.models.registry), or module:Class")
    hidden: list[int] = Field([256], description="mlp: hidden layer widths (fc1..fcL)")
    activation: Literal["relu", "tanh", "gelu", "linear"] = Field("relu", description="mlp nonlinearity")
    bias: bool = Field(True, description="mlp: layers have biases (never masked)")
    parameterization: Literal["standard", "ntk"] = Field(
        "standard", description="mlp: standard, or NTK-style (1/sqrt(fan_in) in the forward, weights of scale 1)")
    init: Literal["auto", "normal", "uniform"] = Field(
        "auto", description="mlp weights at scale s (ntk 1, standard 1/sqrt(fan_in)): N(0, s^2) or U(-s, s); "
                            "auto: normal for ntk, uniform for standard (official NTK code: uniform)")
    width: int = Field(16, ge=1, le=2**31 - 1, description="convnets: channels of the first conv (stages k, 2k, 4k, 8k)")
    batchnorm: bool = Field(True, description="cnn: BatchNorm after each conv")

    @field_validator("hidden")
    @classmethod
    def _hidden(cls, v: list[int]) -> list[int]:
        if not v or any(h < 1 or h > MAX_WIDTH for h in v):
            raise ValueError(f"must be a non-empty list of integers from 1 to {MAX_WIDTH:,}")
        return v

    @model_validator(mode="after")
    def _init_is_mlp(self) -> "ModelConfig":
        if self.init != "auto" and self.arch != "mlp":
            raise ValueError(f"model.init: {self.init!r} applies to the mlp's layers only; {self.arch} layers "
                             f"use PyTorch's default init (leave model.init at auto)")
        return self


class WidenConfig(_Strict):
    layers: Union[Literal["first", "last", "all"], list[str]] = Field(
        "first", description="which hidden layers widen: first | last | all | list of layer names")
    factors: list[float] = Field([1.0], description="widening factors f >= 1 (1 is the baseline)")
    methods: list[str] = Field(["sparse", "dense"], description="how the wide model meets the budget (widecli.methods)")
    per_factor: dict[str, dict[float, Any]] = Field(
        {}, description="values tied to the widening factor: {dotted.key: {factor: value}} for every planned "
                        "factor, e.g. {train.lr: {1: 5, 4: 136}} (per-width learning rates)")
    per_method_factor: dict[str, dict[str, dict[float, Any]]] = Field(
        {}, description="the same for one method, over per_factor: {method: {dotted.key: {factor: value}}} "
                        "for every planned factor > 1 (factor 1 is the shared dense baseline)")

    @field_validator("factors")
    @classmethod
    def _factors(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("must be a non-empty list of numbers >= 1")
        bad = [f for f in v if f < 1]
        if bad:
            raise ValueError(f"every factor must be >= 1 (got {bad[0]})")
        if len(set(v)) != len(v):
            raise ValueError("factors must not repeat")
        return v

    @field_validator("per_factor", "per_method_factor")
    @classmethod
    def _finite_values(cls, v: dict, info) -> dict:
        bad = _non_finite(v)
        if bad:
            raise ValueError(f"widen.{info.field_name}.{bad[0]}: got {bad[1]}; must be a finite number")
        return v

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: list[str], info: ValidationInfo) -> list[str]:
        if not v:
            catalog = _catalog(info)
            raise ValueError(f"must be a non-empty list of {', '.join(catalog.names('widen.methods'))}"
                             if catalog else "must be a non-empty list of methods")
        if len(set(v)) != len(v):
            raise ValueError("methods must not repeat")
        for m in v:
            _known(info, "widen.methods", m)
        return v

    @field_validator("layers")
    @classmethod
    def _layers(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("must be first, last, all or a non-empty list of layer names")
        if isinstance(v, list) and len(set(v)) != len(v):
            raise ValueError("layer names must not repeat")
        return v


class SparsityConfig(_Strict):
    rule: str = Field("proportional", description="how removed weights are spread over layers (widecli.sparsity.rules)")
    connectivity: dict[str, float] = Field({}, description="custom rule: per-layer connectivity in (0, 1]")
    scope: Literal["all", "widened"] = Field("all", description="which weight layers may be masked")
    init: Literal["fan_in", "standard"] = Field(
        "fan_in", description="fan_in: init std scaled by 1/sqrt(connectivity) (official code); standard")
    granularity: Literal["weight", "kernel"] = Field(
        "weight", description="kernel: convs keep or remove whole kxk kernels (official io_only; mask random only)")
    # Mask families (issue 29): the rule says how many weights each layer keeps, the family which.
    mask: str = Field(
        "random", description="which weights each layer keeps, at exactly the rule's count: random (the paper's "
                              "static random masks) | snip | synflow | set | rigl | \"N:M\" (e.g. \"2:4\": at most N "
                              "of every M consecutive input weights) (widecli.sparsity.families). set and rigl "
                              "change the mask during training: they train dense masked weights (train.backend "
                              "auto falls back to dense; sparse is refused) with the fused and stacked steps")
    snip_batches: int = Field(1, ge=1, le=10_000, description="snip: training batches the connection sensitivity "
                                                               "|g*w| is summed over (SNIP: one)")
    synflow_iterations: int = Field(100, ge=1, le=10_000, description="synflow: pruning iterations "
                                                                       "(exponential schedule; SynFlow: 100)")
    update_every: int = Field(100, ge=1, description="set, rigl: training steps between mask updates (RigL: 100)")
    drop_fraction: float = Field(0.3, gt=0, le=1, description="set, rigl: fraction of each layer's kept weights "
                                                               "swapped at the first update, decayed by a cosine "
                                                               "to 0 at update_end (RigL: 0.3)")
    update_end: float = Field(0.75, gt=0, le=1, description="set, rigl: fraction of the training steps after "
                                                             "which the mask stays fixed (RigL: 0.75)")

    @field_validator("rule")
    @classmethod
    def _rule(cls, v: str, info: ValidationInfo) -> str:
        return _known(info, "sparsity.rule", v)

    @field_validator("mask", mode="before")
    @classmethod
    def _mask_not_a_number(cls, v):
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            digits = []
            while v:
                v, d = divmod(v, 60)
                digits.insert(0, str(d))
            # YAML 1.1 (PyYAML) reads an unquoted 2:4 as the base-60 integer 124.
            raise ValueError(f"an N:M pattern must be quoted (\"{':'.join(digits)}\"): unquoted, YAML reads "
                             f"{':'.join(digits)} as this base-60 number")
        return v

    @field_validator("mask")
    @classmethod
    def _mask(cls, v: str, info: ValidationInfo) -> str:
        return _known(info, "sparsity.mask", v)

    @field_validator("connectivity")
    @classmethod
    def _conn(cls, v: dict[str, float]) -> dict[str, float]:
        for name, c in v.items():
            if not 0 < c <= 1:
                raise ValueError(f"connectivity of {name} must be in (0, 1] (got {c})")
        return v


class TrainConfig(_Strict):
    epochs: int = Field(10, ge=1, description="training epochs")
    batch_size: int = Field(128, ge=1, description="examples per step")
    optimizer: Literal["sgd", "adam", "adamw"] = Field("sgd", description="optimizer")
    lr: float = Field(0.01, gt=0, description="peak learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (0: plain SGD, as the official MLP)")
    nesterov: bool = Field(False, description="Nesterov momentum")
    weight_decay: float = Field(0.0, ge=0, description="L2 weight decay")
    schedule: Literal["constant", "cosine", "step"] = Field("cosine", description="learning-rate schedule")
    milestones: list[int] = Field([], description="step schedule: epochs where lr is multiplied by gamma")
    gamma: float = Field(0.1, gt=0, description="step schedule factor")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 autocast on CUDA, fp32 on CPU")
    augment: bool = Field(False, description="random crop + flip on the device (image data)")
    stack: Literal["auto", "off"] = Field("auto", description="train runs differing only in seed as one model")
    backend: Literal["auto", "dense", "sparse"] = Field("auto", description="masked dense or sparse weights")
    fused: Literal["auto", "off"] = Field(
        "auto", description="auto: plain fp32 MLPs train with the fused no-autograd step (engine/fused.py)")
    compile: bool = Field(False, description="torch.compile the model (CUDA)")
    gpus: int = Field(1, ge=1, description="GPUs per run (torch.distributed data parallel when > 1)")
    checkpoint_every: int = Field(0, ge=0, description="save a resumable checkpoint every K epochs (0: never)")

    @field_validator("stack", "fused", mode="before")
    @classmethod
    def _yaml_off(cls, v):
        # YAML 1.1 reads a bare `off` as false.
        return "off" if v is False else v


class Recipe(_Strict):
    name: str = Field(description="study name; results go to results/<name>/")
    data: DataConfig
    model: ModelConfig = ModelConfig()
    widen: WidenConfig = WidenConfig()
    sparsity: SparsityConfig = SparsityConfig()
    train: TrainConfig = TrainConfig()
    seeds: list[int] = Field([0], description="random seeds (init, masks, data order)")
    sweep: dict[str, list[Any]] = Field({}, description="extra grid axes on dotted keys, e.g. train.lr")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError("must be letters, digits, '_', '-' or '.' (it names a results folder)")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("must be a non-empty list of integers")
        if len(set(v)) != len(v):
            raise ValueError("seeds must not repeat")
        return v

    @field_validator("sweep")
    @classmethod
    def _sweep(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if key in GRID_KEYS:
                raise ValueError(f"sweep.{key}: {key} is already a grid axis; list its values there")
            if not values:
                raise ValueError(f"sweep.{key}: an axis needs a non-empty list of values")
            canon = [json.dumps(x, sort_keys=True, default=str) for x in values]
            if len(set(canon)) != len(canon):
                raise ValueError(f"sweep.{key}: got {json.dumps(values, default=str)}; values must not repeat")
        return v

    @model_validator(mode="after")
    def _per_factor_covers_the_grid(self, info: ValidationInfo) -> "Recipe":
        tables = [(f"widen.per_factor.{k}", k, t, self.widen.factors) for k, t in self.widen.per_factor.items()]
        for method, keyed in self.widen.per_method_factor.items():
            try:
                _known(info, "widen.methods", method)
            except ValueError as e:
                raise ValueError(f"widen.per_method_factor.{method}: {e}") from None
            if method not in self.widen.methods:
                continue  # a narrowed grid (--set widen.methods=[sparse]): config.effects warns
            wide = [f for f in self.widen.factors if f != 1]
            tables += [(f"widen.per_method_factor.{method}.{k}", k, t, wide) for k, t in keyed.items()]
        for where, key, table, factors in tables:
            if key in GRID_KEYS or key.split(".")[0] in ("name", "widen", "seeds", "sweep"):
                raise ValueError(f"{where}: {key} cannot depend on the factor; allowed: keys of data, model, "
                                 f"sparsity and train")
            if key in self.sweep:
                raise ValueError(f"{where}: {key} is also a sweep axis; give it in one place")
            missing = [f for f in factors if float(f) not in table]
            if missing:
                raise ValueError(f"{where}: no value for factor {missing[0]:g}; every factor in widen.factors "
                                 f"({', '.join(f'{f:g}' for f in factors)}) needs one")
        return self

    @model_validator(mode="after")
    def _layers_exist(self, info: ValidationInfo) -> "Recipe":
        catalog = _catalog(info)
        if catalog is None:
            return self
        _known(info, "model.arch", self.model.arch, keep_key=True)  # the message names its key
        _known(info, "data.dataset", self.data.dataset, keep_key=True)
        units = catalog.units(self.model)
        for f in self.widen.factors:
            name, w = max(units.items(), key=lambda kv: kv[1])
            if f * w > MAX_WIDTH:
                raise ValueError(f"widen.factors: factor {f:g} makes {name} {f * w:.3g} units wide; no layer "
                                 f"can be built wider than {MAX_WIDTH:,} (and far less fits in memory: "
                                 f"`widecli check` estimates it)")
        widenable = list(units)
        if isinstance(self.widen.layers, list):
            for name in self.widen.layers:
                if name not in widenable:
                    raise ValueError(f"widen.layers: unknown layer {name!r}{_did_you_mean(name, widenable)}; "
                                     f"allowed: first, last, all or any of {', '.join(widenable)}")
        return self


def _non_finite(v: Any, where: str = "") -> tuple[str, float] | None:
    """(dotted place, value) of the first nan/inf in a nested value, or None."""
    if isinstance(v, float) and not math.isfinite(v):
        return where, v
    items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
    for k, x in items:
        found = _non_finite(x, f"{where}.{k:g}" if isinstance(k, float) else f"{where}.{k}".lstrip("."))
        if found:
            return found
    return None


GRID_KEYS = ("widen.factors", "widen.methods", "seeds")
MAX_WIDTH = 2**31 - 1  # int32 indexing in the kernels; the memory preflight refuses far smaller models


def _did_you_mean(name: str, allowed) -> str:
    hint = difflib.get_close_matches(name, list(allowed), n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


class RunSpec(_Strict):
    """One fully resolved training run. Frozen and machine independent; its hash is the run id."""

    recipe: str
    data: DataConfig
    model: ModelConfig
    widen_layers: Union[str, list[str]]
    factor: float
    method: str
    sparsity: SparsityConfig
    train: TrainConfig
    seed: int
    axes: dict[str, Any] = {}

    def identity(self) -> dict[str, Any]:
        return identity.identity(self)

    @property
    def run_id(self) -> str:
        return identity.run_id(self)

    def stack_key(self) -> str:
        """Runs with equal stack keys differ only in seed and may train as one stacked model."""
        return identity.stack_key(self)
