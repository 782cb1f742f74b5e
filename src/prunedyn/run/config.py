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
every field; any problem raises :class:`ConfigError` with a one-line message
that names the field and what is allowed. :func:`config_hash` is a stable
hash of the resolved config.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

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


def _choices(values) -> Sequence[str]:
    return tuple(values)


# train.precision -> the autocast dtype of the forward pass (None: no autocast)
PRECISIONS = ("fp32", "bf16")

# field -> allowed values (a callable so registries extended later are seen)
CHOICES = {
    "model.name": lambda: __import__("prunedyn.models", fromlist=["MODELS"]).MODELS,
    "data.name": lambda: __import__("prunedyn.data.datasets", fromlist=["DATASETS"]).DATASETS,
    "data.source": lambda: __import__("prunedyn.data.datasets", fromlist=["SOURCES"]).SOURCES,
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


def _check_type(key: str, value: Any, annotation: str) -> Any:
    optional = annotation.startswith("Optional[")
    base = annotation[9:-1] if optional else annotation
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: must not be empty")
    if base == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: {value!r} is not a boolean; allowed: true, false")
        return value
    if base == "int":
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{key}: {value!r} is not a whole number")
        return int(value)
    if base == "float":
        if isinstance(value, str):
            # YAML 1.1 reads 1e-3 (no dot) as a string; accept what float() accepts
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: {value!r} is not a number")
        value = float(value)
        if math.isnan(value) or math.isinf(value):
            raise ConfigError(f"{key}: {value!r} is not a finite number")
        return value
    if base == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{key}: {value!r} is not a string")
        return value
    if base == "List[int]":
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(f"{key}: {value!r} is not a non-empty list of whole numbers")
        out = [_check_type(f"{key}[{i}]", v, "int") for i, v in enumerate(value)]
        if any(v < 1 for v in out):
            raise ConfigError(f"{key}: widths must be >= 1, got {out}")
        return out
    if base == "List[str]":
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(f"{key}: {value!r} is not a non-empty list of names")
        return [_check_type(f"{key}[{i}]", v, "str") for i, v in enumerate(value)]
    raise TypeError(f"unhandled annotation {annotation} for {key}")


def _check_value(key: str, value: Any) -> None:
    if key in CHOICES and value is not None:
        allowed = CHOICES[key]()
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not allowed; allowed: {', '.join(allowed)}")
    if key in RANGES and value is not None:
        lo, hi, exclusive = RANGES[key]
        if (value <= lo) if exclusive else (value < lo):
            raise ConfigError(f"{key}: {value!r} must be {'>' if exclusive else '>='} {lo}")
        if hi is not None and value > hi:
            raise ConfigError(f"{key}: {value!r} must be <= {hi}")


def _build(cls, data: Dict[str, Any], prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in [n for n in data if f"{prefix}{n}" in REMOVED_FIELDS]:
        old_default, instead = REMOVED_FIELDS[f"{prefix}{name}"]
        if data[name] != old_default:
            raise ConfigError(f"{prefix}{name} was removed; {instead}")
        data = {k: v for k, v in data.items() if k != name}  # a config written while it existed
    unknown = set(data) - set(fields)
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"unknown config key {prefix}{key!r}; allowed: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}{name}"
        if name in SECTIONS and prefix == "":
            kwargs[name] = _build(SECTIONS[name], data.get(name, {}), f"{name}.")
            continue
        if name not in data:
            continue
        value = _check_type(key, data[name], str(f.type))
        _check_value(key, value)
        kwargs[name] = value
    obj = cls(**kwargs)
    for name in fields:  # defaults are validated too, so a bad default cannot slip through
        if not (name in SECTIONS and prefix == ""):
            _check_value(f"{prefix}{name}", getattr(obj, name))
    return obj


def from_dict(data: Dict[str, Any]) -> ExperimentConfig:
    """Validate ``data`` and build an :class:`ExperimentConfig` (missing keys take defaults)."""
    return _build(ExperimentConfig, data or {}, "")


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
        lines.append(f"{key:<24} default {default!r}" + (f"; {what}" if what else ""))
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
