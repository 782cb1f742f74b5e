"""The recorded fronts read on the validation split: each method's seeds paired with the dense
network's, the setting chosen within a tolerance, the gap at a matched node share (chapter 9)."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd


def paired_front(table: pd.DataFrame, metric: str = "accuracy", split: str = "val", dense: str = "dense",
                 nodes: str = "nodes_removed") -> pd.DataFrame:
    """One row per setting of a tidy table: its node share and its paired gap to the dense runs on ``split``.

    ``gap = <split>_<metric>(dense, seed) - <split>_<metric>(setting, seed)``, per seed, then
    ``gap_mean``, ``gap_std`` (ddof=1) and ``gap_se = gap_std / sqrt(n)`` over the seeds both have;
    ``share_mean`` / ``share_std``: the mean and spread of ``nodes`` over the same seeds;
    ``sparsity_mean``: of the weight sparsity. A positive gap is a loss. Columns ``method``,
    ``setting``, ``n``, ``seeds``. The dense setting itself is left out.
    """
    col = f"{split}_{metric}"
    if col not in table.columns:
        raise KeyError(f"{col}: the table has no {split} scores" + (" (run the sweep with data.val_size)" if split == "val" else ""))
    ref = table[table["setting"] == dense].set_index("seed")[col]
    rows = []
    for setting, g in table[table["setting"] != dense].groupby("setting", sort=False):
        g = g[g["seed"].isin(ref.index)].sort_values("seed")
        if g.empty:
            continue
        gaps = ref.loc[g["seed"]].to_numpy(dtype=float) - g[col].to_numpy(dtype=float)
        n = len(gaps)
        sd = float(gaps.std(ddof=1)) if n > 1 else math.nan
        rows.append({"method": g["method"].iloc[0], "setting": setting, "n": n,
                     "seeds": ",".join(str(int(s)) for s in g["seed"]),
                     "share_mean": float(g[nodes].mean()), "share_std": float(g[nodes].std(ddof=1)) if n > 1 else math.nan,
                     "sparsity_mean": float(g["weight_sparsity"].mean()),
                     "gap_mean": float(gaps.mean()), "gap_std": sd, "gap_se": sd / math.sqrt(n) if n > 1 else math.nan})
    return pd.DataFrame(rows)


def choose_within(front: pd.DataFrame, tol: float) -> pd.DataFrame:
    """Per method, the setting of ``front`` (:func:`paired_front`, on the validation split) with the
    largest mean node share among those whose mean gap is at most ``tol``; methods with no such
    setting are left out. Ties in share go to the smaller gap."""
    ok = front[front["gap_mean"] <= tol]
    ok = ok.sort_values(["share_mean", "gap_mean"], ascending=[False, True], kind="mergesort")
    return ok.groupby("method", sort=False).head(1).reset_index(drop=True)


def gap_at(front: pd.DataFrame, share: float, method: str) -> tuple:
    """``(gap, se)`` of ``method``'s front at node share ``share``, read off its lower envelope.

    The front of a method is its settings' ``(share_mean, gap_mean)`` points (:func:`paired_front`)
    plus the dense network at ``(0, 0)`` with no error; points another point of the method beats on
    both axes (more nodes removed at a smaller gap) are dropped, and ``gap`` and ``gap_se`` are
    interpolated linearly between the neighbours of ``share``. ``(nan, nan)`` beyond the method's
    largest share: a front is not extrapolated.
    """
    f = front[front["method"] == method][["share_mean", "gap_mean", "gap_se"]]
    f = pd.concat([pd.DataFrame({"share_mean": [0.0], "gap_mean": [0.0], "gap_se": [0.0]}), f], ignore_index=True)
    f = f.fillna({"gap_se": 0.0}).sort_values("share_mean", kind="mergesort")
    envelope = f[f["gap_mean"][::-1].cummin()[::-1] == f["gap_mean"]]  # no point right of it is better
    if share > envelope["share_mean"].max() + 1e-12:
        return math.nan, math.nan
    x = envelope["share_mean"].to_numpy()
    return float(np.interp(share, x, envelope["gap_mean"])), float(np.interp(share, x, envelope["gap_se"]))


def headline_share(front: pd.DataFrame, method: str, baselines: Sequence[str], z: float = 2.0) -> pd.Series:
    """The trade-off number of ``method`` against ``baselines`` along the node-share axis.

    For each setting ``i`` of ``method`` the tolerance is measured, not chosen: the best (smallest)
    gap any baseline's front has at the setting's share (:func:`gap_at`), plus ``z`` standard
    errors of the difference, ``sqrt(se_i^2 + se_b^2)``. The headline is the setting with the
    largest mean share whose mean gap stays within its tolerance, as a Series (``setting``,
    ``share_mean``, ``gap_mean``, ``tol``, ``baseline_gap``, ``margin = tol - gap_mean``);
    ``share_mean`` is 0 (and ``setting`` None) when no setting is within it. A setting whose
    share no baseline reaches has no tolerance and does not count.
    """
    own = front[front["method"] == method].copy()
    tols, base = [], []
    for share, se in zip(own["share_mean"], own["gap_se"].fillna(0.0)):
        at = [gap_at(front, share, b) for b in baselines]
        at = [a for a in at if not math.isnan(a[0])]
        if not at:
            tols.append(math.nan)
            base.append(math.nan)
            continue
        g, gse = min(at)
        base.append(g)
        tols.append(g + z * math.sqrt(se ** 2 + gse ** 2))
    own["baseline_gap"], own["tol"] = base, tols
    own["margin"] = own["tol"] - own["gap_mean"]
    ok = own[own["margin"] >= 0].sort_values("share_mean", ascending=False, kind="mergesort")
    cols = ["method", "setting", "share_mean", "gap_mean", "tol", "baseline_gap", "margin"]
    if ok.empty:
        return pd.Series({"method": method, "setting": None, "share_mean": 0.0, "gap_mean": math.nan,
                          "tol": math.nan, "baseline_gap": math.nan, "margin": math.nan})
    return ok.iloc[0][cols]


# --------------------------------------------------------------------------
# a recorded front as the chapters show it (chapter 9's MLP, chapter 7's U-Net)
# --------------------------------------------------------------------------
#: The paper's method on a front (SWP with L2, with L1); every other method is context.
PAPER_METHODS = ("swp-l2", "swp-l1")
FRONT_NAME = {
    "swp-l2": "SWP + L2",
    "swp-l1": "SWP + L1",
    "swp-group-lasso": "SWP + group lasso",
    "targeted-dropout-unit": "targeted dropout, unit",
    "slimming": "network slimming",
}
FRONT_COLOR = {
    "swp-l2": "#1f77b4",
    "swp-l1": "#2ca02c",
    "swp-group-lasso": "#9467bd",
    "targeted-dropout-unit": "#ff7f0e",
    "slimming": "#8c564b",
}


def choose(table: pd.DataFrame, tol: float, metric: str = "accuracy",
           context: Sequence[str] = ("swp-group-lasso", "targeted-dropout-unit")) -> pd.DataFrame:
    """Per method, the setting chosen on the validation split (the largest mean node share whose
    mean paired validation gap is at most ``tol``: :func:`choose_within`), with its test gap beside
    it: the only place the test set is read. Gaps in the metric's units (accuracy: fractions)."""
    val, test = paired_front(table, metric, "val"), paired_front(table, metric, "test")
    chosen = choose_within(val, tol)
    t = test.set_index("setting")
    chosen["test_gap_mean"] = [t.loc[s, "gap_mean"] for s in chosen["setting"]]
    chosen["test_gap_std"] = [t.loc[s, "gap_std"] for s in chosen["setting"]]
    order = {m: i for i, m in enumerate(PAPER_METHODS + tuple(context))}
    return chosen.sort_values("method", key=lambda s: s.map(order)).reset_index(drop=True)


def choice_frame(chosen: pd.DataFrame, scale: float = 100.0, unit: str = "points",
                 digits: int = 2) -> pd.DataFrame:
    """:func:`choose` as a chapter shows it: gaps times ``scale``, in ``unit``."""
    sd = lambda m, s: f"{scale * m:+.{digits}f} ± {scale * s:.{digits}f}"  # noqa: E731
    return pd.DataFrame({
        "method": [FRONT_NAME.get(m, m) + ("" if m in PAPER_METHODS else " (context)")
                   for m in chosen["method"]],
        "setting chosen on validation": [s.split(", ", 1)[1] if ", " in s else s
                                         for s in chosen["setting"]],
        "nodes dead": [f"{100 * m:.1f}% ± {100 * s:.1f}"
                       for m, s in zip(chosen["share_mean"], chosen["share_std"])],
        f"validation gap ({unit})": [sd(m, s) for m, s in zip(chosen["gap_mean"], chosen["gap_std"])],
        f"test gap ({unit}), read once": [sd(m, s) for m, s in zip(chosen["test_gap_mean"],
                                                                   chosen["test_gap_std"])],
    })


def plot_front(table: pd.DataFrame, chosen: pd.DataFrame, tol: float, metric: str = "accuracy",
               context: Sequence[str] = ("swp-group-lasso", "targeted-dropout-unit"),
               target: float = 0.5, scale: float = 100.0, unit: str = "points",
               nodes: str = "hidden nodes", ycap: float = 8.0):
    """Two panels, every method along its strength (mean ± sd over seeds): the paired validation
    gap against the share of nodes dead (from ``-ycap / 4`` to ``ycap``), with the tolerance, the
    paper's share (``target``) and the chosen settings circled; and the share of nodes dead
    against the weight sparsity."""
    from matplotlib.figure import Figure

    val = paired_front(table, metric, "val")
    fig = Figure(figsize=(10.5, 4.4), layout="constrained")
    ax, bx = fig.subplots(1, 2)
    for m in PAPER_METHODS + tuple(context):
        f = val[val["method"] == m].sort_values("share_mean")
        if f.empty:
            continue
        kw = dict(color=FRONT_COLOR.get(m), ms=5, capsize=2,
                  label=FRONT_NAME.get(m, m) + ("" if m in PAPER_METHODS else " (context)"),
                  ls="-" if m in PAPER_METHODS else ":", marker="o" if m in PAPER_METHODS else "s")
        ax.errorbar(100 * f["share_mean"], scale * f["gap_mean"], xerr=100 * f["share_std"],
                    yerr=scale * f["gap_std"], **kw)
        bx.errorbar(100 * f["sparsity_mean"], 100 * f["share_mean"], yerr=100 * f["share_std"], **kw)
    c = chosen[chosen["method"].isin(PAPER_METHODS + tuple(context))]
    ax.plot(100 * c["share_mean"], scale * c["gap_mean"], "o", ms=14, mfc="none", mec="k", mew=1.2,
            label="chosen on validation")
    ax.axhline(scale * tol, color="0.4", lw=0.8, ls="--")
    ax.annotate("tolerance", (1, scale * tol), xytext=(2, 3), textcoords="offset points", fontsize=8,
                color="0.3")
    ax.axvline(100 * target, color="0.4", lw=0.8, ls=":")
    word = {"dice": "Dice", "auc": "AUC"}.get(metric, metric)
    ax.set_xlabel(f"{nodes} dead (%)")
    ax.set_ylabel(f"validation {word} gap to dense" + (f" ({unit})" if unit else ""))
    ax.set_title("the trade-off front, on the validation split", fontsize=10)
    # at most ycap above zero and a quarter of it below (a collapsed setting's spread is clipped)
    ax.set_ylim(max(min(-0.005 * scale, ax.get_ylim()[0]), -ycap / 4), min(ax.get_ylim()[1], ycap))
    bx.set_xlabel("weight sparsity (%)")
    bx.set_ylabel(f"{nodes} dead (%)")
    bx.set_title("nodes against weights", fontsize=10)
    fig.legend(*ax.get_legend_handles_labels(), fontsize=8, loc="outside lower center", ncols=5,
               frameon=False)
    return fig
