"""Chapters 1 and 2's own figures: the kernels on real weights, what one sampled mask does to a
trained network, and the regularizers' shrinkage paths.

Helpers for chapter 1 work on weight tensors directly: the expected pruning
rate of a kernel over a layer (:func:`pruning_rate_table`), the sigma that
matches a target rate (:func:`matched_sigma`), one sampled pruning mask
(:func:`sample_prune_mask`) and how it differs from a magnitude threshold
(:func:`compare_with_threshold`), and SWP applied to a trained network with
no further training (:func:`prune_without_training`). Chapter 2's
:func:`shrinkage_path` follows one weight under SGD on the regularizer alone.
"""
from __future__ import annotations

import copy
import math
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from prunedyn.core.kernels import expected_pruning_rate, get_kernel
from prunedyn.plots.weights import KERNEL_COLORS, RUN_COLORS, _color, _flat, kernel_reach


# ---------------------------------------------------------------------------
# Chapter 1: kernels on real weights
# ---------------------------------------------------------------------------


def pruning_rate_table(
    weights: Mapping[str, torch.Tensor], kernels: Sequence[str] = ("gaussian", "laplace", "hard"), sigmas: Iterable[float] = ()
) -> pd.DataFrame:
    """Expected fraction of weights one SWP step zeroes, ``E[kappa(w; sigma)]``.

    Returns a tidy table with columns ``weights, kernel, sigma, rate``: one row
    per named weight tensor x kernel x sigma (computed with
    :func:`prunedyn.core.kernels.expected_pruning_rate`).
    """
    rows = []
    for name, w in weights.items():
        flat = _flat(w)
        for kernel in kernels:
            for s in sigmas:
                rows.append({"weights": name, "kernel": kernel, "sigma": float(s), "rate": expected_pruning_rate(flat, kernel, float(s))})
    return pd.DataFrame(rows, columns=["weights", "kernel", "sigma", "rate"])


def matched_sigma(w: torch.Tensor, kernel: str, rate: float, lo: float = 1e-9, hi: float = 1e3) -> float:
    """The sigma at which ``kernel`` has expected pruning rate ``rate`` on ``w``.

    ``E[kappa(w; sigma)]`` is non-decreasing in sigma; bisection in log-space.
    """
    flat = _flat(w)
    if not 0.0 < rate < 1.0:
        raise ValueError(f"rate must be in (0, 1), got {rate!r}")
    a, b = math.log(lo), math.log(hi)
    for _ in range(64):  # the log-range shrinks 2**64-fold: far below float precision in sigma
        m = 0.5 * (a + b)
        if expected_pruning_rate(flat, kernel, math.exp(m)) < rate:
            a = m
        else:
            b = m
    return math.exp(0.5 * (a + b))


def sample_prune_mask(w: torch.Tensor, kernel: str, sigma: float, seed: int = 1) -> torch.Tensor:
    """One SWP draw: a boolean tensor, True where ``u < kappa(w; sigma)`` (the weight is zeroed).

    Uses its own seeded generator, like :class:`prunedyn.StochasticWeightPruner`.
    Do not pass the seed that initialised the model: the uniforms would replay
    the stream the initial weights were drawn from and correlate with them
    (the experiments seed their pruner with ``seed + 1`` for this reason).
    """
    w = w.detach()
    g = torch.Generator(device=w.device).manual_seed(int(seed))
    p = get_kernel(kernel)(w, sigma)
    u = torch.rand(w.shape, generator=g, device=w.device, dtype=w.dtype)
    return u < p


def compare_with_threshold(w: torch.Tensor, threshold: float, drop: torch.Tensor) -> Dict[str, float]:
    """How a pruning mask ``drop`` differs from the magnitude threshold ``|w| < threshold``.

    Returns a dict:

    - ``threshold_rate``: fraction of weights below the threshold (what the hard kernel prunes);
    - ``rate``: fraction pruned by ``drop``;
    - ``jaccard``: |A & B| / |A | B| of the two pruned sets;
    - ``spared_below``: fraction of the below-threshold weights that ``drop`` keeps;
    - ``pruned_above``: fraction of ``drop``'s pruned weights with ``|w| >= threshold``;
    - ``max_pruned``: the largest ``|w|`` that ``drop`` prunes (0 if none).
    """
    a = w.detach().abs().flatten().double().cpu()
    d = drop.detach().flatten().bool().cpu()
    below = a < threshold
    inter = int((below & d).sum())
    union = int((below | d).sum())
    n_below, n_drop = int(below.sum()), int(d.sum())
    return {
        "threshold_rate": n_below / a.numel(),
        "rate": n_drop / a.numel(),
        "jaccard": inter / union if union else 1.0,
        "spared_below": (n_below - inter) / n_below if n_below else 0.0,
        "pruned_above": (n_drop - inter) / n_drop if n_drop else 0.0,
        "max_pruned": float(a[d].max()) if n_drop else 0.0,
    }


def prune_without_training(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    kernel: str = "gaussian",
    sigmas: Iterable[float] = (0.003,),
    applications: Sequence[int] = (1,),
    seed: int = 1,
) -> pd.DataFrame:
    """Apply SWP to copies of a trained ``model`` with no training in between, and evaluate.

    For every sigma, a fresh copy of ``model`` gets :class:`prunedyn.StochasticWeightPruner`
    steps (constant schedule, absolute sigma, own generator seeded ``seed``,
    which should differ from the seed that initialised the model, see
    :func:`sample_prune_mask`);
    after each count in ``applications`` (increasing) the copy is evaluated on
    ``(x, y)``. ``model`` itself is never modified.

    Returns columns ``kernel, sigma, applications, weight_sparsity, test_accuracy,
    test_loss`` (sparsity over all prunable weights).
    """
    from prunedyn.core.pruning import StochasticWeightPruner, weight_sparsity
    from prunedyn.tasks.scoring import evaluate

    device = next(model.parameters()).device
    counts = sorted(set(int(a) for a in applications))
    rows = []
    for s in sigmas:
        m = copy.deepcopy(model)
        pruner = StochasticWeightPruner(m, kernel=kernel, sigma=float(s), seed=seed)
        done = 0
        for k in counts:
            while done < k:
                pruner.step()
                done += 1
            loss, acc = evaluate(m, x, y, device)
            rows.append(
                {"kernel": kernel, "sigma": float(s), "applications": k, "weight_sparsity": weight_sparsity(m), "test_accuracy": acc, "test_loss": loss}
            )
    return pd.DataFrame(rows)


def plot_kernels(sigma: float = 0.003, kernels: Sequence[str] = ("gaussian", "laplace", "hard"), wmax: Optional[float] = None) -> Figure:
    """``kappa(w; sigma)`` against ``w`` for each kernel, and against ``|w|/sigma`` on a log axis.

    Left panel: the pruning probability of one step for signed ``w`` in
    ``[-wmax, wmax]`` (default ``5 sigma``). Right panel: the same curves
    against ``|w| / sigma`` (log axis), which is the same for every sigma.
    """
    wmax = wmax or 5 * sigma
    fig = Figure(figsize=(9.5, 3.4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    w = torch.linspace(-wmax, wmax, 2001, dtype=torch.float64)
    r = torch.logspace(-2, 1.5, 800, dtype=torch.float64)
    for i, name in enumerate(kernels):
        c = _color(KERNEL_COLORS, name, i)
        k = get_kernel(name)
        ax1.plot(w.numpy(), k(w, sigma).numpy(), color=c, lw=2, label=name)
        ax2.plot(r.numpy(), k(r, 1.0).numpy(), color=c, lw=2, label=name)
    for ax in (ax1, ax2):
        ax.set_ylim(-0.03, 1.05)
        ax.set_ylabel(r"$\kappa$ = P(zeroed in one step)")
        ax.grid(alpha=0.3)
    ax1.axvline(-sigma, color="0.5", ls=":", lw=1)
    ax1.axvline(sigma, color="0.5", ls=":", lw=1)
    ax1.set_xlabel(f"weight w  (sigma = {sigma:g})")
    ax1.set_title("pruning probability of a weight")
    ax1.legend(frameon=False)
    ax2.set_xscale("log")
    ax2.axvline(1.0, color="0.5", ls=":", lw=1)
    ax2.set_xlabel(r"$|w| \,/\, \sigma$")
    ax2.set_title("the same, in units of sigma (log axis)")
    return fig


def plot_kernel_on_weights(
    w: torch.Tensor,
    kernel: str = "gaussian",
    sigma: float = 0.003,
    *,
    bins: int = 121,
    xmax: Optional[float] = None,
    log_range: Tuple[float, float] = (1e-4, 1.0),
    title: Optional[str] = None,
) -> Figure:
    """A real layer's weights with one kernel's pruning probability overlaid.

    Left: histogram of the signed weights in ``[-xmax, xmax]`` (default: the
    99.5% quantile of ``|w|``), the expected number of weights one SWP step
    zeroes in each bin (``sum of kappa`` over the bin, red), and
    ``kappa(w; sigma)`` on the right-hand axis. Right: the same for ``|w|`` on
    log-spaced bins over ``log_range``, which shows how far into the
    distribution the kernel reaches. The title gives ``E[kappa]`` over all
    weights (the expected pruned fraction; exact zeros count with
    ``kappa(0) = 1``) and the expected count. Exact zeros are left out of both
    histograms and their number is given in the title.
    """
    flat = _flat(w)
    k = get_kernel(kernel)
    kap = k(flat, sigma)
    rate = float(kap.mean())
    xmax = xmax or float(torch.quantile(flat.abs(), 0.995))
    color = _color(KERNEL_COLORS, kernel, 0)

    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)

    edges = np.linspace(-xmax, xmax, bins + 1)
    nonzero = (flat != 0).numpy()
    vals, kv = flat.numpy()[nonzero], kap.numpy()[nonzero]
    counts, _ = np.histogram(vals, bins=edges)
    pruned, _ = np.histogram(vals, bins=edges, weights=kv)
    ax1.stairs(counts, edges, fill=True, color="0.75", label="weights")
    ax1.stairs(pruned, edges, fill=True, color=color, alpha=0.8, label="expected zeroed (one step)")
    ax1.set_xlim(-xmax, xmax)
    ax1.set_xlabel("weight w")
    ax1.set_ylabel("number of weights")
    t1 = ax1.twinx()
    grid = torch.linspace(-xmax, xmax, 1501, dtype=torch.float64)
    t1.plot(grid.numpy(), k(grid, sigma).numpy(), color=color, lw=1.5, ls="--", label=r"$\kappa(w;\sigma)$")
    t1.set_ylim(0, 1.05)
    t1.set_ylabel(r"$\kappa(w;\sigma)$", color=color)
    h1, l1 = ax1.get_legend_handles_labels()
    h2, l2 = t1.get_legend_handles_labels()
    fig.legend(h1 + h2, l1 + l2, loc="outside lower center", ncol=3, frameon=False, fontsize=9)

    ledges = np.logspace(math.log10(log_range[0]), math.log10(log_range[1]), 8 * int(round(math.log10(log_range[1] / log_range[0]))) + 1)
    a = np.abs(vals)
    lc, _ = np.histogram(a, bins=ledges)
    lp, _ = np.histogram(a, bins=ledges, weights=kv)
    ax2.stairs(lc, ledges, fill=True, color="0.75")
    ax2.stairs(lp, ledges, fill=True, color=color, alpha=0.8)
    ax2.set_xscale("log")
    ax2.set_xlim(*log_range)
    ax2.set_xlabel("|w|  (log axis)")
    ax2.set_ylabel("number of weights")
    t2 = ax2.twinx()
    lgrid = torch.logspace(math.log10(log_range[0]), math.log10(log_range[1]), 800, dtype=torch.float64)
    t2.plot(lgrid.numpy(), k(lgrid, sigma).numpy(), color=color, lw=1.5, ls="--")
    t2.set_ylim(0, 1.05)
    t2.set_ylabel(r"$\kappa$", color=color)
    ax2.axvline(sigma, color="k", ls=":", lw=1)
    ax2.text(sigma, 0.97, r" $\sigma$", transform=ax2.get_xaxis_transform(), va="top", fontsize=9)
    zeros = int((~nonzero).sum())
    head = title + ": " if title else ""
    tail = f"; {zeros:,} exact zeros not drawn" if zeros else ""
    fig.suptitle(
        f"{head}{kernel} kernel, sigma = {sigma:g}:  E[kappa] = {rate:.4f}  "
        f"(~{rate * flat.numel():,.0f} of {flat.numel():,} weights zeroed per step{tail})",
        fontsize=11,
    )
    return fig


def plot_pruning_rate(rates: pd.DataFrame, mark_sigma: Optional[float] = None) -> Figure:
    """Expected pruning rate ``E[kappa]`` against sigma (log axis), one panel per weight set.

    ``rates``: columns ``weights, kernel, sigma, rate`` (from
    :func:`pruning_rate_table`); one line per kernel in each panel. A dotted
    vertical line marks ``mark_sigma``.
    """
    sets = list(dict.fromkeys(rates["weights"]))
    fig = Figure(figsize=(4.6 * len(sets), 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(sets), sharey=True))
    for ax, name in zip(axes, sets):
        sub = rates[rates["weights"] == name]
        for i, (kernel, g) in enumerate(sub.groupby("kernel", sort=False)):
            g = g.sort_values("sigma")
            ax.plot(g["sigma"], g["rate"], color=_color(KERNEL_COLORS, kernel, i), lw=2, label=kernel)
        if mark_sigma is not None:
            ax.axvline(mark_sigma, color="k", ls=":", lw=1)
            ax.text(mark_sigma, 0.98, f" sigma={mark_sigma:g}", transform=ax.get_xaxis_transform(), va="top", fontsize=8)
        ax.set_xscale("log")
        ax.set_ylim(0, 1)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_xlabel("sigma (absolute)")
        ax.set_title(str(name))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("expected share zeroed per step")
    axes[0].legend(frameon=False)
    return fig


def plot_prune_probability(
    w: torch.Tensor,
    masks: Mapping[str, torch.Tensor],
    curves: Mapping[str, Tuple[str, float]],
    *,
    log_range: Tuple[float, float] = (1e-4, 1.0),
    per_decade: int = 8,
) -> Figure:
    """Which weights a pruning rule removes, as a function of their magnitude.

    For each label in ``masks`` (boolean tensors shaped like ``w``, True =
    pruned) the markers give the fraction of weights pruned in each log-spaced
    ``|w|`` bin; ``curves[label] = (kernel, sigma)`` draws the kernel's
    probability as a line of the same colour. Grey bars (right axis): how many
    weights each bin holds.
    """
    a = _flat(w).abs().numpy()
    n_dec = int(round(math.log10(log_range[1] / log_range[0])))
    edges = np.logspace(math.log10(log_range[0]), math.log10(log_range[1]), per_decade * n_dec + 1)
    centers = np.sqrt(edges[:-1] * edges[1:])
    idx = np.digitize(a, edges) - 1
    inside = (idx >= 0) & (idx < len(centers))
    total = np.bincount(idx[inside], minlength=len(centers))

    fig = Figure(figsize=(7.5, 3.8), layout="constrained")
    ax = fig.subplots()
    tw = ax.twinx()
    tw.stairs(total, edges, fill=True, color="0.85", zorder=0)
    tw.set_ylabel("weights per bin", color="0.45")
    ax.set_zorder(tw.get_zorder() + 1)
    ax.patch.set_visible(False)
    grid = torch.logspace(math.log10(log_range[0]), math.log10(log_range[1]), 800, dtype=torch.float64)
    for i, (label, m) in enumerate(masks.items()):
        kname = curves.get(label, (label, None))[0]
        c = _color(KERNEL_COLORS, kname, i)
        d = m.detach().flatten().bool().cpu().numpy()
        hit = np.bincount(idx[inside], weights=d[inside].astype(float), minlength=len(centers))
        ok = total > 0
        ax.plot(centers[ok], hit[ok] / total[ok], "o", ms=4, color=c, label=f"{label}: sampled")
        if label in curves:
            kernel, s = curves[label]
            ax.plot(grid.numpy(), get_kernel(kernel)(grid, s).numpy(), color=c, lw=1.5, label=f"{label}: kappa")
    ax.set_xscale("log")
    ax.set_xlim(*log_range)
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("|w|  (log axis)")
    ax.set_ylabel("share of the bin zeroed")
    ax.grid(alpha=0.3)
    ax.legend(frameon=True, fontsize=8, loc="center left")
    return fig


def plot_accuracy_vs_sparsity(
    table: pd.DataFrame, hue: str = "kernel", reference: Optional[float] = None, annotate: Optional[str] = None, title: str = ""
) -> Figure:
    """Test accuracy against weight sparsity, one line per value of ``hue``.

    ``table``: columns ``weight_sparsity, test_accuracy`` and ``hue`` (e.g. the
    output of :func:`prune_without_training`, several kernels concatenated).
    Points of a line are joined in order of sparsity; ``annotate`` names a
    column whose value is written next to each point; ``reference`` draws a
    horizontal line (e.g. the unpruned accuracy).
    """
    fig = Figure(figsize=(6.8, 3.8), layout="constrained")
    ax = fig.subplots()
    for i, (key, g) in enumerate(table.groupby(hue, sort=False)):
        g = g.sort_values("weight_sparsity")
        c = _color(KERNEL_COLORS, key, i) if hue == "kernel" else f"C{i % 10}"
        label = f"{hue} = {key:g}" if isinstance(key, float) else str(key)
        ax.plot(g["weight_sparsity"], g["test_accuracy"], "o-", color=c, ms=4, lw=1.5, label=label)
        if annotate:
            for _, r in g.iterrows():
                v = r[annotate]
                ax.annotate(f"{v:.2g}", (r["weight_sparsity"], r["test_accuracy"]), textcoords="offset points", xytext=(3, 3), fontsize=7, color=c)
    if reference is not None:
        ax.axhline(reference, color="k", ls=":", lw=1, label=f"unpruned ({reference:.4f})")
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("weight sparsity (all layers)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    return fig



def _shrink_steps(w0: float, kind: str, lam: float, lr: float, momentum: float):
    """Yield ``w`` after 1, 2, ... steps of SGD (heavy-ball momentum) on the regularizer alone."""
    if kind not in ("l1", "l2"):
        raise ValueError(f"kind must be 'l1' or 'l2', got {kind!r}")
    w, b = float(w0), 0.0
    while True:
        g = lam * (math.copysign(1.0, w) if w != 0 else 0.0) if kind == "l1" else lam * w
        b = momentum * b + g  # torch.optim.SGD: the first step's buffer is g itself
        w = w - lr * b
        yield w


def shrinkage_path(
    w0: float, kind: str, lam: float, lr: float, steps: int, momentum: float = 0.0
) -> np.ndarray:
    """A weight's path under the regularizer alone (no loss gradient, no pruning).

    SGD with heavy-ball momentum as in ``torch.optim.SGD`` (``b <- m b + g``,
    ``w <- w - lr b``) and ``g = lam * sign(w)`` (``"l1"``) or ``g = lam * w``
    (``"l2"``). Returns ``w`` after ``0..steps`` steps (length ``steps + 1``).
    Without momentum, L2 gives exactly ``w0 (1 - lr lam)^t`` and L1
    ``w0 - lr lam t`` until the weight reaches zero (then it chatters around
    zero with amplitude about ``lr lam``). With momentum ``m`` the steady
    drift is ``1 / (1 - m)`` times faster.
    """
    gen = _shrink_steps(w0, kind, lam, lr, momentum)
    return np.array([float(w0)] + [next(gen) for _ in range(steps)])


def steps_to_reach(
    w0: float, kind: str, lam: float, lr: float, level: float, momentum: float = 0.0, max_steps: int = 10_000_000
) -> Optional[int]:
    """The first step at which the path of :func:`shrinkage_path` has ``|w| < level`` (None if never)."""
    if abs(w0) < level:
        return 0
    for t, w in enumerate(_shrink_steps(w0, kind, lam, lr, momentum), start=1):
        if abs(w) < level:
            return t
        if t >= max_steps:
            return None


def plot_shrinkage_paths(
    w0s: Sequence[float],
    regs: Mapping[str, float],
    lr: float,
    momentum: float,
    steps: int,
    steps_per_epoch: int,
    *,
    sigma: Optional[float] = None,
    kernel: str = "gaussian",
    reach_p: float = 0.01,
    ylim: Tuple[float, float] = (1e-4, 0.5),
) -> Figure:
    """``|w(t)|`` under each regularizer alone, for several starting values (log y axis).

    ``regs``: ``{"l1": lam1, "l2": lam2}``; paths from :func:`shrinkage_path`.
    On a log axis L2 decay is a straight line (a constant shift of ``log|w|``
    per step) and L1 a curve that plunges to zero in finite time (drawn down
    to the axis at its first sign change; after it the weight only chatters
    around zero). With ``sigma`` the red band marks the kernel's reach.
    """
    fig = Figure(figsize=(7.5, 3.6), layout="constrained")
    ax = fig.subplots()
    t = np.arange(steps + 1) / steps_per_epoch
    styles = ["-", "--", ":", "-."]
    for i, (kind, lam) in enumerate(regs.items()):
        c = _color(RUN_COLORS, kind, i)
        for j, w0 in enumerate(w0s):
            path = shrinkage_path(w0, kind, lam, lr, steps, momentum)
            # from its first sign change on, the weight only chatters around 0: draw it as reaching 0
            flip = np.nonzero(np.sign(path[1:]) != np.sign(path[0]))[0]
            p = np.abs(path)
            if len(flip):
                p[flip[0] + 1 :] = np.nan
                p[flip[0] + 1] = ylim[0]
            p = np.where((p > 0) | np.isnan(p), p, ylim[0])
            ax.plot(t, p, color=c, ls=styles[j % len(styles)], lw=1.6, label=f"{kind.upper()} (lam={lam:g}), w0={w0:g}")
    if sigma:
        reach = kernel_reach(kernel, sigma, reach_p)
        ax.axhspan(ylim[0], reach, color="#d62728", alpha=0.08, lw=0)
        ax.text(t[-1], reach, f"kernel reach |w| < {reach:.3g} ", ha="right", va="bottom", fontsize=8, color="#d62728")
    ax.set_yscale("log")
    ax.set_ylim(*ylim)
    ax.set_xlim(0, t[-1])
    ax.set_xlabel("epoch")
    ax.set_ylabel("|w|  (log axis)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False, loc="lower left", ncol=2)
    ax.set_title(f"the regularizer alone: SGD lr={lr:g}, momentum={momentum:g}", fontsize=10)
    return fig
