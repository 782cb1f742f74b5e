"""Grouped convolutions in compaction: equal groups before and after.

A convolution with ``groups = g`` (not depthwise) splits its ``C_in`` input channels into ``g``
contiguous groups of ``C_in / g`` and its ``C_out`` output channels into ``g`` groups of
``C_out / g``; output group ``q`` reads input group ``q`` alone, and its weight is
``(C_out, C_in / g, k...)``. After compaction every group must still have the same size, so a node
layer next to grouped convolutions (:attr:`prunedyn.structure.nodes.NodeLayer.blocks` ``= B``, the
lcm of their ``groups``) loses the same number ``k`` of nodes in each of its ``B`` blocks:
``k = min_b (removable nodes in block b)``, at most ``size / B - 1`` (a group keeps one channel).
The other removable nodes stay (still dead) and are reported (``kept_for_groups``).

Input channel ``i = q (C_in / g) + r`` of a grouped consumer is column ``r`` of the rows of group
``q`` (:func:`grouped_input_rows`); removing ``k`` inputs per group keeps, in the rows of group
``q``, the columns of group ``q``'s remaining channels (:func:`shrink_grouped_inputs`).
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from prunedyn.structure.traced import WiringError, is_depthwise, is_grouped


def grouped_input_rows(module: nn.Module, i: int) -> Tuple[slice, int]:
    """``(rows, column)``: the output rows that read input channel ``i`` of a (grouped) convolution
    and its column in their weight; all rows and column ``i`` without groups."""
    if isinstance(module, nn.Linear) or module.groups == 1:
        return slice(None), i
    per, rows = module.weight.shape[1], module.weight.shape[0] // module.groups
    q = i // per
    return slice(q * rows, (q + 1) * rows), i % per


def block_floor(layer) -> int:
    """Nodes each block of ``layer`` keeps: 1, or 2 where a grouped producer reading several channels
    per group would otherwise be left with one output channel per group (``groups == out_channels``,
    which torch-pruning traces as depthwise: the compact model could not be wired again)."""
    floor = 1
    for producer, _ in layer.producers:
        if is_grouped(producer) and producer.weight.shape[1] > 1:
            floor = max(floor, -(-2 * producer.groups // layer.blocks))
    return floor


def equal_per_block(remove: torch.Tensor, emitting: torch.Tensor, blocks: int,
                    floor: int = 1) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(remove', held)``: ``remove`` (length ``n``) cut to the same count ``k`` in each of ``blocks``
    contiguous blocks of ``n / blocks`` nodes, ``k = min(min_b |remove in b|, n / blocks - floor)``;
    within a block the nodes emitting no constant go first, then by index. ``held``: the rest."""
    n = remove.numel()
    per = n // blocks
    r = remove.reshape(blocks, per)
    k = max(0, min(int(r.sum(1).min()), per - floor))
    out = torch.zeros_like(remove)
    for q in range(blocks):
        idx = torch.nonzero(r[q]).flatten()
        loud = emitting[q * per + idx].to(torch.int64)
        order = torch.argsort(loud * per + idx)  # quiet ones first, then by index
        out[q * per + idx[order[:k]]] = True
    return out, remove & ~out


def shrink_grouped_inputs(module: nn.Module, keep_mask: torch.Tensor) -> None:
    """Keep the input channels ``keep_mask`` (length ``C_in``, the same count in each group) of a
    grouped convolution: group ``q``'s rows keep the columns of group ``q``'s kept channels."""
    g, w = module.groups, module.weight.detach()
    per, rows = w.shape[1], w.shape[0] // g
    masks = keep_mask.reshape(g, per)
    blocks = [w[q * rows : (q + 1) * rows][:, torch.nonzero(masks[q]).flatten()] for q in range(g)]
    module.weight = nn.Parameter(torch.cat(blocks).contiguous(), requires_grad=module.weight.requires_grad)
    module.in_channels = int(keep_mask.sum())


def check_grouped(plans, consumer_masks, names) -> None:
    """Raise :class:`WiringError` (before any surgery, naming the layer) where removing nodes would
    leave a grouped convolution with unequal groups, or would shrink a depthwise consumer or a grouped
    transposed convolution (neither is handled)."""
    def label(m):
        return names.get(id(m), type(m).__name__)

    for m, mask in consumer_masks.values():
        if isinstance(m, nn.Linear) or m.groups == 1 or bool(mask.all()):
            continue
        counts = mask.reshape(m.groups, -1).sum(1)
        if is_depthwise(m) or isinstance(m, nn.modules.conv._ConvTransposeNd) or bool((counts != counts[0]).any()):
            raise WiringError(f"{label(m)}: a grouped convolution (groups={m.groups}, {m.in_channels} -> "
                              f"{m.out_channels} channels) would lose unequal numbers of input channels per group "
                              f"({counts.tolist()} kept); it reads them at offsets prunedyn does not wire")
    for layer, remove in plans:
        for producer, _ in layer.producers:
            if isinstance(producer, nn.Linear) or producer.groups == 1 or is_depthwise(producer) or not remove.any():
                continue
            lost = remove.reshape(producer.groups, -1).sum(1)
            if isinstance(producer, nn.modules.conv._ConvTransposeNd) or bool((lost != lost[0]).any()):
                raise WiringError(f"{label(producer)}: a grouped convolution (groups={producer.groups}) would lose "
                                  f"unequal numbers of output channels per group ({lost.tolist()})")
