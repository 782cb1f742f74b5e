"""Figures of the trade-offs: phase diagrams, Pareto fronts, baseline curves, speed (chapter 5);
node-removing methods on one budget and claim 4's second stage (chapters 6-8).

Inputs are the tables of :mod:`prunedyn.book.tradeoffs`: the per-run table of
:func:`~prunedyn.book.tradeoffs.load_table` and its per-setting aggregate
(:func:`~prunedyn.book.tradeoffs.aggregate`, columns ``<metric>_mean`` /
``<metric>_std``), and the speed table of :func:`prunedyn.analysis.latency.speed_table`.
Every function returns a :class:`matplotlib.figure.Figure` built without
pyplot (nothing is shown twice, nothing leaks).
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, NullLocator, PercentFormatter

from prunedyn.book.tradeoffs import pareto_front, phase_grid

#: One colour per method, the same in every figure of the chapter.
METHOD_COLORS = {
    "dense": "#000000",
    "swp+l2": "#d62728",
    "swp+l1": "#1f77b4",
    "swp+none": "#7f7f7f",
    "random": "#8c564b",
    "magnitude+l1": "#17becf",
    "magnitude+l2": "#ff7f0e",
    "agp": "#2ca02c",
    "targeted-dropout-weight": "#9467bd",
    "targeted-dropout-unit": "#e377c2",
    "torch-l1-unstructured": "#bcbd22",
    "swp+l2, then magnitude": "#8b0000",
    # the BatchNorm-aware comparison (prunedyn.book.baselines.METHODS)
    "swp-l2": "#d62728",
    "swp-l2-weights": "#ff9896",
    "swp-l2-bn": "#8b0000",
    "swp-l1": "#1f77b4",
    "swp-group-lasso": "#2ca02c",
    "slimming": "#9467bd",
    "compact-then-magnitude": "#8b0000",
}

#: Readable names of the metrics of the phase diagram.
METRIC_LABELS = {
    "nodes_removed": "hidden nodes removed",
    "test_accuracy": "test accuracy",
    "test_dice": "test Dice",
    "test_auc": "test AUC",
    "weight_sparsity": "weight sparsity",
    "param_ratio": "compression (dense / compact params)",
    "flop_ratio": "FLOP ratio (dense / compact)",
}

_PERCENT = {"nodes_removed", "weight_sparsity"}


def method_color(method: str, i: int = 0) -> str:
    """The method's colour; ``"<method> front"`` (a Pareto front of its settings) shares it."""
    m = str(method)
    m = m[: -len(" front")] if m.endswith(" front") else m
    return METHOD_COLORS.get(m, f"C{i % 10}")


def _fmt(metric: str, v: float) -> str:
    if np.isnan(v):
        return ""
    if metric in _PERCENT:
        return f"{100 * v:.0f}%"
    if metric == "test_accuracy":
        return f"{v:.4f}"
    return f"{v:.3g}"


def _fmt_std(metric: str, v: float) -> str:
    if np.isnan(v):
        return ""
    if metric in _PERCENT:
        return f"±{100 * v:.1f}"
    if metric == "test_accuracy":
        return f"±{v:.4f}"
    return f"±{v:.2g}"


def plot_phase(
    agg: pd.DataFrame,
    metric: str = "nodes_removed",
    methods: Sequence[str] = ("swp+l2", "swp+l1"),
    row: str = "regularizer.lam",
    col: str = "pruner.sigma",
    vmin: Optional[float] = None,
    vmax: Optional[float] = None,
    cmap: Optional[str] = None,
    title: str = "",
) -> Figure:
    """Heatmaps of ``metric`` over (lambda x sigma), one panel per method, cells annotated.

    ``agg``: :func:`prunedyn.book.tradeoffs.aggregate` output. Each cell shows the
    mean over seeds and, below it, the standard deviation (when n > 1).
    Panels share the colour scale (``vmin``/``vmax``, default: the range of
    the data), so colours compare across regularizers.
    """
    grids = {m: phase_grid(agg, f"{metric}_mean", m, row, col) for m in methods}
    stds = {m: phase_grid(agg, f"{metric}_std", m, row, col) for m in methods} if f"{metric}_std" in agg else {}
    values = np.concatenate([g.to_numpy().ravel() for g in grids.values()]) if grids else np.array([])
    values = values[~np.isnan(values)]
    if vmin is None:
        vmin = 0.0 if metric in _PERCENT else (float(values.min()) if values.size else 0.0)
    if vmax is None:
        vmax = 1.0 if metric in _PERCENT else (float(values.max()) if values.size else 1.0)
    cmap = cmap or ("viridis" if metric != "test_accuracy" else "magma")
    fig = Figure(figsize=(3.6 * len(methods) + 1.0, 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(methods), squeeze=False)[0])
    im = None
    for ax, m in zip(axes, methods):
        g = grids[m]
        ax.set_title(m, fontsize=10, color=method_color(m))
        if g.empty:
            ax.text(0.5, 0.5, "no runs yet", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([]), ax.set_yticks([])
            continue
        z = g.to_numpy(dtype=float)
        im = ax.imshow(z, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
        s = stds.get(m)
        for i in range(z.shape[0]):
            for j in range(z.shape[1]):
                v = z[i, j]
                if np.isnan(v):
                    continue
                frac = (v - vmin) / (vmax - vmin) if vmax > vmin else 0.5
                color = "white" if frac < 0.6 else "black"
                text = _fmt(metric, v)
                if s is not None and not s.empty:
                    sd = s.reindex(index=g.index, columns=g.columns).to_numpy(dtype=float)[i, j]
                    if not np.isnan(sd):
                        text += "\n" + _fmt_std(metric, sd)
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color)
        ax.set_xticks(range(len(g.columns)), [f"{c:g}" for c in g.columns])
        ax.set_yticks(range(len(g.index)), [f"{r:g}" for r in g.index])
        ax.set_xlabel(r"SWP $\sigma$" if col == "pruner.sigma" else col)
        ax.set_ylabel(r"$\lambda$" if row == "regularizer.lam" else row)
    if im is not None:
        cb = fig.colorbar(im, ax=list(axes), shrink=0.9)
        cb.set_label(METRIC_LABELS.get(metric, metric))
        if metric in _PERCENT:
            cb.ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_nodes_vs_accuracy(
    agg: pd.DataFrame,
    dense: Optional[Tuple[float, float]] = None,
    highlight: Optional[str] = None,
    front: bool = True,
    x: str = "nodes_removed",
    title: str = "",
) -> Figure:
    """Mean test accuracy against mean fraction of nodes removed, one point per setting.

    Error bars: one standard deviation over seeds on both axes. The Pareto
    front (:func:`prunedyn.book.tradeoffs.pareto_front`: no other setting removes at
    least as many nodes *and* is at least as accurate) is drawn as a step
    line; ``dense`` = (mean, std) of the dense accuracy draws a band;
    ``highlight`` (a setting name) is circled.
    """
    fig = Figure(figsize=(7.2, 4.2), layout="constrained")
    ax = fig.subplots()
    xm, ym = f"{x}_mean", "test_accuracy_mean"
    pts = agg[agg["method"] != "dense"]
    for i, (m, g) in enumerate(pts.groupby("method", sort=False)):
        ax.errorbar(
            g[xm], g[ym], xerr=g.get(f"{x}_std"), yerr=g.get("test_accuracy_std"),
            fmt="o", ms=5, color=method_color(m, i), ecolor=method_color(m, i), elinewidth=0.8, capsize=2, alpha=0.85, label=m,
        )
    if front and len(pts):
        on = pts[pareto_front(pts, xm, ym)].sort_values(xm)
        xs, ys = on[xm].to_numpy(), on[ym].to_numpy()
        # the best accuracy available when removing at least x: held from each front point leftwards
        ax.step(xs, ys, where="pre", color="0.3", lw=1, ls="--", zorder=0)
        ax.plot(xs, ys, "s", mfc="none", mec="0.2", ms=10, label="Pareto front")
    if dense is not None:
        mu, sd = dense
        ax.axhline(mu, color="k", lw=1, ls=":", label=f"dense ({mu:.4f})")
        if sd == sd:
            ax.axhspan(mu - sd, mu + sd, color="k", alpha=0.08, lw=0)
    if highlight is not None and (agg["setting"] == highlight).any():
        r = agg[agg["setting"] == highlight].iloc[0]
        ax.annotate(
            highlight, (r[xm], r[ym]), xytext=(-10, -28), textcoords="offset points", fontsize=8, ha="right",
            arrowprops=dict(arrowstyle="->", color="0.2", lw=0.8),
        )
    if x in _PERCENT:
        ax.set_xlim(-0.03, 1.0)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("hidden nodes removed" if x == "nodes_removed" else METRIC_LABELS.get(x, x))
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8, loc="lower left")
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def _sparsity_axis(ax, scale: str) -> None:
    if scale == "logit":
        ax.set_xscale("logit")
        ticks = [0.1, 0.25, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998]
        lo, hi = ax.get_xlim()
        ax.xaxis.set_major_locator(FixedLocator([t for t in ticks if lo <= t <= hi] or ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    else:
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))


def plot_sparsity_curves(
    curves: pd.DataFrame,
    dense: Optional[Tuple[float, float]] = None,
    extra: Optional[pd.DataFrame] = None,
    annotate_nodes: bool = True,
    scale: str = "logit",
    ylim: Optional[Tuple[float, float]] = None,
    title: str = "",
) -> Figure:
    """Accuracy against weight sparsity, one line per method, error bars over seeds.

    ``curves``: :func:`prunedyn.book.tradeoffs.curves` output. With
    ``annotate_nodes`` each point is labelled with the mean number of hidden
    nodes its runs remove (0 for methods that only scatter zeros). ``extra``:
    further points with columns ``method, weight_sparsity, test_accuracy`` and
    optionally ``test_accuracy_std``, ``nodes_removed_count`` (e.g. node-pruned
    networks pruned further by weight), drawn as a line per method. ``scale``
    ``"logit"`` spreads the high-sparsity end (the interesting one).
    """
    fig = Figure(figsize=(9.0, 4.6), layout="constrained")
    ax = fig.subplots()
    series = []
    for m, g in curves[curves["method"] != "dense"].groupby("method", sort=False):
        series.append((m, g["weight_sparsity_mean"], g["test_accuracy_mean"], g.get("test_accuracy_std"),
                       g.get("weight_sparsity_std"), g.get("nodes_removed_count_mean")))
    if extra is not None:
        for m, g in extra.groupby("method", sort=False):
            g = g.sort_values("weight_sparsity")
            series.append((m, g["weight_sparsity"], g["test_accuracy"], g.get("test_accuracy_std"), None, g.get("nodes_removed_count")))
    xs_all = []
    for i, (m, xs, ys, yerr, xerr, nodes) in enumerate(series):
        c = method_color(m, i)
        extra_series = extra is not None and m in set(extra["method"])
        ax.errorbar(xs, ys, yerr=yerr, xerr=xerr, fmt="D-" if extra_series else "o-", ms=5, lw=1.8 if extra_series else 1.2,
                    color=c, capsize=2, elinewidth=0.8, label=m)
        xs_all += list(xs)
        if annotate_nodes and nodes is not None:
            for xv, yv, nv in zip(xs, ys, nodes):
                if nv == nv:
                    ax.annotate(f"{nv:.0f}", (xv, yv), textcoords="offset points", xytext=(4, 3), fontsize=7, color=c)
    if dense is not None:
        mu, sd = dense
        ax.axhline(mu, color="k", lw=1, ls=":", label=f"dense ({mu:.4f})")
        if sd == sd:
            ax.axhspan(mu - sd, mu + sd, color="k", alpha=0.08, lw=0)
    if xs_all:
        lo, hi = min(xs_all), max(xs_all)
        if scale == "logit":
            ax.set_xlim(max(1e-3, lo - (1 - lo) * 0.5), 1 - (1 - hi) * 0.6)
        else:
            ax.set_xlim(max(0, lo - 0.05), min(1, hi + 0.03))
    _sparsity_axis(ax, scale)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel("weight sparsity (all layers, relative to the dense architecture)")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if annotate_nodes:
        handles.append(Line2D([], [], ls="none"))
        labels.append("numbers: hidden nodes removed")
    ax.legend(handles, labels, frameon=False, fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def plot_speed(table: pd.DataFrame, title: str = "") -> Figure:
    """Measured speedup over dense per network version, one panel per batch size.

    ``table``: :func:`prunedyn.analysis.latency.speed_table` output (columns
    ``version, batch, ms, speedup, flop_ratio``). The dashed line is the FLOP
    ratio of the compact network (the speedup if time were proportional to
    FLOPs); the compact bar is labelled with speedup / FLOP ratio.
    """
    batches = list(dict.fromkeys(table["batch"]))
    versions = list(dict.fromkeys(table["version"]))
    colors = {"dense": "0.6", "masked": "#9467bd", "sparse_csr": "#17becf", "compact": "#d62728"}
    fig = Figure(figsize=(3.4 * len(batches) + 0.6, 3.4), layout="constrained")
    axes = fig.subplots(1, len(batches), sharey=True, squeeze=False)[0]
    top = max(float(table["speedup"].max()), float(table["flop_ratio"].max())) * 1.18
    for ax, b in zip(axes, batches):
        t = table[table["batch"] == b].set_index("version").reindex(versions)
        ax.bar(range(len(versions)), t["speedup"], color=[colors.get(v, "C0") for v in versions])
        for k, (v, r) in enumerate(t.iterrows()):
            ax.text(k, r["speedup"] + top * 0.01, f"{r['speedup']:.2f}x\n{r['ms']:.3f} ms", ha="center", va="bottom", fontsize=7)
        if "compact" in t.index:
            fr = float(t.loc["compact", "flop_ratio"])
            ax.axhline(fr, color="#d62728", ls="--", lw=1)
            ax.text(len(versions) - 0.5, fr, f"FLOP ratio {fr:.2f}", ha="right", va="bottom", fontsize=7, color="#d62728")
            k = versions.index("compact")
            ax.text(k, float(t.loc["compact", "speedup"]) / 2, f"{float(t.loc['compact', 'speedup']) / fr:.0%}\nof FLOP\nratio",
                    ha="center", va="center", fontsize=7, color="white")
        ax.axhline(1, color="k", lw=0.6)
        ax.set_xticks(range(len(versions)), versions, fontsize=8)
        ax.set_title(f"batch {b}", fontsize=10)
        ax.set_ylim(0, top)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("speedup over dense (measured)")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


#: colours of the SWP step's implementations (benchmarks/swp_bandwidth.py, pruning_overhead.py)
SWP_PATH_COLORS = {"previous": "0.6", "exact": "#1f77b4", "per_tensor": "#1f77b4", "fast": "#9467bd",
                   "multi_tensor": "#17becf", "counter": "#d62728"}


def plot_swp_cost(bandwidth: pd.DataFrame, title: str = "") -> Figure:
    """The SWP step per model and implementation: against the memory bound (left), against a training step (right).

    ``bandwidth``: rows of benchmarks/swp_bandwidth.py for one clock (columns
    ``model, path, x_memory_bound, swp_share_of_train_step``). Left: the step's
    time over a copy of the same bytes (1 = the bound, dashed line at the
    2x target), log scale; right: its time over a training step's.
    """
    models = list(dict.fromkeys(bandwidth["model"]))
    paths = list(dict.fromkeys(bandwidth["path"]))
    fig = Figure(figsize=(9.0, 3.4), layout="constrained")
    axes = fig.subplots(1, 2)
    width = 0.8 / len(paths)
    for k, path in enumerate(paths):
        t = bandwidth[bandwidth["path"] == path].set_index("model").reindex(models)
        xs = [i + (k - (len(paths) - 1) / 2) * width for i in range(len(models))]
        for ax, col in zip(axes, ("x_memory_bound", "swp_share_of_train_step")):
            ax.bar(xs, t[col], width=width, color=SWP_PATH_COLORS.get(path, f"C{k}"), label=path)
        for x, v in zip(xs, t["x_memory_bound"]):
            axes[0].text(x, v * 1.05, f"{v:.1f}", ha="center", va="bottom", fontsize=6)
    axes[0].set_yscale("log")
    axes[0].axhline(1, color="k", lw=0.8)
    axes[0].axhline(2, color="#d62728", lw=0.8, ls="--")
    axes[0].text(len(models) - 0.55, 2, "2x target", ha="right", va="bottom", fontsize=7, color="#d62728")
    axes[0].set_ylabel("SWP step / copy of the weights")
    axes[1].set_yscale("log")
    axes[1].yaxis.set_major_formatter(PercentFormatter(1.0))
    axes[1].set_ylabel("SWP step / training step")
    for ax in axes:
        ax.set_xticks(range(len(models)), models)
        ax.grid(axis="y", alpha=0.3)
    axes[1].legend(fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_method_costs(table: pd.DataFrame, metric: str, labels: Sequence[str], reference: str = "dense",
                      metric_label: Optional[str] = None, title: str = "", nodes: str = "dead_node_fraction",
                      nodes_label: str = "nodes dead at the end (share of all hidden nodes)") -> Figure:
    """Share of nodes dead (x) against the paired gap ``reference - label`` of ``metric`` (y): a
    small dot per seed, a large marker at the mean with one sd bars both ways, one colour per
    method; the labels of one method at several lambdas (``method@lambda``) are joined in order
    of their dead share (the method's trade-off curve), each mean marked with its lambda when
    the table has ``regularizer.lam``. Input: a labelled sweep table (:mod:`prunedyn.book.baselines`)."""
    from prunedyn.book.baselines import METHODS, gap_values, method_of

    fig = Figure(figsize=(7.6, 4.8), layout="constrained")
    ax = fig.subplots()
    ax.axhline(0, color="0.6", lw=0.8)
    methods = list(dict.fromkeys(method_of(x) for x in labels))
    for i, method in enumerate(methods):
        c = method_color(method, i)
        means = []
        for label in [x for x in labels if method_of(x) == method]:
            g = table[table["label"] == label].sort_values("seed")
            dead = g[nodes].to_numpy(dtype=float)
            gaps = gap_values(table, metric, label, reference)
            ax.scatter(dead, gaps, s=12, color=c, alpha=0.5, lw=0)
            ax.errorbar(dead.mean(), gaps.mean(), xerr=dead.std(ddof=1), yerr=gaps.std(ddof=1), fmt="o", ms=6,
                        color=c, capsize=2.5, lw=1)
            means.append((dead.mean(), gaps.mean()))
            if "regularizer.lam" in g.columns and method != reference:
                ax.annotate(f"{g['regularizer.lam'].iloc[0]:g}", (dead.mean(), gaps.mean()), xytext=(4, 4),
                            textcoords="offset points", fontsize=7, color=c)
        means.sort()
        ax.plot([m[0] for m in means], [m[1] for m in means], color=c, lw=1.2,
                label=f"{METHODS.get(method, method)} ({table.loc[table['label'].isin(labels), 'seed'].nunique()} seeds)")
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel(nodes_label)
    ax.set_ylabel(f"{metric_label or METRIC_LABELS.get(metric, metric)}: dense minus method")
    ax.legend(fontsize=7.5, loc="best", frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def plot_staged(staged: pd.DataFrame, metric: str, metric_label: Optional[str] = None, title: str = "") -> Figure:
    """Claim 4: total weight sparsity (x, against the original architecture) and the gap to the
    dense network of the same total epochs (y) of the node-pruned source and of the compacted,
    further weight-pruned network, one line per seed from the first to the second.
    Input: :func:`prunedyn.book.baselines.staged_table`."""
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    ax.axhline(0, color="0.6", lw=0.8)
    arms = list(dict.fromkeys(staged["arm"]))
    for seed, g in staged.groupby("seed"):
        g = g.set_index("arm").loc[arms[:2]]  # the source, then what it became
        ax.plot(g["total_sparsity"], g["gap"], color="0.7", lw=0.8, zorder=1)
    names = dict(zip(arms, ["node-pruned (SWP + L2)", "compacted, then weight-pruned + fine-tuned",
                            "dense, magnitude-pruned to that sparsity + fine-tuned (control)"]))
    for i, arm in enumerate(arms):
        g = staged[staged["arm"] == arm]
        ax.scatter(g["total_sparsity"], g["gap"], s=40, color=method_color(arm, i) if i else "#d62728",
                   marker="os^"[i % 3], label=f"{names.get(arm, arm)} ({g['seed'].nunique()} seeds)", zorder=2)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    ax.set_xlabel("weights removed (share of the original dense network's weights)")
    ax.set_ylabel(f"{metric_label or METRIC_LABELS.get(metric, metric)} gap to dense, same epochs")
    ax.legend(fontsize=8, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def plot_schedule(schedule: Union[pd.DataFrame, Mapping[str, pd.DataFrame]], metric: str,
                  metric_label: Optional[str] = None, title: str = "") -> Figure:
    """Two panels against the number of epochs (log axis): the dead share of the pruned runs, and
    the paired gap to the dense runs of the same epochs; mean with one sd bars over seeds.
    Input: :func:`prunedyn.book.baselines.schedule_table`, or ``{name: table}`` for several
    pruned arms (e.g. a constant and a ramped sigma), one colour each."""
    arms = {"SWP + L2": schedule} if isinstance(schedule, pd.DataFrame) else dict(schedule)
    fig = Figure(figsize=(8.0, 3.4), layout="constrained")
    a, b = fig.subplots(1, 2)
    b.axhline(0, color="0.6", lw=0.8)
    ticks = sorted({int(x) for t in arms.values() for x in t.index})
    for i, (name, t) in enumerate(arms.items()):
        color = method_color("swp-l2") if i == 0 else f"C{i % 10}"
        e = t.index.to_numpy()
        a.errorbar(e, t["dead_mean"], yerr=t["dead_sd"], fmt="o-", color=color, capsize=3, label=name)
        b.errorbar(e, t["gap_mean"], yerr=t["gap_sd"], fmt="o-", color=color, capsize=3, label=name)
    a.yaxis.set_major_formatter(PercentFormatter(1.0))
    a.set_ylabel("nodes dead at the end")
    pruned = next(iter(arms)) if len(arms) == 1 else "the pruned network"
    b.set_ylabel(f"{metric_label or METRIC_LABELS.get(metric, metric)}: dense minus {pruned}")
    if len(arms) > 1:
        b.legend(fontsize=8, frameon=False)
    for ax in (a, b):
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(x) for x in ticks])
        ax.set_xlabel("epochs (the whole budget; cosine schedule over it)")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
