"""Chapters 1 and 2: the three-seed MLP comparison, read as tables over seeds.

Both chapters rest on the 12 runs of ``seeded_comparison(profile, "mlp-mnist")``
(none / l1 / l2 / dense, seeds 0, 1, 2), shared with chapters 3-5, and train
nothing else. Training is not bit-reproducible across CPUs (a different
matrix-multiply kernel changes the last bits, and 6,280 steps of SGD amplify
them), so every number that compares runs is computed over the seeds and
printed with its spread, and every claim the text makes is one that holds in
every seed with room to spare. Figures that need a single run show seed 0 and
say so.

The helpers work on the stacked tables of the runs (one row per run, seed,
epoch [, layer, bin]); nothing here trains.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import PercentFormatter

from prunedyn import get_kernel
from prunedyn.analysis import seeds as S
from prunedyn.plots import weights as W
from prunedyn.book import sampling as SMP
from prunedyn.book.study import RunResult, seeded_comparison

RUNS = ("none", "l1", "l2", "dense")
PRUNED = ("none", "l1", "l2")
#: The seed the single-run figures show.
FIGURE_SEED = 0
SEED_STYLES = ("-", "--", ":", "-.")


# ---------------------------------------------------------------------------
# runs and stacked tables
# ---------------------------------------------------------------------------


def comparison(profile: str, runs: Optional[Sequence[str]] = None) -> Dict[str, List[RunResult]]:
    """``{run: [RunResult per seed]}`` of the 3-seed MLP comparison (trained in
    parallel if missing)."""
    return seeded_comparison(profile, "mlp-mnist", runs=runs, progress=False)


def seeds_of(results: Mapping[str, Sequence[RunResult]]) -> List[int]:
    first = next(iter(results.values()))
    return [int(r.config.seed) for r in first]


def one_seed(
    results: Mapping[str, Sequence[RunResult]], seed: int = FIGURE_SEED
) -> Dict[str, RunResult]:
    """``{run: RunResult}`` of one seed (for the figures that show a single run)."""
    return {k: next(r for r in v if int(r.config.seed) == seed) for k, v in results.items()}


def stack(results: Mapping[str, Sequence[RunResult]], table: str) -> pd.DataFrame:
    """One table of every run and seed, with leading ``run`` and ``seed`` columns."""
    frames = []
    for name, rs in results.items():
        for r in rs:
            df = getattr(r, table)
            frames.append(
                df.assign(run=name, seed=int(r.config.seed))[["run", "seed", *df.columns]]
            )
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------------
# numbers over seeds, as text
# ---------------------------------------------------------------------------


def pm(values: Iterable[float], fmt: str = ".4f", scale: float = 1.0) -> str:
    """``"0.9510 ± 0.0020"``: mean ± standard deviation over seeds (ddof=1)."""
    return S.mean_std_text(list(values), fmt, scale)


def mean_std_table(
    df: pd.DataFrame, by: Sequence[str], columns: Sequence[str], fmt: str = ".4f"
) -> pd.DataFrame:
    """Per group of ``by``: ``"mean ± std"`` over the rows (the seeds) of every
    column; group order kept."""
    out = df.groupby(list(by), sort=False)[list(columns)].agg(lambda s: pm(s, fmt))
    out["seeds"] = df.groupby(list(by), sort=False).size()
    return out


def count_text(k: int, n: int) -> str:
    """``"all 3 seeds"``, ``"none of the 3 seeds"``, ``"2 of the 3 seeds"``."""
    if k == n:
        return f"all {n} seeds" if n > 2 else ("both seeds" if n == 2 else "the one seed")
    if k == 0:
        return f"none of the {n} seeds"
    return f"{k} of the {n} seeds"


# ---------------------------------------------------------------------------
# chapter 1: a trained layer per seed
# ---------------------------------------------------------------------------


def layer_stats(w: torch.Tensor, sigma: float) -> Dict[str, float]:
    w = w.detach().double()
    return {
        "rms": float(w.pow(2).mean().sqrt()),
        "max |w|": float(w.abs().max()),
        "share |w| < sigma": float((w.abs() < sigma).double().mean()),
    }


def realised_deviation(w: torch.Tensor, kernel: str, sigma: float, seed: int) -> float:
    """(realised - expected share of one SWP draw) in binomial standard deviations."""
    kap = get_kernel(kernel)(w.detach().double(), sigma)
    expected = float(kap.mean())
    sd = float((kap * (1 - kap)).sum().sqrt()) / kap.numel()
    realised = float(SMP.sample_prune_mask(w, kernel, sigma, seed=seed).double().mean())
    return (realised - expected) / sd


# ---------------------------------------------------------------------------
# chapter 2: distributions and events over seeds
# ---------------------------------------------------------------------------


def zero_fractions(hist: pd.DataFrame) -> pd.DataFrame:
    """Share of exact zeros per (run, seed,) epoch and layer: the histograms' zero bin
    over the layer's weights."""
    keys = [c for c in ("run", "seed", "epoch", "layer") if c in hist.columns]
    total = hist.groupby(keys, sort=False)["count"].sum()
    zero = hist[hist["bin"] < 0].groupby(keys, sort=False)["count"].sum()
    return (zero / total).rename("zero_fraction").reset_index()


def small_share(hist: pd.DataFrame, level: float = 0.01) -> pd.DataFrame:
    """Share of a layer's weights that are non-zero with ``|w| < level`` (``level`` on a bin
    edge, e.g. 0.01).

    Columns: the key columns of ``hist`` (``run, seed, epoch, layer``) and ``small_share``.
    """
    keys = [c for c in ("run", "seed", "epoch", "layer") if c in hist.columns]
    total = hist.groupby(keys, sort=False)["count"].sum()
    small = (
        hist[(hist["bin"] >= 0) & (hist["hi"] <= level * (1 + 1e-9))]
        .groupby(keys, sort=False)["count"]
        .sum()
    )
    return (small.reindex(total.index, fill_value=0) / total).rename("small_share").reset_index()


def final_numbers(metrics: pd.DataFrame, hist: pd.DataFrame) -> pd.DataFrame:
    """The last epoch of every run and seed: one row per (run, seed).

    Columns ``epoch, test_accuracy, weight_sparsity, dead_node_fraction,
    nodes_alive`` and ``zeros <layer>`` (from the histograms' zero bin).
    """
    last = metrics.sort_values("epoch").groupby(["run", "seed"], sort=False).tail(1)
    cols = [
        "run",
        "seed",
        "epoch",
        "test_accuracy",
        "weight_sparsity",
        "dead_node_fraction",
        "nodes_alive",
    ]
    out = last[cols].set_index(["run", "seed"])
    z = zero_fractions(hist)
    for lay in dict.fromkeys(z["layer"]):
        zl = z[z["layer"] == lay].set_index(["run", "seed", "epoch"])["zero_fraction"]
        out[f"zeros {W._short(lay)}"] = [
            zl.get((r, s, e), float("nan")) for (r, s), e in zip(out.index, out["epoch"])
        ]
    order = {r: i for i, r in enumerate(RUNS)}
    keys = sorted(out.index, key=lambda k: (order.get(k[0], len(order)), k[1]))
    return out.loc[keys]


def as_summary(final: pd.DataFrame) -> pd.DataFrame:
    """``final_numbers`` as the tidy ``run, seed, metric...`` table that
    :mod:`prunedyn.analysis.seeds` reads."""
    return final.reset_index()


def peak_sparsity(metrics: pd.DataFrame, run: str = "l1") -> pd.DataFrame:
    """Per seed of ``run``: the epoch of its highest weight sparsity and the numbers there."""
    g = metrics[metrics["run"] == run]
    idx = g.groupby("seed")["weight_sparsity"].idxmax()
    return g.loc[
        idx, ["seed", "epoch", "weight_sparsity", "dead_node_fraction", "test_accuracy"]
    ].set_index("seed")


def quantiles(hist: pd.DataFrame, qs: Sequence[float] = (0.1, 0.5, 0.9)) -> pd.DataFrame:
    """Quantiles of the *non-zero* magnitudes, interpolated inside the log-spaced bins.

    Within a bin ``[lo, hi)`` the weights are taken as spread evenly in
    ``log|w|``, so the quantile is ``lo * (hi/lo)**f`` with ``f`` the share of
    the bin below it. Unlike the bin centres of
    :func:`prunedyn.plots.weights.magnitude_quantiles`, this varies smoothly
    between seeds, so that means and spreads over seeds mean something.
    Columns: the key columns of ``hist`` (``run, seed, epoch, layer``), ``q``, ``magnitude``.
    """
    keys = [c for c in ("run", "seed", "epoch", "layer") if c in hist.columns]
    h = hist[hist["bin"] >= 0].sort_values(keys + ["bin"])
    rows = []
    for key, g in h.groupby(keys, sort=False):
        c = g["count"].to_numpy(dtype=float)
        lo, hi = g["lo"].to_numpy(dtype=float), g["hi"].to_numpy(dtype=float)
        total = c.sum()
        cum = np.cumsum(c)
        for q in qs:
            if total <= 0:
                m = float("nan")
            else:
                target = q * total
                i = int(np.searchsorted(cum, target - 1e-9 * total))
                i = min(i, len(c) - 1)
                before = cum[i] - c[i]
                f = (target - before) / c[i] if c[i] > 0 else 0.0
                m = float(lo[i] * (hi[i] / lo[i]) ** min(max(f, 0.0), 1.0))
            rows.append({**dict(zip(keys, key)), "q": q, "magnitude": m})
    return pd.DataFrame(rows)


def drops_over_seeds(
    metrics: pd.DataFrame, runs: Sequence[str] = PRUNED, min_drop: float = 0.02
) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """Sparsity drops (:func:`prunedyn.plots.weights.sparsity_drops`) in every run and seed.

    Returns ``(events, table)``: every drop with its ``run, seed, epoch`` and
    the numbers before and after; and one row per run with the epochs of the
    drops in each seed and the number of seeds that have at least one.
    """
    events = []
    seeds = sorted(metrics["seed"].unique())
    for (run, seed), g in metrics[metrics["run"].isin(runs)].groupby(["run", "seed"], sort=False):
        d = W.sparsity_drops(g.drop(columns=["run", "seed"]), min_drop=min_drop)
        if len(d):
            events.append(d.assign(run=run, seed=int(seed)))
    cols = ["run", "seed", "epoch"]
    events = pd.concat(events, ignore_index=True) if events else pd.DataFrame(columns=cols)
    events = events[cols + [c for c in events.columns if c not in cols]]
    rows = []
    for run in runs:
        row = {"run": run}
        k = 0
        for s in seeds:
            ep = (
                events[(events["run"] == run) & (events["seed"] == s)]["epoch"].astype(int).tolist()
            )
            row[f"seed {s}"] = ", ".join(map(str, ep)) if ep else "-"
            k += bool(ep)
        row["seeds with a drop"] = f"{k} of {len(seeds)}"
        row["_k"] = k
        rows.append(row)
    return events, pd.DataFrame(rows).set_index("run")


# ---------------------------------------------------------------------------
# figures over seeds
# ---------------------------------------------------------------------------


def _seed_legend(ax, seeds: Sequence[int], loc: str = "lower right") -> None:
    handles = [
        Line2D([], [], color="0.3", ls=SEED_STYLES[i % len(SEED_STYLES)], lw=1.2, label=f"seed {s}")
        for i, s in enumerate(seeds)
    ]
    ax.legend(handles=handles, frameon=False, fontsize=7, loc=loc)


def plot_curves_over_seeds(
    metrics: pd.DataFrame,
    columns: Sequence[str] = ("test_accuracy", "weight_sparsity", "dead_node_fraction"),
    runs: Optional[Sequence[str]] = None,
    ylims: Optional[Mapping[str, Tuple[float, float]]] = None,
) -> Figure:
    """Per-epoch curves, one panel per column: colour = run, line style = seed."""
    runs = list(runs) if runs is not None else [r for r in RUNS if r in set(metrics["run"])]
    seeds = sorted(metrics["seed"].unique())
    fig = Figure(figsize=(3.6 * len(columns), 3.3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(columns)))
    for ax, col in zip(axes, columns):
        for i, run in enumerate(runs):
            for j, s in enumerate(seeds):
                g = metrics[(metrics["run"] == run) & (metrics["seed"] == s)].sort_values("epoch")
                ax.plot(
                    g["epoch"],
                    g[col],
                    color=W._color(W.RUN_COLORS, run, i),
                    lw=1.3,
                    ls=SEED_STYLES[j % len(SEED_STYLES)],
                    label=W.RUN_LABELS.get(run, run) if j == 0 else None,
                )
        ax.set_xlabel("epoch")
        ax.set_title(col.replace("_", " "), fontsize=10)
        if ylims and col in ylims:
            ax.set_ylim(*ylims[col])
        ax.grid(alpha=0.3)
    axes[0].legend(frameon=False, fontsize=8, loc="lower right")
    _seed_legend(axes[-1], seeds)
    fig.suptitle(f"every run, seeds {', '.join(map(str, seeds))} (line style)", fontsize=10)
    return fig


def plot_layer_zeros_over_seeds(hist: pd.DataFrame, runs: Sequence[str] = PRUNED) -> Figure:
    """Share of exact zeros per layer over epochs: panel = layer, colour = run, line
    style = seed."""
    z = zero_fractions(hist[hist["run"].isin(runs)])
    layers = list(dict.fromkeys(z["layer"]))
    seeds = sorted(z["seed"].unique())
    fig = Figure(figsize=(3.4 * len(layers), 3.1), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(layers), sharey=True))
    for ax, lay in zip(axes, layers):
        for i, run in enumerate(runs):
            for j, s in enumerate(seeds):
                g = z[(z["run"] == run) & (z["seed"] == s) & (z["layer"] == lay)].sort_values(
                    "epoch"
                )
                ax.plot(
                    g["epoch"],
                    g["zero_fraction"],
                    color=W._color(W.RUN_COLORS, run, i),
                    lw=1.3,
                    ls=SEED_STYLES[j % len(SEED_STYLES)],
                    label=W.RUN_LABELS.get(run, run) if j == 0 else None,
                )
        ax.set_title(W._short(lay), fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 1)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("weights exactly zero")
    axes[0].legend(frameon=False, fontsize=8, loc="lower right")
    _seed_legend(axes[-1], seeds, loc="upper left")
    return fig


def plot_quantiles_over_seeds(
    q: pd.DataFrame, runs: Sequence[str] = RUNS, reach: Optional[float] = None
) -> Figure:
    """Final quantiles of the non-zero magnitudes: panel = layer, x = run, one marker
    per seed and quantile."""
    layers = list(dict.fromkeys(q["layer"]))
    qs = sorted(q["q"].unique())
    markers = {qq: m for qq, m in zip(qs, ("v", "o", "^", "s", "D"))}
    fig = Figure(figsize=(3.2 * len(layers), 3.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(layers), sharey=True))
    for ax, lay in zip(axes, layers):
        for i, run in enumerate(runs):
            g = q[(q["layer"] == lay) & (q["run"] == run)]
            for qq in qs:
                v = g[g["q"] == qq]["magnitude"].to_numpy()
                x = i + np.linspace(-0.12, 0.12, len(v)) if len(v) > 1 else np.array([i])
                ax.scatter(
                    x, v, marker=markers[qq], s=18, color=W._color(W.RUN_COLORS, run, i), zorder=3
                )
        if reach:
            ax.axhspan(1e-5, reach, color="#d62728", alpha=0.08, lw=0)
        ax.set_yscale("log")
        ax.set_ylim(1e-3, 2.0)
        ax.set_xticks(range(len(runs)))
        ax.set_xticklabels(list(runs), fontsize=8)
        ax.set_title(W._short(lay), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("|w|  (log axis)")
    handles = [
        Line2D([], [], ls="", marker=markers[qq], color="0.3", label=f"{qq:.0%} quantile")
        for qq in qs
    ]
    axes[-1].legend(handles=handles, frameon=False, fontsize=7, loc="lower right")
    fig.suptitle(
        "quantiles of the non-zero |w| at the last epoch, one marker per seed; red band: "
        "kernel reach",
        fontsize=9,
    )
    return fig


def pruned_config(profile: str, run: str = "l2", seed: int = FIGURE_SEED):
    """The resolved config of one run of the comparison (read without training anything)."""
    from prunedyn.book.study import comparison_table, resolve

    return resolve(
        "mlp-mnist", [*comparison_table(profile, "mlp-mnist")[run], f"seed={seed}"], profile
    )


def wide(df: pd.DataFrame, index: Sequence[str], column: str, value: str) -> pd.DataFrame:
    """``df`` pivoted to one column per value of ``column``, keeping the order in
    which keys appear."""
    out = df.pivot_table(index=list(index), columns=column, values=value, aggfunc="first")
    out.columns.name = None
    rows = list(dict.fromkeys(df[list(index)].itertuples(index=False, name=None)))
    out = out.loc[rows if len(index) > 1 else [r[0] for r in rows]]
    return out[list(dict.fromkeys(df[column]))]


def in_order(df: pd.DataFrame, by: Sequence[str] = ("layer", "run")) -> pd.DataFrame:
    """``df`` sorted by ``by`` (stable), runs in the book's order none, l1, l2, dense."""
    rank = {r: i for i, r in enumerate(RUNS)}
    return df.sort_values(
        list(by), key=lambda s: s.map(rank) if s.name == "run" else s, kind="stable"
    )
