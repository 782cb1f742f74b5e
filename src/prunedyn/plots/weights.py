"""Figures of weights: how regularizers and pruning reshape the weight-magnitude distribution.

Every ``plot_*`` function returns a :class:`matplotlib.figure.Figure` built
without pyplot (so nothing is shown twice in a notebook and nothing leaks);
display it by leaving it as a cell's last expression, with
``IPython.display.display``, or turn a series of them into a static slider
with :func:`prunedyn.plots.static_slider`.

Tidy tables (as written by :mod:`prunedyn.run.records`), with an extra ``run``
column when several runs are stacked by :func:`stack_runs`:

- histograms: ``run, epoch, layer, bin, lo, hi, count``; ``bin == -1`` holds
  the exact zeros (``lo == hi == 0``), bins ``0..`` are log-spaced magnitude
  bins ``[lo, hi)``;
- metrics: ``run, epoch, test_accuracy, weight_sparsity, dead_node_fraction, ...``.

Chapter 1's kernel figures and chapter 2's shrinkage paths are the book's own
(:mod:`prunedyn.book.sampling`).
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, PercentFormatter

from prunedyn.core.kernels import get_kernel

#: Fixed colours so that a run / kernel keeps its colour across every figure.
RUN_COLORS = {"none": "#7f7f7f", "l1": "#1f77b4", "l2": "#d62728", "l2_decoupled": "#ff7f0e", "dense": "#000000"}
KERNEL_COLORS = {"gaussian": "#d62728", "laplace": "#9467bd", "hard": "#2ca02c"}
RUN_LABELS = {"none": "SWP, no regularizer", "l1": "SWP + L1", "l2": "SWP + L2", "dense": "dense (no pruning)"}


def _color(mapping: Mapping[str, str], key, i: int) -> str:
    return mapping.get(str(key), f"C{i % 10}")


def _flat(w) -> torch.Tensor:
    if isinstance(w, np.ndarray):
        w = torch.from_numpy(w)
    return w.detach().flatten().double().cpu()


def _short(layer: str) -> str:
    return str(layer).split(".")[-1]


def kernel_reach(kernel: str, sigma: float, p: float = 0.01) -> float:
    """The magnitude below which one pruning step zeroes a weight with probability ``>= p``.

    Solved by bisection on ``kappa(r; sigma) = p`` (kernels are non-increasing
    in ``|w|``). Gaussian: ``sigma * sqrt(2 ln(1/p))``; laplace:
    ``sigma * ln(1/p)``; hard: ``sigma``.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p!r}")
    k = get_kernel(kernel)
    f = lambda r: float(k(torch.tensor([r], dtype=torch.float64), sigma)[0])
    lo, hi = 0.0, sigma
    while f(hi) >= p:
        hi *= 2.0
        if hi > 1e6 * sigma:
            return math.inf
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if f(mid) >= p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)



# ---------------------------------------------------------------------------
# Chapter 2: regularizers and the weight-magnitude distribution
# ---------------------------------------------------------------------------


def stack_runs(runs: Mapping[str, object], table: str) -> pd.DataFrame:
    """One table of several runs, with a leading ``run`` column.

    ``runs``: ``{name: RunResult}`` (anything with the table as an attribute,
    or a dict of DataFrames); ``table``: ``"metrics"``, ``"layers"``,
    ``"nodes"`` or ``"histograms"``.
    """
    frames = []
    for name, r in runs.items():
        df = r[table] if isinstance(r, Mapping) else getattr(r, table)
        frames.append(df.assign(run=name)[["run", *df.columns]])
    return pd.concat(frames, ignore_index=True)


def sparsity_drops(
    metrics: pd.DataFrame,
    column: str = "weight_sparsity",
    min_drop: float = 0.02,
    also: Sequence[str] = ("train_loss", "test_accuracy"),
) -> pd.DataFrame:
    """Epochs at which ``column`` fell by more than ``min_drop`` from the epoch before.

    ``metrics``: a metrics table (stacked with a ``run`` column, or one run's).
    One row per such epoch: ``[run,] epoch``, then ``<col> before`` and
    ``<col> after`` for ``column`` and each of ``also``. Weights revived in
    bulk (pruned weights regrowing out of the kernel's reach) show up here.
    """
    groups = metrics.groupby("run", sort=False) if "run" in metrics.columns else [(None, metrics)]
    rows = []
    for run, g in groups:
        g = g.sort_values("epoch").reset_index(drop=True)
        for i in range(1, len(g)):
            prev, cur = g.iloc[i - 1], g.iloc[i]
            if prev[column] - cur[column] > min_drop:
                row = {} if run is None else {"run": run}
                row["epoch"] = int(cur["epoch"])
                for col in (column, *also):
                    row[f"{col} before"] = prev[col]
                    row[f"{col} after"] = cur[col]
                rows.append(row)
    cols = (["run"] if "run" in metrics.columns else []) + ["epoch"] + [f"{c} {w}" for c in (column, *also) for w in ("before", "after")]
    return pd.DataFrame(rows, columns=cols)


def _keys(df: pd.DataFrame) -> list:
    return [c for c in ("run", "epoch", "layer") if c in df.columns]


def magnitude_fractions(hist: pd.DataFrame) -> pd.DataFrame:
    """The histogram bins as fractions of their layer's weights.

    Adds ``total`` (the layer's number of weights, zeros included),
    ``fraction = count / total``, ``nonzero_fraction = count / (number of
    non-zero weights)`` (NaN for the zero bin, and where every weight is
    zero) and ``center`` (geometric bin centre, 0 for the zero bin) to a
    histogram table.
    """
    keys = _keys(hist)
    out = hist.copy()
    out["total"] = out.groupby(keys)["count"].transform("sum")
    out["fraction"] = out["count"] / out["total"]
    nonzero = out["count"].where(out["bin"] >= 0, 0).groupby([out[k] for k in keys]).transform("sum")
    out["nonzero_fraction"] = (out["count"] / nonzero.where(nonzero > 0)).where(out["bin"] >= 0)
    out["center"] = np.where(out["bin"] < 0, 0.0, np.sqrt(out["lo"].clip(lower=1e-300) * out["hi"].clip(lower=1e-300)))
    return out


def zero_fractions(hist: pd.DataFrame) -> pd.DataFrame:
    """Fraction of exact zeros per (run,) epoch and layer: columns ``[run,] epoch, layer, zero_fraction``."""
    f = magnitude_fractions(hist)
    z = f[f["bin"] < 0][_keys(f) + ["fraction"]].rename(columns={"fraction": "zero_fraction"})
    return z.reset_index(drop=True)


def magnitude_quantiles(hist: pd.DataFrame, qs: Sequence[float] = (0.1, 0.5, 0.9)) -> pd.DataFrame:
    """Quantiles of the *non-zero* magnitudes, read off the binned histogram.

    Returns columns ``[run,] epoch, layer, q, magnitude`` where ``magnitude``
    is the geometric centre of the first bin whose cumulative share of the
    non-zero weights reaches ``q`` (so it is exact to within one bin, a
    factor ``10**(1/8)``). Layers with no non-zero weights get NaN.
    """
    keys = _keys(hist)
    f = magnitude_fractions(hist)
    f = f[f["bin"] >= 0].sort_values(keys + ["bin"])
    rows = []
    for key, g in f.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        c = g["count"].to_numpy(dtype=float)
        cum = np.cumsum(c) / c.sum() if c.sum() else None
        for q in qs:
            if cum is None:
                m = float("nan")
            else:
                i = int(np.searchsorted(cum, q - 1e-12))
                m = float(g["center"].iloc[min(i, len(c) - 1)])
            rows.append({**dict(zip(keys, key)), "q": q, "magnitude": m})
    return pd.DataFrame(rows)


def _auto_xlim(f: pd.DataFrame, q: float = 0.002, pad: float = 2.0) -> Tuple[float, float]:
    """An x-range that holds all but the smallest ``q`` of every histogram's non-zero weights."""
    nz = f[(f["bin"] >= 0) & (f["count"] > 0)]
    if nz.empty:
        return 1e-4, 1.0
    lows = []
    for _, g in nz.sort_values("bin").groupby(_keys(nz), sort=False):
        cum = np.cumsum(g["count"].to_numpy(dtype=float))
        lows.append(float(g["lo"].iloc[int(np.searchsorted(cum, q * cum[-1], side="right"))]))
    return min(lows) / pad, float(nz["hi"].max()) * pad


def _hist_arrays(g: pd.DataFrame, column: str = "nonzero_fraction"):
    g = g[g["bin"] >= 0].sort_values("bin")
    edges = np.append(g["lo"].to_numpy(), g["hi"].to_numpy()[-1])
    return np.nan_to_num(g[column].to_numpy()), edges


def _zero_label(ax, x, zero, horizontal=False):
    """Write the zero share on (or next to) its bar."""
    if zero != zero:
        return
    inside = zero > 0.75
    pos = zero - 0.04 if inside else zero + 0.03
    kw = dict(fontsize=7, color="white" if inside else "black")
    if horizontal:
        ax.text(pos, x, f"{zero:.0%}", va="center", ha="right" if inside else "left", **kw)
    else:
        ax.text(x, pos, f"{zero:.0%}", ha="center", va="top" if inside else "bottom", **kw)


def plot_magnitude_grid(
    hist: pd.DataFrame,
    epoch: int,
    *,
    runs: Optional[Sequence[str]] = None,
    layers: Optional[Sequence[str]] = None,
    reference_epoch=0,
    reference_run: Optional[str] = None,
    sigma: Optional[float] = None,
    kernel: str = "gaussian",
    reach_p: float = 0.01,
    xlim: Optional[Tuple[float, float]] = None,
) -> Figure:
    """Weight-magnitude histograms at one epoch: rows = layers, columns = runs.

    ``hist``: stacked histogram table (``run, epoch, layer, bin, lo, hi,
    count``). Each panel has two parts: a narrow bar on the left with the
    share of *exact zeros* (a log axis cannot show 0), and on the right the
    distribution of the *non-zero* magnitudes: the share of the non-zero
    weights in each log-spaced ``|w|`` bin (so that shapes compare even when
    95% of a layer is zero). Dashed grey: a reference histogram of the same
    layer, from ``reference_run`` (default: the panel's own run) at
    ``reference_epoch`` (default 0, the initialisation; ``"same"``: the
    displayed epoch; ``None``: no reference). With ``sigma``,
    the red band marks the kernel's reach, the magnitudes that one pruning
    step zeroes with probability ``>= reach_p``. The x-range is fixed over
    all epochs (``xlim``, default: every non-empty bin of the table) so that
    frames of a slider compare.
    """
    full = magnitude_fractions(hist)
    runs = list(runs) if runs is not None else list(dict.fromkeys(full["run"]))
    layers = list(layers) if layers is not None else list(dict.fromkeys(full["layer"]))
    f = full[full["run"].isin(runs) & full["layer"].isin(layers)]
    xlim = xlim or _auto_xlim(f)
    shown = full[full["run"].isin(runs + ([reference_run] if reference_run else []))]
    ymax = {lay: 1.08 * float(shown[(shown["layer"] == lay) & (shown["bin"] >= 0)]["nonzero_fraction"].max() or 1.0) for lay in layers}
    reach = kernel_reach(kernel, sigma, reach_p) if sigma else None

    fig = Figure(figsize=(3.3 * len(runs) + 0.6, 2.1 * len(layers) + 0.8), layout="constrained")
    grid = fig.add_gridspec(len(layers), 2 * len(runs), width_ratios=[1, 6] * len(runs))
    for c, run in enumerate(runs):
        for r, lay in enumerate(layers):
            zax = fig.add_subplot(grid[r, 2 * c])
            hax = fig.add_subplot(grid[r, 2 * c + 1])
            g = f[(f["run"] == run) & (f["layer"] == lay) & (f["epoch"] == epoch)]
            color = _color(RUN_COLORS, run, c)
            zero = float(g.loc[g["bin"] < 0, "fraction"].sum()) if len(g) else float("nan")
            zax.bar([0], [zero], color=color, width=0.8)
            zax.set_ylim(0, 1)
            zax.set_xlim(-0.6, 0.6)
            zax.set_xticks([0])
            zax.set_xticklabels(["0"])
            zax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            zax.tick_params(axis="y", labelsize=7)
            _zero_label(zax, 0, zero)
            if c == 0:
                zax.set_ylabel(f"{_short(lay)}: share of all weights", fontsize=8)
            if c == len(runs) - 1:
                hax.yaxis.set_label_position("right")
                hax.set_ylabel("share of non-zero", fontsize=8)
            ref_epoch = epoch if reference_epoch == "same" else reference_epoch
            ref_run = reference_run or run
            if ref_epoch is not None and (ref_epoch, ref_run) != (epoch, run):
                ref = full[(full["run"] == ref_run) & (full["layer"] == lay) & (full["epoch"] == ref_epoch)]
                if len(ref):
                    v, e = _hist_arrays(ref)
                    name = f"{RUN_LABELS.get(ref_run, ref_run).split(' (')[0]}, " if reference_run else ""
                    hax.stairs(v, e, color="0.3", ls="--", lw=1, label=f"{name}epoch {ref_epoch}")
            if len(g):
                v, e = _hist_arrays(g)
                hax.stairs(v, e, fill=True, color=color, alpha=0.75, label=f"epoch {epoch}")
            if reach is not None:
                hax.axvspan(xlim[0], reach, color="#d62728", alpha=0.08, lw=0)
                hax.axvline(sigma, color="#d62728", lw=0.8, ls=":")
            hax.set_xscale("log")
            hax.set_xlim(*xlim)
            hax.set_ylim(0, ymax[lay])
            hax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            hax.tick_params(axis="both", labelsize=7)
            hax.xaxis.set_major_locator(LogLocator(base=10, numticks=8))
            if r == 0:
                hax.set_title(RUN_LABELS.get(run, run), fontsize=10, color=color)
            if r == len(layers) - 1:
                hax.set_xlabel("|w|  (log axis)", fontsize=8)
            if r == 0 and c == len(runs) - 1:
                hax.legend(fontsize=7, frameon=False, loc="upper right")
    note = f"\nred band: kernel reach, P(zeroed) >= {reach_p:g} per step for |w| < {reach:.3g}" if reach else ""
    fig.suptitle(f"weight magnitudes at epoch {epoch}; narrow bars: exact zeros; histograms: non-zero |w|{note}", fontsize=10)
    return fig


def plot_magnitude_ridgeline(
    hist: pd.DataFrame,
    run: str,
    layer: str,
    epochs: Optional[Sequence[int]] = None,
    *,
    sigma: Optional[float] = None,
    kernel: str = "gaussian",
    reach_p: float = 0.01,
    xlim: Optional[Tuple[float, float]] = None,
    overlap: float = 1.6,
) -> Figure:
    """How one layer's weight-magnitude histogram evolves: one ridge per epoch.

    ``hist``: histogram table (stacked with a ``run`` column, or a single
    run's table; ``run`` is then only used in the title). Left: horizontal
    bars with the share of exact zeros at each epoch. Right: the
    distribution of the non-zero magnitudes (share of the non-zero weights per
    log-spaced ``|w|`` bin), epochs stacked top (early) to bottom (late); all
    ridges share one height scale. With ``sigma``, the red band
    is the kernel's reach as in :func:`plot_magnitude_grid`.
    """
    f = magnitude_fractions(hist)
    if "run" in f.columns:
        f = f[f["run"] == run]
    f = f[f["layer"] == layer]
    epochs = list(epochs) if epochs is not None else sorted(f["epoch"].unique())
    f = f[f["epoch"].isin(epochs)]
    xlim = xlim or _auto_xlim(f)
    peak = float(f[f["bin"] >= 0]["nonzero_fraction"].max() or 1.0)
    color = _color(RUN_COLORS, run, 0)

    fig = Figure(figsize=(7.5, 0.42 * len(epochs) + 1.4), layout="constrained")
    zax, hax = fig.subplots(1, 2, sharey=True, width_ratios=[1, 5])
    for i, ep in enumerate(epochs):
        g = f[f["epoch"] == ep]
        base = -float(i)
        zero = float(g.loc[g["bin"] < 0, "fraction"].sum())
        zax.barh(base, zero, height=0.7, color=color, alpha=0.8)
        _zero_label(zax, base, zero, horizontal=True)
        v, e = _hist_arrays(g)
        top = base + overlap * v / peak
        hax.stairs(top, e, baseline=base, fill=True, color=color, alpha=0.55, lw=0)
        hax.stairs(top, e, baseline=None, color="k", lw=0.6)
    if sigma:
        reach = kernel_reach(kernel, sigma, reach_p)
        hax.axvspan(xlim[0], reach, color="#d62728", alpha=0.08, lw=0)
        hax.axvline(sigma, color="#d62728", lw=0.8, ls=":")
        hax.text(reach, 1.0, f" kernel reach\n |w| < {reach:.3g}", transform=hax.get_xaxis_transform(), va="bottom", fontsize=7, color="#d62728")
    zax.set_yticks([-float(i) for i in range(len(epochs))])
    zax.set_yticklabels([f"epoch {ep}" for ep in epochs], fontsize=8)
    zax.set_xlim(0, 1)
    zax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    zax.set_xlabel("exact zeros", fontsize=8)
    zax.tick_params(axis="x", labelsize=7)
    zax.set_ylim(-len(epochs) + 0.5, overlap + 0.3)
    hax.set_xscale("log")
    hax.set_xlim(*xlim)
    hax.set_xlabel("|w|  (log axis)", fontsize=9)
    hax.tick_params(axis="both", labelsize=8)
    hax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{RUN_LABELS.get(run, run)}: {_short(layer)} weight magnitudes over training", fontsize=10)
    return fig


def plot_metric_curves(
    metrics: pd.DataFrame,
    columns: Sequence[str] = ("test_accuracy", "weight_sparsity", "dead_node_fraction"),
    runs: Optional[Sequence[str]] = None,
    ylims: Optional[Mapping[str, Tuple[float, float]]] = None,
) -> Figure:
    """Per-epoch curves of several metrics, one panel per column, one line per run.

    ``metrics``: stacked metrics table (``run, epoch`` and the ``columns``).
    Epoch 0 (initialisation) is included. ``ylims``: optional y-limits by column.
    """
    runs = list(runs) if runs is not None else list(dict.fromkeys(metrics["run"]))
    fig = Figure(figsize=(3.6 * len(columns), 3.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(columns)))
    for ax, col in zip(axes, columns):
        for i, run in enumerate(runs):
            g = metrics[metrics["run"] == run].sort_values("epoch")
            ax.plot(g["epoch"], g[col], color=_color(RUN_COLORS, run, i), lw=1.8, label=RUN_LABELS.get(run, run))
        ax.set_xlabel("epoch")
        ax.set_title(col.replace("_", " "), fontsize=10)
        if ylims and col in ylims:
            ax.set_ylim(*ylims[col])
        ax.grid(alpha=0.3)
    axes[0].legend(frameon=False, fontsize=8)
    return fig


def plot_layer_sparsity(hist: pd.DataFrame, runs: Optional[Sequence[str]] = None) -> Figure:
    """Share of exact zeros per layer over epochs: one panel per layer, one line per run.

    Read from the histogram table's zero bin, so it covers every prunable
    layer (the output layer too).
    """
    z = zero_fractions(hist)
    runs = list(runs) if runs is not None else list(dict.fromkeys(z["run"]))
    layers = list(dict.fromkeys(z["layer"]))
    fig = Figure(figsize=(3.4 * len(layers), 3.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(layers), sharey=True))
    for ax, lay in zip(axes, layers):
        for i, run in enumerate(runs):
            g = z[(z["run"] == run) & (z["layer"] == lay)].sort_values("epoch")
            ax.plot(g["epoch"], g["zero_fraction"], color=_color(RUN_COLORS, run, i), lw=1.8, label=RUN_LABELS.get(run, run))
        ax.set_title(_short(lay), fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 1)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("weights exactly zero")
    axes[0].legend(frameon=False, fontsize=8)
    return fig


def final_numbers(metrics: pd.DataFrame, hist: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """The last epoch of each run: one row per run.

    Columns ``epoch, test_accuracy, weight_sparsity, dead_node_fraction,
    nodes_alive`` from the stacked metrics table, plus ``zeros <layer>`` per
    layer from the histogram table when given.
    """
    last = metrics.sort_values("epoch").groupby("run", sort=False).tail(1)
    cols = ["run", "epoch", "test_accuracy", "weight_sparsity", "dead_node_fraction", "nodes_alive"]
    out = last[[c for c in cols if c in last.columns]].set_index("run")
    out = out.loc[list(dict.fromkeys(metrics["run"]))]
    if hist is not None:
        z = zero_fractions(hist)
        for lay in dict.fromkeys(z["layer"]):
            zl = z[z["layer"] == lay].set_index(["run", "epoch"])["zero_fraction"]
            out[f"zeros {_short(lay)}"] = [zl.get((run, ep), float("nan")) for run, ep in zip(out.index, out["epoch"])]
    return out
