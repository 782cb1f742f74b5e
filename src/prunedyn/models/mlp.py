"""The multilayer perceptron of the MNIST experiments (784-300-100-10)."""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

from prunedyn.models.registry import register_model


class MLP(nn.Module):
    """``in_features -> hidden[0] -> ... -> num_classes`` with ReLU; input is flattened.

    Input ``(B, *)`` with ``prod(*) == in_features``; output ``(B, num_classes)`` logits.

    ``balance = c`` rescales the initialisation without changing the function: every hidden
    node's incoming weights and bias by ``c``, its outgoing weights by ``1/c`` (ReLU is positively
    homogeneous). Across the chain that is ``W_1, b_1 -> c W_1, c b_1``, every hidden bias
    ``b_l -> c b_l`` and ``W_L -> W_L / c``; each hidden node's ratio of incoming to outgoing
    weight scale is multiplied by ``c``. The intervention on the fan-in story of chapter 3.
    """

    def __init__(self, in_features: int = 784, hidden: Sequence[int] = (300, 100), num_classes: int = 10,
                 balance: float = 1.0):
        super().__init__()
        sizes = [in_features, *hidden, num_classes]
        layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
            layers.append((f"fc{i}", nn.Linear(a, b)))
            if i < len(sizes) - 1:
                layers.append((f"relu{i}", nn.ReLU()))
        self.net = nn.Sequential(OrderedDict(layers))
        if balance != 1.0:
            self.rebalance(balance)

    @torch.no_grad()
    def rebalance(self, c: float) -> None:
        """Scale each hidden node's incoming side by ``c`` and its outgoing side by ``1/c`` (see the class doc)."""
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        if len(linears) < 2:
            return
        linears[0].weight.mul_(c)
        for m in linears[:-1]:
            m.bias.mul_(c)
        linears[-1].weight.div_(c)

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
    return MLP(n_in, list(cfg.hidden), num_classes, balance=getattr(cfg, "balance", 1.0))
