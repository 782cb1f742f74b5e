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
``node_layers()`` method, or is a chain of Linear/Conv(+BatchNorm) layers in
registration order, which :func:`chain_node_layers` reads off, or has any
other graph (residual sums, depthwise convolutions, concatenations), which
:func:`traced_node_layers` reads off a traced forward pass
(:mod:`prunedyn.structure.traced`). :func:`node_layers` picks: given an
example input it checks the chain guess against the trace and falls back on
the traced wiring when they disagree.

Several producers can share one node index (:attr:`NodeLayer.tied`): the
outputs of a ResNet block and of its shortcut are summed, so channel ``j`` of
both is one node, removable only when it is dead as a whole; a depthwise
convolution's output channel ``j`` reads only its input channel ``j``, so the
two are one node too.

A node is

- **in-dead** when all its incoming weights are zero (or its BatchNorm scale
  is zero): it emits a constant, ``act(b)`` or ``act(BN(b))``. With tied
  producers: when what every consumer reads at index ``j`` is constant, i.e.
  node ``j`` of each of the consumer's :attr:`Consumer.sources` is in-dead;
- **out-dead** when all its outgoing weights are zero: nothing downstream
  sees it (with tied producers: nothing downstream sees any of them);
- **alive** otherwise.

Shapes: for a producer with ``n`` nodes every per-node statistic is a
1-D tensor of length ``n``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from prunedyn.structure.layers import PRUNABLE_TYPES
from prunedyn.structure.traced import WiringError, is_grouped, read_wiring

NORM_TYPES = (nn.modules.batchnorm._BatchNorm,)


@dataclass
class Consumer:
    """A layer that reads a producer's output.

    ``offset``: index of the producer's first channel among the consumer's input
    channels (non-zero after a concatenation). ``repeat``: consumer input
    features per producer channel (``H*W`` when a Linear reads a flattened
    ``C x H x W`` map; 1 otherwise). ``sources``: for a layer with tied
    producers, the indices (0: ``producer``, ``i``: ``tied[i - 1]``) of those
    upstream of what this consumer reads; ``None``: all of them; ``()``: the
    input also carries something no producer of the layer controls (it is
    never constant).
    """

    module: nn.Module
    offset: int = 0
    repeat: int = 1
    sources: Optional[Tuple[int, ...]] = None
    # a BatchNorm in front of this consumer alone (after a concatenation: DenseNet), whose channel
    # ``norm_offset + j`` is node ``j``: compaction slices it with the consumer's inputs
    norm: Optional[nn.Module] = None
    norm_offset: int = 0


@dataclass
class Tied:
    """A further producer whose output channel ``j`` is node ``j`` of the layer too.

    Its outputs are summed with the layer's (residual connections) or it is a
    depthwise convolution reading channel ``j``; ``norm`` is the BatchNorm right
    after it. Compaction removes node ``j`` from every tied producer at once.
    """

    producer: nn.Module
    norm: Optional[nn.Module] = None


@dataclass
class NodeLayer:
    """The nodes of one producer layer and the layers that consume them."""

    name: str
    producer: nn.Module
    consumers: List[Consumer]
    norm: Optional[nn.Module] = None
    # None: unknown (e.g. a functional call in forward), so constants cannot be folded
    activation: Optional[Callable[[torch.Tensor], torch.Tensor]] = F.relu
    # further producers sharing the node index (residual sums, depthwise convolutions)
    tied: List[Tied] = field(default_factory=list)
    # wiring read off a trace: compaction measures the constant each consumer reads
    # from an in-dead node on its example input instead of computing act(BN(b))
    measured: bool = False

    @property
    def size(self) -> int:
        return _out_units(self.producer)

    @property
    def producers(self) -> List[Tuple[nn.Module, Optional[nn.Module]]]:
        """``(producer, norm)`` of the layer and of every tied producer."""
        return [(self.producer, self.norm)] + [(t.producer, t.norm) for t in self.tied]

    @property
    def blocks(self) -> int:
        """``B``: the nodes fall into ``B`` equal contiguous blocks (``j // (size / B)``) that must lose
        equally many nodes, so that every grouped convolution (not depthwise) producing or reading
        them keeps equal groups: ``B = lcm`` of their ``groups`` (1: none)."""
        b = 1
        for module in [p for p, _ in self.producers] + [c.module for c in self.consumers]:
            if is_grouped(module):
                b = math.lcm(b, module.groups)
        return b


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
    if m.groups > 1:  # (out, in / g, k...): input channel i = q * (in / g) + r is read by group q's rows
        g = m.groups
        per = w.reshape(g, w.shape[0] // g, w.shape[1], -1).permute(0, 2, 1, 3)  # (g, in / g, out / g, k)
        return per.reshape(g * w.shape[1], -1)[off : off + n]
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


def traced_node_layers(model: nn.Module, example: torch.Tensor, graph=None) -> List[NodeLayer]:
    """Node layers read off torch-pruning's dependency graph traced on ``example``.

    One layer per pruning group (:func:`prunedyn.structure.traced.read_wiring`):
    its first producer in registration order is ``producer``, the others are
    :attr:`NodeLayer.tied`; constants are measured at compaction
    (``measured=True``, ``activation=None``). Raises :class:`WiringError` on a
    structure that cannot be wired exactly.
    """
    layers = []
    for group in read_wiring(model, example, graph=graph):
        (prod, norm), rest = group.producers[0], group.producers[1:]
        consumers = [Consumer(c.module, c.offset, c.repeat, c.sources, c.norm, c.norm_offset) for c in group.consumers]
        layers.append(
            NodeLayer(group.name, prod, consumers, norm=norm, activation=None,
                      tied=[Tied(p, nm) for p, nm in rest], measured=True)
        )
    return layers


def _wiring_key(layer: NodeLayer):
    return (
        id(layer.norm) if layer.norm is not None else None,
        sorted((id(c.module), c.offset, c.repeat) for c in layer.consumers),
        len(layer.tied),
    )


def chain_wiring_problems(chain: List[NodeLayer], traced: List[NodeLayer], model: nn.Module) -> List[str]:
    """Where the chain wiring guessed from module order disagrees with the traced wiring (empty: agrees)."""
    names = {id(m): n for n, m in model.named_modules()}

    def label(m):
        return names.get(id(m), type(m).__name__)

    def describe(layer):
        cons = ", ".join(
            f"{label(c.module)}" + (f"@{c.offset}" if c.offset else "") + (f"x{c.repeat}" if c.repeat != 1 else "")
            for c in layer.consumers
        )
        tied = "; tied to " + ", ".join(label(t.producer) for t in layer.tied) if layer.tied else ""
        norm = f"; norm {label(layer.norm)}" if layer.norm is not None else ""
        return f"feeds [{cons}]{norm}{tied}"

    by_producer = {}
    for layer in traced:
        for prod, _ in layer.producers:
            by_producer[id(prod)] = layer
    problems, seen = [], set()
    for layer in chain:
        t = by_producer.get(id(layer.producer))
        if t is None:
            problems.append(
                f"{layer.name}: module order makes it a node layer that {describe(layer)}, but the traced graph "
                "has no nodes there (an output layer, or unused)"
            )
            continue
        seen.add(id(t))
        if t.producer is not layer.producer or _wiring_key(t) != _wiring_key(layer):
            problems.append(
                f"{layer.name}: module order says it {describe(layer)}, the traced graph says it "
                f"{describe(t) if t.producer is layer.producer else 'is tied to ' + t.name + ' which ' + describe(t)}"
            )
    for t in traced:
        if id(t) not in seen:
            problems.append(f"{t.name}: the traced graph has a node layer that {describe(t)}, module order has none")
    return problems


def node_layers(model: nn.Module, example: Optional[torch.Tensor] = None, use_trace: bool = True) -> List[NodeLayer]:
    """The node wiring of ``model``.

    The model's own ``node_layers()`` if it has one. Otherwise, without an
    ``example`` input, :func:`chain_node_layers` (which assumes a chain and can
    be silently wrong on other graphs). With an ``example``, the model is also
    traced: the chain reading is returned when the trace agrees with it, the
    traced wiring (:func:`traced_node_layers`) when not (``use_trace=False``:
    a :class:`WiringError` naming the layer instead). A model that is not a
    chain and cannot be wired from the trace either raises :class:`WiringError`,
    and so does a model torch-pruning fails to trace: with an example, a chain
    reading is never returned unchecked.
    """
    own = getattr(model, "node_layers", None)
    if callable(own):
        return own()
    if example is None:
        return chain_node_layers(model)
    try:
        chain = chain_node_layers(model)
    except ValueError as err:  # not even a chain by shapes
        if not use_trace:
            raise WiringError(str(err)) from err
        chain, chain_error = None, err
    try:
        traced = traced_node_layers(model, example)
    except WiringError as err:  # the trace shows a structure not wired here: refuse, naming it
        raise WiringError(str(err)) from None
    except Exception as err:  # torch-pruning cannot trace it: no guess is returned unchecked
        why = " ".join(f"{type(err).__name__}: {err}".split())[:200]
        head = f"{chain_error}; and t" if chain is None else "T"
        raise WiringError(f"{head}orch-pruning cannot trace {type(model).__name__} on this example ({why}), so "
                          "its wiring cannot be checked: give the model a node_layers() method, or call "
                          "model_nodes / compact without an example to take the chain reading as it is") from None
    if chain is not None:
        problems = chain_wiring_problems(chain, traced, model)
        if not problems:
            return chain
        if not use_trace:
            raise WiringError(_chain_message(problems))
    return traced


def _chain_message(problems: List[str]) -> str:
    return (
        "the chain wiring read off module order is wrong: " + "; ".join(problems)
        + " -- use node_layers(model, example) for the traced wiring, or give the model a node_layers() method"
    )


def check_chain_wiring(model: nn.Module, example: torch.Tensor) -> List[NodeLayer]:
    """:func:`chain_node_layers`, raising :class:`WiringError` (naming the layer) where a trace disagrees."""
    chain = chain_node_layers(model)
    problems = chain_wiring_problems(chain, traced_node_layers(model, example), model)
    if problems:
        raise WiringError(_chain_message(problems))
    return chain


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
    parameters that matter and are included instead of the bias. With tied
    producers the incoming norms sum over all of them, and a node is in-dead
    where every consumer reads only in-dead sources (:attr:`Consumer.sources`).
    """
    n = layer.size
    in_sq, in_l1, dead = 0, 0, []
    for producer, norm in layer.producers:
        rows = incoming_rows(producer).float()
        p_dead = (rows == 0).all(dim=1)
        extra = []
        bias = getattr(producer, "bias", None)
        if norm is not None and norm.weight is not None:
            p_dead = p_dead | (norm.weight == 0)
            extra = [norm.weight.float(), norm.bias.float()]
        elif bias is not None:
            extra = [bias.float()]
        in_sq = in_sq + rows.pow(2).sum(1) + sum(e.pow(2) for e in extra)
        in_l1 = in_l1 + rows.abs().sum(1) + sum(e.abs() for e in extra)
        dead.append(p_dead)
    in_dead = torch.stack(dead).all(0)
    if any(c.sources is not None for c in layer.consumers):
        # constant where every consumer reads only in-dead sources
        in_dead = torch.ones_like(dead[0])
        for consumer in layer.consumers:
            srcs = range(len(dead)) if consumer.sources is None else consumer.sources
            in_dead = in_dead & (torch.stack([dead[s] for s in srcs]).all(0) if srcs else torch.zeros_like(in_dead))
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


def model_nodes(model: nn.Module, example: Optional[torch.Tensor] = None) -> List[LayerNodes]:
    """:func:`layer_nodes` for every node layer of ``model`` (wiring: :func:`node_layers`)."""
    return [layer_nodes(layer) for layer in node_layers(model, example)]


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
