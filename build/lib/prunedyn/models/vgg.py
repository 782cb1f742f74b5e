"""VGG-16 with BatchNorm and a width multiplier, for 32x32 CIFAR-10 images."""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from prunedyn.models.registry import register_model

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nn.Module):
    """VGG with BatchNorm for 32x32 inputs (the common CIFAR variant).

    ``features``: for every number in ``cfg`` a 3x3 conv (padding 1, no bias:
    BatchNorm's shift plays that role) -> BatchNorm -> ReLU, and 2x2 max-pool
    for every ``"M"``; VGG-16 has 13 conv layers. ``classifier``: Flatten ->
    Linear(c, hidden) -> ReLU -> Linear(hidden, classes), where ``c`` is the last
    conv's width (the map is 1x1 after five pools). ``width`` scales every
    layer's channels (and ``hidden``) so the quick profile can run a narrow
    VGG-16 on a CPU. Input ``(B, 3, 32, 32)``, output ``(B, classes)`` logits.

    Every conv channel and hidden unit is a node; the chain reader
    (:func:`prunedyn.structure.nodes.chain_node_layers`) wires them, BatchNorm included.
    """

    def __init__(self, cfg=VGG16_CFG, width: float = 1.0, hidden: int = 512, in_channels: int = 3, num_classes: int = 10):
        super().__init__()
        layers: list[tuple[str, nn.Module]] = []
        c, block, idx = in_channels, 1, 1
        for v in cfg:
            if v == "M":
                layers.append((f"pool{block}", nn.MaxPool2d(2)))
                block, idx = block + 1, 1
                continue
            out = max(1, int(round(v * width)))
            layers += [
                (f"conv{block}_{idx}", nn.Conv2d(c, out, 3, padding=1, bias=False)),
                (f"bn{block}_{idx}", nn.BatchNorm2d(out)),
                (f"relu{block}_{idx}", nn.ReLU(inplace=True)),
            ]
            c, idx = out, idx + 1
        self.features = nn.Sequential(OrderedDict(layers))
        h = max(1, int(round(hidden * width)))
        self.classifier = nn.Sequential(
            OrderedDict(
                [("flatten", nn.Flatten()), ("fc1", nn.Linear(c, h)), ("relu", nn.ReLU(inplace=True)), ("fc2", nn.Linear(h, num_classes))]
            )
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model("vgg16")
def build_vgg16(cfg, in_shape, num_classes) -> nn.Module:
    if tuple(in_shape[1:]) != (32, 32):
        raise ValueError(f"model.name vgg16 expects 32x32 inputs, got {tuple(in_shape)}")
    return VGG(VGG16_CFG, width=cfg.width, hidden=cfg.hidden[0], in_channels=in_shape[0], num_classes=num_classes)
