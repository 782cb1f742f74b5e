"""Figures of the chest X-ray chapter: X-rays with predictions and saliency, and
the task metrics against the share of channels removed.

Every ``plot_*`` function returns a :class:`matplotlib.figure.Figure` built
without pyplot (nothing is shown twice, nothing leaks); a notebook displays it
as a cell's last expression, and :func:`prunedyn.plots.static_slider` turns a
series of them into a slider for the static book.

Inputs:

- images ``(N, 1, H, W)`` or ``(N, H, W)`` (normalised floats; each is shown
  with its own 1-99% intensity range), labels ``(N,)`` ints and the
  dataset's ``class_names``;
- for the saliency grid, per network a :class:`Explained` (its class
  probabilities ``(N, K)`` and maps ``(N, H, W)``, e.g. from
  :func:`prunedyn.book.saliency.occlusion_map`);
- for the metric figures, the tidy table of :func:`summary_table`: one row
  per run (``run`` = none / l1 / l2 / dense, ``seed``, the test metrics,
  ``dead_fraction``, ``removed_fraction``, ...).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import PercentFormatter

from prunedyn.plots.weights import RUN_COLORS, RUN_LABELS

#: The classification metrics of the X-ray chapter and their axis labels.
CXR_METRICS = {
    "test_accuracy": "accuracy",
    "test_balanced_accuracy": "balanced accuracy",
    "test_auc": "ROC AUC (macro, one-vs-rest)",
    "test_auc_covid": "ROC AUC (COVID vs rest)",
}
CORRECT, WRONG = "#1a7f37", "#cf222e"


@dataclass
class Explained:
    """What one network says about ``N`` images: ``probs (N, K)``, saliency ``maps (N, H, W)``."""

    probs: torch.Tensor
    maps: torch.Tensor

    @property
    def pred(self) -> torch.Tensor:
        return self.probs.argmax(1)


def _gray(img) -> np.ndarray:
    a = img.detach().cpu().float().numpy() if isinstance(img, torch.Tensor) else np.asarray(img, dtype=float)
    return a.reshape(a.shape[-2:]) if a.ndim == 3 else a


def _show_xray(ax, img) -> None:
    a = _gray(img)
    lo, hi = np.percentile(a, [1, 99])
    ax.imshow(a, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="bilinear")
    ax.set_xticks([])
    ax.set_yticks([])


def overlay_rgba(amap, color: str = "#ff2d00", max_alpha: float = 0.75) -> np.ndarray:
    """An ``(H, W, 4)`` RGBA layer: one colour, opacity proportional to ``amap`` (clipped to [0, 1])."""
    a = np.clip(_gray(amap), 0.0, 1.0)
    rgba = np.zeros((*a.shape, 4))
    rgba[..., :3] = to_rgb(color)
    rgba[..., 3] = max_alpha * a
    return rgba


def plot_xray_examples(
    images,
    labels,
    class_names: Sequence[str],
    per_class: int = 4,
    notes: Optional[Mapping[str, str]] = None,
    title: str = "",
    panel: float = 1.6,
    dpi: int = 80,
) -> Figure:
    """The first ``per_class`` images of every class: one row per class.

    ``notes``: an optional line per class name under the row label (e.g. the
    source of that class's images). ``panel``: inches per image; ``dpi``: the
    figure's resolution (X-rays compress poorly: keep a panel near the
    images' own pixel size).
    """
    labels = np.asarray(labels)
    k = len(class_names)
    fig = Figure(figsize=(panel * per_class + 1.2, (panel + 0.1) * k + 0.4), layout="constrained", dpi=dpi)
    axes = fig.subplots(k, per_class, squeeze=False)
    for c, name in enumerate(class_names):
        idx = np.flatnonzero(labels == c)[:per_class]
        for j in range(per_class):
            ax = axes[c][j]
            if j < len(idx):
                _show_xray(ax, images[idx[j]])
            else:
                ax.set_axis_off()
        text = name.replace("_", " ")
        if notes and name in notes:
            text += f"\n{notes[name]}"
        axes[c][0].set_ylabel(text, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_xray_saliency(
    images,
    labels,
    explained: Mapping[str, Explained],
    class_names: Sequence[str],
    titles: Optional[Mapping[str, str]] = None,
    colors: Optional[Mapping[str, str]] = None,
    max_alpha: float = 0.75,
    title: str = "",
    panel: float = 1.75,
    dpi: int = 80,
) -> Figure:
    """X-rays side by side with what each network predicts and where it looks.

    One row per image. Column 0: the X-ray and its true class. Then one
    column per network in ``explained`` (e.g. ``{"dense": ..., "compact":
    ...}``): the same X-ray with the network's saliency map laid over it (the
    map's value, clipped to [0, 1], sets the overlay's opacity: normalise maps
    first, :func:`prunedyn.book.saliency.normalise_maps`), and its predicted class
    with probability, green where right and red where wrong. ``panel``:
    inches per image; ``dpi``: the figure's resolution.
    """
    labels = np.asarray(labels)
    names = list(explained)
    n = len(labels)
    fig = Figure(figsize=(panel * (len(names) + 1), (panel + 0.3) * n + 0.5), layout="constrained", dpi=dpi)
    axes = fig.subplots(n, len(names) + 1, squeeze=False)
    for i in range(n):
        _show_xray(axes[i][0], images[i])
        axes[i][0].set_title(f"true: {class_names[labels[i]]}", fontsize=8)
        for j, name in enumerate(names, start=1):
            ex = explained[name]
            ax = axes[i][j]
            _show_xray(ax, images[i])
            color = (colors or {}).get(name, "#ff2d00")
            ax.imshow(overlay_rgba(ex.maps[i], color, max_alpha), interpolation="bilinear")
            p = int(ex.pred[i])
            ok = p == labels[i]
            ax.set_title(
                f"{class_names[p]} ({float(ex.probs[i, p]):.2f})", fontsize=8, color=CORRECT if ok else WRONG,
                fontweight="normal" if ok else "bold",
            )
            if i == 0:
                ax.text(
                    0.5, 1.22, (titles or {}).get(name, name), transform=ax.transAxes, ha="center", va="bottom", fontsize=9,
                )
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def block_layers(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of a run table with layer names ``block<i>.conv`` shortened to ``block<i>``.

    The node and weight figures label a layer by the last part of its name,
    which for the X-ray CNN would be ``conv`` in every block.
    """
    return table.assign(layer=table["layer"].astype(str).str.replace(r"^(block\d+)\.conv$", r"\1", regex=True))


def stack(runs: Mapping[str, object], table: str) -> pd.DataFrame:
    """:func:`prunedyn.plots.weights.stack_runs` of ``{name: RunResult}`` with :func:`block_layers` names."""
    from prunedyn.plots.weights import stack_runs

    out = stack_runs(runs, table)
    return block_layers(out) if "layer" in out else out


def metrics_at(runs: Mapping[tuple, object], epochs: Sequence = (0, "last"), columns: Sequence[str] = tuple(CXR_METRICS)) -> pd.DataFrame:
    """The test metrics of ``{(name, seed): RunResult}`` at the given epochs (``"last"``: the final one).

    One row per run and epoch: ``run, seed, epoch`` and ``columns``.
    """
    rows = []
    for (name, seed), r in runs.items():
        m = r.metrics.set_index("epoch")
        for e in epochs:
            ep = int(m.index.max()) if e == "last" else int(e)
            rows.append({"run": name, "seed": int(seed), "epoch": ep, **{c: m.loc[ep, c] for c in columns if c in m}})
    return pd.DataFrame(rows)


def examples_per_class(labels, per_class: int = 2) -> list:
    """Indices of the first ``per_class`` examples of every class, class by class."""
    labels = np.asarray(labels)
    return [int(i) for c in np.unique(labels) for i in np.flatnonzero(labels == c)[:per_class]]


def summary_table(runs: Mapping[tuple, object]) -> pd.DataFrame:
    """One row per finished run from ``{(name, seed): RunResult}``.

    Columns: ``run, seed``, the test metrics of :data:`CXR_METRICS` (where
    recorded), ``weight_sparsity``, ``nodes_total``, ``nodes_alive``,
    ``dead_fraction`` (channels dead at the end), ``removed_fraction``
    (channels compaction removed: ``1 - sum(widths_compact) / nodes_total``;
    lower than ``dead_fraction`` where an in-dead channel had to stay as a
    constant carrier), ``widths_compact`` (e.g. ``"8-12-20-30-25"``), ``params_dense``, ``params_compact``, ``flops_dense``,
    ``flops_compact``, ``compact_max_abs_diff``.
    """
    rows = []
    for (name, seed), r in runs.items():
        s = r.summary
        row = {"run": name, "seed": int(seed)}
        row.update({m: s[m] for m in CXR_METRICS if m in s})
        row["weight_sparsity"] = s["weight_sparsity"]
        row["nodes_total"] = s["nodes_total"]
        row["nodes_alive"] = s["nodes_alive"]
        row["dead_fraction"] = s["dead_node_fraction"]
        row["removed_fraction"] = 1.0 - sum(s["widths_compact"].values()) / s["nodes_total"]
        row["widths_compact"] = "-".join(str(v) for v in s["widths_compact"].values())
        for k in ("params_dense", "params_compact", "flops_dense", "flops_compact", "compact_max_abs_diff"):
            row[k] = s[k]
        rows.append(row)
    return pd.DataFrame(rows)


def seed_summary(table: pd.DataFrame, columns: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Mean, standard deviation (ddof=1; NaN for one seed) and number of seeds per ``run``."""
    cols = list(columns) if columns is not None else [c for c in (*CXR_METRICS, "dead_fraction", "removed_fraction") if c in table]
    g = table.groupby("run", sort=False)
    out = pd.concat({"mean": g[cols].mean(), "sd": g[cols].std(ddof=1)}, axis=1)
    out.columns = [f"{c}_{stat}" for stat, c in out.columns]
    out = out[[f"{c}_{s}" for c in cols for s in ("mean", "sd")]]
    out["seeds"] = g.size()
    return out


def paired_gaps(table: pd.DataFrame, run: str, reference: str = "dense", columns: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """``reference - run`` for every metric, paired by seed (the seeds both have): one row per seed."""
    cols = list(columns) if columns is not None else [c for c in CXR_METRICS if c in table]
    a = table[table["run"] == run].set_index("seed")[cols]
    d = table[table["run"] == reference].set_index("seed")[cols]
    seeds = sorted(set(a.index) & set(d.index))
    return (d.loc[seeds] - a.loc[seeds]).rename_axis("seed")


def target_check(
    table: pd.DataFrame,
    run: str = "l2",
    reference: str = "dense",
    metric: str = "test_auc",
    min_removed: float = 0.5,
    tolerance: float = 0.02,
    removed: str = "removed_fraction",
) -> dict:
    """Does ``run`` remove at least ``min_removed`` of the channels within ``tolerance`` of ``reference``?

    Judged on means over the seeds both have: the mean share removed, and the
    mean of the per-seed gaps ``reference - run`` in ``metric``. Also returns
    the per-seed values and whether every single seed meets both conditions.
    """
    gaps = paired_gaps(table, run, reference, [metric])[metric]
    rem = table[(table["run"] == run) & table["seed"].isin(gaps.index)].set_index("seed")[removed].loc[gaps.index]
    mean_gap = float(gaps.mean())
    mean_removed = float(rem.mean())
    return {
        "run": run,
        "metric": metric,
        "seeds": [int(s) for s in gaps.index],
        "removed_mean": mean_removed,
        "removed_sd": float(rem.std(ddof=1)) if len(rem) > 1 else float("nan"),
        "gap_mean": mean_gap,
        "gap_sd": float(gaps.std(ddof=1)) if len(gaps) > 1 else float("nan"),
        "removed_per_seed": rem.round(4).tolist(),
        "gap_per_seed": gaps.round(4).tolist(),
        "met": bool(mean_removed >= min_removed and mean_gap <= tolerance),
        "met_every_seed": bool(((rem >= min_removed) & (gaps <= tolerance)).all()),
    }


def plot_metrics_vs_removed(
    table: pd.DataFrame,
    metrics: Sequence[str] = tuple(CXR_METRICS),
    x: str = "removed_fraction",
    reference: str = "dense",
    band: Optional[float] = None,
    target: Optional[float] = None,
    title: str = "",
) -> Figure:
    """Each task metric against the share of channels removed: one panel per metric.

    Small dots: single runs (seeds); large markers with error bars: mean
    ± sd over the seeds of each run name (error bars only with >= 2 seeds).
    The ``reference`` runs (the dense network, 0 removed) also give a dotted
    line at their mean; ``band`` shades ``[mean - band, mean]`` below it (a
    tolerance such as 0.02 AUC); ``target`` draws a dashed vertical line at
    that share removed (e.g. 0.5).
    """
    metrics = [m for m in metrics if m in table]
    fig = Figure(figsize=(3.3 * len(metrics), 3.3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    names = list(dict.fromkeys(table["run"]))
    for ax, m in zip(axes, metrics):
        for i, name in enumerate(names):
            g = table[table["run"] == name]
            color = RUN_COLORS.get(name, f"C{i}")
            ax.plot(g[x], g[m], "o", ms=3.5, color=color, alpha=0.45, mec="none")
            xm, ym = g[x].mean(), g[m].mean()
            xs = g[x].std(ddof=1) if len(g) > 1 else None
            ys = g[m].std(ddof=1) if len(g) > 1 else None
            ax.errorbar(xm, ym, xerr=xs, yerr=ys, fmt="D", ms=6, color=color, mec="k", mew=0.5, elinewidth=1, capsize=2)
            if name == reference:
                ax.axhline(ym, color=color, lw=0.9, ls=":")
                if band:
                    ax.axhspan(ym - band, ym, color=color, alpha=0.08, lw=0)
        if target is not None:
            ax.axvline(target, color="0.3", lw=0.9, ls="--")
        ax.set_title(CXR_METRICS.get(m, m), fontsize=9)
        ax.set_xlabel("channels removed" if x == "removed_fraction" else x.replace("_", " "), fontsize=8)
        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_xlim(-0.04, max(0.75, float(table[x].max()) + 0.05))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    handles = [
        Line2D([], [], marker="D", ls="none", color=RUN_COLORS.get(n, f"C{i}"), mec="k", mew=0.5,
               label=f"{RUN_LABELS.get(n, n)} (n={int((table['run'] == n).sum())})")
        for i, n in enumerate(names)
    ]
    axes[0].legend(handles=handles, fontsize=7, frameon=False, loc="lower left")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_metric_trajectories(
    metrics_by_run: Mapping[tuple, pd.DataFrame],
    metric: str = "test_auc",
    x: str = "dead_node_fraction",
    title: str = "",
) -> Figure:
    """``metric`` against ``x`` along training, one line per run ``{(name, seed): metrics table}``.

    Left: both against the epoch (x dashed, on the right axis); right: the
    metric against ``x`` (each epoch a point, the last one marked): how much
    of the metric is kept as the channels die.
    """
    fig = Figure(figsize=(9.0, 3.9), layout="constrained")
    ax_t, ax_x = fig.subplots(1, 2)
    ax_r = ax_t.twinx()
    for i, ((name, seed), mt) in enumerate(metrics_by_run.items()):
        d = mt.sort_values("epoch")
        color = RUN_COLORS.get(name, f"C{i}")
        alpha = 1.0 if int(seed) == 0 else 0.55
        lab = f"{RUN_LABELS.get(name, name)}, seed {seed}"
        ax_t.plot(d["epoch"], d[metric], color=color, lw=1.3, alpha=alpha, label=lab)
        ax_r.plot(d["epoch"], d[x], color=color, lw=1.0, ls="--", alpha=alpha)
        ax_x.plot(d[x], d[metric], "-", color=color, lw=0.8, alpha=alpha)
        ax_x.plot(d[x].iloc[-1], d[metric].iloc[-1], "o", color=color, ms=5, alpha=alpha)
    ax_t.set_xlabel("epoch", fontsize=8)
    ax_t.set_ylabel(f"{CXR_METRICS.get(metric, metric)} (solid)", fontsize=8)
    ax_r.set_ylabel(f"{x.replace('_', ' ')} (dashed)", fontsize=8)
    ax_r.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax_x.set_xlabel(x.replace("_", " "), fontsize=8)
    ax_x.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax_x.set_ylabel(CXR_METRICS.get(metric, metric), fontsize=8)
    for ax in (ax_t, ax_r, ax_x):
        ax.tick_params(labelsize=7)
    ax_t.grid(alpha=0.3)
    ax_x.grid(alpha=0.3)
    handles, labs = ax_t.get_legend_handles_labels()
    fig.legend(handles, labs, loc="outside lower center", ncols=min(3, len(labs)), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
