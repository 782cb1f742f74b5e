"""Experiment configuration: dataclasses, YAML, presets, ``--set`` overrides, validation.

A config is plain data::

    model:       {name: mlp, hidden: [300, 100]}
    data:        {name: mnist, source: auto, batch_size: 64, ...}
    optimizer:   {name: sgd, lr: 0.05, momentum: 0.9}
    regularizer: {kind: l2, lam: 0.005}
    pruner:      {kind: stochastic, kernel: gaussian, sigma: 0.003, ...}
    train:       {resident: false, precision: fp32, channels_last: false, compile: false, sync_every: 1}
    epochs: 40
    seed: 0

:func:`load_config` resolves a preset name or a YAML path, applies
``section.key=value`` overrides (values parsed as YAML scalars) and validates
every field with pydantic (v2); the first problem raises :class:`ConfigError` with a one-line message
that names the field and what is allowed. :func:`config_hash` is a stable
hash of the resolved config.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Dict, List, Optional, Sequence

import yaml
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, Strict, TypeAdapter, ValidationError

from prunedyn.core.kernels import KERNELS
from prunedyn.core.pruning import PRUNERS, STREAMS
from prunedyn.core.regularization import REGULARIZERS, SCOPES
from prunedyn.core.schedules import SCHEDULES


class ConfigError(ValueError):
    """A bad config value; the message names the field and what is allowed."""


@dataclass
class ModelConfig:
    name: str = "mlp"
    hidden: List[int] = field(default_factory=lambda: [300, 100])
    width: float = 1.0
    # mlp only: each hidden node's incoming weights x balance, outgoing / balance at initialisation
    # (the same function; models.mlp.MLP): the intervention on the fan-in ratio
    balance: float = 1.0


@dataclass
class DataConfig:
    name: str = "mnist"
    source: str = "auto"
    root: Optional[str] = None
    download: bool = False
    train_size: Optional[int] = None
    test_size: Optional[int] = None
    # hold out this many training examples (one seeded draw, the same for every seed) as the
    # validation split settings are chosen on: metrics gain val_* columns (datasets.carve_validation)
    val_size: Optional[int] = None
    batch_size: int = 64
    augment: bool = False
    # covid_cxr: images resized to this side; dsb2018: tile side (256 / 2^k); None: the dataset's default
    image_size: Optional[int] = None


@dataclass
class OptimizerConfig:
    name: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    # constant, or cosine annealing from lr to 0 over the run's optimiser steps (per step)
    lr_schedule: str = "constant"


@dataclass
class RegularizerConfig:
    kind: str = "none"
    lam: float = 0.0
    # weights: Linear/Conv weights only (STUDY.md); all: biases and norm parameters too;
    # bn: BatchNorm scales only (with l1: network slimming); weights+bn: both (core.regularization.SCOPES)
    scope: str = "weights"
    # only the scope's tensors of these modules (names as model.named_modules() gives them, e.g.
    # net.fc1); null: every module. One side of a node decayed: the intervention on the balance law
    layers: Optional[List[str]] = None


@dataclass
class PrunerConfig:
    kind: str = "none"
    kernel: str = "gaussian"
    sigma: float = 0.003
    sigma_mode: str = "absolute"
    schedule: str = "constant"
    ramp_epochs: float = 0.0
    start_epoch: float = 0.0
    sticky: bool = False
    sparsity: float = 0.9
    scope: str = "layer"
    gamma: float = 0.5
    alpha: float = 0.5
    unit: bool = False
    # slimming: a channel is removed once its BatchNorm scale's magnitude falls below this
    threshold: float = 0.01
    # stochastic: "torch" (the generator's stream, every earlier run) or "counter" (a stream that is a
    # function of seed, step, tensor and element, applied by one fused kernel; core.fused)
    stream: str = "torch"


@dataclass
class InitConfig:
    """Start from a finished run's weights instead of a fresh initialisation.

    ``run``: that run's folder; ``compact``: remove its dead nodes first (the
    paper's fourth claim: node-pruned networks pruned further by weight).
    """

    run: Optional[str] = None
    compact: bool = True


@dataclass
class TrainConfig:
    """How the training loop runs on its device (issue #12, the fast path for the conv nets).

    The defaults are the reference path every recorded run used: batches gathered
    on the host and moved to the device one at a time, fp32, contiguous (NCHW)
    tensors, eager PyTorch, and a host read of the loss after every step. Each
    field removes one cost a GPU pays on that path; only ``precision`` and
    ``channels_last`` change the numbers (and ``compile`` may, by fusing
    differently), so only they make a run's results differ from the reference
    beyond float rounding. Every field is part of the config hash once it
    leaves its default, and the run's summary records the path
    (``train_path``), so a figure can say which one ran.
    """

    # The training set is copied to the device once, and every epoch's batches
    # are gathered and augmented there (the same random draws as on the host,
    # drawn for the whole epoch at its start): no host-to-device copy per step.
    # The batches, and so the numbers, are those of the reference path.
    resident: bool = False
    # fp32: as recorded. bf16: forward and loss under torch.autocast(bfloat16)
    # (matmuls and convolutions in bf16 on tensor cores; weights, gradients,
    # optimiser state and evaluation stay fp32).
    precision: str = "fp32"
    # Conv nets: model and 4-D inputs in torch.channels_last (NHWC), the layout
    # cuDNN's tensor-core kernels use natively (NCHW costs a transpose per
    # convolution). Same maths, other summation order.
    channels_last: bool = False
    # torch.compile the model for the training forward (fuses BatchNorm/ReLU and
    # the elementwise ops between convolutions). The first epoch pays the compile.
    compile: bool = False
    # Steps between host reads of the running loss (1: every step, as recorded;
    # 0: once per epoch). Each read waits for the device to finish its queue;
    # a NaN/inf loss is still caught, at the next read (the step that produced
    # it has been applied by then; the run stops with TrainingDiverged either way).
    sync_every: int = 1


@dataclass
class ExperimentConfig:
    name: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig)
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    init: InitConfig = field(default_factory=InitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    epochs: int = 10
    seed: int = 0
    device: str = "cpu"
    # torch's intra-op threads during the run (0: leave torch's setting). Part of
    # the run: float sums are split per thread, so the same config gives the same
    # numbers on any machine only with the thread count pinned.
    threads: int = 1

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


# train.precision -> the autocast dtype of the forward pass (None: no autocast)
PRECISIONS = ("fp32", "bf16")


def _registry(module: str, name: str):
    return lambda: getattr(__import__(module, fromlist=[name]), name)


# field -> allowed values (a callable so registries extended later are seen)
CHOICES = {
    "model.name": _registry("prunedyn.models", "MODELS"),
    "data.name": _registry("prunedyn.data.datasets", "DATASETS"),
    "data.source": _registry("prunedyn.data.datasets", "SOURCES"),
    "optimizer.lr_schedule": lambda: ("constant", "cosine"),
    "optimizer.name": lambda: ("sgd", "adam", "adamw"),
    "regularizer.kind": lambda: REGULARIZERS,
    "regularizer.scope": lambda: SCOPES,
    "pruner.kind": lambda: PRUNERS,
    "pruner.kernel": lambda: KERNELS,
    "pruner.sigma_mode": lambda: ("absolute", "relative"),
    "pruner.stream": lambda: STREAMS,
    "pruner.schedule": lambda: SCHEDULES,
    "pruner.scope": lambda: ("layer", "global"),
    "device": lambda: ("cpu", "cuda", "auto"),
    "train.precision": lambda: PRECISIONS,
}

# field -> (lowest, highest, lowest is exclusive)
RANGES = {
    "data.train_size": (1, None, False),
    "data.test_size": (1, None, False),
    "data.val_size": (1, None, False),
    "data.batch_size": (1, None, False),
    "data.image_size": (8, None, False),
    "optimizer.lr": (0, None, True),
    "optimizer.momentum": (0, 1, False),
    "regularizer.lam": (0, None, False),
    "pruner.sigma": (0, None, True),
    "model.width": (0, None, True),
    "model.balance": (0, None, True),
    "pruner.ramp_epochs": (0, None, False),
    "pruner.start_epoch": (0, None, False),
    "pruner.sparsity": (0, 0.999999, False),
    "pruner.gamma": (0, 1, False),
    "pruner.alpha": (0, 1, False),
    "pruner.threshold": (0, None, False),
    "epochs": (1, None, False),
    "threads": (0, 64, False),
    "train.sync_every": (0, None, False),
}

SECTIONS = {
    "model": ModelConfig,
    "data": DataConfig,
    "optimizer": OptimizerConfig,
    "regularizer": RegularizerConfig,
    "pruner": PrunerConfig,
    "init": InitConfig,
    "train": TrainConfig,
}


# Validation is pydantic's (v2), over the dataclasses above: each field's annotation gives its type
# (strict booleans and strings; whole numbers and finite floats, never a boolean), CHOICES and
# RANGES its allowed values. The dataclasses stay plain (their asdict is what config_hash hashes).
def _no_bool(what: str) -> BeforeValidator:
    """YAML's true/false are not numbers (pydantic's lax mode would read them as 1 and 0)."""

    def check(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return BeforeValidator(check)


def _one_of(key: str):
    def check(value: Any) -> Any:
        allowed = CHOICES[key]()
        if value is not None and value not in allowed:
            raise ValueError(f"{value!r} is not allowed; allowed: {', '.join(map(str, allowed))}")
        return value

    return AfterValidator(check)


def _bounds(key: str) -> List[Any]:
    lo, hi, exclusive = RANGES[key]
    return [Field(gt=lo) if exclusive else Field(ge=lo)] + ([Field(le=hi)] if hi is not None else [])


_BASE = {
    "bool": Annotated[bool, Strict()],
    "str": Annotated[str, Strict()],
    "int": Annotated[int, _no_bool("a whole number")],
    "float": Annotated[float, _no_bool("a number")],
    "List[int]": Annotated[List[Annotated[int, _no_bool("a whole number"), Field(ge=1)]], Field(min_length=1)],
    "List[str]": Annotated[List[Annotated[str, Strict()]], Field(min_length=1)],
}
_PYDANTIC = ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=True)


def _validator(cls, prefix: str = "") -> Any:
    """A pydantic-validated twin of the dataclass ``cls``: same fields and defaults, annotated."""
    fields = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if prefix == "" and f.name in SECTIONS:
            typ, default = _validator(SECTIONS[f.name], f"{f.name}."), {"default_factory": dict}
        else:
            spelled = str(f.type)
            optional = spelled.startswith("Optional[")
            typ = _BASE[spelled[9:-1] if optional else spelled]
            extra = ([_one_of(key)] if key in CHOICES else []) + (_bounds(key) if key in RANGES else [])
            typ = Annotated[(typ, *extra)] if extra else typ
            typ = Optional[typ] if optional else typ
            default = (
                {"default_factory": f.default_factory}
                if f.default is dataclasses.MISSING
                else {"default": f.default}
            )
        fields.append((f.name, typ, dataclasses.field(**default)))
    twin = dataclasses.make_dataclass(cls.__name__, fields)
    twin.__pydantic_config__ = _PYDANTIC
    return twin


_ADAPTER: Optional[TypeAdapter] = None

# pydantic's error type -> our one-line message (after the field's path)
_MESSAGES = {
    "int_type": "{v!r} is not a whole number",
    "int_parsing": "{v!r} is not a whole number",
    "int_from_float": "{v!r} is not a whole number",
    "float_type": "{v!r} is not a number",
    "float_parsing": "{v!r} is not a number",
    "finite_number": "{v!r} is not a finite number",
    "bool_type": "{v!r} is not a boolean; allowed: true, false",
    "string_type": "{v!r} is not a string",
    "list_type": "{v!r} is not a non-empty list",
    "too_short": "{v!r} is not a non-empty list",
    "greater_than": "{v!r} must be > {c[gt]}",
    "greater_than_equal": "{v!r} must be >= {c[ge]}",
    "less_than_equal": "{v!r} must be <= {c[le]}",
    "dataclass_type": "expected a mapping, got {v!r}",
    "dataclass_args_type": "expected a mapping, got {v!r}",
}


def _one_line(error: dict) -> str:
    """The first pydantic error as ``field.path: what is wrong`` (with what is allowed)."""
    loc = [p for p in error["loc"] if p not in SECTIONS.values()]
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    kind, value = error["type"], error.get("input")
    if kind == "unexpected_keyword_argument":
        section = key.rpartition(".")[0]
        names = [f.name for f in dataclasses.fields(SECTIONS[section] if section else ExperimentConfig)]
        return f"unknown config key {key!r}; allowed: {', '.join(names)}"
    if value is None:
        return f"{key}: must not be empty"
    if kind == "value_error":  # ours: the message names the value
        return f"{key}: {error['ctx']['error']}"
    if kind in _MESSAGES:
        return f"{key}: " + _MESSAGES[kind].format(v=value, c=error.get("ctx") or {})
    return f"{key}: {error['msg']}"


def from_dict(data: Dict[str, Any]) -> ExperimentConfig:
    """Validate ``data`` (pydantic) and build an :class:`ExperimentConfig` (missing keys take
    defaults); the first problem raises :class:`ConfigError` naming the field's path."""
    global _ADAPTER
    data = _drop_removed(data or {})
    if _ADAPTER is None:
        _ADAPTER = TypeAdapter(_validator(ExperimentConfig))
    try:
        checked = dataclasses.asdict(_ADAPTER.validate_python(data))
    except ValidationError as e:
        raise ConfigError(_one_line(e.errors()[0])) from None
    return ExperimentConfig(**{k: SECTIONS[k](**v) if k in SECTIONS else v for k, v in checked.items()})


def _drop_removed(data: Any) -> Any:
    """``data`` without the removed fields (:data:`REMOVED_FIELDS`) that hold their old default."""
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping, got {data!r}")
    data = dict(data)
    for key, (old_default, instead) in REMOVED_FIELDS.items():
        section, _, name = key.rpartition(".")
        holder = data.get(section) if section else data
        if isinstance(holder, dict) and name in holder:
            if holder[name] != old_default:
                raise ConfigError(f"{key} was removed; {instead}")
            holder = {k: v for k, v in holder.items() if k != name}  # written while it existed
            if section:
                data[section] = holder
            else:
                data = holder
    return data


def preset_names() -> List[str]:
    files = resources.files("prunedyn") / "presets"
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(text: str, where: str) -> Dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{where}: not valid YAML{at}: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def raw_config(source: str) -> Dict[str, Any]:
    """The mapping of a preset name or a YAML file path, not yet validated."""
    path = Path(source)
    if source.endswith((".yaml", ".yml")) or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file not found: {source}")
        data = _read_yaml(path.read_text(), str(path))
        data.setdefault("name", path.stem)
        return data
    if source not in preset_names():
        raise ConfigError(f"unknown preset {source!r}; allowed: {', '.join(preset_names())} (or a path to a .yaml file)")
    text = (resources.files("prunedyn") / "presets" / f"{source}.yaml").read_text()
    data = _read_yaml(text, f"preset {source}")
    data.setdefault("name", source)
    return data


def apply_overrides(data: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Apply ``section.key=value`` strings; values are parsed as YAML scalars."""
    data = json.loads(json.dumps(data))  # deep copy of plain data
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. pruner.sigma=0.003")
        key, text = item.split("=", 1)
        key = key.strip()
        value = _read_yaml(f"v: {text}", f"--set {key}")["v"] if text.strip() else None
        parts = key.split(".")
        if len(parts) == 1:
            if key in SECTIONS or key not in {f.name for f in dataclasses.fields(ExperimentConfig)}:
                raise ConfigError(f"unknown config key {key!r}; allowed: {', '.join(_all_keys())}")
            data[key] = value
        elif len(parts) == 2 and parts[0] in SECTIONS:
            fields = [f.name for f in dataclasses.fields(SECTIONS[parts[0]])]
            if parts[1] not in fields:
                raise ConfigError(f"unknown config key {key!r}; allowed in {parts[0]}: {', '.join(fields)}")
            section = data.setdefault(parts[0], {})
            if not isinstance(section, dict):
                raise ConfigError(f"{parts[0]}: expected a mapping")
            section[parts[1]] = value
        else:
            raise ConfigError(f"unknown config key {key!r}; allowed: {', '.join(_all_keys())}")
    return data


def _all_keys() -> List[str]:
    keys = []
    for f in dataclasses.fields(ExperimentConfig):
        if f.name in SECTIONS:
            keys += [f"{f.name}.{g.name}" for g in dataclasses.fields(SECTIONS[f.name])]
        else:
            keys.append(f.name)
    return keys


# key -> what it means (``prunedyn run --help``); tests/test_config.py keeps one for every key
MEANING = {
    "name": "the run's name (its folder is runs/<name>-<config hash>)",
    "model.name": "the network",
    "model.hidden": "mlp: the hidden layers' widths",
    "model.width": "conv nets: a multiple of every layer's channel count",
    "model.balance": "mlp: hidden nodes' incoming weights x balance, outgoing / balance at init",
    "data.name": "the data set",
    "data.source": "torchvision's files, JPEG folders or the embedded subset (data/); auto: torchvision's if found, else embedded",
    "data.root": "the folder of a non-embedded source",
    "data.download": "let torchvision download (never in the book)",
    "data.train_size": "train on the first N training examples (null: all)",
    "data.test_size": "test on the first N test examples (null: all)",
    "data.val_size": "hold out N training examples as the validation split (val_* metrics)",
    "data.batch_size": "examples per optimiser step",
    "data.augment": "random crops and flips of the training batches",
    "data.image_size": "covid_cxr: image side; dsb2018: tile side (null: the data set's default)",
    "optimizer.name": "the optimiser",
    "optimizer.lr": "learning rate",
    "optimizer.momentum": "sgd's momentum (adam and adamw: their defaults)",
    "optimizer.lr_schedule": "constant, or cosine annealing to 0 over the run's steps",
    "regularizer.kind": "the penalty added to the loss (l2_decoupled: AdamW-style decay)",
    "regularizer.lam": "the penalty's strength lambda",
    "regularizer.scope": "which tensors it acts on: weights, all, bn scales, weights+bn",
    "regularizer.layers": "only these modules (names from model.named_modules()); null: all",
    "pruner.kind": "the weight pruner applied after every step (stochastic: SWP)",
    "pruner.kernel": "SWP: kappa(w; sigma), the probability of zeroing a weight w",
    "pruner.sigma": "SWP: the kernel's scale",
    "pruner.sigma_mode": "SWP: sigma absolute, or a multiple of each layer's weight RMS",
    "pruner.schedule": "SWP: how sigma ramps up from 0 over ramp_epochs",
    "pruner.ramp_epochs": "SWP: the ramp's length in epochs",
    "pruner.start_epoch": "no pruning before this epoch",
    "pruner.sticky": "a pruned weight stays zero for good",
    "pruner.sparsity": "magnitude / random: the final share of weights zeroed",
    "pruner.scope": "magnitude: rank per layer or over the whole network",
    "pruner.gamma": "targeted dropout: the share of weights (or units) targeted",
    "pruner.alpha": "targeted dropout: the drop rate within the targeted",
    "pruner.unit": "targeted dropout: target whole units instead of weights",
    "pruner.threshold": "slimming: a channel goes when its BatchNorm scale's magnitude falls below",
    "pruner.stream": "SWP's random stream: torch (every recorded run) or counter (fused kernel)",
    "init.run": "start from this finished run's weights (its folder)",
    "init.compact": "remove that run's dead nodes first",
    "train.resident": "keep the training set on the device (same batches, no copies)",
    "train.precision": "fp32, or bf16 autocast in the forward pass",
    "train.channels_last": "conv nets in NHWC memory layout",
    "train.compile": "torch.compile the training forward",
    "train.sync_every": "steps between host reads of the loss (0: once per epoch)",
    "epochs": "passes over the training set",
    "seed": "seeds the initialisation, the batches and the pruner",
    "device": "cpu, cuda, or auto (cuda if available)",
    "threads": "torch's intra-op threads (0: torch's default); part of the numbers",
}


def key_help() -> List[str]:
    """One line per config key: its default and what it accepts (``prunedyn run --help``)."""
    defaults = ExperimentConfig().to_dict()
    lines = []
    for key in _all_keys():
        section, _, name = key.rpartition(".")
        default = (defaults[section] if section else defaults)[name]
        what = ""
        if key in CHOICES:
            what = "one of " + ", ".join(str(c) for c in CHOICES[key]())
        elif key in RANGES:
            lo, hi, open_lo = RANGES[key]
            what = f"{'>' if open_lo else '>='} {lo:g}" + (f", <= {hi:g}" if hi is not None else "")
        lines.append(f"{key:<22} {MEANING[key]}; default {default!r}" + (f"; {what}" if what else ""))
    return lines


def load_config(source: str, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Resolve a preset name or YAML path, apply overrides, validate."""
    return from_dict(apply_overrides(raw_config(source), overrides))


# Fields added to the config after runs were recorded: left out of the hash
# while they hold their default, so adding a field does not re-key (and so
# retrain) every cached run. A new field must be listed here as "section.key".
LATER_FIELDS: tuple = ("data.image_size", "optimizer.lr_schedule", "regularizer.scope", "threads",
                       "pruner.threshold", "pruner.stream", "train.resident", "train.precision", "train.channels_last", "train.compile",
                       "train.sync_every", "data.val_size",
                       "model.balance", "regularizer.layers")


# Fields removed from the config: "section.key" -> (the default they had, what to use instead). A
# config written while one existed (a run folder's config.yaml) still loads when it holds that
# default, and hashes as before (the field was left out of the hash at its default).
REMOVED_FIELDS: Dict[str, tuple] = {
    "pruner.fast": (False, "for a faster CPU stream use pruner.stream=counter (same probabilities, its own stream)"),
}


def config_hash(cfg: ExperimentConfig) -> str:
    """First 12 hex digits of the SHA-256 of the canonical JSON of the config.

    Stable under additions to the config: see :data:`LATER_FIELDS`. A section
    left empty by that (a section added later, all at its defaults: ``train``)
    is left out too.
    """
    data = cfg.to_dict()
    defaults = ExperimentConfig().to_dict()
    for key in LATER_FIELDS:
        section, _, name = key.rpartition(".")
        holder, default = (data[section], defaults[section]) if section else (data, defaults)
        if holder.get(name) == default.get(name):
            holder.pop(name, None)
    for section in SECTIONS:
        if data.get(section) == {}:
            del data[section]
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
