"""The small CNN classifier of the chest X-ray experiments."""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

from torch import nn

from prunedyn.models.registry import register_model
from prunedyn.models.registry import scaled as _scaled

CXR_WIDTHS = (32, 64, 128, 256, 256)


class CXRNet(nn.Module):
    """Small CNN classifier for chest X-rays (1 channel, 128-256 px).

    Five blocks ``block{i}``: 3x3 conv (padding 1, no bias) ``conv`` -> BatchNorm
    ``bn`` -> ReLU ``relu`` -> 2x2 max-pool ``pool``, of widths 32, 64, 128,
    256, 256 times ``width`` (rounded, at least 1); then global average pooling
    ``gap`` -> ``flatten`` -> ``head`` Linear(c, num_classes). Input
    ``(B, in_channels, H, W)`` with ``H, W >= 32``; output ``(B, num_classes)``
    logits.

    A chain: :func:`prunedyn.structure.nodes.chain_node_layers` wires it (five conv node
    layers; the head reads one input per channel after the pooling, repeat 1).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 3, width: float = 1.0, widths: Sequence[int] = CXR_WIDTHS):
        super().__init__()
        c = in_channels
        for i, v in enumerate(widths, start=1):
            out = _scaled(v, width)
            block = nn.Sequential(
                OrderedDict(
                    [
                        ("conv", nn.Conv2d(c, out, 3, padding=1, bias=False)),
                        ("bn", nn.BatchNorm2d(out)),
                        ("relu", nn.ReLU(inplace=True)),
                        ("pool", nn.MaxPool2d(2)),
                    ]
                )
            )
            setattr(self, f"block{i}", block)
            c = out
        self.n_blocks = len(widths)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(c, num_classes)

    def forward(self, x):
        for i in range(1, self.n_blocks + 1):
            x = getattr(self, f"block{i}")(x)
        return self.head(self.flatten(self.gap(x)))


@register_model("cxr_cnn")
def build_cxr_cnn(cfg, in_shape, num_classes) -> nn.Module:
    """:class:`CXRNet` with ``cfg.width``; ``cfg.hidden`` is not used."""
    if len(in_shape) != 3 or min(in_shape[1:]) < 32:
        raise ValueError(f"model.name cxr_cnn expects (C, H, W) inputs with H, W >= 32, got {tuple(in_shape)}")
    return CXRNet(in_channels=in_shape[0], num_classes=num_classes, width=cfg.width)
