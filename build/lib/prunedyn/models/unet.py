"""U-Net with BatchNorm for 2-D segmentation; its node wiring crosses the skip concatenations."""
from __future__ import annotations

import torch
from torch import nn

from prunedyn.models.registry import register_model
from prunedyn.models.registry import scaled as _scaled
from prunedyn.structure.nodes import Consumer, NodeLayer


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
    channel count, so a compacted copy (:func:`prunedyn.structure.surgery.compact`) runs
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
        """The full wiring (:class:`prunedyn.structure.nodes.NodeLayer` list), in forward order.

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
