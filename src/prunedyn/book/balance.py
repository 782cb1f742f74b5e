"""Chapter 4's checks of the balance laws (:mod:`prunedyn.analysis.dependency`): a small model
trained with the regularizer alone, node by node (:func:`track_imbalance`), and the chapter's
figures of the observed against the predicted decay."""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.nn import functional as F

from prunedyn.analysis.dependency import effective_time
from prunedyn.core.pruning import prunable_weights
from prunedyn.core.regularization import make_regularizer
from prunedyn.plots.nodes import LAYER_COLORS, _layer_names, _short
from prunedyn.structure.nodes import incoming_rows, node_layers, outgoing_columns


@torch.no_grad()
def model_imbalance(model: nn.Module) -> pd.DataFrame:
    """Per node of a live model: ``layer, node, in_sq`` (``||w_in||^2`` including the
    bias), ``bias_sq``, ``out_sq``, ``delta = in_sq - out_sq`` and
    ``delta_weights = delta - bias_sq`` (the part L2 on weights contracts exactly)."""
    rows = []
    for layer in node_layers(model):
        w_in = incoming_rows(layer.producer).detach().double()
        n = w_in.shape[0]
        bias = layer.producer.bias
        b2 = bias.detach().double() ** 2 if bias is not None else torch.zeros(n, dtype=torch.float64)
        out_sq = torch.zeros(n, dtype=torch.float64)
        for c in layer.consumers:
            out_sq += outgoing_columns(c, n).detach().double().pow(2).sum(1)
        in_sq = w_in.pow(2).sum(1) + b2
        for j in range(n):
            rows.append(
                {
                    "layer": layer.name,
                    "node": j,
                    "in_sq": float(in_sq[j]),
                    "bias_sq": float(b2[j]),
                    "out_sq": float(out_sq[j]),
                    "delta": float(in_sq[j] - out_sq[j]),
                    "delta_weights": float(in_sq[j] - b2[j] - out_sq[j]),
                }
            )
    return pd.DataFrame(rows)


def tracked_summary(track: pd.DataFrame, lam: float = 0.0) -> pd.DataFrame:
    """Per node of a :func:`track_imbalance` table: ``delta0``, ``delta_end``, the
    end-to-start ratio against the law ``exp(-2 lam t_end)`` (``ratio``,
    ``law``, ``rel_error = ratio / law - 1``), the absolute drift
    ``|delta_end - delta0|`` and, for scale, how much ``||w_in||^2`` itself
    moved (``in_sq_change``)."""
    t0, t1 = track["t"].min(), track["t"].max()
    a = track[track["t"] == t0].set_index(["layer", "node"])
    b = track[track["t"] == t1].set_index(["layer", "node"])
    out = pd.DataFrame({"delta0": a["delta"], "delta_end": b["delta"]})
    out["ratio"] = out["delta_end"] / out["delta0"]
    out["law"] = math.exp(-2.0 * lam * t1) if t0 == 0 else math.exp(-2.0 * lam * (t1 - t0))
    out["rel_error"] = out["ratio"] / out["law"] - 1.0
    out["drift"] = (out["delta_end"] - out["delta0"]).abs()
    out["in_sq_change"] = (b["in_sq"] - a["in_sq"]).abs()
    return out.reset_index()


def track_imbalance(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float,
    steps: int,
    regularizer: str = "none",
    lam: float = 0.0,
    momentum: float = 0.0,
    every: int = 1,
) -> pd.DataFrame:
    """Train ``model`` in place by full-batch SGD on ``(x, y)`` and record every node's imbalance.

    Cross-entropy loss; the regularizer is prunedyn's (weights only) through
    :func:`prunedyn.core.regularization.make_regularizer`; no pruning. Rows every
    ``every`` steps (and at step 0): ``step, t`` (:func:`effective_time`),
    ``loss`` and the columns of :func:`model_imbalance`.
    """
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    reg = make_regularizer(regularizer, lam)
    weights = list(prunable_weights(model).values())
    frames = []

    def record(step: int, loss: float) -> None:
        df = model_imbalance(model)
        df.insert(0, "loss", loss)
        df.insert(0, "t", float(effective_time(step, lr, momentum)))
        df.insert(0, "step", step)
        frames.append(df)

    model.train()
    for step in range(steps + 1):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        if step % every == 0 or step == steps:
            record(step, float(loss.detach()))
        if step == steps:
            break
        loss.backward()
        reg.add_gradient(weights)
        opt.step()
    return pd.concat(frames, ignore_index=True)


def plot_imbalance_decay(
    decays: Mapping[str, pd.DataFrame],
    layers: Optional[Sequence[str]] = None,
    x: str = "epoch",
    predicted: Sequence[str] = (),
    colors: Optional[Mapping[str, str]] = None,
    ylim=None,
) -> Figure:
    """rms imbalance ``sqrt(mean_j delta_j^2)`` over time, one panel per layer (log y).

    ``decays``: ``{label: imbalance_decay(...) table}``; for each label in
    ``predicted`` the law ``rms(0) exp(-2 lam t)`` is drawn dashed in the
    same colour. ``x`` is ``"epoch"`` or ``"t"`` (flow time).
    """
    first = next(iter(decays.values()))
    names = _layer_names(first, layers)
    fig = Figure(figsize=(4.3 * len(names), 3.4), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False, sharey=True)[0]
    observed_min = min(float(dec["rms"][dec["rms"] > 0].min()) for dec in decays.values())
    for ax, layer in zip(axes, names):
        for i, (label, dec) in enumerate(decays.items()):
            d = dec[dec["layer"] == layer].sort_values(x)
            color = (colors or {}).get(label, f"C{i % 10}")
            ax.plot(d[x], d["rms"], color=color, lw=1.8, marker="o", ms=3, label=label)
            if label in predicted:
                ax.plot(d[x], d["predicted"], color=color, lw=1.3, ls="--", label=f"{label}: predicted")
        ax.set_yscale("log")
        ax.set_xlabel("epoch" if x == "epoch" else "flow time t = lr * steps / (1 - m)")
        ax.set_title(_short(layer), fontsize=10)
        ax.grid(alpha=0.3, which="both")
        # the predicted law can fall many decades below anything observed: clip the view
        ax.set_ylim(*(ylim if ylim is not None else (observed_min / 10, None)))
    axes[0].set_ylabel(r"rms over nodes of $\delta = \|w_{in}\|^2 - \|w_{out}\|^2$")
    axes[-1].legend(fontsize=7, loc="best")
    return fig


def plot_tracked_imbalance(tracks: Mapping[str, pd.DataFrame], lams: Mapping[str, float], max_nodes: int = 40) -> Figure:
    """Per-node imbalance ``delta_j(t) / delta_j(0)`` from :func:`prunedyn.analysis.dependency.track_imbalance`.

    One panel per track; thin lines are nodes, the dashed black line the
    law ``exp(-2 lam t)`` (a flat line at 1 for ``lam = 0``).
    """
    fig = Figure(figsize=(4.2 * len(tracks), 3.3), layout="constrained")
    axes = fig.subplots(1, len(tracks), squeeze=False)[0]
    for ax, (label, tr) in zip(axes, tracks.items()):
        lam = lams.get(label, 0.0)
        for i, ((layer, node), d) in enumerate(tr.groupby(["layer", "node"], sort=False)):
            if i >= max_nodes:
                break
            d = d.sort_values("t")
            d0 = d["delta"].iloc[0]
            ax.plot(d["t"], d["delta"] / d0, lw=0.7, alpha=0.5, color=LAYER_COLORS[0 if layer == tr["layer"].iloc[0] else 1])
        t = np.linspace(0, tr["t"].max(), 100)
        ax.plot(t, np.exp(-2 * lam * t), "k--", lw=1.6, label=rf"$e^{{-2\lambda t}}$, $\lambda$={lam:g}")
        ax.set_xlabel("flow time t = lr * steps")
        ax.set_title(label, fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(r"$\delta_j(t) / \delta_j(0)$")
    return fig


def plot_l1_drive(drive: pd.DataFrame, epochs: Sequence[int]) -> Figure:
    """Under L1: the observed one-epoch change of ``delta_l2`` against the L1 term
    ``-2 lam (||w_in||_1 - ||w_out||_1) * time per epoch``, one panel per epoch
    (table from :func:`prunedyn.analysis.dependency.l1_drive`). Points on the diagonal are
    changes the L1 term alone explains."""
    fig = Figure(figsize=(3.4 * len(epochs), 3.3), layout="constrained")
    axes = fig.subplots(1, len(epochs), squeeze=False)[0]
    for ax, e in zip(axes, epochs):
        d = drive[drive["epoch"] == e]
        for i, layer in enumerate(dict.fromkeys(d["layer"])):
            g = d[d["layer"] == layer]
            ax.scatter(g["l1_term"], g["observed"], s=8, alpha=0.6, lw=0, color=LAYER_COLORS[i % len(LAYER_COLORS)], label=_short(layer))
        lo = float(np.nanmin([d["l1_term"].min(), d["observed"].min(), 0]))
        hi = float(np.nanmax([d["l1_term"].max(), d["observed"].max(), 0]))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_title(f"epoch {e} -> {e + 1}", fontsize=10)
        ax.set_xlabel("L1 term's change of $\\delta$")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(r"observed change of $\delta$")
    axes[0].legend(fontsize=8)
    return fig
