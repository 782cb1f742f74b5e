"""Alignment: compact widths rounded up to a multiple of ``align`` with silent nodes.

:func:`prunedyn.structure.surgery.compact` with ``align > 1`` gives every node layer of width
``w`` (``w0`` before compaction) the width ``min(w0, align * ceil(w / align))``
(:func:`aligned_width`): the missing nodes are appended as *silent* ones, each emitting exactly 0
(zero filter and bias; BatchNorm scale 0, shift 0, mean 0, variance 1) and read with zero weights
by every consumer, so outputs are unchanged. Vector kernels (AVX2 / AVX-512) run faster on such
widths. Layers whose node indices fall into equal blocks (:attr:`NodeLayer.blocks`: next to a
grouped convolution) and depthwise convolutions are left at their compact width.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import nn

from prunedyn.structure.nodes import node_layers
from prunedyn.structure.traced import is_depthwise


def aligned_width(width: int, original: int, align: int) -> int:
    """``min(original, align * ceil(width / align))``: the width :func:`compact` keeps with ``align``."""
    return min(original, -(-width // align) * align)


def _append_zeros(module: nn.Module, name: str, count: int, dim: int, fill: float = 0.0) -> None:
    """Append ``count`` slices of ``fill`` to parameter / buffer ``name`` along ``dim``."""
    p = getattr(module, name, None)
    if p is None or count == 0:
        return
    shape = list(p.shape)
    shape[dim] = count
    new = torch.cat([p.detach(), torch.full(shape, fill, dtype=p.dtype, device=p.device)], dim)
    if isinstance(p, nn.Parameter):
        setattr(module, name, nn.Parameter(new, requires_grad=p.requires_grad))
    else:
        module.register_buffer(name, new)


def _pad_outputs(module: nn.Module, norm: Optional[nn.Module], count: int) -> None:
    """Give ``module`` ``count`` more output units that emit 0 before the activation (and after ``norm``)."""
    if is_depthwise(module):
        raise NotImplementedError("alignment of depthwise convolutions (their input channels would have to grow too)")
    transposed = isinstance(module, nn.modules.conv._ConvTransposeNd)
    _append_zeros(module, "weight", count, 1 if transposed else 0)
    _append_zeros(module, "bias", count, 0)
    if isinstance(module, nn.Linear):
        module.out_features += count
    else:
        module.out_channels += count
    if norm is not None:
        # scale 0 and shift 0: the node emits exactly 0 whatever the running statistics
        _append_zeros(norm, "weight", count, 0)
        _append_zeros(norm, "bias", count, 0)
        _append_zeros(norm, "running_mean", count, 0)
        _append_zeros(norm, "running_var", count, 0, fill=1.0)
        norm.num_features += count


def _pad_inputs(module: nn.Module, insert: Dict[int, int]) -> None:
    """Insert zero input units into ``module``: ``insert[k]`` of them before its old input unit ``k``."""
    transposed = isinstance(module, nn.modules.conv._ConvTransposeNd)
    if not isinstance(module, nn.Linear) and module.groups != 1:
        raise NotImplementedError("alignment of grouped convolutions")
    dim = 0 if transposed else 1
    w = module.weight.detach()
    n_in = w.shape[dim]
    src = []  # new input unit -> old input unit, or -1 for an inserted zero
    for k in range(n_in + 1):
        src += [-1] * insert.get(k, 0)
        if k < n_in:
            src.append(k)
    src = torch.tensor(src)
    shape = list(w.shape)
    shape[dim] = len(src)
    new = torch.zeros(shape, dtype=w.dtype, device=w.device)
    old = torch.nonzero(src >= 0).flatten()
    new.index_copy_(dim, old, w.index_select(dim, src[old]))
    module.weight = nn.Parameter(new, requires_grad=module.weight.requires_grad)
    if isinstance(module, nn.Linear):
        module.in_features = len(src)
    else:
        module.in_channels = len(src)


@torch.no_grad()
def _align_widths(model: nn.Module, example: torch.Tensor, original: Dict[str, int], align: int) -> Dict[str, int]:
    """Pad every node layer of ``model`` (in place) to :func:`aligned_width`; silent nodes added, by layer."""
    layers = node_layers(model, example)  # offsets read before any layer grows
    added: Dict[str, int] = {}
    inserts: Dict[int, Tuple[nn.Module, Dict[int, int]]] = {}
    for layer in layers:
        w = layer.size
        count = aligned_width(w, max(original.get(layer.name, w), w), align) - w
        if layer.blocks > 1:  # grouped convolutions: growing one block would unbalance them
            count = 0
        added[layer.name] = count
        if count == 0:
            continue
        for consumer in layer.consumers:
            m = consumer.module
            at = consumer.offset + w * consumer.repeat  # after the producer's block of input units
            table = inserts.setdefault(id(m), (m, {}))[1]
            table[at] = table.get(at, 0) + count * consumer.repeat
    for layer in layers:
        if added[layer.name]:
            for producer, norm in layer.producers:
                _pad_outputs(producer, norm, added[layer.name])
    for m, table in inserts.values():
        _pad_inputs(m, table)
    return added
