"""Recipes: the typed schema of a study, YAML loading, --set overrides and expansion into RunSpecs.

A recipe is validated by pydantic with extra="forbid"; every error becomes one RecipeError line
naming the file, the dotted key, the value and what is allowed. `expand()` turns a recipe into the
grid factors x methods x seeds x sweep axes of frozen, machine-independent RunSpecs.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Any, Literal, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from widecli.errors import RecipeError

Method = Literal["sparse", "dense", "linear_bottleneck", "nonlinear_bottleneck"]
Rule = Literal["proportional", "leveling", "erk", "uniform", "custom"]
METHODS: tuple[str, ...] = get_args(Method)
RULES: tuple[str, ...] = get_args(Rule)

# Keys that choose *how* a run is executed, not *what* it computes: excluded from the run id, so a
# run trained stacked, with a sparse backend or from another data folder is still the same run.
EXECUTION_KEYS = {
    "data": ("root", "download", "pipeline", "workers"),
    "train": ("stack", "backend", "compile", "checkpoint_every", "gpus", "fused"),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    dataset: str = Field(description="data set name: see widecli.data.DATASETS")
    root: str = Field("~/.cache/widecli", description="folder where data sets are read/downloaded")
    download: bool = Field(True, description="download torchvision data sets if missing")
    subset: int | None = Field(None, ge=1, description="use only this many training examples")
    path: str | None = Field(None, description="npz file (dataset: npz) with x_train, y_train, x_test, y_test")
    normalize: Literal["standard", "pixelwise", "none"] = Field(
        "standard", description="standard: per-channel mean/std; pixelwise: per-feature (official MLP code)")
    pipeline: Literal["auto", "device", "stream"] = Field(
        "auto", description="device: whole data set resident on the device; stream: DataLoader workers")
    workers: int = Field(4, ge=0, description="DataLoader worker processes for the stream pipeline")


class ModelConfig(_Strict):
    arch: str = Field("mlp", description="model architecture: see widecli.models.ARCHS")
    hidden: list[int] = Field([256], description="mlp: hidden layer widths (fc1..fcL)")
    activation: Literal["relu", "tanh", "gelu", "linear"] = Field("relu", description="mlp nonlinearity")
    bias: bool = Field(True, description="mlp: layers have biases (never masked)")
    parameterization: Literal["standard", "ntk"] = Field(
        "standard", description="mlp: standard, or NTK-style (1/sqrt(fan_in) in the forward, N(0,1) init)")
    width: int = Field(16, ge=1, description="convnets: channels of the first conv (stages k, 2k, 4k, 8k)")
    batchnorm: bool = Field(True, description="cnn: BatchNorm after each conv")

    @field_validator("hidden")
    @classmethod
    def _hidden(cls, v: list[int]) -> list[int]:
        if not v or any(h < 1 for h in v):
            raise ValueError("must be a non-empty list of positive integers")
        return v


class WidenConfig(_Strict):
    layers: Union[Literal["first", "last", "all"], list[str]] = Field(
        "first", description="which hidden layers widen: first | last | all | list of layer names")
    factors: list[float] = Field([1.0], description="widening factors f >= 1 (1 is the baseline)")
    methods: list[Method] = Field(["sparse", "dense"], description="how the wide model meets the budget")

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

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError(f"must be a non-empty list of {', '.join(METHODS)}")
        if len(set(v)) != len(v):
            raise ValueError("methods must not repeat")
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
    rule: Rule = Field("proportional", description="how removed weights are spread over layers")
    connectivity: dict[str, float] = Field({}, description="custom rule: per-layer connectivity in (0, 1]")
    scope: Literal["all", "widened"] = Field("all", description="which weight layers may be masked")
    init: Literal["fan_in", "standard"] = Field(
        "fan_in", description="fan_in: init std scaled by 1/sqrt(connectivity) (official code); standard")
    granularity: Literal["weight", "kernel"] = Field(
        "weight", description="kernel: convs keep or remove whole kxk kernels (official io_only)")

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
        "auto", description="auto: plain fp32 MLPs train with the fused no-autograd step (widecli.fused)")
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
    def _layers_exist(self) -> "Recipe":
        from widecli import models  # registry of names only; no model is built here

        if self.model.arch not in models.ARCHS:
            raise ValueError(f"model.arch: unknown architecture {self.model.arch!r}"
                             f"{_did_you_mean(self.model.arch, models.ARCHS)}; "
                             f"allowed: {', '.join(sorted(models.ARCHS))}")
        from widecli import data

        if self.data.dataset not in data.DATASETS:
            raise ValueError(f"data.dataset: unknown data set {self.data.dataset!r}"
                             f"{_did_you_mean(self.data.dataset, data.DATASETS)}; "
                             f"allowed: {', '.join(sorted(data.DATASETS))}")
        widenable = models.widenable_layers(self.model)
        if isinstance(self.widen.layers, list):
            for name in self.widen.layers:
                if name not in widenable:
                    raise ValueError(f"widen.layers: unknown layer {name!r}{_did_you_mean(name, widenable)}; "
                                     f"allowed: first, last, all or any of {', '.join(widenable)}")
        return self


GRID_KEYS = ("widen.factors", "widen.methods", "seeds")


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
    method: Method
    sparsity: SparsityConfig
    train: TrainConfig
    seed: int
    axes: dict[str, Any] = {}

    def identity(self) -> dict[str, Any]:
        """The semantic content of the run: what the run id hashes.

        Keys at their schema default are left out (as open_lth does), so adding a new recipe key
        whose default keeps the old behaviour does not change the id of any stored run.
        """
        d = self.model_dump(mode="json", exclude={"recipe", "axes"})
        for section in ("data", "model", "sparsity", "train"):
            fields = type(getattr(self, section)).model_fields
            for k in list(d[section]):
                f = fields[k]
                if k in EXECUTION_KEYS.get(section, ()) or (
                        not f.is_required() and d[section][k] == _json(f.get_default(call_default_factory=True))):
                    del d[section][k]
        return d

    @property
    def run_id(self) -> str:
        canon = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:12]

    def stack_key(self) -> str:
        """Runs with equal stack keys differ only in seed and may train as one stacked model."""
        d = self.identity()
        d.pop("seed")
        return json.dumps(d, sort_keys=True)


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value))


# --------------------------------------------------------------------------- loading


def load(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe, apply `key.sub=value` overrides and validate it."""
    path = Path(path)
    raw = read_yaml(path)
    for item in overrides or []:
        key, value = parse_override(item)
        set_dotted(raw, key, value, source=f"--set {item}")
    return validate(raw, str(path))


def read_yaml(path: Path) -> dict:
    if not path.exists():
        raise RecipeError(f"{path}: no such recipe file")
    if path.is_dir():
        raise RecipeError(f"{path}: is a directory; give a recipe .yaml file")
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RecipeError(f"{path}: malformed YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"{path}: cannot read recipe: {e}") from None
    if raw is None:
        raise RecipeError(f"{path}: the recipe is empty; it needs at least name and data")
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: the recipe must be a mapping of keys (name, data, model, ...), "
                          f"got {type(raw).__name__}")
    return raw


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (plain YAML silently keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice in one mapping; give each key once",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse_override(item: str) -> tuple[str, Any]:
    """`train.lr=0.1` -> ("train.lr", 0.1); the value is parsed as YAML."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*", key):
        raise RecipeError(f"--set {item!r}: expected dotted.key=value, e.g. --set train.lr=0.1")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError:
        raise RecipeError(f"--set {item!r}: the value is not valid YAML") from None


def set_dotted(d: dict, key: str, value: Any, source: str = "") -> None:
    parts = key.split(".")
    node = d
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise RecipeError(f"{source or key}: {'.'.join(parts[: i + 1])} is not a mapping")
        node = nxt
    node[parts[-1]] = value


def get_dotted(d: dict, key: str) -> Any:
    node: Any = d
    for part in key.split("."):
        node = node[part]
    return node


def validate(raw: dict, source: str) -> Recipe:
    try:
        return Recipe.model_validate(raw)
    except ValidationError as e:
        raise RecipeError(f"{source}: {_describe(e.errors()[0], raw)}") from None


def _describe(err: dict, raw: dict) -> str:
    """One line for the first pydantic error: dotted key, value, what is allowed."""
    loc = [str(p) for p in err["loc"] if not str(p).startswith("function-after")]
    key = ".".join(loc) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = _schema_at(loc[:-1])
        allowed = list(parent.model_fields) if parent else []
        hint = difflib.get_close_matches(loc[-1], allowed, n=1)
        did = f"; did you mean {hint[0]!r}?" if hint else ""
        return f"unknown key {key!r}{did} (allowed: {', '.join(allowed)})"
    if kind == "missing":
        return f"missing required key {key!r}"
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "value_error" and (not loc or msg.startswith(f"{key}.")):
        return msg  # the message names its own key (as every whole-recipe check does)
    value = err.get("input")
    shown = json.dumps(value, default=str) if not isinstance(value, dict) else "{...}"
    return f"{key}: got {shown}; {msg[0].lower() + msg[1:]}"


def _schema_at(loc: list[str]):
    model: Any = Recipe
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        model = field.annotation
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


# --------------------------------------------------------------------------- expansion


def expand(recipe: Recipe) -> list[RunSpec]:
    """The recipe's grid as RunSpecs, deduplicated by run id, in a stable order.

    Runs that compute the same thing share an id: at factor 1 every method is the dense baseline,
    and only `sparse` runs depend on the sparsity settings.
    """
    base = recipe.model_dump(mode="json")
    keys = list(recipe.sweep)
    specs: dict[str, RunSpec] = {}
    for combo in itertools.product(*recipe.sweep.values()):
        raw = copy.deepcopy(base)
        for key, value in zip(keys, combo):
            set_dotted(raw, key, value, source=f"sweep.{key}")
        point = validate(raw, f"{recipe.name}: sweep point {dict(zip(keys, combo))}")
        for factor, method, seed in itertools.product(point.widen.factors, point.widen.methods, point.seeds):
            spec = make_spec(point, factor, method, seed, keys)
            specs.setdefault(spec.run_id, spec)
    return list(specs.values())


def make_spec(recipe: Recipe, factor: float, method: str, seed: int, axis_keys: list[str] = ()) -> RunSpec:
    """Resolve one grid point, canonicalizing what does not affect the computation."""
    sparsity = recipe.sparsity
    layers = recipe.widen.layers
    if factor == 1:
        method, layers = "dense", "first"
    if method != "sparse":
        sparsity = SparsityConfig()
    spec = RunSpec(recipe=recipe.name, data=recipe.data, model=recipe.model, widen_layers=layers,
                   factor=float(factor), method=method, sparsity=sparsity, train=recipe.train, seed=seed)
    if not axis_keys:
        return spec
    dumped = spec.model_dump(mode="json")
    dumped["widen"] = {"layers": layers}
    axes = {k: _get_or_none(dumped, k) for k in axis_keys}
    return spec.model_copy(update={"axes": axes})


def _get_or_none(d: dict, key: str) -> Any:
    try:
        return get_dotted(d, key)
    except (KeyError, TypeError):
        return None
