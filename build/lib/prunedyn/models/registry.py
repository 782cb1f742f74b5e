"""The model registry: every model of the study is built by name from a config."""
from __future__ import annotations

from typing import Callable

from torch import nn

from prunedyn.core.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
register_model = MODELS.register


def build_model(cfg, in_shape, num_classes) -> nn.Module:
    """The model ``cfg.name`` for inputs of shape ``in_shape`` (without batch) and ``num_classes``."""
    return MODELS.get(cfg.name)(cfg, in_shape, num_classes)


def scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded, at least 1 (as VGG scales its layers)."""
    return max(1, int(round(channels * width)))
