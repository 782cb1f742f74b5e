"""Figures of the U-Net chapter: the architecture drawn as a U, channel death per
layer, scores against channels removed, and predicted nuclei overlaid on images.

Every ``plot_*`` function returns a :class:`matplotlib.figure.Figure` built
without pyplot (nothing is shown twice, nothing leaks); a notebook displays it
as a cell's last expression, and :func:`prunedyn.plots.static_slider` turns a
series of them into a slider for the static book.

Inputs:

- ``levels``: :meth:`prunedyn.models.UNet.levels` -- one dict per level
  ``{"level": i, "encoder": [...], "decoder": [...]}`` from the top level to
  the bottleneck (last, empty decoder);
- widths: ``{layer name: channels}`` mappings such as
  :meth:`~prunedyn.models.UNet.layer_widths` or a
  :class:`~prunedyn.structure.surgery.CompactionReport`'s ``widths_before`` /
  ``widths_after``;
- the tidy ``layers`` / ``metrics`` tables of :mod:`prunedyn.run.records`, one per
  run in a ``{run name: table}`` mapping;
- images ``(N, H, W)`` (any float or integer scale; each panel is scaled
  by :func:`display_grey`) and integer instance label images ``(N, H, W)`` (``0`` background).

Three small helpers compute what the figures show: :func:`predict` (class
map and instances of a model on a batch, with the post-processing of
:mod:`prunedyn.tasks.segmentation`), :func:`skip_channel_table` (which consumers of
each encoder output channel still read it) and :func:`weights_within` (how
much of each layer lies within a pruning kernel's reach).
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, Patch, Rectangle
from matplotlib.ticker import PercentFormatter

from prunedyn.modes import eval_mode
from prunedyn.tasks.segmentation import (
    BOUNDARY,
    INTERIOR,
    class_targets,
    instances_from_classes,
)

try:  # the book's run colours and labels
    from prunedyn.plots.weights import RUN_COLORS, RUN_LABELS
except ImportError:  # pragma: no cover
    RUN_COLORS = {"none": "#7f7f7f", "l1": "#1f77b4", "l2": "#d62728", "dense": "#000000"}
    RUN_LABELS = {"none": "SWP, no regularizer", "l1": "SWP + L1", "l2": "SWP + L2", "dense": "dense (no pruning)"}

#: Colours of the three pixel classes in class-map panels (background transparent).
CLASS_COLORS = {INTERIOR: (0.12, 0.47, 0.71), BOUNDARY: (1.0, 0.5, 0.05)}


def _color(run, i: int) -> str:
    return RUN_COLORS.get(str(run), f"C{i % 10}")


def _label(run) -> str:
    return RUN_LABELS.get(str(run), str(run))


# ---------------------------------------------------------------------------
# the architecture as a U
# ---------------------------------------------------------------------------
def unet_layer_order(levels: Sequence[Mapping]) -> list:
    """Node-layer names in forward order: the encoder levels top to bottom, the
    bottleneck, then the decoder levels bottom to top (``up{i}``, ``dec{i}.conv1``,
    ``dec{i}.conv2``)."""
    levels = sorted(levels, key=lambda d: d["level"])
    down = [name for lv in levels for name in lv["encoder"]]
    up = [name for lv in reversed(levels) for name in lv["decoder"]]
    return down + up


def unet_positions(levels: Sequence[Mapping]) -> dict:
    """``{layer: (slot, level)}``: the layer's column (0, 1, ... left to right, one per
    layer in :func:`unet_layer_order`) and its level (1 = top, full resolution)."""
    levels = sorted(levels, key=lambda d: d["level"])
    pos, slot = {}, 0
    for lv in levels:
        for name in lv["encoder"]:
            pos[name] = (slot, lv["level"])
            slot += 1
    for lv in reversed(levels):
        for name in lv["decoder"]:
            pos[name] = (slot, lv["level"])
            slot += 1
    return pos


def _short_unet(name: str) -> str:
    """``enc1.conv2`` -> ``e1.2``, ``dec3.conv1`` -> ``d3.1``, ``bottleneck.conv1`` -> ``b.1``, ``up2`` -> ``up2``."""
    block, _, conv = name.partition(".")
    if not conv:
        return block
    head = {"enc": "e", "dec": "d", "bottleneck": "b"}
    for k, v in head.items():
        if block.startswith(k):
            return f"{v}{block[len(k):]}.{conv.replace('conv', '')}"
    return name


def plot_unet_widths(
    levels: Sequence[Mapping],
    widths_before: Mapping[str, int],
    widths_after: Optional[Mapping[str, int]] = None,
    *,
    title: Optional[str] = None,
    color: str = "#d62728",
    scale: str = "sqrt",
    ax=None,
) -> Figure:
    """The U-Net drawn as a U, each node layer a box at its level.

    One box per node layer (:func:`unet_positions`): the encoder descends on
    the left, the bottleneck sits at the bottom, the decoder climbs on the
    right (``up{i}``, the transposed convolution, is the first box of decoder
    level ``i``). A box's height grows with the dense width ``widths_before``
    (``scale="sqrt"``: with its square root, so that the 8-channel and the
    128-channel layers of a narrow U-Net both stay visible; ``"linear"``:
    proportionally); its coloured part is the share kept in ``widths_after``
    (linear inside the box), and the label under it reads ``after/before``
    (only ``before`` without ``widths_after``), the one under it the layer
    (``e2.1`` is ``enc2.conv1``, ``b`` the bottleneck, ``d`` the decoder). Dashed arrows: the skip
    connections, ``enc{i}.conv2`` copied into ``dec{i}.conv1``; grey arrows:
    max-pool down, transposed convolution up.
    The copy arrow runs above the level's boxes into ``dec{i}.conv1``.
    """
    if scale not in ("sqrt", "linear"):
        raise ValueError(f"scale must be 'sqrt' or 'linear', got {scale!r}")
    pos = unet_positions(levels)
    missing = [n for n in pos if n not in widths_before]
    if missing:
        raise KeyError(f"widths_before has no width for {', '.join(missing)}")
    f = np.sqrt if scale == "sqrt" else (lambda v: v)
    top = max(float(f(widths_before[n])) for n in pos)
    depth = max(lv for _, lv in pos.values())
    box_w, band = 0.62, 1.0  # box width in slots; vertical distance between levels
    hmax = 0.78 * band

    if ax is None:
        fig = Figure(figsize=(0.5 * len(pos) + 1.2, 1.25 * depth + 1.4), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure

    def y0(level):  # bottom of the boxes of a level
        return -(level - 1) * band - hmax

    boxes = {}
    for name, (slot, level) in pos.items():
        b = float(widths_before[name])
        h = hmax * float(f(b)) / top
        x, y = slot - box_w / 2, y0(level)
        boxes[name] = (x, y, h)
        ax.add_patch(Rectangle((x, y), box_w, h, facecolor="0.88", edgecolor="0.45", lw=0.8))
        if widths_after is not None:
            a = float(widths_after.get(name, 0))
            ax.add_patch(Rectangle((x, y), box_w, h * (a / b if b else 0.0), facecolor=color, edgecolor="none", alpha=0.85))
            text = f"{int(a)}/{int(b)}"
        else:
            text = f"{int(b)}"
        ax.text(slot, y - 0.04, text, ha="center", va="top", fontsize=7)
        ax.text(slot, y - 0.2, _short_unet(name), ha="center", va="top", fontsize=6.5, color="0.35")

    def arrow(p, q, **kw):
        style = dict(arrowstyle="-|>", mutation_scale=8, lw=0.9, color="0.55", shrinkA=0, shrinkB=0)
        style.update(kw)
        ax.add_patch(FancyArrowPatch(p, q, **style))

    lv_sorted = sorted(levels, key=lambda d: d["level"])
    for lv in lv_sorted:
        enc, dec = lv["encoder"], lv["decoder"]
        if not dec:
            continue
        i = lv["level"]
        below = next(d for d in lv_sorted if d["level"] == i + 1)
        # pool: last encoder layer of this level -> first encoder layer below
        xs, ys, hs = boxes[enc[-1]]
        xb, yb, hb = boxes[below["encoder"][0]]
        arrow((xs + box_w, ys + 0.5 * hs), (xb, yb + 0.5 * hb))
        # up: last layer of the level below (decoder, or the bottleneck) -> up{i}
        src = below["decoder"][-1] if below["decoder"] else below["encoder"][-1]
        xs2, ys2, hs2 = boxes[src]
        xu, yu, hu = boxes[dec[0]]
        arrow((xs2 + box_w, ys2 + 0.5 * hs2), (xu, yu))
        # skip: enc{i}.conv2 -> dec{i}.conv1 (the concatenation), routed above the level's boxes
        skip_to = dec[1] if len(dec) > 1 else dec[0]
        xk, yk, hk = boxes[skip_to]
        level_top = max(boxes[n][1] + boxes[n][2] for n in (*enc, *dec))
        yy = level_top + 0.2
        xa, xb2 = xs + box_w / 2, xk + box_w / 2
        ax.plot([xa, xa, xb2], [ys + hs, yy, yy], ls="--", color="0.35", lw=0.8)
        arrow((xb2, yy), (xb2, yk + hk), ls="--", color="0.35", lw=0.8)

    ax.set_xlim(-1.0, len(pos))
    ax.set_ylim(y0(depth) - 0.5, max(y + h for _, y, h in boxes.values()) + 0.3)
    ax.set_axis_off()
    handles = [Patch(facecolor="0.88", edgecolor="0.45", label="dense width")]
    if widths_after is not None:
        handles.append(Patch(facecolor=color, alpha=0.85, label="kept"))
    handles.append(Line2D([], [], ls="--", color="0.35", lw=0.8, label="skip (copy and concatenate)"))
    handles.append(Line2D([], [], color="0.55", lw=0.9, label="max-pool down / transposed conv up"))
    ax.legend(handles=handles, loc="lower left", fontsize=7, frameon=False)
    if title is None:
        tb = sum(int(widths_before[n]) for n in pos)
        if widths_after is not None:
            ta = sum(int(widths_after.get(n, 0)) for n in pos)
            title = f"{tb - ta} of {tb} channels removed ({1 - ta / tb:.1%}); labels: kept/dense"
        else:
            title = f"{tb} channels in {len(pos)} node layers"
        title += f"; box height ~ {'sqrt of ' if scale == 'sqrt' else ''}dense width"
    ax.set_title(title, fontsize=9)
    return fig


def alive_widths(layers: pd.DataFrame, epoch: Optional[int] = None) -> dict:
    """``{layer: alive channels}`` at ``epoch`` (default: the last) of a run's ``layers`` table."""
    ep = int(layers["epoch"].max()) if epoch is None else int(epoch)
    d = layers[layers["epoch"] == ep]
    if d.empty:
        raise ValueError(f"no rows for epoch {ep}")
    return {str(r["layer"]): int(r["alive"]) for _, r in d.iterrows()}


# ---------------------------------------------------------------------------
# channel death per layer over epochs
# ---------------------------------------------------------------------------
def dead_fraction_matrix(layers: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """Dead share ``1 - alive / nodes`` with one row per layer (in ``order``) and one
    column per epoch."""
    d = layers.assign(dead=1.0 - layers["alive"] / layers["nodes"])
    m = d.pivot(index="layer", columns="epoch", values="dead")
    return m.loc[[n for n in order if n in m.index]]


def plot_unet_death(
    layers_by_run: Mapping[str, pd.DataFrame], levels: Sequence[Mapping], epoch: Optional[int] = None
) -> Figure:
    """Channel death per layer over epochs: one heatmap per run, rows the node layers
    in U order (encoder down, bottleneck, decoder up), columns the epochs, colour the
    dead share. The number at the right end of each row is the last epoch's dead
    share; ``epoch`` draws a vertical marker (for sliders)."""
    order = unet_layer_order(levels)
    runs = list(layers_by_run)
    fig = Figure(figsize=(2.9 * len(runs) + 1.2, 0.2 * len(order) + 1.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(runs), sharey=True))
    im = None
    for c, (ax, run) in enumerate(zip(axes, runs)):
        m = dead_fraction_matrix(layers_by_run[run], order)
        epochs = m.columns.to_numpy()
        im = ax.imshow(m.to_numpy(), aspect="auto", cmap="magma_r", vmin=0, vmax=1, interpolation="nearest",
                       extent=(epochs[0] - 0.5, epochs[-1] + 0.5, len(m) - 0.5, -0.5))
        for r, v in enumerate(m.iloc[:, -1].to_numpy()):
            ax.text(epochs[-1] + 0.7, r, f"{v:.0%}", va="center", ha="left", fontsize=6.5)
        n_enc = sum(len(lv["encoder"]) for lv in levels)
        n_bott = len(sorted(levels, key=lambda d: d["level"])[-1]["encoder"])
        for y in (n_enc - n_bott - 0.5, n_enc - 0.5):
            ax.axhline(y, color="w", lw=1.2)
        if epoch is not None:
            ax.axvline(epoch, color="#1f77b4", lw=1.2, ls="--")
        ax.set_xlim(epochs[0] - 0.5, epochs[-1] + 2.2)
        ax.set_title(_label(run), fontsize=10, color=_color(run, c))
        ax.set_xlabel("epoch")
        ax.set_yticks(range(len(m)), list(m.index), fontsize=7)
    cb = fig.colorbar(im, ax=list(axes), shrink=0.8, format=PercentFormatter(1.0, decimals=0))
    cb.set_label("dead channels (share of layer)")
    return fig


# ---------------------------------------------------------------------------
# scores against channels removed
# ---------------------------------------------------------------------------
def plot_scores_vs_removed(
    metrics_by_run: Mapping[str, pd.DataFrame],
    columns: Sequence[str] = ("test_dice", "test_map"),
    dense: Optional[str] = "dense",
    target_removed: Optional[float] = 0.6,
    tolerance: Optional[Mapping[str, float]] = None,
) -> Figure:
    """Each run's path through (share of channels dead, score), one point per epoch.

    One panel per metric column. The last epoch is the large marker. With
    ``dense`` (a key of ``metrics_by_run``) its last-epoch score is the black
    line, and ``tolerance[column]`` shades the band ``[score - tol, score]``;
    ``target_removed`` draws the vertical target line.
    """
    tolerance = dict(tolerance or {})
    fig = Figure(figsize=(4.0 * len(columns), 3.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(columns)))
    for ax, col in zip(axes, columns):
        for i, (run, m) in enumerate(metrics_by_run.items()):
            g = m.sort_values("epoch")
            g = g[g["epoch"] > 0]
            color = _color(run, i)
            if run == dense:
                ref = float(g[col].iloc[-1])
                ax.axhline(ref, color=color, lw=1.2, label=f"{_label(run)}: {ref:.3f}")
                if col in tolerance:
                    ax.axhspan(ref - tolerance[col], ref, color="0.5", alpha=0.15, lw=0,
                               label=f"within {tolerance[col]:g} of dense")
                continue
            ax.plot(g["dead_node_fraction"], g[col], "-o", color=color, ms=2.5, lw=1, alpha=0.7)
            ax.plot(g["dead_node_fraction"].iloc[-1], g[col].iloc[-1], "o", color=color, ms=8,
                    label=f"{_label(run)}: {g[col].iloc[-1]:.3f}")
        if target_removed is not None:
            ax.axvline(target_removed, color="0.3", ls=":", lw=1)
        ax.set_xlim(-0.02, 1.0)
        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_xlabel("channels dead (all node layers)")
        ax.set_ylabel(col.replace("test_", "test ").replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False, loc="lower left")
    fig.suptitle("one point per epoch (large: last epoch)", fontsize=9)
    return fig


# ---------------------------------------------------------------------------
# predictions
# ---------------------------------------------------------------------------
@torch.no_grad()
def predict(model, x: torch.Tensor, batch: int = 32, min_size: int = 8, grow: float = 2):
    """Class maps ``(N, H, W)`` int64 and instances ``(N, H, W)`` int32 of ``model`` on ``x``.

    Eval mode, on the CPU, in batches; instances by
    :func:`prunedyn.tasks.segmentation.instances_from_classes` (``min_size``, ``grow``).
    """
    with eval_mode(model):
        classes = torch.cat([model(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)]).numpy()
    inst = np.stack([instances_from_classes(c, min_size=min_size, grow=grow) for c in classes])
    return classes, inst


def pick_examples(instances, k: int = 4, min_objects: int = 1) -> list:
    """Indices of ``k`` tiles at evenly spaced quantiles of the nucleus count among the
    tiles with at least ``min_objects`` nuclei (sparse to crowded, deterministic)."""
    inst = np.asarray(instances)
    counts = np.array([len(np.unique(t)) - (1 if (t == 0).any() else 0) for t in inst])
    ok = np.flatnonzero(counts >= min_objects)
    if len(ok) == 0:
        raise ValueError(f"no tile has at least {min_objects} objects")
    order = ok[np.argsort(counts[ok], kind="stable")]
    picks = np.round(np.linspace(0, len(order) - 1, min(k, len(order)))).astype(int)
    return [int(order[p]) for p in picks]


def display_grey(image, lo_q: float = 0.5, hi_q: float = 99.5, floor: float = 0.2) -> np.ndarray:
    """The image scaled to ``[0, 1]`` for display: its ``lo_q`` percentile goes to 0
    and ``max(hi_q percentile, lo + floor * (max - lo))`` to 1, values beyond are
    clipped. Fluorescence tiles are mostly dark, and a min-max scaling leaves dim
    nuclei invisible; the ``floor`` keeps a nearly empty tile from stretching
    its background noise to full brightness. A constant image is all zeros."""
    im = np.asarray(image, dtype=np.float64)
    lo, hi = (float(v) for v in np.percentile(im, [lo_q, hi_q]))
    hi = max(hi, lo + floor * (float(im.max()) - lo))
    if hi <= lo:
        lo, hi = float(im.min()), float(im.max())
    if hi <= lo:
        return np.zeros_like(im)
    return np.clip((im - lo) / (hi - lo), 0.0, 1.0)


def label_colors(n: int, seed: int = 0) -> np.ndarray:
    """``(n + 1, 3)`` RGB colours: row 0 (background) black, rows ``1..n`` bright,
    well separated hues in a seeded random order."""
    rng = np.random.default_rng(seed)
    hues = (np.arange(n) * 0.618033988749895) % 1.0
    rng.shuffle(hues)
    import colorsys

    rgb = [colorsys.hsv_to_rgb(h, 0.85, 1.0) for h in hues]
    return np.vstack([np.zeros((1, 3)), np.array(rgb).reshape(-1, 3)])


def instance_overlay(image, labels, alpha: float = 0.45, outline: bool = True, seed: int = 0) -> np.ndarray:
    """RGB ``(H, W, 3)`` in ``[0, 1]``: the greyscale ``image`` (:func:`display_grey`) with every
    instance of ``labels`` tinted in its own colour (``alpha``) and, with ``outline``,
    its boundary pixels (:func:`prunedyn.tasks.segmentation.class_targets`) in full colour.
    Background pixels keep their grey value."""
    g = display_grey(image)
    lab = np.asarray(labels)
    if lab.shape != g.shape:
        raise ValueError(f"image {g.shape} and labels {lab.shape} differ in shape")
    out = np.repeat(g[..., None], 3, axis=2)
    values = np.unique(lab)
    values = values[values != 0]
    if len(values) == 0:
        return out
    idx = np.searchsorted(values, lab) + 1
    idx[lab == 0] = 0
    colors = label_colors(len(values), seed)[idx]
    fg = lab != 0
    out[fg] = (1 - alpha) * out[fg] + alpha * colors[fg]
    if outline:
        edge = class_targets(lab) == BOUNDARY
        out[edge] = colors[edge]
    return out


def class_overlay(image, classes, alpha: float = 0.55) -> np.ndarray:
    """RGB ``(H, W, 3)``: the image in grey with interior pixels blue and boundary pixels orange."""
    g = display_grey(image)
    out = np.repeat(g[..., None], 3, axis=2)
    c = np.asarray(classes)
    for k, rgb in CLASS_COLORS.items():
        m = c == k
        out[m] = (1 - alpha) * out[m] + alpha * np.asarray(rgb)
    return out


def plot_instance_overlays(
    images,
    columns: Mapping[str, Sequence],
    scores: Optional[Mapping[str, Sequence[str]]] = None,
    title: str = "",
    size: float = 2.3,
) -> Figure:
    """Rows: example tiles; columns: the plain image, then one column per entry of
    ``columns`` (``{title: instance label images (N, H, W)}``, e.g. ground truth,
    dense, compact) with the instances overlaid in colour. ``scores``: optional
    ``{column title: [text per row]}`` written under the panels."""
    images = np.asarray(images)
    names = list(columns)
    n = len(images)
    fig = Figure(figsize=(size * (len(names) + 1), size * n + 0.5), layout="constrained")
    axes = fig.subplots(n, len(names) + 1, squeeze=False)
    for r in range(n):
        axes[r][0].imshow(display_grey(images[r]), cmap="gray", vmin=0, vmax=1)
        if r == 0:
            axes[r][0].set_title("image", fontsize=9)
        for c, name in enumerate(names, start=1):
            lab = np.asarray(columns[name][r])
            ax = axes[r][c]
            ax.imshow(instance_overlay(images[r], lab))
            k = len(np.unique(lab)) - int((lab == 0).any())
            text = f"{k} nuclei"
            if scores and name in scores:
                text += f", {scores[name][r]}"
            ax.set_xlabel(text, fontsize=7.5)
            if r == 0:
                ax.set_title(name, fontsize=9)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_postprocessing(image, classes, truth, min_size: int = 8, grow: float = 2, size: float = 2.6) -> Figure:
    """The post-processing step by step on one tile: image; predicted classes
    (interior blue, boundary orange); seeds (4-connected interior components with
    at least ``min_size`` pixels); instances (seeds grown by at most ``grow``
    pixels into the foreground); the ground truth."""
    seeds = instances_from_classes(classes, min_size=min_size, grow=0)
    inst = instances_from_classes(classes, min_size=min_size, grow=grow)
    panels = [
        ("image", np.repeat(display_grey(image)[..., None], 3, axis=2)),
        ("predicted classes", class_overlay(image, classes)),
        (f"seeds: interior components\n>= {min_size} px ({int(seeds.max())})", instance_overlay(image, seeds, outline=False)),
        (f"instances: seeds grown\n<= {grow:g} px ({int(inst.max())})", instance_overlay(image, inst)),
        (f"ground truth ({len(np.unique(truth)) - int((np.asarray(truth) == 0).any())})", instance_overlay(image, truth)),
    ]
    fig = Figure(figsize=(size * len(panels), size + 0.7), layout="constrained")
    axes = fig.subplots(1, len(panels))
    for ax, (name, rgb) in zip(axes, panels):
        ax.imshow(rgb)
        ax.set_title(name, fontsize=8.5)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[1].legend(handles=[Patch(color=CLASS_COLORS[INTERIOR], label="interior"),
                            Patch(color=CLASS_COLORS[BOUNDARY], label="boundary")],
                   loc="lower center", bbox_to_anchor=(0.5, -0.22), ncol=2, fontsize=7, frameon=False)
    return fig


# ---------------------------------------------------------------------------
# compaction through the skip concatenations
# ---------------------------------------------------------------------------
@torch.no_grad()
def skip_channel_table(model) -> pd.DataFrame:
    """Which consumers still read each encoder output channel ``enc{i}.conv2``.

    Each such channel has two consumers: the next encoder block (or the
    bottleneck) after max-pooling, and ``dec{i}.conv1`` through the skip
    concatenation. One row per level: ``channels``; ``zero_into_next`` /
    ``zero_into_skip``: channels whose outgoing weights into that consumer
    are all zero; ``zero_into_both``; ``out_dead``, the channels the node
    records call out-dead, which are exactly those zero into both (a channel
    that one consumer still reads must stay); ``in_dead``; ``dead``
    (in- or out-dead). Also, for the decoder conv ``dec{i}.conv1`` that reads
    the concatenation: ``dec_inputs`` (its input channels, skip + up) and
    ``dec_inputs_silent`` (input channels whose weights in it are all zero).
    """
    from prunedyn.structure.nodes import layer_nodes, node_layers, outgoing_columns

    layers = {layer.name: layer for layer in node_layers(model)}
    rows = []
    i = 1
    while f"enc{i}.conv2" in layers:
        layer = layers[f"enc{i}.conv2"]
        st = layer_nodes(layer)
        n = layer.size
        dec = getattr(model, f"dec{i}").conv1
        zero = {}
        for cons in layer.consumers:
            z = (outgoing_columns(cons, n) == 0).all(dim=1)
            zero["skip" if cons.module is dec else "next"] = z
        w = dec.weight.reshape(dec.weight.shape[0], dec.weight.shape[1], -1)
        silent = (w == 0).all(dim=2).all(dim=0)
        rows.append({
            "level": i,
            "channels": n,
            "zero_into_next": int(zero["next"].sum()),
            "zero_into_skip": int(zero["skip"].sum()),
            "zero_into_both": int((zero["next"] & zero["skip"]).sum()),
            "out_dead": int(st.out_dead.sum()),
            "in_dead": int(st.in_dead.sum()),
            "dead": int(st.dead.sum()),
            "dec_inputs": int(dec.weight.shape[1]),
            "dec_inputs_silent": int(silent.sum()),
        })
        i += 1
    return pd.DataFrame(rows)


@torch.no_grad()
def weights_within(model, magnitude: float) -> pd.DataFrame:
    """How much of each node layer's filters lies below ``magnitude`` (e.g. SWP's reach).

    One row per node layer, in forward order: ``fan_in`` (incoming weights per
    output channel: ``C_in * k * k``), ``rms`` of its weights, and ``share_below``,
    the share of its weights with ``|w| < magnitude``.
    """
    from prunedyn.structure.nodes import incoming_rows, node_layers

    rows = []
    for layer in node_layers(model):
        w = incoming_rows(layer.producer).double()
        rows.append({"layer": layer.name, "fan_in": int(w.shape[1]), "rms": float(w.pow(2).mean().sqrt()),
                     "share_below": float((w.abs() < magnitude).double().mean())})
    return pd.DataFrame(rows)

