"""Chapter 10 (use prunedyn on your own model): tables and the figure of a network's node wiring.

The chapter trains in its own notebook, in a plain PyTorch loop (that is its
point); these helpers only read what it made: the node layers of
:func:`prunedyn.structure.nodes.node_layers`, their per-node statistics of
:func:`prunedyn.model_nodes`, and a compaction report. Nothing here trains.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from torch import nn


def glue_texts(texts: Mapping[str, object]) -> None:
    """Glue every ``key: text`` pair as a string (nothing displayed)."""
    from myst_nb import glue

    for key, value in texts.items():
        glue(key, str(value), display=False)


def pct(x: float, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f}%"


def _names(model: nn.Module) -> Dict[int, str]:
    return {id(m): n for n, m in model.named_modules()}


def wiring_table(layers, model: nn.Module) -> pd.DataFrame:
    """One row per node layer: its producers (tied ones after the first), its consumers, its width.

    ``residual``: the layer has several producers whose outputs are summed, so its
    channel ``j`` is one node across all of them.
    """
    names = _names(model)
    rows = []
    for layer in layers:
        prods = [names[id(p)] for p, _ in layer.producers]
        rows.append(
            {
                "node layer": layer.name,
                "nodes": layer.size,
                "producers": ", ".join(prods),
                "consumers": ", ".join(names[id(c.module)] for c in layer.consumers),
                "residual group": len(prods) > 1,
            }
        )
    return pd.DataFrame(rows)


def death_table(stats, layers) -> pd.DataFrame:
    """Per node layer: nodes, in-dead, out-dead, dead (either), alive; plus a total row."""
    rows = []
    for s, layer in zip(stats, layers):
        rows.append(
            {
                "node layer": s.name,
                "producers": len(layer.producers),
                "nodes": s.size,
                "in-dead": int(s.in_dead.sum()),
                "out-dead": int(s.out_dead.sum()),
                "dead": int(s.dead.sum()),
                "alive": int(s.alive.sum()),
            }
        )
    table = pd.DataFrame(rows)
    total = {"node layer": "all", "producers": int(table["producers"].sum())}
    total.update(
        {k: int(table[k].sum()) for k in ("nodes", "in-dead", "out-dead", "dead", "alive")}
    )
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)


def plot_groups(stats, layers, title: str) -> Figure:
    """Horizontal bars per node layer: alive, in-dead (constant), out-dead only;
    residual groups outlined."""
    names = [s.name for s in stats]
    n = np.array([s.size for s in stats], dtype=float)
    in_dead = np.array([int(s.in_dead.sum()) for s in stats], dtype=float)
    out_only = np.array([int((s.out_dead & ~s.in_dead).sum()) for s in stats], dtype=float)
    alive = n - in_dead - out_only
    residual = [len(layer.producers) > 1 for layer in layers]
    fig = Figure(figsize=(7.5, 0.32 * len(names) + 1.2))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(names))[::-1]
    parts = (
        ("alive", alive, "#4c72b0"),
        ("in-dead (emits a constant)", in_dead, "#dd8452"),
        ("out-dead (read by nobody)", out_only, "#c44e52"),
    )
    left = np.zeros_like(n)
    for label, values, color in parts:
        share = values / n
        ax.barh(y, share, left=left, color=color, label=label, edgecolor="white", linewidth=0.5)
        left = left + share
    for yi, res in zip(y, residual):
        if res:
            ax.barh(yi, 1.0, left=0, fill=False, edgecolor="black", linewidth=1.4)
    labels = [
        f"{nm}  ({int(k)}{', residual' if r else ''})" for nm, k, r in zip(names, n, residual)
    ]
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the layer's nodes")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def width_table(
    report, layers: Sequence, extra: Mapping[str, Mapping[str, int]] = ()
) -> pd.DataFrame:
    """Widths of every node layer before and after compaction (and of further reports
    in ``extra``)."""
    rows = []
    for layer in layers:
        name = layer.name
        row = {
            "node layer": name,
            "producers": len(layer.producers),
            "before": report.widths_before[name],
            "after": report.widths_after[name],
            "kept constant": report.kept_constant.get(name, 0),
        }
        for label, widths in dict(extra).items():
            row[label] = widths[name]
        rows.append(row)
    return pd.DataFrame(rows)


def alive_channels(stat, layer, count: int) -> List[int]:
    """The first ``count`` alive nodes of ``layer`` whose filter is non-zero in every producer.

    For the hand-made demonstration: zeroing such a node's filter in one producer
    leaves it alive (the other producers still vary), in all of them makes it in-dead.
    """
    from prunedyn.structure.nodes import incoming_rows

    ok = stat.alive.clone()
    for producer, norm in layer.producers:
        ok &= (incoming_rows(producer) != 0).any(dim=1).cpu()
        if norm is not None and norm.weight is not None:
            ok &= (norm.weight != 0).cpu()
    idx = np.flatnonzero(ok.numpy())
    if len(idx) < count:
        raise ValueError(
            f"{stat.name} has only {len(idx)} nodes alive in every producer, {count} wanted"
        )
    return [int(i) for i in idx[:count]]


def width_changes(steps: Sequence, skip: str) -> str:
    """A sentence on the node layers other than ``skip`` whose width changed, over
    ``(label, before, after)`` steps."""
    parts = []
    for label, before, after in steps:
        changed = [
            f"`{k}` from {before[k]} to {after[k]}"
            for k in before
            if k != skip and before[k] != after[k]
        ]
        if changed:
            parts.append(f"{label}, " + ", ".join(changed))
    if not parts:
        return "No other node layer changes width in either step."
    return (
        "Other node layers change width too ("
        + "; ".join(parts)
        + "): nodes whose outgoing weights "
        "all went to the zeroed filters are read by nobody now, and go as well."
    )
