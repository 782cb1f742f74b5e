"""Nodes: hidden units and channels, how they are wired, and when they are dead.

A *node* is one output unit of a producer layer: a hidden unit of an MLP
(row ``j`` of ``W_l``), or an output channel of a convolution (filter ``j``).
Its **incoming** weights are that row / filter (plus its bias); its
**outgoing** weights are the matching input slice of every layer that
consumes the producer's output: column ``j`` of ``W_{l+1}`` for an MLP,
input channel ``j`` of the next convolution, the ``H*W`` columns of a linear
classifier after ``Flatten``, or the channel at an offset inside a U-Net's
skip concatenation (a consumer can have several producers, and a producer
several consumers).

That wiring is a :class:`NodeLayer` list. A model either provides it with a
``node_layers()`` method (needed for U-Nets and other non-chains) or is a
chain of Linear/Conv(+BatchNorm) layers in registration order, which
:func:`chain_node_layers` reads off.

A node is

- **in-dead** when all its incoming weights are zero (or its BatchNorm scale
  is zero): it emits a constant, ``act(b)`` or ``act(BN(b))``;
- **out-dead** when all its outgoing weights are zero: nothing downstream
  sees it;
- **alive** otherwise.

Shapes: for a producer with ``n`` nodes every per-node statistic is a
1-D tensor of length ``n``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from prunedyn.structure.layers import PRUNABLE_TYPES

NORM_TYPES = (nn.modules.batchnorm._BatchNorm,)


@dataclass
class Consumer:
    """A layer that reads a producer's output.

    ``offset``: index of the producer's first channel among the consumer's input
    channels (non-zero after a concatenation). ``repeat``: consumer input
    features per producer channel (``H*W`` when a Linear reads a flattened
    ``C x H x W`` map; 1 otherwise).
    """

    module: nn.Module
    offset: int = 0
    repeat: int = 1


@dataclass
class NodeLayer:
    """The nodes of one producer layer and the layers that consume them."""

    name: str
    producer: nn.Module
    consumers: List[Consumer]
    norm: Optional[nn.Module] = None
    # None: unknown (e.g. a functional call in forward), so constants cannot be folded
    activation: Optional[Callable[[torch.Tensor], torch.Tensor]] = F.relu

    @property
    def size(self) -> int:
        return _out_units(self.producer)


def _out_units(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features
    return module.out_channels


def _in_units(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features
    return module.in_channels


def incoming_rows(module: nn.Module) -> torch.Tensor:
    """Producer weights as ``(n_out, fan_in)``: row ``j`` holds node ``j``'s incoming weights."""
    w = module.weight
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        # ConvTranspose stores (in, out/groups, k...): output channel j is w[:, j]
        w = w.transpose(0, 1)
    return w.reshape(w.shape[0], -1)


def outgoing_columns(consumer: Consumer, n: int) -> torch.Tensor:
    """Consumer weights as ``(n, fan)``: row ``j`` holds node ``j``'s outgoing weights."""
    m, off, rep = consumer.module, consumer.offset, consumer.repeat
    w = m.weight
    if isinstance(m, nn.Linear):
        cols = w[:, off : off + n * rep]  # (out, n*rep)
        return cols.reshape(w.shape[0], n, rep).permute(1, 0, 2).reshape(n, -1)
    if isinstance(m, nn.modules.conv._ConvTransposeNd):
        return w[off : off + n].reshape(n, -1)
    return w[:, off : off + n].transpose(0, 1).reshape(n, -1)


# Element-wise activations that chain_node_layers recognises between a producer
# and its consumer; the module itself computes an in-dead node's constant output.
ACTIVATIONS = {
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Mish, nn.Identity,
}


def chain_node_layers(model: nn.Module) -> List[NodeLayer]:
    """Node layers of a chain network: each Linear/Conv feeds the next one.

    The BatchNorm registered right after a producer is its norm, the first
    element-wise activation module after it (:data:`ACTIVATIONS`) its
    activation; with no such module the activation is unknown (``None``) and
    compaction will not fold in-dead nodes' constants. A Linear that
    follows a convolution reads it flattened, so ``repeat = in_features /
    out_channels``. The last prunable layer is the output layer: it has no nodes.
    """
    producers, norms, acts = [], {}, {}
    last = None
    for module in model.modules():
        if isinstance(module, PRUNABLE_TYPES):
            producers.append(module)
            last = module
        elif isinstance(module, NORM_TYPES) and last is not None and id(last) not in norms and id(last) not in acts:
            norms[id(last)] = module
        elif last is not None and id(last) not in acts and type(module) in ACTIVATIONS:
            acts[id(last)] = module
    names = {id(m): n for n, m in model.named_modules()}
    layers = []
    for prod, cons in zip(producers[:-1], producers[1:]):
        n = _out_units(prod)
        fan = _in_units(cons)
        if fan % n:
            raise ValueError(
                f"{names[id(cons)]} reads {fan} inputs, not a multiple of the "
                f"{n} outputs of {names[id(prod)]}: give the model a node_layers() method"
            )
        act = acts.get(id(prod))
        layers.append(
            NodeLayer(
                names[id(prod)],
                prod,
                [Consumer(cons, 0, fan // n)],
                norm=norms.get(id(prod)),
                activation=act,
            )
        )
    return layers


def node_layers(model: nn.Module) -> List[NodeLayer]:
    """The model's own ``node_layers()`` if it has one, else :func:`chain_node_layers`."""
    own = getattr(model, "node_layers", None)
    return own() if callable(own) else chain_node_layers(model)


@dataclass
class LayerNodes:
    """Per-node statistics of one node layer (each field a length-``n`` tensor)."""

    name: str
    in_l2: torch.Tensor
    in_l1: torch.Tensor
    out_l2: torch.Tensor
    out_l1: torch.Tensor
    in_dead: torch.Tensor
    out_dead: torch.Tensor

    @property
    def dead(self) -> torch.Tensor:
        return self.in_dead | self.out_dead

    @property
    def alive(self) -> torch.Tensor:
        return ~self.dead

    @property
    def size(self) -> int:
        return int(self.in_dead.numel())


@torch.no_grad()
def layer_nodes(layer: NodeLayer) -> LayerNodes:
    """Norms and death flags of every node of ``layer``.

    Incoming norms include the bias (the rescaling symmetry scales the bias with
    the incoming weights); with BatchNorm, its scale and shift are the incoming
    parameters that matter and are included instead of the bias.
    """
    rows = incoming_rows(layer.producer).float()
    n = rows.shape[0]
    in_dead = (rows == 0).all(dim=1)
    extra = []
    bias = getattr(layer.producer, "bias", None)
    if layer.norm is not None and layer.norm.weight is not None:
        in_dead = in_dead | (layer.norm.weight == 0)
        extra = [layer.norm.weight.float(), layer.norm.bias.float()]
    elif bias is not None:
        extra = [bias.float()]
    in_sq = rows.pow(2).sum(1) + sum(e.pow(2) for e in extra)
    in_l1 = rows.abs().sum(1) + sum(e.abs() for e in extra)
    out_sq = torch.zeros(n)
    out_l1 = torch.zeros(n)
    out_dead = torch.ones(n, dtype=torch.bool)
    for consumer in layer.consumers:
        cols = outgoing_columns(consumer, n).float().cpu()
        out_sq += cols.pow(2).sum(1)
        out_l1 += cols.abs().sum(1)
        out_dead &= (cols == 0).all(dim=1)
    return LayerNodes(
        layer.name,
        in_l2=in_sq.sqrt().cpu(),
        in_l1=in_l1.cpu(),
        out_l2=out_sq.sqrt(),
        out_l1=out_l1,
        in_dead=in_dead.cpu(),
        out_dead=out_dead,
    )


def model_nodes(model: nn.Module) -> List[LayerNodes]:
    """:func:`layer_nodes` for every node layer of ``model``."""
    return [layer_nodes(layer) for layer in node_layers(model)]


def dead_fraction(stats: List[LayerNodes]) -> float:
    total = sum(s.size for s in stats)
    return sum(int(s.dead.sum()) for s in stats) / total if total else 0.0


# Fixed log-spaced magnitude bins so that histograms of different epochs and
# runs compare bin by bin: 8 per decade from 1e-8 to 10, plus an exact-zero bin.
HIST_EDGES = np.logspace(-8, 1, 9 * 8 + 1)


@torch.no_grad()
def magnitude_histogram(w: torch.Tensor, edges: np.ndarray = HIST_EDGES):
    """Counts of ``|w|``: ``(zeros, counts)`` with ``counts[i]`` in ``[edges[i], edges[i+1])``.

    Magnitudes below ``edges[0]`` (but non-zero) land in the first bin, above
    ``edges[-1]`` in the last, so the counts always sum to ``w.numel()``.
    """
    a = w.detach().abs().flatten().double().cpu().numpy()
    zeros = int((a == 0).sum())
    nz = np.clip(a[a > 0], edges[0], edges[-1] * (1 - 1e-12))
    counts, _ = np.histogram(nz, bins=edges)
    return zeros, counts
