"""Models of the study, each buildable by name from a config.

Every model is either a chain of Linear/Conv(+BatchNorm) layers, whose node
wiring :func:`prunedyn.nodes.chain_node_layers` reads off, or defines its
own ``node_layers()``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Dict, Sequence

from torch import nn

MODELS: Dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    def decorator(fn):
        MODELS[name] = fn
        return fn

    return decorator


class MLP(nn.Module):
    """``in_features -> hidden[0] -> ... -> num_classes`` with ReLU; input is flattened.

    Input ``(B, *)`` with ``prod(*) == in_features``; output ``(B, num_classes)`` logits.
    """

    def __init__(self, in_features: int = 784, hidden: Sequence[int] = (300, 100), num_classes: int = 10):
        super().__init__()
        sizes = [in_features, *hidden, num_classes]
        layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
            layers.append((f"fc{i}", nn.Linear(a, b)))
            if i < len(sizes) - 1:
                layers.append((f"relu{i}", nn.ReLU()))
        self.net = nn.Sequential(OrderedDict(layers))

    def forward(self, x):
        return self.net(x)

    @property
    def widths(self) -> list[int]:
        return [m.out_features for m in self.net if isinstance(m, nn.Linear)][:-1]


@register_model("mlp")
def build_mlp(cfg, in_shape, num_classes) -> nn.Module:
    n_in = 1
    for s in in_shape:
        n_in *= s
    return MLP(n_in, list(cfg.hidden), num_classes)


def build_model(cfg, in_shape, num_classes) -> nn.Module:
    try:
        builder = MODELS[cfg.name]
    except KeyError:
        raise KeyError(f"unknown model {cfg.name!r}; allowed: {', '.join(MODELS)}") from None
    return builder(cfg, in_shape, num_classes)
