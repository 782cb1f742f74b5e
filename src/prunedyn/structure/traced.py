"""Node wiring read off torch-pruning's traced dependency graph.

A model that is not a chain (residual blocks, inverted residuals, depthwise
convolutions, skip concatenations) and that provides no ``node_layers()`` of
its own is wired here from a forward pass on an example input:
``torch_pruning.DependencyGraph`` traces it, and each of its pruning groups
(every channel that must go together with output channel ``j`` of a layer) is
one node layer. :func:`read_wiring` returns plain :class:`TracedGroup`
records; :func:`prunedyn.structure.nodes.traced_node_layers` turns them into
the :class:`~prunedyn.structure.nodes.NodeLayer` objects the rest of the
package uses.

A group has

- one or more **producers** (Linear / Conv layers whose output channel ``j``
  is node ``j``), each with the BatchNorm that directly follows it. Several
  producers share a node index when their outputs are summed (a ResNet block's
  last conv and its shortcut / downsample conv, the projections of
  MobileNetV2's inverted residuals, the stem conv whose output is the identity
  shortcut of the first blocks) or when a depthwise convolution
  (``groups == in_channels == out_channels``) reads channel ``j`` and writes
  channel ``j``: its input and output channels are tied;
- **consumers**: the non-depthwise Linear / Conv layers that read the group's
  channels, at an ``offset`` and ``repeat`` (see
  :class:`~prunedyn.structure.nodes.Consumer`), each with its **sources**: the
  producers upstream of what it reads, walking back through element-wise ops,
  norms, pooling, reshapes and sums and stopping at the first Linear / Conv
  (a depthwise conv stops the walk: its output is constant when its own
  filter is zero, whatever it reads). What a consumer reads at channel ``j`` is
  constant when all its sources' node ``j`` are in-dead. An element-wise op
  with an operand that is not traced (the model input, a buffer) makes the
  consumer's sources empty: never constant. Compaction also checks every
  constant it relies on, on its example input.

Layers whose output reaches the model output without passing through another
Linear / Conv are output layers: they, and every group they belong to, have no
nodes; neither has a group tied to a tensor that cannot shrink (summed with
the model input or a buffer, or read by a depthwise conv straight from the
input). A group whose channels pass through a norm that pools several channels' statistics
(LayerNorm, GroupNorm with fewer groups than channels: a transformer's residual stream, a ConvNeXt
stage) is not a node layer either: removing a channel would change the others' normalisation, so
the group is kept whole, and one :class:`KeptChannelsWarning` names every such group and why.
The channels a grouped convolution that is not depthwise (ResNeXt, RegNet) reads or writes are
nodes, in ``groups`` equal blocks that compaction shrinks equally
(:attr:`~prunedyn.structure.nodes.NodeLayer.blocks`, :mod:`prunedyn.structure.grouped`); they are
kept whole (and named) only where its groups cannot be read that way: a grouped conv that reads
a group together with other channels (a concatenation), a transposed one, or one with a single
output channel per group (torch-pruning traces it as depthwise).
A view that moves channels through a tensor of more than 4 dims (a channel shuffle's view / transpose / view,
ShuffleNet) is traced as an opaque op (:func:`regrouping`, :func:`build_graph`): the groups through it (a
ShuffleNet block's outputs) are kept whole and named in the warning; those inside its branches are nodes.
Structures that cannot be wired exactly (a depthwise multiplier, a norm that does not directly follow a
producer, other layers with per-channel parameters in a group, a consumer
reading a group at non-contiguous positions, a producer only part of whose channels the trace
ties to a group: a reshape torch-pruning maps wrongly) raise :class:`WiringError` naming the layer.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from prunedyn.modes import eval_mode
from prunedyn.structure.layers import PRUNABLE_TYPES

NORM_TYPES = (nn.modules.batchnorm._BatchNorm,)


class WiringError(ValueError):
    """A model's node wiring cannot be read, or two readings of it disagree."""


class KeptChannelsWarning(UserWarning):
    """Channel groups left out of the node wiring (never counted dead, never removed), and why."""


@dataclass
class TracedConsumer:
    module: nn.Module
    offset: int
    repeat: int
    # indices into TracedGroup.producers; () when the input also carries
    # something that no producer of the group controls
    sources: Tuple[int, ...]
    # a BatchNorm on the consumer's side (it reads a concatenation: DenseNet), whose channel
    # norm_offset + j is node j: sliced with the consumer's inputs
    norm: Optional[nn.Module] = None
    norm_offset: int = 0


@dataclass
class TracedGroup:
    """One pruning group: producers (with norms) sharing node index ``j``, and their consumers."""

    name: str
    producers: List[Tuple[nn.Module, Optional[nn.Module]]]
    consumers: List[TracedConsumer] = field(default_factory=list)


def is_depthwise(module: nn.Module) -> bool:
    """A convolution whose every output channel reads exactly its own input channel."""
    return (
        isinstance(module, nn.modules.conv._ConvNd)
        and module.groups > 1
        and module.groups == module.in_channels == module.out_channels
    )


def is_grouped(module: nn.Module) -> bool:
    """A grouped convolution that is not depthwise (ResNeXt, RegNet): its groups must stay equal in
    size, so removing one channel of a group would change the others' wiring."""
    return isinstance(module, nn.modules.conv._ConvNd) and module.groups != 1 and not is_depthwise(module)


def _unwired_grouped(module: nn.Module) -> Optional[str]:
    """Why the channels around a grouped convolution (not depthwise) are kept whole, or ``None``:
    a transposed one, or one with one output channel per group that reads several (torch-pruning
    ties its input and output channels as if it were depthwise: its groups cannot be read)."""
    if not is_grouped(module):
        return None
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return "a transposed grouped convolution, its groups stay equal in size"
    if module.groups == module.out_channels:
        return "one output channel per group, which torch-pruning traces as depthwise"
    return None


def regrouping(grad_fn) -> str | None:
    """Why a traced view / reshape regroups channels that torch-pruning cannot map, or ``None`` (shapes read
    off the autograd node: its saved input sizes, its output's metadata; unknown: not mapped). Its index
    mapping handles 2-D to 4-D tensors only (and flattening to (N, features)); a view through more dims (a
    channel shuffle's (N, groups, C / groups, H, W)) gets a wrong mapping or none (VainF/Torch-Pruning#14)."""
    meta = getattr(grad_fn, "_input_metadata", ())
    src, dst = getattr(grad_fn, "_saved_self_sym_sizes", None), tuple(meta[0].shape) if meta else None
    if src is None or dst is None:
        return "a view of unknown shapes, which torch-pruning cannot map"
    if max(len(src), len(dst)) <= 4 or (len(dst) == 2 and dst[0] == src[0]):
        return None
    return (f"a view {tuple(src)} -> {dst} moves them across dims (as a channel shuffle does), which torch-pruning "
            "cannot map")


def build_graph(model: nn.Module, example: torch.Tensor):
    """torch-pruning's dependency graph of ``model`` traced on ``example`` (eval mode; the mode is restored).
    Views that regroup channels (:func:`regrouping`) are traced as element-wise ops, with no index mapping,
    and listed in ``graph.regrouping`` (module -> why): every group through them is kept whole."""
    import torch_pruning as tp
    from torch_pruning.dependency import index_mapping
    from torch_pruning.ops import OPTYPE

    class Graph(tp.DependencyGraph):
        def _build_dependency(self, module2node):  # after the trace, before shape inference and index mapping
            super()._build_dependency(module2node)
            self.regrouping = {m: why for m, nd in module2node.items() if nd.type == OPTYPE.RESHAPE
                               and (why := regrouping(nd.grad_fn))}
            for m in self.regrouping:
                module2node[m].type = OPTYPE.ELEMENTWISE

        def build_dependency(self, *args, **kwargs):  # chunks' sizes from their grad_fn, as torch-pruning means
            super().build_dependency(*args, **kwargs)  # to (it misses torch 2's names and infers them downstream,
            for nd in self.module2node.values():  # wrongly past a regrouping view)
                fn, size = nd.grad_fn, getattr(nd.grad_fn, "_saved_split_size", None)
                if nd.type == OPTYPE.SPLIT and size and fn._saved_dim == 1:
                    total = fn._saved_self_sym_sizes[1]
                    nd.module.offsets = list(range(0, total, size)) + [total]
                    index_mapping.update_split_index_mapping(self, nd)
            return self

    with eval_mode(model), torch.enable_grad():
        return Graph().build_dependency(model, example_inputs=example)


def _downstream(graph, start_nodes):
    """Walk forward from ``start_nodes`` to the first Linear / Conv on every path: ``(those layers,
    whether a path ends without one (the model output), the op types crossed on the way)``."""
    found, ends, types = set(), False, set()
    stack, seen = list(start_nodes), set()
    while stack:
        nd = stack.pop()
        if id(nd) in seen:
            continue
        seen.add(id(nd))
        if isinstance(nd.module, PRUNABLE_TYPES):
            found.add(nd.module)
            continue
        types.add(nd.type)
        if not nd.outputs:
            ends = True
            continue
        stack.extend(nd.outputs)
    return found, ends, types


def output_layers(graph, model: nn.Module) -> List[nn.Module]:
    """Prunable layers whose output reaches the model output without passing another Linear / Conv."""
    return [module for module, node in graph.module2node.items()
            if isinstance(module, PRUNABLE_TYPES) and (not node.outputs or _downstream(graph, node.outputs)[1])]


def _sources(graph, consumer: nn.Module, members: Dict[int, int]) -> Tuple[int, ...]:
    """Indices of the group producers upstream of ``consumer``'s input; () if something else also feeds it.

    Past a concatenation, producers outside the group are other channels of the
    concatenated tensor and are ignored.
    """
    from torch_pruning.ops import OPTYPE

    found, unknown = set(), False
    stack = [(nd, False) for nd in graph.module2node[consumer].inputs]
    seen = set()
    while stack:
        nd, via_cat = stack.pop()
        if (id(nd), via_cat) in seen:
            continue
        seen.add((id(nd), via_cat))
        m = nd.module
        if isinstance(m, PRUNABLE_TYPES):
            if id(m) in members:
                found.add(members[id(m)])
            elif not via_cat:
                unknown = True
            continue
        if not nd.inputs:  # an op on a parameter (a Linear's transposed weight): not data
            continue
        grad_fn = getattr(nd, "grad_fn", None)
        if nd.type == OPTYPE.ELEMENTWISE and grad_fn is not None and not via_cat:
            # an operand outside the traced graph (the model input, a buffer) enters here
            if any(f is None for f, _ in getattr(grad_fn, "next_functions", ())):
                unknown = True
        cat = via_cat or nd.type == OPTYPE.CONCAT
        stack.extend((i, cat) for i in nd.inputs)
    return () if unknown or not found else tuple(sorted(found))


def _only_reader(graph, norm: nn.Module) -> Optional[nn.Module]:
    """The one Linear / Conv that ``norm``'s output reaches through channel-wise ops (activations,
    pooling, reshapes), or ``None`` when it reaches several, a concatenation or the output."""
    from torch_pruning.ops import OPTYPE

    found, ends, types = _downstream(graph, graph.module2node[norm].outputs)
    if ends or types & {OPTYPE.CONCAT, OPTYPE.SPLIT, OPTYPE.OUTPUT} or len(found) != 1:
        return None
    return next(iter(found))


#: Seconds the trace and grouping of one model may take before :func:`read_wiring` gives up
#: (torch-pruning's grouping can run for a very long time on some graphs, e.g. Swin transformers).
TRACE_SECONDS = 120.0


@contextmanager
def time_limit(seconds: float, what: str):
    """Raise :class:`WiringError` if the block runs longer than ``seconds`` (SIGALRM: only in the
    main thread of a POSIX process; elsewhere the block runs without a limit)."""
    import signal
    import threading

    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread() or seconds <= 0:
        yield
        return

    def expired(signum, frame):
        raise WiringError(f"{what} took over {seconds:g} s; prunedyn cannot wire this model "
                          f"(give it a node_layers() method, or raise prunedyn.structure.traced.TRACE_SECONDS)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def mixes_channels(module) -> bool:
    """A norm whose statistics pool several channels (LayerNorm, GroupNorm with fewer groups than
    channels, LocalResponseNorm), affine or not: a channel zeroed before it is not zero after it."""
    if isinstance(module, nn.GroupNorm):
        return module.num_groups < module.num_channels
    return isinstance(module, (nn.LayerNorm, nn.LocalResponseNorm, nn.RMSNorm))


def read_wiring(model: nn.Module, example: torch.Tensor, graph=None) -> List[TracedGroup]:
    """The node groups of ``model`` from a trace on ``example``, in module registration order.
    Tracing and grouping together may take :data:`TRACE_SECONDS`; beyond that a
    :class:`WiringError` says so."""
    with time_limit(TRACE_SECONDS, f"tracing {type(model).__name__} with torch-pruning"):
        return _read_wiring(model, example, graph)


def _read_wiring(model: nn.Module, example: torch.Tensor, graph=None) -> List[TracedGroup]:
    from torch_pruning.ops import OPTYPE

    graph = graph if graph is not None else build_graph(model, example)
    names = {m: n for n, m in model.named_modules()}
    order_list = [m for _, m in model.named_modules()]
    order = {id(m): i for i, m in enumerate(order_list)}
    outputs = output_layers(graph, model)
    kept: List[Tuple[int, str]] = []
    regrouped = getattr(graph, "regrouping", {})

    def keep(group, mixer, why) -> None:  # the group is not nodes: named in the warning
        makers = [item.dep.target.module for item in group.items
                  if isinstance(item.dep.target.module, PRUNABLE_TYPES) and graph.is_out_channel_pruning_fn(item.dep.handler)]
        first = min((order.get(id(m), 1 << 30) for m in makers), default=order.get(id(mixer), 1 << 30))
        label = names.get(order_list[first], "?") if first < len(order_list) else "?"
        via = f"through {names[mixer]}, a {type(mixer).__name__}: " if mixer in names else ""
        kept.append((first, f"{label} ({via}{why})"))

    def read(group) -> Optional[TracedGroup]:
        mixer = next((item.dep.target.module for item in group.items if mixes_channels(item.dep.target.module)
                      or _unwired_grouped(item.dep.target.module) or item.dep.target.module in regrouped), None)
        if mixer is not None:  # kept: removing a channel would shift the statistics (or positions) of the others
            keep(group, mixer, _unwired_grouped(mixer) or regrouped.get(mixer) or "it pools their statistics")
            return None
        producers, norms, consumers = [], [], []
        n = None
        pinned = False  # tied to a tensor that cannot shrink (the model input, a buffer)
        for item in group.items:
            dep, idxs = item.dep, list(item.idxs)
            roots = list(item.root_idxs) if item.root_idxs is not None else idxs
            module = dep.target.module
            out = graph.is_out_channel_pruning_fn(dep.handler)
            label = names.get(module, type(module).__name__)
            if isinstance(module, PRUNABLE_TYPES) and (out or is_depthwise(module)):
                if sorted(zip(roots, idxs)) != [(j, j) for j in range(len(idxs))]:
                    raise WiringError(f"{label}: its output channels are tied to the group out of order")
                if n is not None and n != len(idxs):
                    raise WiringError(f"{label}: {len(idxs)} channels tied to a group of {n}")
                size = getattr(module, "out_channels", getattr(module, "out_features", len(idxs)))
                if len(idxs) != size:  # torch-pruning mapped a reshape it does not understand
                    raise WiringError(f"{label}: {len(idxs)} of its {size} output channels traced into one group")
                n = len(idxs)
                if module not in producers:
                    producers.append(module)
            elif isinstance(module, PRUNABLE_TYPES):
                consumers.append((module, idxs, roots))
            elif isinstance(module, NORM_TYPES):
                norms.append((module, idxs, roots))
            elif dep.target.type == OPTYPE.ELEMENTWISE:
                grad_fn = getattr(dep.target, "grad_fn", None)
                if any(f is None for f, _ in getattr(grad_fn, "next_functions", ())):
                    pinned = True
            elif dep.target.type == OPTYPE.OUTPUT:
                raise WiringError(f"{label}: a node group reaches the model output")
            elif not isinstance(module, nn.Module) or any(True for _ in module.parameters(recurse=False)):
                raise WiringError(
                    f"{label}: a {type(module).__name__} with per-channel parameters tied to a node group; "
                    "only Linear / Conv / BatchNorm are supported"
                )
        if not producers or pinned:
            return None
        producers.sort(key=lambda m: order.get(id(m), 1 << 30))
        norm_of: Dict[int, nn.Module] = {}
        reader_norm: Dict[int, Tuple[nn.Module, int]] = {}  # consumer -> (its BatchNorm, offset)
        for bn, idxs, roots in norms:
            inputs = graph.module2node[bn].inputs
            src = inputs[0].module if len(inputs) == 1 else None
            if src is not None and any(src is p for p in producers) and len(graph.module2node[src].outputs) == 1:
                norm_of[id(src)] = bn
                continue
            reader = _only_reader(graph, bn)
            off = min(idxs) if idxs else 0
            if reader is None or sorted(zip(roots, idxs)) != [(j, off + j) for j in range(len(idxs))]:
                raise WiringError(
                    f"{names.get(bn, bn)}: a norm that neither directly (and alone) follows a producer of its "
                    "group nor feeds one layer alone"
                )
            reader_norm[id(reader)] = (bn, off)
        members = {id(p): i for i, p in enumerate(producers)}
        if any(is_depthwise(p) and not _sources(graph, p, members) for p in producers):
            return None  # a depthwise conv reading the model input: its input channels cannot go
        traced = TracedGroup(names[producers[0]], [(p, norm_of.get(id(p))) for p in producers])
        for module, idxs, roots in consumers:
            label = names.get(module, type(module).__name__)
            by_root: Dict[int, List[int]] = {}
            for i, r in zip(idxs, roots):
                by_root.setdefault(r, []).append(i)
            rep = len(idxs) // n if n else 0
            off = min(idxs) if idxs else 0
            ok = rep > 0 and sorted(by_root) == list(range(n)) and all(
                sorted(by_root[j]) == list(range(off + j * rep, off + (j + 1) * rep)) for j in range(n)
            )
            if not ok:
                raise WiringError(
                    f"{label}: reads the {n} channels of {traced.name} at positions that are not "
                    "contiguous blocks (offset + j * repeat + r): not supported"
                )
            if is_grouped(module) and not (off == 0 and rep == 1 and n == module.in_channels):
                # its groups would have to lose channels of other tensors too: not wired here
                keep(group, module, "it reads them with other channels, its groups stay equal in size")
                return None
            bn, bn_off = reader_norm.pop(id(module), (None, 0))
            traced.consumers.append(TracedConsumer(module, off, rep, _sources(graph, module, members), bn, bn_off))
        if reader_norm:
            bn = next(iter(reader_norm.values()))[0]
            raise WiringError(f"{names.get(bn, bn)}: a norm whose layer does not read its group")
        traced.consumers.sort(key=lambda c: order.get(id(c.module), 1 << 30))
        return traced

    groups, errors = [], []
    for group in graph.get_all_groups(ignored_layers=outputs, root_module_types=PRUNABLE_TYPES):
        try:
            traced = read(group)
        except WiringError as err:  # kept: the refusal names the first layer in registration order
            first = min((order.get(id(item.dep.target.module), 1 << 30) for item in group.items), default=1 << 30)
            errors.append((first, str(err)))
            continue
        if traced is not None:
            groups.append(traced)
    if errors:
        raise WiringError(min(errors)[1])
    if kept:
        import warnings

        listed = [why for _, why in sorted(kept)]
        warnings.warn(f"{len(listed)} channel group(s) are not nodes, kept whole (removing a channel would change the "
                      "others' normalisation, a grouped convolution's wiring or a channel shuffle's): "
                      f"{'; '.join(listed[:4])}"
                      + ("; ..." if len(listed) > 4 else ""), KeptChannelsWarning, stacklevel=3)
    groups.sort(key=lambda g: order.get(id(g.producers[0][0]), 1 << 30))
    return groups
