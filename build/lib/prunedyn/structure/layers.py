"""The layers whose weights the study prunes, regularizes and counts.

A *prunable* layer is a ``Linear``, ``Conv{1,2,3}d`` or ``ConvTranspose{1,2,3}d``
with a weight: its weight matrix (``out x in`` for Linear, ``out x in x k...`` for
a conv; ``in x out x k...`` for a transposed conv) is what SWP zeroes and L1/L2
shrink, and its rows/columns are what node accounting reads.
"""
from __future__ import annotations

from typing import Dict

from torch import nn

PRUNABLE_TYPES = (nn.Linear, nn.modules.conv._ConvNd)


def prunable_weights(model: nn.Module) -> Dict[str, nn.Parameter]:
    """``{module_name: weight}`` for every Linear / Conv / ConvTranspose layer, in order."""
    return {
        name: module.weight
        for name, module in model.named_modules()
        if isinstance(module, PRUNABLE_TYPES) and module.weight is not None
    }


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero entries over all prunable weights."""
    weights = list(prunable_weights(model).values())
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / total if total else 0.0
