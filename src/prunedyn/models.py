"""Models of the study, each buildable by name from a config.

Every model is either a chain of Linear/Conv(+BatchNorm) layers, whose node
wiring :func:`prunedyn.nodes.chain_node_layers` reads off, or defines its
own ``node_layers()``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Sequence

import torch
from torch import nn

from .nodes import Consumer, NodeLayer
from .registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
register_model = MODELS.register


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
    """The model ``cfg.name`` for inputs of shape ``in_shape`` (without batch) and ``num_classes``."""
    return MODELS.get(cfg.name)(cfg, in_shape, num_classes)


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
    (:func:`prunedyn.nodes.chain_node_layers`) wires them, BatchNorm included.
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


def _scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded, at least 1 (as VGG scales its layers)."""
    return max(1, int(round(channels * width)))


class DoubleConv(nn.Module):
    """U-Net block: (3x3 conv, padding 1, no bias -> BatchNorm -> ReLU) x 2.

    Submodules ``conv1, bn1, relu1, conv2, bn2, relu2``. Input ``(B, c_in, H, W)``,
    output ``(B, c_out, H, W)``.
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015) with BatchNorm, for 2-D segmentation.

    Levels ``i = 1..depth``: encoder block ``enc{i}`` (a :class:`DoubleConv` of
    width ``64 * 2**(i-1)``), 2x2 max-pool ``pool`` down to the next level; the
    ``bottleneck`` block has width ``64 * 2**depth`` (1024 for depth 4). Up path,
    from level ``depth`` back to 1: ``up{i}`` (ConvTranspose2d, kernel 2, stride 2,
    with bias; no norm, no activation) from the level below to ``enc{i}``'s width,
    then ``dec{i}`` (a DoubleConv) reads ``torch.cat([skip, up], 1)`` -- the skip
    ``enc{i}`` output first, so ``up{i}``'s channels sit at offset ``enc{i}`` width.
    ``head``: 1x1 conv (with bias) to ``num_classes`` logits per pixel.

    ``width`` scales every layer's channels (rounded, at least 1); the decoder
    always matches the (current) encoder widths, and forward never hard-codes a
    channel count, so a compacted copy (:func:`prunedyn.surgery.compact`) runs
    as is.

    Input ``(B, in_channels, H, W)`` with ``H`` and ``W`` divisible by
    ``2**depth``; output ``(B, num_classes, H, W)`` logits.

    Node layers (:meth:`node_layers`): every conv of every block and every
    ``up{i}`` -- ``5 * depth + 2`` layers; the head is the output layer.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 3, width: float = 1.0, depth: int = 4, base: int = 64):
        super().__init__()
        if depth < 1:
            raise ValueError(f"UNet depth must be >= 1, got {depth}")
        self.depth = depth
        widths = [_scaled(base * 2**i, width) for i in range(depth + 1)]
        c = in_channels
        for i in range(1, depth + 1):
            setattr(self, f"enc{i}", DoubleConv(c, widths[i - 1]))
            c = widths[i - 1]
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(c, widths[depth])
        c = widths[depth]
        for i in range(depth, 0, -1):
            w = widths[i - 1]
            setattr(self, f"up{i}", nn.ConvTranspose2d(c, w, 2, stride=2))
            setattr(self, f"dec{i}", DoubleConv(2 * w, w))
            c = w
        self.head = nn.Conv2d(c, num_classes, 1)

    def _block(self, kind: str, i: int) -> nn.Module:
        return getattr(self, f"{kind}{i}")

    def forward(self, x):
        h, w = x.shape[-2:]
        div = 2**self.depth
        if h % div or w % div:
            raise ValueError(
                f"UNet input size {h}x{w}: height and width must be divisible by 2**depth = {div}"
            )
        skips = []
        for i in range(1, self.depth + 1):
            x = self._block("enc", i)(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for i in range(self.depth, 0, -1):
            up = self._block("up", i)(x)
            x = self._block("dec", i)(torch.cat([skips[i - 1], up], dim=1))
        return self.head(x)

    def node_layers(self) -> list[NodeLayer]:
        """The full wiring (:class:`prunedyn.nodes.NodeLayer` list), in forward order.

        ``enc{i}.conv1 -> enc{i}.conv2``; ``enc{i}.conv2`` feeds the next
        encoder's (or the bottleneck's) ``conv1`` after the pool and
        ``dec{i}.conv1`` at offset 0 (the skip); ``bottleneck.conv2`` feeds
        ``up{depth}``; ``up{i}`` (identity activation, no norm) feeds
        ``dec{i}.conv1`` at offset = ``enc{i}.conv2``'s current width;
        ``dec{i}.conv2`` feeds ``up{i-1}``, and ``dec1.conv2`` the head.
        Offsets are read from the current widths, so they stay right after
        compaction.
        """
        layers = []

        def block(name: str, blk: DoubleConv, consumers2: list) -> None:
            layers.append(NodeLayer(f"{name}.conv1", blk.conv1, [Consumer(blk.conv2)], norm=blk.bn1, activation=blk.relu1))
            layers.append(NodeLayer(f"{name}.conv2", blk.conv2, consumers2, norm=blk.bn2, activation=blk.relu2))

        for i in range(1, self.depth + 1):
            nxt = self._block("enc", i + 1) if i < self.depth else self.bottleneck
            block(f"enc{i}", self._block("enc", i), [Consumer(nxt.conv1, 0), Consumer(self._block("dec", i).conv1, 0)])
        block("bottleneck", self.bottleneck, [Consumer(self._block("up", self.depth))])
        for i in range(self.depth, 0, -1):
            dec = self._block("dec", i)
            skip = self._block("enc", i).conv2.out_channels
            layers.append(NodeLayer(f"up{i}", self._block("up", i), [Consumer(dec.conv1, skip)], norm=None, activation=nn.Identity()))
            nxt = self._block("up", i - 1) if i > 1 else self.head
            block(f"dec{i}", dec, [Consumer(nxt)])
        return layers

    def levels(self) -> list[dict]:
        """Node-layer names per level, for drawing the (compact) architecture as a U.

        One dict per level ``i = 1..depth`` (top to bottom), then the bottleneck
        (``level = depth + 1``): ``{"level": i, "encoder": ["enc{i}.conv1",
        "enc{i}.conv2"], "decoder": ["up{i}", "dec{i}.conv1", "dec{i}.conv2"]}``;
        the bottleneck's decoder list is empty. The names are the keys of
        :meth:`layer_widths` and of a compaction report's ``widths_before`` /
        ``widths_after``.
        """
        out = [
            {"level": i, "encoder": [f"enc{i}.conv1", f"enc{i}.conv2"], "decoder": [f"up{i}", f"dec{i}.conv1", f"dec{i}.conv2"]}
            for i in range(1, self.depth + 1)
        ]
        out.append({"level": self.depth + 1, "encoder": ["bottleneck.conv1", "bottleneck.conv2"], "decoder": []})
        return out

    def layer_widths(self) -> dict[str, int]:
        """Current number of channels of every node layer, by name."""
        return {layer.name: layer.size for layer in self.node_layers()}


@register_model("unet")
def build_unet(cfg, in_shape, num_classes) -> nn.Module:
    """U-Net of depth 4 (encoder 64-128-256-512, bottleneck 1024, times ``cfg.width``).

    ``cfg.hidden`` is not used (in particular it is not the depth: the depth
    stays 4, the standard U-Net). ``in_shape = (C, H, W)`` with ``H, W``
    divisible by 16.
    """
    depth = 4
    if len(in_shape) != 3:
        raise ValueError(f"model.name unet expects (C, H, W) inputs, got {tuple(in_shape)}")
    div = 2**depth
    if in_shape[1] % div or in_shape[2] % div:
        raise ValueError(
            f"model.name unet: input size {in_shape[1]}x{in_shape[2]} is not divisible by 2**depth = {div}"
        )
    return UNet(in_channels=in_shape[0], num_classes=num_classes, width=cfg.width, depth=depth)


CXR_WIDTHS = (32, 64, 128, 256, 256)


class CXRNet(nn.Module):
    """Small CNN classifier for chest X-rays (1 channel, 128-256 px).

    Five blocks ``block{i}``: 3x3 conv (padding 1, no bias) ``conv`` -> BatchNorm
    ``bn`` -> ReLU ``relu`` -> 2x2 max-pool ``pool``, of widths 32, 64, 128,
    256, 256 times ``width`` (rounded, at least 1); then global average pooling
    ``gap`` -> ``flatten`` -> ``head`` Linear(c, num_classes). Input
    ``(B, in_channels, H, W)`` with ``H, W >= 32``; output ``(B, num_classes)``
    logits.

    A chain: :func:`prunedyn.nodes.chain_node_layers` wires it (five conv node
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
