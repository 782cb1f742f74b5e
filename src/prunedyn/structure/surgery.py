"""Compaction: remove dead nodes and get a smaller dense network with the same outputs.

For every node layer (:mod:`prunedyn.structure.nodes`):

- an **out-dead** node contributes nothing downstream: its row of the
  producer (filter, bias, BatchNorm entries) and its columns in every consumer
  are removed;
- an **in-dead** node emits a constant map ``c = act(b)`` (``act(BN(b))`` with
  BatchNorm, in eval mode). When every consumer is a Linear layer or an
  unpadded convolution, that constant is folded into each consumer's bias,
  ``b' = b + sum_j W[:, cols(j)] @ c_j``, and the node removed. A convolution
  with zero padding (or a transposed one) sees a constant input map only away
  from the border, so no bias can stand in for it; but its contribution is
  linear in the input, ``sum_j conv(c_j 1, W_j) = conv(c_* 1, sum_j (c_j / c_*) W_j)``,
  so all the layer's non-zero constants are **merged into one carrier node**
  ``*`` (the one of largest ``|c|``): the carrier's outgoing weights become
  ``sum_j (c_j / c_*) W_j`` in every consumer and the other constant nodes go.
  At most one in-dead node per layer is kept this way (``kept_constant``),
  and the outputs are unchanged to float rounding. A layer whose every node
  is dead keeps one node, its outgoing weights zeroed (a layer cannot have
  zero channels), also counted in ``kept_constant``. Nodes whose constant is 0
  simply go; with an unknown activation all in-dead nodes are kept.

Consumers are sliced once with one keep-mask over all their input channels, so
a consumer fed by several producers (a U-Net skip concatenation) is handled
by the same code.

Wiring read off a trace (:func:`prunedyn.structure.nodes.traced_node_layers`,
used for any model without ``node_layers()`` that is not a chain) can tie
several producers to one node index: a residual sum, a depthwise convolution.
Node ``j`` then goes from every tied producer (and its BatchNorm; a depthwise
convolution loses the matching input channel too) and from every consumer at
once. Such a node is out-dead when no consumer of any tied tensor reads it,
in-dead when every consumer reads a constant there (all its sources in-dead);
each consumer may read a different constant (a sum of constants further down
a residual chain), which is measured on ``example`` (eval mode, hooks on the
consumers' inputs) rather than computed, and checked to be constant over the
batch and positions (a node that is not is kept). Folding and carrier merging
then work per consumer with its own constants: the carrier is the node whose
smallest non-zero constant is largest, and a constant node the carrier cannot
stand for (its constant is non-zero in a consumer where the carrier's is zero)
is kept too. Next to a grouped convolution every group loses the same number of
nodes (:mod:`prunedyn.structure.grouped`), with a carrier per group. Parameters and FLOPs
(``torch.utils.flop_counter``) are reported before and after.
"""
from __future__ import annotations

import copy
import numbers
from dataclasses import asdict, dataclass, field
from typing import Dict, Optional, Tuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from prunedyn.modes import eval_mode
from prunedyn.structure.alignment import _align_widths, aligned_width  # noqa: F401 (re-exported)
from prunedyn.structure.grouped import (
    block_floor, check_grouped, equal_per_block, grouped_input_rows, shrink_grouped_inputs,
)
from prunedyn.structure.nodes import Consumer, NodeLayer, layer_nodes, node_layers
from prunedyn.structure.saving import (  # noqa: F401 (re-exported: prunedyn.structure.surgery.*)
    COMPACT_FORMAT, CompactionError, load_compact, resized_like, save_compact,
)
from prunedyn.structure.traced import KeptChannelsWarning, is_depthwise


@dataclass
class CompactionReport:
    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    widths_before: Dict[str, int]
    widths_after: Dict[str, int]
    removed_in_dead: Dict[str, int]
    removed_out_dead: Dict[str, int]
    kept_constant: Dict[str, int]
    max_abs_diff: float = float("nan")
    passes: int = 1  # passes run; the last found nothing more to remove unless max_passes stopped it
    # silent (in- and out-dead) nodes kept per layer so that its width is a multiple of ``align``
    kept_for_alignment: Dict[str, int] = field(default_factory=dict)
    align: int = 1
    #: largest absolute output of the original model on the example: the scale of ``max_abs_diff``
    output_scale: float = float("nan")
    #: dead nodes kept per layer so that every grouped convolution's groups stay equal in size
    kept_for_groups: Dict[str, int] = field(default_factory=dict)

    @property
    def rel_diff(self) -> float:
        """``max_abs_diff / max(1, output_scale)``: relative where outputs exceed 1, absolute below; float32
        reordering gives ~1e-7 per rounding, a few 1e-6 at most."""
        return self.max_abs_diff / max(1.0, self.output_scale)

    def to_dict(self) -> dict:
        return asdict(self)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward pass on ``example`` (a multiply-add counts 2)."""
    with eval_mode(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(example)
    return int(counter.get_total_flops())


@torch.no_grad()
def max_abs_diff(a: nn.Module, b: nn.Module, example: torch.Tensor) -> float:
    """Largest absolute difference between the eval-mode outputs of two models."""
    ta, tb = a.training, b.training
    a.eval(), b.eval()
    d = float((a(example) - b(example)).abs().max())
    a.train(ta), b.train(tb)
    return d


@torch.no_grad()
def output_scale(model: nn.Module, example: torch.Tensor) -> float:
    """Largest absolute eval-mode output of ``model`` on ``example``."""
    with eval_mode(model):
        return float(model(example).abs().max())


@torch.no_grad()
def _constant_output(layer: NodeLayer) -> Optional[torch.Tensor]:
    """What each node emits when its incoming weights are all zero (eval mode); None if unknown."""
    if layer.activation is None:
        return None
    prod = layer.producer
    n = layer.size
    b = prod.bias.detach().clone() if prod.bias is not None else torch.zeros(n)
    norm = layer.norm
    if norm is not None:
        scale = norm.weight if norm.weight is not None else torch.ones(n)
        shift = norm.bias if norm.bias is not None else torch.zeros(n)
        if norm.running_mean is not None:
            b = (b - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps)
        b = b * scale + shift
    return layer.activation(b)


def _foldable(consumer: Consumer) -> bool:
    m = consumer.module
    if isinstance(m, nn.Linear):
        return True
    if isinstance(m, nn.modules.conv._ConvTransposeNd):
        return False
    if m.padding == "valid":
        return True
    pad = m.padding if isinstance(m.padding, tuple) else (m.padding,)
    return m.padding != "same" and all(p == 0 for p in pad)


@torch.no_grad()
def _fold_constants(consumer: Consumer, nodes: torch.Tensor, const: torch.Tensor) -> None:
    """Add the contribution of constant input ``const[j]`` for ``j in nodes`` to the bias."""
    m, off, rep = consumer.module, consumer.offset, consumer.repeat
    for j in nodes.tolist():
        c = float(const[j])
        if c == 0.0:
            continue
        if m.bias is None:  # only when there is something to fold: bias-free layers stay bias-free
            n_out = m.out_features if isinstance(m, nn.Linear) else m.out_channels
            m.bias = nn.Parameter(torch.zeros(n_out, dtype=m.weight.dtype, device=m.weight.device))
        if isinstance(m, nn.Linear):
            m.bias += c * m.weight[:, off + j * rep : off + (j + 1) * rep].sum(1)
        else:  # a grouped convolution: only the rows of node j's group read it
            rows, col = grouped_input_rows(m, off + j)
            w = m.weight[rows, col]
            m.bias[rows] += c * w.reshape(w.shape[0], -1).sum(1)


def _input_block(consumer: Consumer, j: int) -> torch.Tensor:
    """View of the consumer weights that read producer node ``j``."""
    m, off, rep = consumer.module, consumer.offset, consumer.repeat
    if isinstance(m, nn.Linear):
        return m.weight[:, off + j * rep : off + (j + 1) * rep]
    if isinstance(m, nn.modules.conv._ConvTransposeNd):
        return m.weight[off + j]
    rows, col = grouped_input_rows(m, off + j)
    return m.weight[rows, col]


@torch.no_grad()
def _merge_into_carrier(consumer: Consumer, nodes: torch.Tensor, const: torch.Tensor, carrier: int) -> None:
    """Give ``carrier`` the outgoing weights ``sum_j (c_j / c_carrier) W_j`` over ``nodes`` (carrier included)."""
    c0 = float(const[carrier])
    merged = sum(_input_block(consumer, j) * (float(const[j]) / c0) for j in nodes.tolist())
    _input_block(consumer, carrier).copy_(merged)


def _carrier(table: torch.Tensor, emitting: torch.Tensor) -> Tuple[int, torch.Tensor]:
    """``(carrier, mergeable)`` among the ``emitting`` nodes, given their constants ``table``
    (consumers x n): the carrier has the largest smallest-non-zero ``|c|`` (the merge divides by it);
    a node it cannot stand for (non-zero where the carrier's constant is zero) is not mergeable."""
    size = torch.where(table != 0, table.abs(), torch.full_like(table, float("inf"))).min(0).values
    size = torch.where(emitting & torch.isfinite(size), size, torch.full_like(size, -1.0))
    carrier = int(size.argmax())
    return carrier, emitting & ~((table != 0) & (table[:, carrier : carrier + 1] == 0)).any(0)


def _slice_param(module: nn.Module, name: str, index: torch.Tensor, dim: int) -> None:
    p = getattr(module, name, None)
    if p is None:
        return
    new = p.detach().index_select(dim, index).clone()
    if isinstance(p, nn.Parameter):
        setattr(module, name, nn.Parameter(new, requires_grad=p.requires_grad))
    else:
        module.register_buffer(name, new)


def _shrink_outputs(module: nn.Module, keep: torch.Tensor, norm: nn.Module | None) -> None:
    depthwise = is_depthwise(module)
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        _slice_param(module, "weight", keep, 1)
    else:
        _slice_param(module, "weight", keep, 0)
    _slice_param(module, "bias", keep, 0)
    if isinstance(module, nn.Linear):
        module.out_features = len(keep)
    else:
        module.out_channels = len(keep)
        if depthwise:  # its input channel j goes with its output channel j
            module.in_channels = module.groups = len(keep)
    if norm is not None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            _slice_param(norm, name, keep, 0)
        norm.num_features = len(keep)


def _shrink_inputs(module: nn.Module, keep_mask: torch.Tensor) -> None:
    keep = torch.nonzero(keep_mask).flatten()
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        _slice_param(module, "weight", keep, 0)
    elif isinstance(module, nn.Linear) or module.groups == 1:
        _slice_param(module, "weight", keep, 1)
    if isinstance(module, nn.Linear):
        module.in_features = len(keep)
    elif module.groups != 1:
        if bool(keep_mask.all()):
            return
        if is_depthwise(module) or isinstance(module, nn.modules.conv._ConvTransposeNd):
            raise NotImplementedError("compaction of the inputs of a depthwise or grouped transposed convolution")
        shrink_grouped_inputs(module, keep_mask)
    else:
        module.in_channels = len(keep)


@torch.no_grad()
def _measured_constants(model: nn.Module, layers, example: torch.Tensor) -> Dict[int, Tuple[torch.Tensor, torch.Tensor]]:
    """``{id(consumer module): (value, constant)}`` per input unit, from one eval forward pass on ``example``.

    ``value[k]``: the mean of input unit ``k`` over the batch (and positions);
    ``constant[k]``: whether it is the same everywhere.
    """
    modules = {id(c.module): c.module for layer in layers if layer.measured for c in layer.consumers}
    if not modules:
        return {}
    seen, hooks = {}, []

    def hook(module, inputs):
        if id(module) in seen:  # a module called twice reads two inputs: no single constant
            seen[id(module)] = None
            return
        x = inputs[0].detach()
        if isinstance(module, nn.Linear):  # features last: (..., in_features), a sequence's tokens included
            x = x.reshape(-1, x.shape[-1]).transpose(0, 1)
        else:  # channels at dim 1
            x = x.transpose(0, 1).reshape(x.shape[1], -1) if x.dim() > 1 else x.reshape(-1, 1)
        lo, hi = x.min(1).values, x.max(1).values
        value = x.double().mean(1).to(x.dtype)
        seen[id(module)] = (value, (hi - lo) <= 1e-6 * torch.clamp(value.abs(), min=1.0))

    for m in modules.values():
        hooks.append(m.register_forward_pre_hook(hook))
    try:
        model.eval()(example)
    finally:
        for h in hooks:
            h.remove()
    return {k: v for k, v in seen.items() if v is not None}


def _block_constants(consumer: Consumer, n: int, measured) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per node: the constant ``consumer`` reads there and whether it is constant (all its ``repeat`` units)."""
    entry = measured.get(id(consumer.module))
    if entry is None:
        return torch.zeros(n), torch.zeros(n, dtype=torch.bool)
    value, const = entry
    off, rep = consumer.offset, consumer.repeat
    v = value[off : off + n * rep].reshape(n, rep)
    c = const[off : off + n * rep].reshape(n, rep)
    return v[:, 0].clone(), c.all(1) & (v == v[:, :1]).all(1)


#: Largest output change :func:`compact` accepts, relative to the largest output (float32 reordering
#: gives ~1e-7 per rounding; the book's networks stay below 1e-6).
COMPACT_RTOL = 1e-4


@torch.no_grad()
def compact(
    model: nn.Module, example: torch.Tensor, max_passes: int = 20, align: int = 1, rtol: float = COMPACT_RTOL
) -> Tuple[nn.Module, CompactionReport]:
    """A copy of ``model`` without its dead nodes, and a report; repeated to a fixed point.

    Removing a node can kill others: a node whose outgoing weights all went to
    removed nodes is out-dead in the smaller network, and a node fed only by
    removed nodes (their constants folded away) is in-dead. So compaction runs
    pass after pass until a pass removes nothing (at most ``max_passes``); the
    report covers all passes (``passes``), from the original network to the
    final one.

    ``example`` is an input batch (e.g. ``torch.randn(8, 1, 28, 28)``) used to
    count FLOPs and to check that outputs are unchanged (``max_abs_diff``), to
    read the wiring (:func:`prunedyn.structure.nodes.node_layers` with the
    example: the chain guess checked against a trace, or the traced wiring) and
    to measure the constants of traced node layers.
    The compact model is returned on the CPU, in eval mode.

    ``align``: round every node layer's final width up to a multiple of
    ``align`` (never above its width before compaction) with silent nodes
    (:mod:`prunedyn.structure.alignment`); ``1`` (the default) keeps no node for
    alignment. 8 or 16 suit CPU kernels (AVX2 / AVX-512 vector widths).

    Next to grouped convolutions (ResNeXt, RegNet) every group loses the same number of channels
    (:mod:`prunedyn.structure.grouped`); the dead channels that stay are counted in
    ``kept_for_groups`` and named in one :class:`~prunedyn.structure.traced.KeptChannelsWarning`.

    The result is checked: when the outputs on ``example`` moved by more than ``rtol`` of the largest
    output (``report.rel_diff``; of 1 where all outputs are smaller), :class:`CompactionError` is
    raised instead of returning a model that computes something else (a normalisation over channels,
    say, that removing them changes).
    """
    if max_passes < 1:
        raise ValueError(f"max_passes must be >= 1, got {max_passes}")
    if isinstance(align, bool) or not isinstance(align, numbers.Integral) or align < 1:
        raise ValueError(f"align must be an integer >= 1, got {align!r}")
    original = copy.deepcopy(model).cpu()
    example = example.cpu()
    current, first = original, None
    removed_in: Dict[str, int] = {}
    removed_out: Dict[str, int] = {}
    for n_pass in range(1, max_passes + 1):
        current, rep = _compact_pass(current, example)
        first = first or rep
        for name in rep.widths_before:
            removed_in[name] = removed_in.get(name, 0) + rep.removed_in_dead.get(name, 0)
            removed_out[name] = removed_out.get(name, 0) + rep.removed_out_dead.get(name, 0)
        if rep.widths_after == rep.widths_before:
            break
    widths_after, params_after, flops_after = rep.widths_after, rep.params_after, rep.flops_after
    kept_align = {name: 0 for name in widths_after}
    if align > 1:
        kept_align = _align_widths(current, example, first.widths_before, int(align))
        widths_after = {name: w + kept_align.get(name, 0) for name, w in widths_after.items()}
        params_after, flops_after = count_params(current), count_flops(current, example)
    report = CompactionReport(
        params_before=first.params_before,
        params_after=params_after,
        flops_before=first.flops_before,
        flops_after=flops_after,
        widths_before=first.widths_before,
        widths_after=widths_after,
        removed_in_dead=removed_in,
        removed_out_dead=removed_out,
        kept_constant=rep.kept_constant,
        max_abs_diff=max_abs_diff(original, current, example),
        output_scale=output_scale(original, example),
        passes=n_pass,
        kept_for_alignment=kept_align,
        align=int(align),
        kept_for_groups=rep.kept_for_groups,
    )
    held = {name: k for name, k in rep.kept_for_groups.items() if k}
    if held:
        import warnings

        listed = [f"{name} ({k})" for name, k in held.items()]
        warnings.warn(f"{sum(held.values())} dead channel(s) stay (still dead, never used) in {len(held)} layer(s) "
                      "next to grouped convolutions, whose groups must lose equally many: "
                      + ", ".join(listed[:4]) + (", ..." if len(listed) > 4 else ""), KeptChannelsWarning, stacklevel=3)
    if not report.rel_diff <= rtol:
        raise CompactionError(f"compaction changed the outputs by {report.rel_diff:.2e} of their scale "
                              f"({report.max_abs_diff:.2e} of {report.output_scale:.2e}; tolerance {rtol:g}): "
                              "this model has a structure compact does not handle exactly")
    return current, report



def _compact_pass(model: nn.Module, example: torch.Tensor) -> Tuple[nn.Module, CompactionReport]:
    """One pass of :func:`compact` (same arguments): the nodes dead in ``model`` as it is, removed."""
    # surgery runs on the CPU copy, wherever the model trained (index tensors, constants)
    original = copy.deepcopy(model).cpu()
    example = example.cpu()
    model = copy.deepcopy(original).eval()
    layers = node_layers(model, example)
    stats = [layer_nodes(layer) for layer in layers]
    measured = _measured_constants(model, layers, example)
    widths_before = {layer.name: layer.size for layer in layers}
    removed_in, removed_out, kept_const, kept_groups = {}, {}, {}, {}
    plans = []
    for layer, st in zip(layers, stats):
        in_only = st.in_dead & ~st.out_dead
        if layer.measured:
            # each consumer's own constant, read off the example
            consts, constant = [], torch.ones_like(in_only)
            for consumer in layer.consumers:
                value, ok = _block_constants(consumer, layer.size, measured)
                consts.append(value)
                constant &= ok
            in_only = in_only & constant  # structurally in-dead but not constant here: keep it alive
        else:
            const = _constant_output(layer)
            consts = None if const is None else [const] * len(layer.consumers)
        kept = torch.zeros_like(in_only)
        emitting, fold, merges = torch.zeros_like(in_only), False, []
        if consts is None:
            kept = in_only.clone()
        elif layer.consumers:
            table = torch.stack([c.to(torch.float64) for c in consts])  # (consumers, n)
            emitting = in_only & (table != 0).any(0)
            fold = all(_foldable(c) for c in layer.consumers)
            per = layer.size // layer.blocks  # a carrier per block: a grouped consumer's rows read one block
            for q in range(layer.blocks if emitting.any() and not fold else 0):
                block = torch.zeros_like(emitting)
                block[q * per : (q + 1) * per] = True
                if (emitting & block).any():
                    carrier, mergeable = _carrier(table, emitting & block)
                    kept[carrier] = True
                    kept |= emitting & block & ~mergeable
                    merges.append((carrier, mergeable))
        remove = (st.out_dead | in_only) & ~kept
        held = torch.zeros_like(remove)
        if layer.blocks > 1:  # grouped convolutions: the same count from every block
            remove, held = equal_per_block(remove, emitting, layer.blocks, block_floor(layer))
        if fold:
            nodes = torch.nonzero(emitting & remove).flatten()
            for consumer, const in zip(layer.consumers, consts):
                _fold_constants(consumer, nodes, const)
        for carrier, mergeable in merges:
            mergeable = mergeable & remove
            mergeable[carrier] = True
            merged = torch.nonzero(mergeable).flatten()
            for consumer, const in zip(layer.consumers, consts):
                if float(const[carrier]) != 0.0:
                    _merge_into_carrier(consumer, merged, const, carrier)
        if remove.all():
            # a layer cannot have zero channels: keep one node whose outgoing weights
            # are zeroed (its contribution is already folded / merged, or was nothing)
            remove[0], kept[0] = False, True
            for consumer in layer.consumers:
                _input_block(consumer, 0).zero_()
        removed_out[layer.name] = int((st.out_dead & remove).sum())
        removed_in[layer.name] = int((in_only & remove & ~st.out_dead).sum())
        kept_const[layer.name] = int(kept.sum())
        kept_groups[layer.name] = int(held.sum())
        plans.append((layer, remove))
    # one keep-mask per consumer over all of its input units
    consumer_masks: Dict[int, Tuple[nn.Module, torch.Tensor]] = {}
    for layer, remove in plans:
        for c in layer.consumers:
            m = c.module
            if id(m) not in consumer_masks:
                n_in = m.weight.shape[1] if isinstance(m, nn.Linear) else m.in_channels
                consumer_masks[id(m)] = (m, torch.ones(n_in, dtype=torch.bool))
            mask = consumer_masks[id(m)][1]
            for j in torch.nonzero(remove).flatten().tolist():
                mask[c.offset + j * c.repeat : c.offset + (j + 1) * c.repeat] = False
    norm_masks: Dict[int, Tuple[nn.Module, torch.Tensor]] = {}  # consumer-side norms (DenseNet)
    for layer, remove in plans:
        for c in layer.consumers:
            if c.norm is not None:
                bn, mask = norm_masks.setdefault(id(c.norm), (c.norm, torch.ones(c.norm.num_features, dtype=torch.bool)))
                mask[c.norm_offset + torch.nonzero(remove).flatten()] = False
    # refused before any surgery, naming the layer
    check_grouped(plans, consumer_masks, {id(m): n for n, m in model.named_modules()})
    for layer, remove in plans:
        for producer, norm in layer.producers:
            _shrink_outputs(producer, torch.nonzero(~remove).flatten(), norm)
    for m, mask in consumer_masks.values():
        _shrink_inputs(m, mask)
    for bn, mask in norm_masks.values():
        keep = torch.nonzero(mask).flatten()
        for name in ("weight", "bias", "running_mean", "running_var"):
            _slice_param(bn, name, keep, 0)
        bn.num_features = len(keep)
    report = CompactionReport(
        params_before=count_params(original),
        params_after=count_params(model),
        flops_before=count_flops(original, example),
        flops_after=count_flops(model, example),
        widths_before=widths_before,
        widths_after={layer.name: layer.size for layer in layers},
        removed_in_dead=removed_in,
        removed_out_dead=removed_out,
        kept_constant=kept_const,
        max_abs_diff=max_abs_diff(original, model, example),
        output_scale=output_scale(original, example),
        kept_for_groups=kept_groups,
    )
    return model, report


@torch.no_grad()
def silence_nodes(
    model: nn.Module,
    counts: Dict[str, int],
    example: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
) -> Dict[str, torch.Tensor]:
    """Make ``counts[name]`` nodes of node layer ``name`` in-dead, in place; returns the chosen indices.

    For a death pattern without training (e.g. the per-layer alive counts a
    recorded run left): in each named layer (:func:`prunedyn.structure.nodes.node_layers`
    on ``example``) ``counts[name]`` nodes are drawn without replacement with
    ``generator``, and their incoming weights, bias and BatchNorm scale and
    shift are zeroed in every (tied) producer. Each then emits the constant
    ``act(0)`` (0 for ReLU, and for the identity of a U-Net's up-convolution),
    so :func:`compact` removes it with nothing to fold and the compact width is
    ``size - counts[name]`` (next to a grouped convolution: as many per group as the group with
    the fewest, :mod:`prunedyn.structure.grouped`). Raises ``KeyError`` for a name that is not a node
    layer and ``ValueError`` for a count outside ``[0, size]``.
    """
    layers = {layer.name: layer for layer in node_layers(model, example)}
    unknown = sorted(set(counts) - set(layers))
    if unknown:
        raise KeyError(f"not node layers of this model: {unknown}; node layers: {sorted(layers)}")
    chosen = {}
    for name, count in counts.items():
        layer = layers[name]
        if not 0 <= count <= layer.size:
            raise ValueError(f"{name}: cannot silence {count} of its {layer.size} nodes")
        idx = torch.randperm(layer.size, generator=generator)[:count].sort().values
        for producer, norm in layer.producers:
            if isinstance(producer, nn.modules.conv._ConvTransposeNd):
                producer.weight[:, idx] = 0
            else:
                producer.weight[idx] = 0
            if producer.bias is not None:
                producer.bias[idx] = 0
            if norm is not None:
                for param in (norm.weight, norm.bias):
                    if param is not None:
                        param[idx] = 0
        chosen[name] = idx
    return chosen
