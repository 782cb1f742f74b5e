"""Figures of node death and of the in/out dependency (chapters 3 and 4).

Every ``plot_*`` function returns a :class:`matplotlib.figure.Figure` built
without pyplot (nothing is shown twice, nothing leaks); a notebook displays it
as a cell's last expression, and :func:`prunedyn.plots.static_slider` turns a
series of them into a slider for the static book.

Inputs are the tidy tables of :mod:`prunedyn.run.records` -- ``layers`` (epoch,
layer, nodes, alive, in_dead, out_dead, both_dead, ...) and ``nodes`` (epoch,
layer, node, in_l2, out_l2, in_l1, out_l1, in_dead, out_dead) -- usually one
per run in a ``{run name: table}`` mapping, and the derived tables of
:mod:`prunedyn.analysis.dependency`.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from prunedyn.analysis.dependency import (
    STATUSES,
    first_death,
    layer_status,
    node_status,
)

try:  # share the book's run colours with the weights figures
    from prunedyn.plots.weights import RUN_COLORS, RUN_LABELS
except ImportError:  # pragma: no cover
    RUN_COLORS = {"none": "#7f7f7f", "l1": "#1f77b4", "l2": "#d62728", "dense": "#000000"}
    RUN_LABELS = {"none": "SWP, no regularizer", "l1": "SWP + L1", "l2": "SWP + L2", "dense": "dense (no pruning)"}

#: One colour per node status, the same in every figure.
STATUS_COLORS = {"alive": "#d9d9d9", "in-dead": "#ff7f0e", "out-dead": "#1f77b4", "both": "#6a3d9a"}
STATUS_LABELS = {"alive": "alive", "in-dead": "in-dead only", "out-dead": "out-dead only", "both": "in- and out-dead"}
LAYER_COLORS = ["#1b9e77", "#e7298a", "#66a61e", "#e6ab02", "#a6761d"]


def _short(layer) -> str:
    return str(layer).split(".")[-1]


def _run_color(name, i: int) -> str:
    return RUN_COLORS.get(str(name), f"C{i % 10}")


def _run_label(name) -> str:
    return RUN_LABELS.get(str(name), str(name))


def _status_legend(ax, loc="lower left", **kw) -> None:
    handles = [Patch(facecolor=STATUS_COLORS[s], edgecolor="0.4", label=STATUS_LABELS[s]) for s in STATUSES]
    ax.legend(handles=handles, loc=loc, fontsize=8, framealpha=0.9, **kw)


def _layer_names(df: pd.DataFrame, layers: Optional[Sequence[str]]) -> list:
    return list(layers) if layers is not None else list(dict.fromkeys(df["layer"]))


# ---------------------------------------------------------------------------
# chapter 3: when and how nodes die
# ---------------------------------------------------------------------------
def plot_node_status(
    layers_by_run: Mapping[str, pd.DataFrame],
    layers: Optional[Sequence[str]] = None,
    epoch: Optional[int] = None,
    figsize=None,
) -> Figure:
    """Stacked areas of the node status per layer over epochs, one column per run.

    Rows are layers, columns runs; the four areas (alive, in-dead only,
    out-dead only, both) add up to the layer's width. ``epoch`` draws a
    vertical marker (for sliders).
    """
    runs = list(layers_by_run)
    first = next(iter(layers_by_run.values()))
    names = _layer_names(first, layers)
    fig = Figure(figsize=figsize or (3.3 * len(runs), 2.4 * len(names)), layout="constrained")
    axes = fig.subplots(len(names), len(runs), squeeze=False, sharex=True)
    for c, run in enumerate(runs):
        ls = layer_status(layers_by_run[run])
        for r, layer in enumerate(names):
            ax = axes[r][c]
            d = ls[ls["layer"] == layer].sort_values("epoch")
            ys = [d["alive"], d["in_only"], d["out_only"], d["both"]]
            ax.stackplot(d["epoch"], *ys, colors=[STATUS_COLORS[s] for s in STATUSES], linewidth=0)
            ax.set_xlim(d["epoch"].min(), d["epoch"].max())
            ax.set_ylim(0, int(d["nodes"].iloc[0]))
            if epoch is not None:
                ax.axvline(epoch, color="k", lw=1, ls="--")
            if r == 0:
                ax.set_title(_run_label(run), fontsize=10)
            if c == 0:
                ax.set_ylabel(f"{_short(layer)}: nodes")
            if r == len(names) - 1:
                ax.set_xlabel("epoch")
    _status_legend(axes[-1][0])
    return fig


def _status_matrix(nodes: pd.DataFrame, layer: str, order: str = "death"):
    d = nodes[nodes["layer"] == layer]
    codes = pd.Series(node_status(d).cat.codes.to_numpy(), index=d.index)
    mat = pd.DataFrame({"node": d["node"], "epoch": d["epoch"], "code": codes}).pivot(index="node", columns="epoch", values="code")
    if order == "death":
        fd = first_death(d).set_index("node")
        key = fd["first_dead"].fillna(np.inf)
        # dead nodes first, by first death; then alive ones by node index
        idx = sorted(mat.index, key=lambda j: (key.get(j, np.inf), j))
        mat = mat.loc[idx]
    return mat


def plot_node_raster(
    nodes: pd.DataFrame,
    layer: str,
    order: str = "death",
    title: Optional[str] = None,
    ax=None,
    figsize=(6.0, 3.6),
    legend: bool = True,
) -> Figure:
    """Raster of one layer: a row per node, a column per epoch, coloured by status.

    ``order="death"`` sorts nodes by the epoch at which they first died
    (never-dead nodes last, by index); ``"index"`` keeps node order.
    """
    mat = _status_matrix(nodes, layer, order)
    if ax is None:
        fig = Figure(figsize=figsize, layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    cmap = ListedColormap([STATUS_COLORS[s] for s in STATUSES])
    epochs = mat.columns.to_numpy()
    ax.imshow(
        mat.to_numpy(),
        aspect="auto",
        interpolation="nearest",
        cmap=cmap,
        vmin=-0.5,
        vmax=len(STATUSES) - 0.5,
        extent=(epochs.min() - 0.5, epochs.max() + 0.5, len(mat) - 0.5, -0.5),
    )
    ax.set_xlabel("epoch")
    ax.set_ylabel("node (sorted by first death)" if order == "death" else "node")
    ax.set_title(title or f"{_short(layer)}: status of each node", fontsize=10)
    if legend:
        _status_legend(ax, loc="lower left")
    return fig


def plot_node_rasters(nodes_by_run: Mapping[str, pd.DataFrame], layer: str, order: str = "death") -> Figure:
    """:func:`plot_node_raster` of one layer for several runs, side by side."""
    runs = list(nodes_by_run)
    fig = Figure(figsize=(3.6 * len(runs), 3.6), layout="constrained")
    axes = fig.subplots(1, len(runs), squeeze=False)[0]
    for ax, run in zip(axes, runs):
        plot_node_raster(nodes_by_run[run], layer, order=order, ax=ax, title=f"{_run_label(run)}: {_short(layer)}", legend=False)
    for ax in axes[1:]:
        ax.set_ylabel("")
    handles = [Patch(facecolor=STATUS_COLORS[s], edgecolor="0.4", label=STATUS_LABELS[s]) for s in STATUSES]
    fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=8, frameon=False)
    return fig


def plot_node_grid(
    nodes_by_run: Mapping[str, pd.DataFrame],
    layer: str,
    epoch: int,
    ncols: Optional[int] = None,
) -> Figure:
    """Every node of ``layer`` as one cell of a grid, coloured by its status at ``epoch``.

    One panel per run; node ``j`` sits at the same cell in every panel and
    every epoch, so a slider over epochs shows nodes switching off.
    """
    runs = list(nodes_by_run)
    fig = Figure(figsize=(2.9 * len(runs), 2.5), layout="constrained")
    axes = fig.subplots(1, len(runs), squeeze=False)[0]
    cmap = ListedColormap([STATUS_COLORS[s] for s in STATUSES])
    for ax, run in zip(axes, runs):
        d = nodes_by_run[run]
        d = d[(d["layer"] == layer) & (d["epoch"] == epoch)].sort_values("node")
        n = len(d)
        cols = ncols or int(np.ceil(np.sqrt(n * 4 / 3)))
        rows = int(np.ceil(n / cols))
        codes = np.full(rows * cols, np.nan)
        codes[:n] = node_status(d).cat.codes.to_numpy()
        ax.imshow(np.ma.masked_invalid(codes.reshape(rows, cols)), cmap=cmap, vmin=-0.5, vmax=len(STATUSES) - 0.5, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        dead = int((d["in_dead"].astype(bool) | d["out_dead"].astype(bool)).sum())
        ax.set_title(f"{_run_label(run)}\n{dead}/{n} dead", fontsize=9)
    fig.suptitle(f"{_short(layer)} at epoch {epoch}", fontsize=10)
    handles = [Patch(facecolor=STATUS_COLORS[s], edgecolor="0.4", label=STATUS_LABELS[s]) for s in STATUSES]
    fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=8, frameon=False)
    return fig


def plot_layer_death_order(layers_by_run: Mapping[str, pd.DataFrame], layers: Optional[Sequence[str]] = None) -> Figure:
    """Dead fraction of each layer over epochs, one panel per run (which layer loses nodes first)."""
    runs = list(layers_by_run)
    fig = Figure(figsize=(3.3 * len(runs), 2.9), layout="constrained")
    axes = fig.subplots(1, len(runs), squeeze=False, sharey=True)[0]
    for ax, run in zip(axes, runs):
        ls = layer_status(layers_by_run[run])
        for i, layer in enumerate(_layer_names(ls, layers)):
            d = ls[ls["layer"] == layer].sort_values("epoch")
            color = LAYER_COLORS[i % len(LAYER_COLORS)]
            ax.plot(d["epoch"], d["dead_fraction"], color=color, lw=1.8, label=f"{_short(layer)} ({int(d['nodes'].iloc[0])} nodes)")
            hit = d[d["dead"] > 0]
            if len(hit):
                ax.plot(hit["epoch"].iloc[0], hit["dead_fraction"].iloc[0], "o", color=color, ms=5)
        ax.set_title(_run_label(run), fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("dead fraction (in- or out-dead)")
    axes[0].legend(fontsize=8, loc="upper left")
    return fig


def plot_death_side(first_by_run: Mapping[str, pd.DataFrame]) -> Figure:
    """Which side of a node reaches zero first, and how long the other side takes.

    Left: per run and layer, nodes whose incoming side died first, whose
    outgoing side did, or both within the same epoch. Right: histogram of
    ``gap = first_out - first_in`` (epochs) over nodes both of whose sides died.
    """
    fig = Figure(figsize=(10.0, 3.4), layout="constrained")
    ax, bx = fig.subplots(1, 2, width_ratios=[1.2, 1])
    labels = []
    parts = {"in": [], "out": [], "same": []}
    for run, first in first_by_run.items():
        for layer, d in first.groupby("layer", sort=False):
            labels.append(f"{run}\n{_short(layer)}")
            for k in parts:
                parts[k].append(int((d["first_side"] == k).sum()))
    x = np.arange(len(labels))
    bottom = np.zeros(len(labels))
    colors = {"in": STATUS_COLORS["in-dead"], "out": STATUS_COLORS["out-dead"], "same": STATUS_COLORS["both"]}
    names = {"in": "incoming side first", "out": "outgoing side first", "same": "same epoch"}
    for k, v in parts.items():
        ax.bar(x, v, bottom=bottom, color=colors[k], label=names[k], width=0.7)
        bottom += np.asarray(v)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("nodes that died")
    ax.set_title("which side reached zero first", fontsize=10)
    ax.legend(fontsize=8)
    gaps = [(run, f.dropna(subset=["gap"])["gap"]) for run, f in first_by_run.items()]
    allg = pd.concat([g for _, g in gaps]) if gaps else pd.Series(dtype=float)
    if len(allg):
        bins = np.arange(allg.min() - 0.5, allg.max() + 1.5, 1.0)
        for i, (run, g) in enumerate(gaps):
            if len(g):
                bx.hist(g, bins=bins, histtype="step", lw=1.8, color=_run_color(run, i), label=f"{_run_label(run)} (n={len(g)})")
        bx.legend(fontsize=8)
    bx.axvline(0, color="k", lw=0.8)
    bx.set_xlabel("epochs from in-side death to out-side death")
    bx.set_ylabel("nodes")
    bx.set_title("how long the other side survives", fontsize=10)
    return fig


def plot_dead_fraction_bars(layers_by_run: Mapping[str, pd.DataFrame], epoch: Optional[int] = None) -> Figure:
    """Dead fraction per layer at ``epoch`` (default: the last), split into in-/out-/both-dead."""
    fig = Figure(figsize=(6.5, 3.0), layout="constrained")
    ax = fig.add_subplot()
    labels = []
    vals = {"in-dead": [], "out-dead": [], "both": []}
    for run, layers in layers_by_run.items():
        ls = layer_status(layers)
        e = ls["epoch"].max() if epoch is None else epoch
        for _, row in ls[ls["epoch"] == e].iterrows():
            labels.append(f"{run}\n{_short(row['layer'])}")
            vals["in-dead"].append(row["in_only"] / row["nodes"])
            vals["out-dead"].append(row["out_only"] / row["nodes"])
            vals["both"].append(row["both"] / row["nodes"])
    x = np.arange(len(labels))
    bottom = np.zeros(len(labels))
    for k, v in vals.items():
        ax.bar(x, v, bottom=bottom, color=STATUS_COLORS[k], label=STATUS_LABELS[k], width=0.7)
        bottom += np.asarray(v)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("fraction of the layer's nodes")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    return fig


# ---------------------------------------------------------------------------
# chapter 4: the dependency between incoming and outgoing weights
# ---------------------------------------------------------------------------
def _scatter_panel(ax, d: pd.DataFrame, floor: float, lims, color_by_layer=True) -> None:
    status = node_status(d).astype(str)
    x = d["in_l2"].clip(lower=floor).to_numpy()
    y = d["out_l2"].clip(lower=floor).to_numpy()
    ax.plot(lims, lims, color="k", lw=0.8, ls="--", zorder=1)
    for i, layer in enumerate(dict.fromkeys(d["layer"])):
        m = (d["layer"] == layer).to_numpy() & (status == "alive").to_numpy()
        ax.scatter(x[m], y[m], s=9, alpha=0.6, color=LAYER_COLORS[i % len(LAYER_COLORS)], label=f"{_short(layer)} alive", lw=0, zorder=2)
    markers = {"in-dead": "<", "out-dead": "v", "both": "x"}
    for s, mk in markers.items():
        m = (status == s).to_numpy()
        if m.any():
            ax.scatter(x[m], y[m], s=18, marker=mk, color=STATUS_COLORS[s], label=STATUS_LABELS[s], zorder=3, lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(*lims)
    ax.set_ylim(*lims)
    ax.set_aspect("equal")


def plot_inout_scatter(
    nodes_by_run: Mapping[str, pd.DataFrame],
    epoch: int,
    layers: Optional[Sequence[str]] = None,
    floor: float = 1e-4,
    lims=(5e-5, 5.0),
) -> Figure:
    """Per node, ``||w_in||_2`` against ``||w_out||_2`` at ``epoch``, one panel per run (log-log).

    The dashed diagonal is balance (``delta = 0``). Dead nodes are marked by
    status; a norm that is exactly 0 is drawn at ``floor`` (the left /
    bottom edge). Limits are fixed so that frames of a slider compare.
    """
    runs = list(nodes_by_run)
    fig = Figure(figsize=(3.1 * len(runs) + 0.4, 3.5), layout="constrained")
    axes = fig.subplots(1, len(runs), squeeze=False)[0]
    for ax, run in zip(axes, runs):
        d = nodes_by_run[run]
        d = d[d["epoch"] == epoch]
        if layers is not None:
            d = d[d["layer"].isin(layers)]
        _scatter_panel(ax, d, floor, lims)
        ndead = int((d["in_dead"].astype(bool) | d["out_dead"].astype(bool)).sum())
        ax.set_title(f"{_run_label(run)}\n{ndead}/{len(d)} dead", fontsize=9)
        ax.set_xlabel(r"$\|w_{in}\|_2$ (incl. bias)")
    axes[0].set_ylabel(r"$\|w_{out}\|_2$")
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="outside right center", fontsize=8, frameon=False, markerscale=1.5)
    fig.suptitle(f"epoch {epoch}: incoming vs outgoing norm of every hidden node (0 drawn at {floor:g})", fontsize=10)
    return fig


def plot_aligned_norms(summaries: Mapping[str, pd.DataFrame], side: str = "in") -> Figure:
    """Median ``||w_in||`` and ``||w_out||`` (quartile bands) against epochs since one side's
    first death, one panel per run (tables from :func:`prunedyn.analysis.dependency.aligned_summary`)."""
    fig = Figure(figsize=(3.6 * len(summaries), 3.3), layout="constrained")
    axes = fig.subplots(1, len(summaries), squeeze=False, sharey=True)[0]
    for ax, (run, s) in zip(axes, summaries.items()):
        for key, name, color in (("in", r"$\|w_{in}\|_2$", STATUS_COLORS["in-dead"]), ("out", r"$\|w_{out}\|_2$", STATUS_COLORS["out-dead"])):
            ax.plot(s["since"], s[f"{key}_median"].clip(lower=1e-4), color=color, lw=2, marker="o", ms=3, label=f"median {name}")
            ax.fill_between(s["since"], s[f"{key}_q25"].clip(lower=1e-4), s[f"{key}_q75"].clip(lower=1e-4), color=color, alpha=0.2, lw=0)
        ax.axvline(0, color="k", lw=0.8, ls="--")
        ax.set_yscale("log")
        n = int(s.loc[s["since"] == 0, "n"].iloc[0]) if (s["since"] == 0).any() else 0
        ax.set_title(f"{_run_label(run)} ({n} nodes)", fontsize=10)
        ax.set_xlabel(f"epochs since the {side}-side first hit 0")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("norm (0 drawn at 1e-4)")
    axes[0].legend(fontsize=8, loc="lower left")
    return fig


