"""Node-removing methods on one budget, over seeds: what each removes and what it costs.

Input: the table a sweep with labelled points writes (``summary.csv``, or the
copy :func:`prunedyn.book.tradeoffs.record_sweep` keeps), one row per run,
with ``label``, ``seed``, ``dead_node_fraction``, ``weight_sparsity``, the task
metrics and, for the staged rows, ``weights`` / ``nonzero_weights`` (the
prunable weights of the run's last checkpoint).

A label ``method@lambda`` is ``method`` at another strength (a point of its
trade-off curve); :func:`method_of` strips the lambda.

Every cost is a **paired** gap: for seed ``s``,
``gap_s = metric(reference, s) - metric(method, s)`` (positive: the method
loses), read with :mod:`prunedyn.analysis.seeds` (mean ± sd over the seeds and
the book's verdict rule).

The second stage of claim 4 (a node-pruned network compacted, then pruned by
weight and fine-tuned) is compared with the dense network trained as many
epochs in all (:func:`staged_table`); its weight sparsity is counted against
the weights of the *original* architecture, so removed nodes count as removed
weights (:func:`prunedyn.book.tradeoffs.total_weight_sparsity`).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import pandas as pd

from prunedyn.analysis.seeds import paired
from prunedyn.book.tradeoffs import total_weight_sparsity

#: The labels of the BatchNorm-aware comparison, in display order, and their names in tables and figures.
METHODS: Dict[str, str] = {
    "dense": "dense (L2 5e-4, every parameter)",
    "swp-l2": "SWP + L2 (every parameter)",
    "swp-l2-weights": "SWP + L2 (conv/linear weights only)",
    "swp-l2-bn": "SWP + L2 (BatchNorm scales only)",
    "swp-l1": "SWP + L1 (every parameter)",
    "swp-group-lasso": "SWP + group lasso (filters)",
    "slimming": "network slimming (L1 on BatchNorm scales)",
}


def method_of(label: str) -> str:
    """The method of a label: ``"slimming@0.0057"`` (a method at another lambda) -> ``"slimming"``."""
    return str(label).split("@", 1)[0]


def describe(label: str) -> str:
    """A label's readable name: the method's (:data:`METHODS`), with its lambda when the label gives one."""
    base, _, lam = str(label).partition("@")
    return METHODS.get(base, base) + (f", lambda {lam}" if lam else "")


def _check(table: pd.DataFrame, labels: Sequence[str], metric: str) -> None:
    missing = [c for c in ("label", "seed", metric) if c not in table.columns]
    if missing:
        raise KeyError(f"the table has no column {missing[0]!r}; have {list(table.columns)}")
    absent = [x for x in labels if not table["label"].eq(x).any()]
    if absent:
        raise KeyError(f"label {absent[0]!r} not in the table; have {sorted(table['label'].unique())}")


def method_table(table: pd.DataFrame, metric: str, labels: Optional[Sequence[str]] = None,
                 reference: str = "dense", nodes: str = "dead_node_fraction") -> pd.DataFrame:
    """One row per method (index: label): seeds, dead share (column ``nodes``: e.g. the share of a
    VGG's conv filters instead of all its nodes), weight sparsity and ``metric``
    (mean and sd over seeds), and the gap ``reference - method`` paired by seed (mean, sd, min,
    max) with its verdict: ``"loses"`` when every seed loses, ``"gains"`` when every seed gains,
    else ``"no clear difference"``."""
    if labels is None:  # every method of METHODS the table has, each at all its lambdas
        labels = [x for m in METHODS for x in dict.fromkeys(table["label"]) if method_of(x) == m]
    _check(table, [*labels, reference], metric)
    rows = []
    for label in labels:
        g = table[table["label"] == label]
        d = paired(table, metric, reference, label, by="label")
        verdict = {"higher": "loses", "lower": "gains"}.get(d.verdict(), "no clear difference")
        rows.append({
            "label": label, "method": describe(label), "seeds": int(g["seed"].nunique()),
            "dead_mean": g[nodes].mean(), "dead_sd": g[nodes].std(ddof=1),
            "sparsity_mean": g["weight_sparsity"].mean(),
            "metric_mean": g[metric].mean(), "metric_sd": g[metric].std(ddof=1),
            "gap_mean": d.mean, "gap_sd": d.std, "gap_min": d.min, "gap_max": d.max,
            "verdict": verdict if label != reference else "",
        })
    return pd.DataFrame(rows).set_index("label")


def staged_table(table: pd.DataFrame, metric: str, source: str = "swp-l2", staged: str = "compact-then-magnitude",
                 control: str = "dense-more", reference: str = "dense",
                 nodes: str = "dead_node_fraction", matched: Optional[str] = None) -> pd.DataFrame:
    """Claim 4, one row per seed and arm: ``arm`` (``source``: the node-pruned network;
    ``staged``: it compacted, weight-pruned further and fine-tuned), ``epochs`` (in all),
    ``nodes_alive``, the dead share (column ``nodes``, e.g. VGG-16's filter share; of the arm's own
    network: the staged arm's nodes are the source's alive ones), ``total_sparsity`` (against the original architecture's weights, taken from
    the ``reference`` run of the seed), ``metric`` and ``gap``: the dense network's metric at
    the same total epochs minus the arm's (``reference`` for the source, ``control`` -- the dense
    network trained as long as the second stage -- for the staged arm). ``matched``: the label of
    the matched-sparsity control, the dense network magnitude-pruned to the staged arm's total
    sparsity and fine-tuned as long (its gap against ``control`` too); an arm of its own."""
    _check(table, [source, staged, control, reference, *([matched] if matched else [])], metric)
    for col in ("weights", "nonzero_weights", nodes):
        if col not in table.columns:
            raise KeyError(f"the table has no column {col!r}: record the sweep with record_sweep (it counts the weights)")
    by = {(r["label"], int(r["seed"])): r for _, r in table.iterrows()}
    seeds = sorted(int(s) for s in table.loc[table["label"] == staged, "seed"])
    rows = []
    for s in seeds:
        dense_weights = int(by[(reference, s)]["weights"])
        arms = ((source, reference), (staged, control), *(((matched, control),) if matched else ()))
        for arm, ref in arms:
            r = by[(arm, s)]
            before = {staged: source, matched: reference}.get(arm)  # the run it started from
            epochs = int(r["epochs_completed"]) + (int(by[(before, s)]["epochs_completed"]) if before else 0)
            rows.append({
                "seed": s, "arm": arm, "epochs": epochs, "nodes_alive": int(r["nodes_alive"]),
                nodes: float(r[nodes]),
                "total_sparsity": total_weight_sparsity(int(r["nonzero_weights"]), dense_weights),
                metric: float(r[metric]), "gap": float(by[(ref, s)][metric]) - float(r[metric]),
            })
    return pd.DataFrame(rows)


def staged_summary(staged: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per arm of :func:`staged_table`: mean and sd over seeds of ``total_sparsity``, ``metric``
    and ``gap``, and the number of seeds."""
    cols = ["total_sparsity", metric, "gap"]
    g = staged.groupby("arm", sort=False)[cols]
    out = g.mean().add_suffix("_mean").join(g.std(ddof=1).add_suffix("_sd"))
    out["seeds"] = g.size()
    return out


def gap_values(table: pd.DataFrame, metric: str, label: str, reference: str = "dense") -> np.ndarray:
    """The per-seed gaps ``reference - label`` of ``metric``, in seed order."""
    return np.asarray(paired(table, metric, reference, label, by="label").values, dtype=float)


def schedule_table(table: pd.DataFrame, metric: str, pruned: str = "swp-l2", reference: str = "dense",
                   nodes: str = "dead_node_fraction") -> pd.DataFrame:
    """The training budget as the variable: per number of epochs (index), the ``pruned`` runs'
    dead share and ``metric`` and the ``reference`` runs' ``metric`` (mean and sd over seeds),
    and the gap ``reference - pruned`` paired by seed at the same epochs (mean, sd, min, max).
    Input: a labelled sweep table with an ``epochs`` column (a grid over ``epochs``)."""
    _check(table, [pruned, reference], metric)
    if "epochs" not in table.columns:
        raise KeyError("the table has no column 'epochs': a schedule sweep varies epochs")
    rows = []
    for epochs, g in table.groupby("epochs"):
        p, r = g[g["label"] == pruned], g[g["label"] == reference]
        if p.empty:  # an arm run at some of the budgets only
            continue
        d = paired(g, metric, reference, pruned, by="label")
        rows.append({
            "epochs": int(epochs), "seeds": len(d.values),
            "dead_mean": p[nodes].mean(), "dead_sd": p[nodes].std(ddof=1),
            "metric_mean": p[metric].mean(), "metric_sd": p[metric].std(ddof=1),
            "reference_mean": r[metric].mean(), "reference_sd": r[metric].std(ddof=1),
            "gap_mean": d.mean, "gap_sd": d.std, "gap_min": d.min, "gap_max": d.max,
        })
    return pd.DataFrame(rows).set_index("epochs")
