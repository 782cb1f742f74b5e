"""Checking a model's node wiring against the dependency graph torch-pruning traces.

:func:`prunedyn.structure.nodes.node_layers` says, for every node layer, which
layers read each node and at which input offsets. :func:`wiring_mismatches`
compares that with the pruning groups that ``torch-pruning`` derives from a
traced forward pass: the independent check to run on a model whose
``node_layers()`` you wrote.
"""
from __future__ import annotations

import torch
from torch import nn

from prunedyn.structure.layers import PRUNABLE_TYPES
from prunedyn.structure.nodes import node_layers
from prunedyn.structure.traced import build_graph


def wiring_mismatches(model: nn.Module, example: torch.Tensor, nodes_per_layer: int = 3, layers=None) -> list:
    """Where :func:`prunedyn.structure.nodes.node_layers` and torch-pruning's dependency graph disagree.

    For the first ``nodes_per_layer`` nodes ``j`` of every node layer, torch-pruning
    (``DependencyGraph.get_pruning_group`` of the producer's output channel ``j``)
    lists the input channels of every layer that must go with it; prunedyn's wiring
    says ``consumer.offset + j * repeat + r`` for ``r < repeat`` in each consumer,
    and the norms of the producer and of its tied producers (residual sums,
    depthwise convolutions). ``layers``: the wiring to check instead of
    ``node_layers(model)`` (e.g. :func:`prunedyn.structure.nodes.traced_node_layers`).
    Returns one message per disagreement (empty: they agree).
    """
    names = {m: n for n, m in model.named_modules()}
    graph = build_graph(model, example)  # the one graph builder (prunedyn.structure.traced)
    problems = []
    for layer in node_layers(model) if layers is None else layers:
        prune_out = graph.get_pruner_of_module(layer.producer).prune_out_channels
        for j in range(min(nodes_per_layer, layer.size)):
            group = graph.get_pruning_group(layer.producer, prune_out, idxs=[j])
            theirs = set()
            norms = set()
            for dep, idxs in group:
                module, handler = dep.target.module, getattr(dep.handler, "__name__", "")
                if handler == "prune_in_channels" and isinstance(module, PRUNABLE_TYPES):
                    theirs |= {(names[module], int(i)) for i in idxs}
                elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                    norms.add(names[module])
            ours = {
                (names[c.module], c.offset + j * c.repeat + r) for c in layer.consumers for r in range(c.repeat)
            }
            if ours != theirs:
                problems.append(f"{layer.name}[{j}]: prunedyn wires {sorted(ours)}, torch-pruning {sorted(theirs)}")
            our_norm = {names[norm] for _, norm in layer.producers if norm is not None}
            if our_norm != norms:
                problems.append(f"{layer.name}[{j}]: norm {sorted(our_norm)} vs torch-pruning {sorted(norms)}")
    return problems
