"""Helpers of chapters 3 (node death) and 4 (the dependency): per-seed tables and the texts
glued into the prose.

Every table function takes ``{run: [RunResult per seed]}`` (what
:func:`prunedyn.book.study.seeded_comparison` returns) and gives a long table
with one row per run, seed and whatever else, so that each claim of the
chapters is read over all seeds. The chapters' notebooks run with
``cwd=chapters``, so they ``import _ch03_04``; the book does not render this
file.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from prunedyn.analysis import dependency as dep
from prunedyn.analysis.seeds import mean_std_text
from prunedyn.core.pruning import prunable_weights
from prunedyn.book.study import load_model
from prunedyn.structure.surgery import compact

LAYERS = ("net.fc1", "net.fc2")


def short(layer: str) -> str:
    return str(layer).split(".")[-1]


# --------------------------------------------------------------------------
# texts for glue
# --------------------------------------------------------------------------
def ms(values: Iterable[float], fmt: str = ".2f") -> str:
    """``"0.55 ± 0.02"``: mean ± std (ddof=1) over seeds."""
    return mean_std_text(list(values), fmt)


def span(values: Iterable[float], fmt: str = ".0f") -> str:
    """``"3–5"`` (or ``"4"`` when every seed agrees; ``"-0.6 to -0.4"`` with negative
    values): the range over seeds."""
    v = [float(x) for x in values]
    lo, hi = format(min(v), fmt), format(max(v), fmt)
    if lo == hi:
        return lo
    return f"{lo} to {hi}" if min(v) < 0 else f"{lo}–{hi}"


def glue_all(texts: Mapping[str, str]) -> None:
    """``myst_nb.glue`` every ``key: text`` without displaying it."""
    from myst_nb import glue

    for k, v in texts.items():
        glue(k, str(v), display=False)


def mean_std_frame(
    table: pd.DataFrame, by: Sequence[str], cols: Sequence[str], fmt="{:.2f}"
) -> pd.DataFrame:
    """Per group of ``by``: ``"mean ± std"`` of every column of ``cols`` over the seeds (n in
    the last column).

    ``fmt``: one format spec for all columns, or ``{column: spec}`` (columns not in it: ``".2f"``).
    """
    g = table.groupby(list(by), sort=False)
    spec = (lambda c: fmt.get(c, ".2f")) if isinstance(fmt, dict) else (lambda c: fmt)
    out = pd.DataFrame({c: g[c].apply(lambda s, c=c: ms(s, spec(c))) for c in cols})
    out["seeds"] = g.size()
    return out


# --------------------------------------------------------------------------
# per seed
# --------------------------------------------------------------------------
def per_seed(
    results: Mapping[str, Sequence], fn: Callable, keys: Optional[Sequence[str]] = None
) -> pd.DataFrame:
    """``fn(result)`` (a DataFrame) for every run and seed, with ``run`` and ``seed``
    columns in front."""
    frames = []
    for k in keys if keys is not None else list(results):
        for r in results[k]:
            df = fn(r).copy()
            df.insert(0, "seed", int(r.config.seed))
            df.insert(0, "run", k)
            frames.append(df)
    return pd.concat(frames, ignore_index=True)


def final_layers(result) -> pd.DataFrame:
    """Per hidden layer at the last epoch: dead counts by side (:func:`dep.layer_status`) and the
    share of dead nodes that are dead on one side only."""
    ls = dep.layer_status(result.layers)
    last = ls[ls["epoch"] == ls["epoch"].max()].copy()
    last["one_sided"] = last["in_only"] + last["out_only"]
    return last[
        [
            "layer",
            "nodes",
            "dead",
            "dead_fraction",
            "in_dead",
            "out_dead",
            "in_only",
            "out_only",
            "both",
            "one_sided",
        ]
    ]


def final_runs(results: Mapping[str, Sequence]) -> pd.DataFrame:
    """One row per run and seed: test accuracy, weight sparsity, dead fractions per layer and
    over all,
    in-/out-dead counts per layer, and the share of dead nodes dead on one side only."""
    rows = []
    for k, rs in results.items():
        for r in rs:
            row = {
                "run": k,
                "seed": int(r.config.seed),
                "test_acc": r.summary["test_accuracy"],
                "weight_sparsity": r.summary["weight_sparsity"],
                "all_dead": r.summary["dead_node_fraction"],
            }
            fl = final_layers(r)
            for _, x in fl.iterrows():
                n = short(x["layer"])
                row[f"{n}_dead"] = x["dead_fraction"]
                row[f"{n}_in_dead"] = int(x["in_dead"])
                row[f"{n}_out_dead"] = int(x["out_dead"])
            dead = fl["dead"].sum()
            row["one_sided_share"] = fl["one_sided"].sum() / dead if dead else 0.0
            m = r.metrics
            row["max_weight_sparsity"] = (
                float(m["weight_sparsity"].max()) if "weight_sparsity" in m else np.nan
            )
            rows.append(row)
    return pd.DataFrame(rows)


def in_only_exposure(result) -> pd.DataFrame:
    """Per layer: node-epochs spent dead on the incoming side only, over node-epochs spent dead
    at all
    (how long nodes sit in-dead with their outgoing weights still there), and the in-only count
    at the end."""
    ls = dep.layer_status(result.layers)
    last = ls["epoch"].max()
    rows = []
    for layer, d in ls.groupby("layer", sort=False):
        dead = d["dead"].sum()
        rows.append(
            {
                "layer": layer,
                "in_only_share": d["in_only"].sum() / dead if dead else 0.0,
                "in_only_end": int(d.loc[d["epoch"] == last, "in_only"].iloc[0]),
            }
        )
    return pd.DataFrame(rows)


def death_sides(result) -> pd.DataFrame:
    """:func:`dep.death_side_counts` of the run (which side of each node died first,
    the gaps, revivals)."""
    return dep.death_side_counts(dep.first_death(result.nodes))


def side_rms_table(
    result, fans: Dict[str, tuple], epochs: Sequence[int] = (0, 4, 8)
) -> pd.DataFrame:
    """Per layer and epoch: median over the *alive* nodes of the rms weight on each
    side and of their ratio."""
    s = dep.side_rms(result.nodes, fans)
    s = s[~(s["in_dead"].astype(bool) | s["out_dead"].astype(bool)) & s["epoch"].isin(list(epochs))]
    return s.groupby(["layer", "epoch"])[["in_rms", "out_rms", "rms_ratio"]].median().reset_index()


def intervention_sides(
    groups: Mapping[str, Mapping[str, Sequence]], fans: Dict[str, tuple], keys: Sequence[str]
) -> pd.DataFrame:
    """Per initialisation (``groups``: label -> a seeded comparison), run, layer and seed: how
    many nodes
    died incoming side first (``in``), outgoing side first (``out``), in the same epoch (``same``),
    ``in_share = in / (in + out)``, the median out/in rms ratio of the alive nodes at epochs 0 and 4
    (``ratio_0``, ``ratio_4``) and the run's test accuracy."""
    frames = []
    for label, seeded in groups.items():
        sides = per_seed(seeded, death_sides, keys)
        rms = per_seed(seeded, lambda r: side_rms_table(r, fans, epochs=(0, 4)), keys)
        ratio = rms.pivot_table(index=["run", "seed", "layer"], columns="epoch", values="rms_ratio")
        ratio.columns = [f"ratio_{e}" for e in ratio.columns]
        df = sides.merge(ratio.reset_index(), on=["run", "seed", "layer"])
        df["in_share"] = df["in"] / (df["in"] + df["out"])
        df["test_acc"] = [
            next(r.summary["test_accuracy"] for r in seeded[k] if r.config.seed == s)
            for k, s in zip(df["run"], df["seed"])
        ]
        df.insert(0, "init", label)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def intervention_frame(flip: pd.DataFrame) -> pd.DataFrame:
    """:func:`intervention_sides` as the chapter shows it: per initialisation, run and layer, the
    counts summed over the seeds and the ratios' ranges over them."""
    out = []
    for (init, run, layer), g in flip.groupby(["init", "run", "layer"], sort=False):
        out.append(
            {
                "initialisation": init,
                "run": f"SWP + {run.upper()}",
                "layer": layer.replace("net.", ""),
                "incoming side first": int(g["in"].sum()),
                "outgoing side first": int(g["out"].sum()),
                "same epoch": int(g["same"].sum()),
                "out/in rms ratio, epoch 0": span(g["ratio_0"], ".2f"),
                "epoch 4": span(g["ratio_4"], ".2f"),
            }
        )
    return pd.DataFrame(out)


def follow_table(arms: Mapping[str, Sequence], layer: str) -> pd.DataFrame:
    """Per arm (label -> runs, one per seed) and seed: of ``layer``'s nodes at the end of
    training, how
    many are in-dead, out-dead and dead on both sides; ``both_share``: both over dead; the test
    accuracy."""
    rows = []
    for arm, results in arms.items():
        for r in results:
            end = r.layers[
                (r.layers["layer"] == layer) & (r.layers["epoch"] == r.layers["epoch"].max())
            ].iloc[0]
            dead = int(end["nodes"] - end["alive"])
            rows.append(
                {
                    "arm": arm,
                    "seed": int(r.config.seed),
                    "in_dead": int(end["in_dead"]),
                    "out_dead": int(end["out_dead"]),
                    "both_dead": int(end["both_dead"]),
                    "dead": dead,
                    "both_share": end["both_dead"] / dead if dead else float("nan"),
                    "test_acc": r.summary["test_accuracy"],
                }
            )
    return pd.DataFrame(rows)


def follow_frame(follow: pd.DataFrame) -> pd.DataFrame:
    """:func:`follow_table` as the chapter shows it: ranges over the seeds."""
    return pd.DataFrame(
        [
            {
                "decay": arm,
                "fc1 nodes dead": span(g["dead"]),
                "incoming side dead": span(g["in_dead"]),
                "outgoing side dead": span(g["out_dead"]),
                "both sides dead": span(g["both_dead"]),
                "test accuracy (%)": span(100 * g["test_acc"], ".2f"),
            }
            for arm, g in follow.groupby("arm", sort=False)
        ]
    )


def death_order(result, thresholds=(0.1, 0.25)) -> pd.DataFrame:
    return dep.layer_death_order(result.layers, thresholds=thresholds)


@torch.no_grad()
def compaction(result, example: torch.Tensor) -> pd.DataFrame:
    """Compaction of the run's final network, and what a second pass over the compacted network
    still removes.

    :func:`compact` removes the nodes that are dead in the network it is given, in one pass. A node
    whose outgoing weights all lead to removed (out-dead) nodes, or whose incoming weights all come
    from removed (in-dead) nodes, is dead only in the compacted network; a second pass finds those.
    """
    model = load_model(result)
    small, rep = compact(model, example)
    small2, rep2 = compact(small, example)
    nonzero = sum(int((w != 0).sum()) for w in prunable_weights(small).values())
    w1, w2 = list(rep.widths_after.values()), list(rep2.widths_after.values())
    return pd.DataFrame(
        [
            {
                "widths": "-".join(str(v) for v in w1),
                "removed": sum(rep.widths_before.values()) - sum(w1),
                "removed_second_pass": sum(w1) - sum(w2),
                "params_before": rep.params_before,
                "params_after": rep.params_after,
                "params_ratio": rep.params_after / rep.params_before,
                "flops_ratio": rep.flops_after / rep.flops_before,
                "nonzero_weights_after": nonzero,
                "nonzero_share_after": nonzero / rep.params_after,
                "max_abs_diff": max(rep.max_abs_diff, rep2.max_abs_diff),
                "rel_diff": max(rep.rel_diff, rep2.rel_diff),
                "same_predictions": same_predictions(model, small2, example),
            }
        ]
    )


@torch.no_grad()
def same_predictions(a, b, example: torch.Tensor) -> bool:
    """Whether two classifiers predict the same class for every example."""
    return bool((a.eval()(example).argmax(1) == b.eval()(example).argmax(1)).all())


# --------------------------------------------------------------------------
# chapter 4: the imbalance
# --------------------------------------------------------------------------
def decay(result, alive_only: bool = True) -> pd.DataFrame:
    """:func:`dep.imbalance_decay` of the run; dead nodes left out (``alive_only``) by default:
    the law is
    about the nodes that are still there, and a dead node's imbalance is just its bias (or 0)."""
    return dep.imbalance_decay(result.nodes, dep.run_dynamics(result), alive_only=alive_only)


def decay_fit(result, window, alive_only: bool = True) -> pd.DataFrame:
    d = decay(result, alive_only)
    return dep.fit_imbalance_decay(d, dep.run_dynamics(result), window)


def balance(result, epochs: Sequence[int]) -> pd.DataFrame:
    """:func:`dep.balance_table` (medians over the alive nodes) of one run."""
    return dep.balance_table({"_": result.nodes}, epochs).drop(columns="run")


def drive_agreement(result) -> pd.DataFrame:
    return dep.drive_agreement(dep.l1_drive(result.nodes, dep.run_dynamics(result)))


def aligned(result, side: str = "in", window=(-6, 6)) -> pd.DataFrame:
    """Median norms of both sides around the first death of ``side``, pooled over the
    hidden layers."""
    first = dep.first_death(result.nodes)
    return dep.aligned_summary(dep.aligned_to_death(result.nodes, first, side=side, window=window))


def loss_spikes(result, factor: float = 2.0) -> list:
    """Epochs whose training loss is more than ``factor`` times the previous epoch's
    (the runs' loss spikes)."""
    m = result.metrics.sort_values("epoch")
    loss = m["train_loss"].to_numpy()
    ep = m["epoch"].to_numpy()
    return [int(ep[i]) for i in range(1, len(loss)) if loss[i] > factor * loss[i - 1]]
