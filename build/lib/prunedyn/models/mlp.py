"""The multilayer perceptron of the MNIST experiments (784-300-100-10)."""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

from torch import nn

from prunedyn.models.registry import register_model


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
