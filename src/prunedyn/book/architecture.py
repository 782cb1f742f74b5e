"""Architecture figures: the width of every node layer before and after compaction.

:func:`plot_widths` draws any network as a row of bars, one per node layer in
forward order (a chain such as VGG-16 or the chest X-ray CNN): the grey bar is
the dense width, the coloured bar what compaction kept, and the label the
fraction removed. Input: the ``widths_before`` / ``widths_after`` mappings of a
:class:`prunedyn.structure.surgery.CompactionReport` (or a run's summary).
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence, Tuple

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter


def short_layer(name: str) -> str:
    """``features.conv3_2`` -> ``conv3_2``; ``enc1.conv2`` stays as it is."""
    parts = name.split(".")
    return parts[-1] if parts[0] in ("features", "classifier", "net") else name


def is_conv(name: str) -> bool:
    """A conv layer's name (``features.conv3_1``, ``enc1.conv2``): its nodes are filters."""
    return name.split(".")[-1].startswith("conv")


def removed_text(widths_before: Mapping[str, int], widths_after: Mapping[str, int]) -> str:
    """``"1736 of 4224 filters removed (41.1%); fc1: 423 of 512"``: filters (conv channels) apart from
    the other node layers, or all nodes when there is no conv layer."""
    conv = [n for n in widths_before if is_conv(n)]
    other = [n for n in widths_before if n not in conv]
    parts = []
    if conv:
        b = sum(widths_before[n] for n in conv)
        a = sum(widths_after.get(n, 0) for n in conv)
        parts.append(f"{b - a} of {b} filters removed ({1 - a / b:.1%})")
        parts += [f"{short_layer(n)}: {widths_before[n] - widths_after.get(n, 0)} of {widths_before[n]}" for n in other]
    else:
        b = sum(widths_before.values())
        a = sum(widths_after.get(n, 0) for n in widths_before)
        parts.append(f"{b - a} of {b} nodes removed ({1 - a / b:.1%})")
    return "; ".join(parts)


def plot_widths(
    widths_before: Mapping[str, int],
    widths_after: Mapping[str, int],
    title: str = "",
    layers: Optional[Sequence[str]] = None,
    color: str = "C3",
    ax=None,
) -> Figure:
    """Bars of the dense and compact width of each node layer, with the share removed."""
    names = list(layers) if layers is not None else list(widths_before)
    before = np.array([widths_before[n] for n in names], dtype=float)
    after = np.array([widths_after.get(n, 0) for n in names], dtype=float)
    if ax is None:
        fig = Figure(figsize=(max(6.0, 0.55 * len(names) + 2), 3.6), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    x = np.arange(len(names))
    ax.bar(x, before, color="0.85", label="dense", width=0.8)
    ax.bar(x, after, color=color, label="after compaction", width=0.55)
    for i, (b, a) in enumerate(zip(before, after)):
        if b > 0:
            ax.text(i, b, f"-{1 - a / b:.0%}" if a < b else "0%", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [short_layer(n) for n in names], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("nodes (channels / units)")
    ax.set_title(title or removed_text(dict(zip(names, before.astype(int).tolist())), dict(zip(names, after.astype(int).tolist()))), fontsize=10)
    ax.set_ylim(0, before.max() * 1.15)
    ax.legend(frameon=False, fontsize=8, loc="upper left")
    return fig


def plot_widths_panels(
    widths_before: Mapping[str, int],
    widths_after: Mapping[str, Mapping[str, int]],
    title: str = "",
    colors: Optional[Sequence[str]] = None,
    ncols: int = 2,
) -> Figure:
    """:func:`plot_widths` for several compact architectures of one dense network, one panel each.

    ``widths_after``: ``{panel title: widths}``; every panel shares the dense
    widths ``widths_before`` and the y-scale.
    """
    names = list(widths_after)
    ncols = max(1, min(ncols, len(names)))
    nrows = int(np.ceil(len(names) / ncols))
    n_layers = len(widths_before)
    fig = Figure(figsize=(ncols * max(5.0, 0.42 * n_layers + 1.5), 3.3 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= len(names):
            ax.set_visible(False)
            continue
        after = widths_after[names[k]]
        color = colors[k] if colors is not None else f"C{k % 10}"
        plot_widths(widths_before, after, ax=ax, color=color)
        ax.set_title(f"{names[k]}\n{removed_text(widths_before, after)}", fontsize=9)
        if k % ncols:
            ax.set_ylabel("")
        if k:
            leg = ax.get_legend()
            if leg is not None:
                leg.remove()
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def death_matrix(layers: pd.DataFrame) -> Tuple[np.ndarray, list, list]:
    """``(dead fraction [layer, epoch], layer names, epochs)`` of one run's layers table, layers in forward order."""
    names = list(dict.fromkeys(layers["layer"]))
    epochs = sorted(int(e) for e in layers["epoch"].unique())
    d = layers.assign(frac=(layers["nodes"] - layers["alive"]) / layers["nodes"])
    m = d.pivot_table(index="layer", columns="epoch", values="frac", aggfunc="first").reindex(index=names, columns=epochs)
    return m.to_numpy(dtype=float), names, epochs


def plot_death_heatmap(
    layers_by_run: Mapping[str, pd.DataFrame],
    title: str = "",
    ncols: Optional[int] = None,
    cmap: str = "magma_r",
) -> Figure:
    """Dead fraction of every node layer (rows, input to output) at every epoch (columns), one panel per run.

    ``layers_by_run``: ``{panel title: layers table of one run}`` (``epoch,
    layer, nodes, alive``). The number right of each row is the layer's final
    dead fraction; the colour scale is fixed to [0, 1] so panels compare.
    """
    names = list(layers_by_run)
    ncols = ncols or min(len(names), 3)
    nrows = int(np.ceil(len(names) / ncols))
    fig = Figure(figsize=(4.1 * ncols + 0.8, 3.7 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    im = None
    for k, ax in enumerate(axes.flat):
        if k >= len(names):
            ax.set_visible(False)
            continue
        m, layer_names, epochs = death_matrix(layers_by_run[names[k]])
        im = ax.imshow(m, aspect="auto", cmap=cmap, vmin=0, vmax=1, interpolation="nearest",
                       extent=(epochs[0] - 0.5, epochs[-1] + 0.5, len(layer_names) - 0.5, -0.5))
        ax.set_yticks(range(len(layer_names)), [short_layer(n) for n in layer_names], fontsize=7)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        for i, v in enumerate(m[:, -1]):
            ax.text(epochs[-1] + 0.8, i, f"{v:.0%}", va="center", ha="left", fontsize=6.5, clip_on=False)
        ax.set_title(names[k], fontsize=9, pad=4)
    if im is not None:
        cb = fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.025, pad=0.06)
        cb.set_label("dead fraction of the layer", fontsize=8)
        cb.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_filters_vs_accuracy(
    runs: pd.DataFrame,
    target: Tuple[float, float] = (0.6, 1.5),
    label: str = "short",
    title: str = "",
    paper: Optional[float] = 0.6,
    annotate_min: float = 0.05,
) -> Figure:
    """Accuracy against the fraction of filters removed, one point per run (a table like
    :func:`prunedyn.book.conv_report.load_recorded`'s).

    Left: test accuracy; dense runs (``pruned`` False) are black stars at 0
    and a dotted line per budget (``epochs``). Right: points of accuracy lost
    to the best dense run of the same budget (``gap_points``), the Pareto
    front (dashed steps) and the target region (``>= target[0]`` of the
    filters, ``< target[1]`` points lost) shaded green. Marker shape: budget;
    fill: regularizer scope (filled ``all``, open ``weights``); colour:
    regularizer. ``label``: a column to annotate the pruned points with (those
    that remove at least ``annotate_min`` of the filters; the others crowd at 0).
    """
    colors = {"l2": "#d62728", "l1": "#1f77b4", "none": "#7f7f7f"}
    markers = ["o", "s", "D", "^", "v"]
    budgets = sorted(runs["epochs"].unique())
    fig = Figure(figsize=(12.5, 4.8), layout="constrained")
    ax, bx = fig.subplots(1, 2)
    pruned, dense = runs[runs["pruned"]], runs[~runs["pruned"]]
    for ax_, ycol in ((ax, "test_accuracy"), (bx, "gap_points")):
        n_labels = 0
        for _, r in pruned.sort_values("filters_removed").iterrows():
            mk = markers[budgets.index(r["epochs"]) % len(markers)]
            c = colors.get(r["regularizer"], "C4")
            filled = r.get("scope", "all") == "all"
            ax_.scatter(r["filters_removed"], r[ycol], marker=mk, s=46, color=c if filled else "white", edgecolor=c, lw=1.4, zorder=3)
            if label in runs.columns and isinstance(r[label], str) and r["filters_removed"] >= annotate_min:
                up = n_labels % 2 == 0  # alternate above / below so that neighbours do not overlap
                ax_.annotate(r[label], (r["filters_removed"], r[ycol]), xytext=(4, 4 if up else -9), textcoords="offset points",
                             fontsize=6.5, color="0.25")
                n_labels += 1
        for _, r in dense.iterrows():
            ax_.scatter(0, r[ycol], marker="*", s=110, color="k", zorder=4)
    for i, b in enumerate(budgets):
        ref = runs.loc[runs["epochs"] == b, "dense_ref"].iloc[0]
        ax.axhline(ref, color="k", lw=0.8, ls=[":", "--", "-."][i % 3], label=f"best dense, {b} epochs ({ref:.4f})")
    if paper is not None:
        for a in (ax, bx):
            a.axvline(paper, color="#2ca02c", lw=0.8, ls=":")
    bx.fill_between([target[0], 1.0], -0.5, target[1], color="#2ca02c", alpha=0.15, lw=0,
                    label=f"target: >= {target[0]:.0%} of filters, < {target[1]:g} points lost")
    front = pruned.sort_values("filters_removed")
    if len(front):
        keep = []
        for i, r in front.iterrows():
            dom = (front["filters_removed"] >= r["filters_removed"]) & (front["gap_points"] <= r["gap_points"]) & (
                (front["filters_removed"] > r["filters_removed"]) | (front["gap_points"] < r["gap_points"]))
            keep.append(not dom.any())
        on = front[np.array(keep, dtype=bool)]
        bx.step(on["filters_removed"], on["gap_points"], where="pre", color="0.3", lw=1, ls="--", zorder=1, label="Pareto front")
    # legend entries for the encodings
    for i, b in enumerate(budgets):
        bx.scatter([], [], marker=markers[i % len(markers)], color="0.4", label=f"{b} epochs")
    for k, c in colors.items():
        if (pruned["regularizer"] == k).any():
            bx.scatter([], [], marker="o", color=c, label={"l2": "SWP + L2", "l1": "SWP + L1", "none": "SWP alone"}[k])
    bx.scatter([], [], marker="o", color="white", edgecolor="0.3", label="regularizer on weights only (open)")
    bx.scatter([], [], marker="*", s=110, color="k", label="dense runs")
    ax.set_ylabel("test accuracy")
    bx.set_ylabel("accuracy lost to the best dense run\nof the same budget (points)")
    bx.set_ylim(-0.5, max(3.0, float(pruned["gap_points"].max()) + 0.8) if len(pruned) else 3.0)
    for a in (ax, bx):
        a.set_xlabel("filters removed (conv channels, of all conv layers)")
        a.set_xlim(-0.04, 1.0)
        a.xaxis.set_major_formatter(PercentFormatter(1.0))
        a.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False, loc="lower left")
    bx.legend(fontsize=6.5, frameon=False, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


#: Axis labels of the per-node norms of :func:`prunedyn.book.conv_report.bn_balance` (and recorded nodes tables).
NORM_LABELS = {
    "affine_l2": r"$\|(\gamma_j,\beta_j)\|$ (BatchNorm scale, shift)",
    "filter_l2": r"$\|W_j\|$ (conv filter)",
    "in_l2": r"$\|(W_j,\gamma_j,\beta_j)\|$ (all incoming)",
}


def plot_bn_balance(
    balance_by_run: Mapping[str, pd.DataFrame],
    columns: Sequence[str] = ("affine_l2", "filter_l2"),
    floor: float = 1e-4,
    lims: Tuple[float, float] = (5e-5, 5.0),
    cmap: str = "viridis",
    title: str = "",
) -> Figure:
    """Where the in/out balance sits with BatchNorm: per filter, incoming norms against the outgoing one.

    ``balance_by_run``: ``{panel title: table}`` with ``layer, out_l2,
    in_dead, out_dead`` and the ``columns`` (as
    :func:`prunedyn.book.conv_report.bn_balance` gives them; a recorded nodes
    table has ``in_l2``). One row of panels per column, e.g. ``affine_l2``
    (BatchNorm's pair, the side of the ReLU rescaling symmetry) and
    ``filter_l2`` (scale-free under BatchNorm), each against
    ``||w_out,j||``. Only conv layers (filters) are drawn, coloured from input
    (dark) to output (light); dead filters as grey crosses; 0 drawn at ``floor``.
    """
    names = list(balance_by_run)
    fig = Figure(figsize=(3.0 * len(names) + 1.2, 3.2 * len(columns) + 0.3), layout="constrained")
    axes = fig.subplots(len(columns), len(names), squeeze=False)
    cm = matplotlib.colormaps[cmap]
    sm = None
    for c, name in enumerate(names):
        b = balance_by_run[name]
        b = b[b["layer"].map(is_conv)]
        layer_list = list(dict.fromkeys(b["layer"]))
        depth = b["layer"].map({n: i / max(1, len(layer_list) - 1) for i, n in enumerate(layer_list)}).to_numpy()
        y = b["out_l2"].clip(lower=floor).to_numpy()
        dead = (b["in_dead"].astype(bool) | b["out_dead"].astype(bool)).to_numpy()
        for r, col in enumerate(columns):
            ax = axes[r, c]
            x = b[col].clip(lower=floor).to_numpy()
            ax.plot(lims, lims, color="k", lw=0.7, ls="--", zorder=1)
            sm = ax.scatter(x[~dead], y[~dead], c=depth[~dead], cmap=cm, vmin=0, vmax=1, s=7, alpha=0.7, lw=0, zorder=2)
            if dead.any():
                ax.scatter(x[dead], y[dead], marker="x", s=10, color="0.55", lw=0.7, zorder=3, label=f"dead ({int(dead.sum())})")
                ax.legend(fontsize=7, frameon=False, loc="upper left")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(*lims)
            ax.set_ylim(*lims)
            ax.set_aspect("equal")
            ax.tick_params(labelsize=7)
            ax.set_xlabel(NORM_LABELS.get(col, col), fontsize=8)
            if c == 0:
                ax.set_ylabel(r"$\|w_{out,j}\|$ (next layer)", fontsize=8)
        axes[0, c].set_title(f"{name}\n{int((~dead).sum())} of {len(b)} filters alive", fontsize=9)
    if sm is not None:
        cb = fig.colorbar(sm, ax=axes.ravel().tolist(), fraction=0.02, pad=0.03)
        cb.set_ticks([0, 1], labels=["first conv", "last conv"])
        cb.ax.tick_params(labelsize=7)
    fig.suptitle(title or f"every filter's norms (0 drawn at {floor:g}); dashed: balance", fontsize=10)
    return fig


def plot_latency(table: pd.DataFrame, title: str = "") -> Figure:
    """Measured speedup over the reference network per model, one panel per batch size.

    ``table``: :func:`prunedyn.book.conv_report.time_architectures` output. Bars:
    measured speedup (labelled with the milliseconds); red ticks: the FLOP
    ratio, the speedup if time were proportional to FLOPs.
    """
    batches = list(dict.fromkeys(table["batch"]))
    models = list(dict.fromkeys(table["model"]))
    fig = Figure(figsize=(0.75 * len(models) * len(batches) + 2.5 * len(batches), 3.6), layout="constrained")
    axes = fig.subplots(1, len(batches), squeeze=False, sharey=True)
    top = 1.2 * max(float(table["speedup"].max()), float(table["flop_ratio"].max()))
    for ax, b in zip(axes[0], batches):
        t = table[table["batch"] == b].set_index("model").reindex(models)
        x = np.arange(len(models))
        ax.bar(x, t["speedup"], color=["0.6"] + [f"C{(i + 2) % 10}" for i in range(len(models) - 1)], width=0.65)
        ax.scatter(x, t["flop_ratio"], marker="_", s=380, color="#d62728", lw=2, zorder=3, label="FLOP ratio")
        for i, (_, r) in enumerate(t.iterrows()):
            ax.text(i, r["speedup"] + top * 0.01, f"{r['speedup']:.2f}x\n{r['ms']:.3g} ms", ha="center", va="bottom", fontsize=7)
        ax.axhline(1, color="k", lw=0.6)
        ax.set_xticks(x, models, rotation=30, ha="right", fontsize=7.5)
        ax.set_title(f"batch {b}", fontsize=10)
        ax.set_ylim(0, top)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_ylabel("speedup over the dense network")
    axes[0, 0].legend(fontsize=7, frameon=False, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
