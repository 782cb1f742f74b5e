r"""The dependency between a node's incoming and outgoing weights, and how nodes die.

Conventions
-----------
For a hidden ReLU node ``j`` of layer ``l`` write ``u_j`` for its **incoming**
parameters (row ``j`` of ``W_l`` *and* the bias ``b_j``, as the ``in_l2``
column of the nodes table counts them) and ``v_j`` for its **outgoing**
weights (column ``j`` of ``W_{l+1}``). The per-node **imbalance** is

.. math::

    \delta_j = \|u_j\|_2^2 - \|v_j\|_2^2 ,

and its L1 analogue is ``\|u_j\|_1 - \|v_j\|_1``.

Conservation (gradient flow, no regularizer)
--------------------------------------------
ReLU is positively homogeneous, ``relu(c z) = c relu(z)`` for ``c > 0``, so
the network function, hence the loss ``L``, is unchanged by
``u_j -> c u_j, v_j -> v_j / c``. Differentiating ``L(c u, v / c)`` at
``c = 1`` gives ``<u_j, grad_u L> = <v_j, grad_v L>``. Under gradient flow
``du/dt = -grad_u L``, ``dv/dt = -grad_v L``::

    d/dt ||u_j||^2 = -2 <u_j, grad_u L> = -2 <v_j, grad_v L> = d/dt ||v_j||^2,

so ``d delta_j / dt = 0`` (Du, Hu & Lee 2018). A discrete gradient step of
size ``eta`` breaks this only at second order: ``delta`` changes by
``eta^2 (||grad_u L||^2 - ||grad_v L||^2)`` per step.

Contraction under coupled L2
----------------------------
Adding ``lam/2 ||w||^2`` to the loss adds ``-lam w`` to every velocity, so
``d/dt ||w||^2`` gains ``-2 lam ||w||^2`` on each side and

.. math::

    \frac{d\delta_j}{dt} = -2\lambda\,\delta_j
    \quad\Longrightarrow\quad
    \delta_j(t) = \delta_j(0)\, e^{-2\lambda t}.

prunedyn's regularizers act on weights only, never biases; with the bias in
``u_j`` the exact law is ``d delta_j/dt = -2 lam (delta_j - b_j^2)``: the
imbalance contracts towards ``b_j^2`` (small next to ``delta_j(0)`` early in
training) rather than 0.

Time
----
Gradient-flow time is ``t = lr * steps`` for plain SGD. For heavy-ball SGD
with momentum ``m`` (``buf <- m buf + g;  w <- w - lr buf``) and gradients
that change slowly over ``1 / (1 - m)`` steps, the buffer settles at
``g / (1 - m)`` and the effective step is ``lr / (1 - m)``:
``t = lr * steps / (1 - m)`` (:func:`effective_time`). This is the
assumption behind :func:`predicted_rate`; SGD noise adds a second-order drift
``~ (lr / (1 - m))^2 E||g||^2`` per step that the flow does not have.

L1
--
With ``lam * sum |w|`` the velocity gains ``-lam sign(w)`` and
``<w, sign(w)> = ||w||_1``, so

.. math::

    \frac{d\delta_j}{dt} = -2\lambda\,\big(\|u_j\|_1 - \|v_j\|_1\big):

the L2 imbalance is driven by the *L1* imbalance, not by itself; it is not
contracted towards 0 but moves until the two L1 norms agree. Each weight is
shrunk at the constant rate ``lam`` regardless of its size.

Every function here is a pure function of pandas tables (the ``nodes`` and
``layers`` tables of :mod:`prunedyn.run.records`) or of tensors, except
:func:`track_imbalance`, which trains a small model to check the laws.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Sequence, Tuple

import numpy as np
import pandas as pd
from torch import nn

from prunedyn.structure.nodes import incoming_rows, node_layers, outgoing_columns

STATUSES = ("alive", "in-dead", "out-dead", "both")


# --------------------------------------------------------------------------
# per-node quantities
# --------------------------------------------------------------------------
def node_status(nodes: pd.DataFrame) -> pd.Series:
    """``"alive"``, ``"in-dead"`` (only in), ``"out-dead"`` (only out) or ``"both"`` per row."""
    i = nodes["in_dead"].astype(bool).to_numpy()
    o = nodes["out_dead"].astype(bool).to_numpy()
    status = np.select([i & o, i, o], ["both", "in-dead", "out-dead"], "alive")
    return pd.Series(pd.Categorical(status, categories=STATUSES), index=nodes.index, name="status")


def imbalance(nodes: pd.DataFrame) -> pd.DataFrame:
    """The nodes table with the imbalance columns added.

    - ``delta_l2 = in_l2^2 - out_l2^2`` (the conserved / contracted quantity);
    - ``delta_l1 = in_l1 - out_l1`` (what drives ``delta_l2`` under L1);
    - ``rel_l2 = delta_l2 / (in_l2^2 + out_l2^2)`` in ``[-1, 1]`` (0 when both are 0);
    - ``rel_l1 = delta_l1 / (in_l1 + out_l1)``, the same for the L1 norms;
    - ``log_ratio = log10(in_l2 / out_l2)`` (NaN where either side is 0);
    - ``dead`` (in- or out-dead) and ``status`` (:func:`node_status`).
    """
    out = nodes.copy()
    a2, b2 = out["in_l2"] ** 2, out["out_l2"] ** 2
    out["delta_l2"] = a2 - b2
    out["delta_l1"] = out["in_l1"] - out["out_l1"]
    tot = a2 + b2
    out["rel_l2"] = np.where(tot > 0, (a2 - b2) / tot.where(tot > 0, 1.0), 0.0)
    tot1 = out["in_l1"] + out["out_l1"]
    out["rel_l1"] = np.where(tot1 > 0, out["delta_l1"] / tot1.where(tot1 > 0, 1.0), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.log10(out["in_l2"].to_numpy() / out["out_l2"].to_numpy())
    out["log_ratio"] = np.where(np.isfinite(ratio), ratio, np.nan)
    out["dead"] = out["in_dead"].astype(bool) | out["out_dead"].astype(bool)
    out["status"] = node_status(out)
    return out


# --------------------------------------------------------------------------
# time and the predicted rate
# --------------------------------------------------------------------------
def effective_time(steps, lr: float, momentum: float = 0.0):
    """Gradient-flow time ``t = lr * steps / (1 - momentum)`` (heavy-ball assumption)."""
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    return np.asarray(steps, dtype=float) * lr / (1.0 - momentum)


def predicted_rate(lam: float, kind: str = "l2") -> float:
    """Decay rate ``k`` of ``delta(t) = delta(0) exp(-k t)`` per unit of flow time.

    ``2 lam`` for coupled L2, 0 for no regularizer; NaN for L1 (no contraction
    law: see the module doc) and for other kinds.
    """
    if kind == "l2":
        return 2.0 * lam
    if kind == "none":
        return 0.0
    return float("nan")


@dataclass
class Dynamics:
    """What the decay law needs from a run: optimiser, regularizer, steps per epoch."""

    lr: float
    momentum: float
    lam: float
    kind: str
    steps_per_epoch: int

    @property
    def time_per_epoch(self) -> float:
        """Flow time elapsed in one epoch, ``lr * steps_per_epoch / (1 - momentum)``."""
        return float(effective_time(self.steps_per_epoch, self.lr, self.momentum))

    @property
    def rate(self) -> float:
        """Predicted rate per unit flow time (:func:`predicted_rate`)."""
        return predicted_rate(self.lam, self.kind)

    @property
    def rate_per_epoch(self) -> float:
        """Predicted rate per epoch, ``2 lam lr steps / (1 - m)`` for L2."""
        return self.rate * self.time_per_epoch


def run_dynamics(result) -> Dynamics:
    """:class:`Dynamics` of a :class:`prunedyn.book.study.RunResult` (SGD only).

    Steps per epoch are read from the metrics table (``step / epoch``).
    """
    cfg = result.config
    if cfg.optimizer.name != "sgd":
        raise ValueError(f"the decay law here assumes SGD, not {cfg.optimizer.name!r}")
    m = result.metrics
    last = m[m["epoch"] > 0].iloc[-1]
    steps = int(round(last["step"] / last["epoch"]))
    return Dynamics(
        lr=float(cfg.optimizer.lr),
        momentum=float(cfg.optimizer.momentum),
        lam=float(cfg.regularizer.lam),
        kind=str(cfg.regularizer.kind),
        steps_per_epoch=steps,
    )


# --------------------------------------------------------------------------
# decay of the imbalance: observation, prediction, fit
# --------------------------------------------------------------------------
def imbalance_decay(nodes: pd.DataFrame, dyn: Dynamics, alive_only: bool = False) -> pd.DataFrame:
    """Per layer and epoch: the size of the imbalance and its predicted decay.

    Columns: ``epoch, layer, t`` (flow time), ``n`` (nodes counted),
    ``rms`` = ``sqrt(mean_j delta_j^2)``, ``mean_abs``, ``predicted`` =
    ``rms(0) exp(-k t)`` with ``k = dyn.rate`` (NaN where there is no law).
    If every ``delta_j`` follows ``delta_j(0) e^{-kt}`` so does the rms, which
    is why the rms is the summary that is fitted. Dead nodes count (with
    ``delta = b^2`` or 0) unless ``alive_only``.
    """
    df = imbalance(nodes)
    if alive_only:
        df = df[~df["dead"]]
    g = df.groupby(["layer", "epoch"])["delta_l2"]
    out = pd.DataFrame(
        {
            "n": g.size(),
            "rms": g.apply(lambda s: float(np.sqrt(np.mean(np.square(s))))),
            "mean_abs": g.apply(lambda s: float(np.mean(np.abs(s)))),
        }
    ).reset_index()
    out["t"] = out["epoch"] * dyn.time_per_epoch
    k = dyn.rate
    start = out[out["epoch"] == out.groupby("layer")["epoch"].transform("min")].set_index("layer")["rms"]
    out["predicted"] = out["layer"].map(start) * np.exp(-k * out["t"]) if np.isfinite(k) else np.nan
    return out[["epoch", "layer", "t", "n", "rms", "mean_abs", "predicted"]]


@dataclass
class DecayFit:
    """``y ~ amplitude * exp(-rate * t)``, fitted by least squares on ``log y``."""

    rate: float
    amplitude: float
    r2: float
    n: int

    def __call__(self, t):
        return self.amplitude * np.exp(-self.rate * np.asarray(t, dtype=float))


def fit_decay_rate(t: Sequence[float], y: Sequence[float]) -> DecayFit:
    """Fit ``y = A exp(-k t)``: ordinary least squares of ``log y`` on ``t``.

    Only finite, positive ``y`` are used; at least two distinct ``t`` are
    needed. ``r2`` is the coefficient of determination in log space.
    """
    t = np.asarray(t, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(t) & np.isfinite(y) & (y > 0)
    t, ly = t[ok], np.log(y[ok])
    if len(np.unique(t)) < 2:
        raise ValueError("fit_decay_rate needs positive values at two or more distinct times")
    slope, intercept = np.polyfit(t, ly, 1)
    resid = ly - (intercept + slope * t)
    ss = float(np.sum((ly - ly.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / ss if ss > 0 else 1.0
    return DecayFit(rate=float(-slope), amplitude=float(np.exp(intercept)), r2=r2, n=int(len(t)))


def fit_imbalance_decay(decay: pd.DataFrame, dyn: Dynamics, epochs: Tuple[int, int] = (0, 4)) -> pd.DataFrame:
    """Fitted vs predicted decay rate of the rms imbalance, per layer.

    ``decay`` is :func:`imbalance_decay`'s table; the fit uses epochs
    ``epochs[0] <= epoch <= epochs[1]``. Columns: ``layer, epochs``,
    ``fitted_per_epoch`` and ``predicted_per_epoch`` (``k`` in
    ``exp(-k * epoch)``), ``fitted`` and ``predicted`` per unit flow time,
    ``ratio = fitted / predicted`` and ``r2`` of the log-linear fit.
    """
    lo, hi = epochs
    rows = []
    for layer, d in decay.groupby("layer", sort=False):
        d = d[(d["epoch"] >= lo) & (d["epoch"] <= hi)]
        fit = fit_decay_rate(d["t"], d["rms"])
        pred = dyn.rate
        rows.append(
            {
                "layer": layer,
                "epochs": f"{lo}-{hi}",
                "fitted_per_epoch": fit.rate * dyn.time_per_epoch,
                "predicted_per_epoch": pred * dyn.time_per_epoch,
                "fitted": fit.rate,
                "predicted": pred,
                "ratio": fit.rate / pred if pred else float("nan"),
                "r2": fit.r2,
            }
        )
    return pd.DataFrame(rows)


def l1_drive(nodes: pd.DataFrame, dyn: Dynamics) -> pd.DataFrame:
    """Under L1: observed change of ``delta_l2`` per epoch vs the L1 term's share of it.

    For each node and epoch ``e -> e+1`` (both ends alive): ``observed =
    delta_l2(e+1) - delta_l2(e)`` and ``l1_term = -2 lam (in_l1 - out_l1)(e)
    * dyn.time_per_epoch`` -- the change the L1 term alone would cause over an
    epoch of flow (the loss gradient contributes nothing under the flow).
    ``in_l1`` includes ``|b|``, which L1 does not shrink; that part is small.
    """
    df = imbalance(nodes).sort_values(["layer", "node", "epoch"])
    nxt = df.groupby(["layer", "node"])[["delta_l2", "dead", "epoch"]].shift(-1)
    out = df[["epoch", "layer", "node", "delta_l1", "delta_l2"]].copy()
    out["observed"] = nxt["delta_l2"] - df["delta_l2"]
    out["l1_term"] = -2.0 * dyn.lam * df["delta_l1"] * dyn.time_per_epoch
    keep = nxt["epoch"].notna() & ~df["dead"] & (nxt["dead"] == False)  # noqa: E712
    return out[keep.to_numpy()].reset_index(drop=True)


def balance_table(nodes_by_run: Dict[str, pd.DataFrame], epochs: Sequence[int]) -> pd.DataFrame:
    """Median relative imbalances of the alive nodes, per run, layer and epoch.

    Columns ``run, layer, epoch, alive, rel_l2, rel_l1`` where ``rel_l2`` is
    the median of ``|delta_l2| / (in_l2^2 + out_l2^2)`` and ``rel_l1`` the
    median of ``|in_l1 - out_l1| / (in_l1 + out_l1)`` (0: balanced, 1: one
    side carries everything). L2 drives the first towards 0, L1 the second.
    """
    rows = []
    for run, nodes in nodes_by_run.items():
        df = imbalance(nodes[nodes["epoch"].isin(list(epochs))])
        df = df[~df["dead"]]
        for (layer, epoch), d in df.groupby(["layer", "epoch"]):
            rows.append(
                {
                    "run": run,
                    "layer": layer,
                    "epoch": int(epoch),
                    "alive": len(d),
                    "rel_l2": float(d["rel_l2"].abs().median()),
                    "rel_l1": float(d["rel_l1"].abs().median()),
                }
            )
    return pd.DataFrame(rows)


def drive_agreement(drive: pd.DataFrame) -> pd.DataFrame:
    """Per epoch and layer of :func:`l1_drive`'s table: how well the L1 term explains the
    observed change of ``delta_l2`` -- ``corr`` (Pearson), ``slope`` of observed on
    predicted (1 if the L1 term is all there is) and the number of nodes."""
    rows = []
    for (epoch, layer), d in drive.groupby(["epoch", "layer"]):
        if len(d) < 3 or d["l1_term"].std() == 0:
            continue
        rows.append(
            {
                "epoch": int(epoch),
                "layer": layer,
                "n": len(d),
                "corr": float(np.corrcoef(d["l1_term"], d["observed"])[0, 1]),
                "slope": float(np.polyfit(d["l1_term"], d["observed"], 1)[0]),
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------
# node death: when, which side, which layer
# --------------------------------------------------------------------------
def first_death(nodes: pd.DataFrame) -> pd.DataFrame:
    """Per node: the first epoch at which it was in-dead, out-dead, dead at all.

    Columns: ``layer, node, first_in, first_out`` (NaN if never),
    ``first_dead = min(first_in, first_out)``, ``first_side`` in
    ``{"in", "out", "same", "never"}`` (which side reached zero first;
    ``"same"`` when both did within the same epoch), ``gap = first_out -
    first_in`` (epochs from one side's death to the other's), and
    ``dead_end`` / ``status_end``: the state at the last recorded epoch
    (a node can revive: a zeroed weight may regrow through its gradient).
    """
    df = nodes.sort_values(["layer", "node", "epoch"])
    keys = ["layer", "node"]
    first_in = df[df["in_dead"].astype(bool)].groupby(keys)["epoch"].min().rename("first_in")
    first_out = df[df["out_dead"].astype(bool)].groupby(keys)["epoch"].min().rename("first_out")
    last_epoch = df["epoch"].max()
    end = df[df["epoch"] == last_epoch].set_index(keys)
    out = pd.DataFrame(index=df.groupby(keys, sort=False).size().index)
    out = out.join(first_in).join(first_out)
    fi, fo = out["first_in"], out["first_out"]
    out["first_dead"] = np.fmin(fi, fo)
    out["first_side"] = np.select(
        [fi.isna() & fo.isna(), fo.isna(), fi.isna(), fi < fo, fi > fo],
        ["never", "in", "out", "in", "out"],
        "same",
    )
    out["gap"] = fo - fi
    status = node_status(end)
    out["status_end"] = status.reindex(out.index).astype(str)
    out["dead_end"] = out["status_end"] != "alive"
    return out.reset_index()


def death_side_counts(first: pd.DataFrame) -> pd.DataFrame:
    """Per layer: how many nodes died in-side first, out-side first, both at once, never;
    the median and max ``gap`` (epochs between the two sides' deaths) over nodes
    whose both sides died, and the number that revived (dead once, alive at the end)."""
    counts = first.groupby("layer")["first_side"].value_counts().unstack(fill_value=0)
    for c in ("in", "out", "same", "never"):
        if c not in counts:
            counts[c] = 0
    counts = counts[["in", "out", "same", "never"]]
    g = first.dropna(subset=["gap"]).groupby("layer")["gap"]
    counts["median_gap"] = g.median()
    counts["max_gap"] = g.max()
    counts["revived"] = first[first["first_side"].ne("never") & ~first["dead_end"]].groupby("layer").size()
    counts["revived"] = counts["revived"].fillna(0).astype(int)
    return counts.reset_index()


def layer_status(layers: pd.DataFrame) -> pd.DataFrame:
    """The layers table with exclusive counts ``in_only, out_only, both`` (they sum with
    ``alive`` to ``nodes``), ``dead = nodes - alive`` and ``dead_fraction``."""
    out = layers.copy()
    out["in_only"] = out["in_dead"] - out["both_dead"]
    out["out_only"] = out["out_dead"] - out["both_dead"]
    out["both"] = out["both_dead"]
    out["dead"] = out["nodes"] - out["alive"]
    out["dead_fraction"] = out["dead"] / out["nodes"]
    return out


def layer_death_order(layers: pd.DataFrame, thresholds: Iterable[float] = (0.1, 0.25)) -> pd.DataFrame:
    """Per layer: epoch of the first dead node, first epoch at which the dead fraction
    reaches each threshold (NaN if never), and the final dead fraction; sorted by
    the first death, so the rows give the order in which layers lose nodes."""
    ls = layer_status(layers)
    rows = []
    for layer, d in ls.groupby("layer", sort=False):
        d = d.sort_values("epoch")
        row = {"layer": layer, "nodes": int(d["nodes"].iloc[0])}
        hit = d[d["dead"] > 0]
        row["first_death"] = hit["epoch"].min() if len(hit) else np.nan
        for th in thresholds:
            hit = d[d["dead_fraction"] >= th]
            row[f"epoch_{int(round(th * 100))}pct"] = hit["epoch"].min() if len(hit) else np.nan
        row["final_dead_fraction"] = float(d["dead_fraction"].iloc[-1])
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["first_death", "layer"], na_position="last").reset_index(drop=True)


def aligned_to_death(nodes: pd.DataFrame, first: pd.DataFrame, side: str = "in", window: Tuple[int, int] = (-6, 6)) -> pd.DataFrame:
    """Norm trajectories re-indexed by epochs since a side's first death.

    For every node whose ``side`` ("in" or "out") died *strictly first*
    (``first_side == side``), rows of ``nodes`` with ``since = epoch -
    first_<side>`` in ``window``; columns ``layer, node, since, in_l2,
    out_l2``. Use :func:`aligned_summary` for medians.
    """
    if side not in ("in", "out"):
        raise ValueError("side must be 'in' or 'out'")
    f = first[first["first_side"] == side].set_index(["layer", "node"])[f"first_{side}"]
    df = nodes.join(f, on=["layer", "node"], how="inner")
    df["since"] = (df["epoch"] - df[f"first_{side}"]).astype(int)
    lo, hi = window
    df = df[(df["since"] >= lo) & (df["since"] <= hi)]
    return df[["layer", "node", "since", "in_l2", "out_l2"]].reset_index(drop=True)


def aligned_summary(aligned: pd.DataFrame) -> pd.DataFrame:
    """Median and quartiles of ``in_l2`` and ``out_l2`` per ``since``, and the node count."""
    g = aligned.groupby("since")
    out = pd.DataFrame(
        {
            "n": g.size(),
            "in_median": g["in_l2"].median(),
            "in_q25": g["in_l2"].quantile(0.25),
            "in_q75": g["in_l2"].quantile(0.75),
            "out_median": g["out_l2"].median(),
            "out_q25": g["out_l2"].quantile(0.25),
            "out_q75": g["out_l2"].quantile(0.75),
        }
    )
    return out.reset_index()


# --------------------------------------------------------------------------
# the laws on a live model
# --------------------------------------------------------------------------


# --------------------------------------------------------------------------
# how big a typical weight is on each side
# --------------------------------------------------------------------------
def layer_fans(model: nn.Module) -> Dict[str, Tuple[int, int]]:
    """``{layer: (fan_in, fan_out)}``: how many parameters each node has on each side.

    ``fan_in`` counts the incoming weights plus the bias (as ``in_l2`` does);
    ``fan_out`` the outgoing weights over all consumers.
    """
    fans = {}
    for layer in node_layers(model):
        n = layer.size
        fan_in = incoming_rows(layer.producer).shape[1] + (layer.producer.bias is not None)
        fan_out = sum(outgoing_columns(c, n).shape[1] for c in layer.consumers)
        fans[layer.name] = (int(fan_in), int(fan_out))
    return fans


def side_rms(nodes: pd.DataFrame, fans: Dict[str, Tuple[int, int]]) -> pd.DataFrame:
    """The nodes table with ``in_rms = in_l2 / sqrt(fan_in)`` and ``out_rms = out_l2 / sqrt(fan_out)``:
    the root-mean-square size of one weight on each side, and ``rms_ratio = out_rms / in_rms``.

    At equal norms (``delta = 0``) the side with more weights has the smaller
    weights, by the factor ``sqrt(fan_in / fan_out)``; a magnitude-driven pruner
    reaches that side first.
    """
    out = nodes.copy()
    fi = out["layer"].map({k: v[0] for k, v in fans.items()}).astype(float)
    fo = out["layer"].map({k: v[1] for k, v in fans.items()}).astype(float)
    out["in_rms"] = out["in_l2"] / np.sqrt(fi)
    out["out_rms"] = out["out_l2"] / np.sqrt(fo)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["rms_ratio"] = out["out_rms"] / out["in_rms"]
    return out
