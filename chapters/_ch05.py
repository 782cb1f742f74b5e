"""Helpers of chapter 5 (reproducing the MLP result, against baselines).

Tables and prose strings built from the recorded sweeps (``chapters/results``)
and from the runs the chapter computes, so that every number in the chapter's
text comes from an executed cell (MyST-NB glue). Not part of the library: the
notebook imports it from its own folder.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from prunedyn import prunable_weights
from prunedyn.analysis import seeds as S
from prunedyn.book import tradeoffs as T
from prunedyn.run.experiments import initial_model_from_run
from prunedyn.book.study import RunResult, run_many

#: The book's running example (chapters 1 to 4), as named in the phase sweep's table.
STUDY_SETTING = "swp+l2, lam=0.005, sigma=0.003"
#: The recorded baseline that removes nodes on purpose (half of each hidden layer's units).
UNIT_BASELINE = "targeted-dropout-unit"
#: Weights of the dense MLP 784-300-100-10 (biases not counted).
DENSE_WEIGHTS = T.mlp_weights([784, 300, 100, 10])


# ---------------------------------------------------------------- formatting
def pm(values: Iterable[float], fmt: str = ".4f", scale: float = 1.0, unit: str = "") -> str:
    """``"0.0138 ± 0.0029"``: mean ± sample standard deviation (ddof=1)."""
    return S.mean_std_text(list(values), fmt, scale, unit)


def pct(x: float, digits: int = 0) -> str:
    return f"{100 * x:.{digits}f}%"


def pct_range(values: Iterable[float], digits: int = 0) -> str:
    v = [100 * float(x) for x in values]
    lo, hi = f"{min(v):.{digits}f}", f"{max(v):.{digits}f}"
    return f"{lo}%" if lo == hi else f"{lo}-{hi}%"


def num_range(values: Iterable[float], fmt: str = ".4f") -> str:
    v = [float(x) for x in values]
    lo, hi = format(min(v), fmt), format(max(v), fmt)
    return lo if lo == hi else f"{lo}-{hi}"


def seeds_text(seeds: Sequence[int]) -> str:
    s = [str(int(x)) for x in seeds]
    return s[0] if len(s) == 1 else ", ".join(s[:-1]) + " and " + s[-1]


def glue_texts(texts: Mapping[str, str]) -> None:
    """Glue every ``key: text`` pair (pre-formatted strings, nothing displayed)."""
    from myst_nb import glue

    for key, value in texts.items():
        glue(key, str(value), display=False)


# ---------------------------------------------------------------- the headline (recorded)
def per_seed(table: pd.DataFrame, setting: str, metric: str = "test_accuracy") -> pd.Series:
    return table[table["setting"] == setting].set_index("seed")[metric].sort_index()


def headline_recorded(
    phase: pd.DataFrame,
    baselines: pd.DataFrame,
    setting: str = STUDY_SETTING,
    unit: str = UNIT_BASELINE,
) -> pd.DataFrame:
    """Per seed: the SWP setting of the phase sweep and the unit baseline, each against the dense
    run of the same seed (the two recorded tables share their dense runs)."""
    d_ph, d_bl = per_seed(phase, "dense"), per_seed(baselines, "dense")
    seeds = sorted(
        set(d_ph.index)
        & set(d_bl.index)
        & set(per_seed(phase, setting).index)
        & set(per_seed(baselines, unit).index)
    )
    rows = []
    for s in seeds:
        a_swp, a_td = per_seed(phase, setting)[s], per_seed(baselines, unit)[s]
        rows.append(
            {
                "seed": s,
                "dense": d_ph[s],
                "SWP+L2": a_swp,
                "TD-unit": a_td,
                "SWP nodes removed": per_seed(phase, setting, "nodes_removed")[s],
                "TD nodes removed": per_seed(baselines, unit, "nodes_removed")[s],
                "gap SWP": d_ph[s] - a_swp,
                "gap TD": d_bl[s] - a_td,
            }
        )
    out = pd.DataFrame(rows)
    out["gap SWP - gap TD"] = out["gap SWP"] - out["gap TD"]
    return out


def with_mean_sd(table: pd.DataFrame, key: str = "seed") -> pd.DataFrame:
    """``table`` with two more rows: the mean and the standard deviation over its rows."""
    num = table.drop(columns=[key])
    m, s = num.mean().to_frame().T, num.std(ddof=1).to_frame().T
    m.insert(0, key, "mean")
    s.insert(0, key, "sd")
    t = table.copy()
    t[key] = t[key].astype(str)
    return pd.concat([t, m, s], ignore_index=True)


# ---------------------------------------------------------------- computed runs
def run_table(results: Mapping[str, Sequence[RunResult]]) -> pd.DataFrame:
    """One row per run and seed: accuracy, node and weight counts of the chapter's own runs."""
    from prunedyn.book.study import summary_table

    t = summary_table(results)
    t["nodes_removed"] = t["dead_node_fraction"]
    t["param_ratio"] = t["params_dense"] / t["params_compact"]
    return t


def death_by_epoch(results: Sequence[RunResult], epochs: Sequence[int]) -> pd.DataFrame:
    """Share of hidden nodes dead at the given epochs, one row per seed (from each
    run's metrics.csv)."""
    rows = []
    for r in results:
        m = r.metrics.set_index("epoch")["dead_node_fraction"]
        rows.append({"seed": r.config.seed, **{f"epoch {e}": float(m.loc[e]) for e in epochs}})
    return pd.DataFrame(rows)


def compacted_sparsity(source: RunResult, data) -> Dict[str, float]:
    """Weights of the compacted network of ``source``, how many are nonzero, and its
    own sparsity."""
    small = initial_model_from_run(source.folder, data, compact_first=True)
    w = list(prunable_weights(small).values())
    n = sum(p.numel() for p in w)
    nz = sum(int(p.count_nonzero()) for p in w)
    return {"weights": n, "nonzero": nz, "sparsity": 1 - nz / n}


def staged_requests(
    sources: Mapping[int, RunResult],
    dense: Mapping[int, RunResult],
    compacted: Mapping[int, dict],
    levels: Sequence[float],
    epochs: int,
) -> List[tuple]:
    """The second stage of the node-then-weight experiment, and its two controls, per seed.

    Staged: the compacted SWP network, global magnitude pruning of the share ``f`` of its
    remaining weights at the first step (its zeros kept), no regularizer, ``epochs`` epochs.
    Control (same epochs): the dense network of the same seed trained ``epochs`` more epochs the
    same way (restarted optimizer, no pruning, no regularizer), so both arms have the same total
    epochs. Control (same sparsity, per ``f``): the same dense network, global magnitude pruning
    at the first step to the staged network's total sparsity (:func:`matched_sparsity`), the
    same ``epochs`` of fine-tuning.
    """
    reqs = []
    for seed, src in sources.items():
        z = compacted[seed]["sparsity"]
        for f in levels:
            reqs.append(
                (
                    "mlp-mnist",
                    [
                        f"init.run={src.folder}",
                        "pruner.kind=magnitude",
                        "pruner.scope=global",
                        f"pruner.sparsity={z + (1 - z) * f!r}",
                        "pruner.start_epoch=0",
                        "regularizer.kind=none",
                        "regularizer.lam=0",
                        f"epochs={epochs}",
                        f"seed={seed}",
                    ],
                )
            )
        reqs.append(
            (
                "mlp-mnist",
                [
                    f"init.run={dense[seed].folder}",
                    "init.compact=false",
                    "pruner.kind=none",
                    "regularizer.kind=none",
                    "regularizer.lam=0",
                    f"epochs={epochs}",
                    f"seed={seed}",
                ],
            )
        )
        for f in levels:
            reqs.append(
                (
                    "mlp-mnist",
                    [
                        f"init.run={dense[seed].folder}",
                        "init.compact=false",
                        "pruner.kind=magnitude",
                        "pruner.scope=global",
                        f"pruner.sparsity={matched_sparsity(compacted[seed], f)!r}",
                        "pruner.start_epoch=0",
                        "regularizer.kind=none",
                        "regularizer.lam=0",
                        f"epochs={epochs}",
                        f"seed={seed}",
                    ],
                )
            )
    return reqs


def matched_sparsity(compacted: dict, f: float) -> float:
    """The total weight sparsity (against the dense network's weights) of the compacted network
    ``compacted`` (:func:`compacted_sparsity`) after the share ``f`` of its nonzero weights is
    removed."""
    return 1 - compacted["nonzero"] * (1 - f) / DENSE_WEIGHTS


MATCHED = "dense, magnitude to f = {f}'s sparsity"


def staged_table(sources, dense, compacted, levels, results: Sequence[RunResult]) -> pd.DataFrame:
    """One row per seed and arm (``f`` = share of the remaining weights removed;
    ``dense``: the control)."""
    rows, i = [], 0
    for seed in sources:
        per_arm = {}
        for f in levels:
            per_arm[f] = results[i]
            i += 1
        control = results[i]
        i += 1
        matched = {}
        for f in levels:
            matched[f] = results[i]
            i += 1
        acc_long = control.summary["test_accuracy"]
        acc_40 = dense[seed].summary["test_accuracy"]
        rows.append(
            {
                "seed": seed,
                "arm": "source (40 epochs)",
                "f": np.nan,
                "nonzero weights": compacted[seed]["nonzero"],
                "total sparsity": T.total_weight_sparsity(
                    compacted[seed]["nonzero"], DENSE_WEIGHTS
                ),
                "nodes alive": sources[seed].summary["nodes_alive"],
                "accuracy": sources[seed].summary["test_accuracy"],
                "gap to dense, same epochs": acc_40 - sources[seed].summary["test_accuracy"],
            }
        )
        for f, r in per_arm.items():
            c = T.weight_counts(r.folder)
            rows.append(
                {
                    "seed": seed,
                    "arm": f"f = {f}",
                    "f": f,
                    "nonzero weights": c["nonzero"],
                    "total sparsity": T.total_weight_sparsity(c["nonzero"], DENSE_WEIGHTS),
                    "nodes alive": r.summary["nodes_alive"],
                    "accuracy": r.summary["test_accuracy"],
                    "gap to dense, same epochs": acc_long - r.summary["test_accuracy"],
                }
            )
        rows.append(
            {
                "seed": seed,
                "arm": "dense (40 + more epochs)",
                "f": np.nan,
                "nonzero weights": DENSE_WEIGHTS,
                "total sparsity": 0.0,
                "nodes alive": 400,
                "accuracy": acc_long,
                "gap to dense, same epochs": 0.0,
            }
        )
        for f, r in matched.items():
            c = T.weight_counts(r.folder)
            rows.append(
                {
                    "seed": seed,
                    "arm": MATCHED.format(f=f),
                    "f": np.nan,
                    "nonzero weights": c["nonzero"],
                    "total sparsity": T.total_weight_sparsity(c["nonzero"], DENSE_WEIGHTS),
                    "nodes alive": r.summary["nodes_alive"],
                    "accuracy": r.summary["test_accuracy"],
                    "gap to dense, same epochs": acc_long - r.summary["test_accuracy"],
                }
            )
    return pd.DataFrame(rows)


def staged_summary(staged: pd.DataFrame) -> pd.DataFrame:
    """Per arm: mean and sd over seeds of every numeric column."""
    cols = ["total sparsity", "nodes alive", "accuracy", "gap to dense, same epochs"]
    g = staged.groupby("arm", sort=False)[cols]
    out = g.mean().add_suffix(" mean").join(g.std(ddof=1).add_suffix(" sd"))
    out["seeds"] = g.size()
    return out[
        [c for pair in zip([f"{c} mean" for c in cols], [f"{c} sd" for c in cols]) for c in pair]
        + ["seeds"]
    ]


# ---------------------------------------------------------------- masks (interop)
def transplant_accuracy(swp_model, dense_model, data, evaluate) -> float:
    """The SWP network's zero pattern imposed on the trained dense network, no retraining."""
    import copy

    from prunedyn.core.interop import export_masks, import_masks

    t = copy.deepcopy(dense_model)
    import_masks(t, export_masks(swp_model))
    return float(evaluate(t, data.x_test, data.y_test, "cpu")[1])


# ---------------------------------------------------------------- speed
def speed_value(table: pd.DataFrame, version: str, batch: int, column: str = "speedup") -> float:
    row = table[(table["version"] == version) & (table["batch"] == batch)]
    return float(row[column].iloc[0])


def speed_texts(table: pd.DataFrame, prefix: str) -> Dict[str, str]:
    """``<prefix>_<version>_b<batch>``: speedup over dense (``1.19x``), plus the FLOP
    ratio and its share."""
    out = {}
    for _, r in table.iterrows():
        out[f"{prefix}_{r['version']}_b{int(r['batch'])}"] = f"{r['speedup']:.2f}x"
        if r["version"] == "compact":
            out[f"{prefix}_share_b{int(r['batch'])}"] = pct(r["speedup_over_flop_ratio"])
            out[f"{prefix}_flop_ratio"] = f"{r['flop_ratio']:.2f}"
    return out


def pin_threads(n: int = 1):
    """Context manager: torch intra-op threads pinned to ``n`` for a timing measurement."""
    from contextlib import contextmanager

    @contextmanager
    def _pinned():
        old = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(old)

    return _pinned()


def and_join(items: Iterable[str]) -> str:
    """``"a, b and c"``."""
    s = [str(x) for x in items]
    return "" if not s else s[0] if len(s) == 1 else ", ".join(s[:-1]) + " and " + s[-1]


def diff_words(d, higher: str, lower: str, none: str, margin: float = 0.0) -> str:
    """Words for a paired difference by the book's rule (:meth:`Difference.verdict`)."""
    return {"higher": higher, "lower": lower}.get(d.verdict(margin), none)


# ---------------------------------------------------------------- the cost of SWP during training
def swp_cost_texts(bandwidth: pd.DataFrame, overhead: pd.DataFrame) -> Dict[str, str]:
    """Glue texts from benchmarks/results/swp-bandwidth-cpu.csv (one clock) and
    pruning-overhead-cpu.csv.

    ``swp_<model>_<path>_x``: the step over a copy of the same bytes (``2.4x``);
    ``swp_<model>_<path>_share``: over a training step; ``ov_<path>_w<width>``:
    over the optimised training step (``ov_plain_...`` over the plain one);
    verdicts against the targets (2x of the copy for full-width VGG-16, 3% of
    the optimised step).
    """
    out = {}
    for _, r in bandwidth.iterrows():
        model = str(r["model"]).replace(".", "")  # vgg0.25 -> vgg025: glue names without dots
        out[f"swp_{model}_{r['path']}_x"] = f"{r['x_memory_bound']:.1f}x"
        out[f"swp_{model}_{r['path']}_share"] = pct(r["swp_share_of_train_step"], 1)
        out[f"swp_{model}_{r['path']}_ms"] = f"{r['swp_ms']:.2f} ms"
        out[f"swp_{model}_copy_ms"] = f"{r['copy_ms']:.2f} ms"
    vgg = bandwidth[(bandwidth["model"] == "vgg1") & (bandwidth["path"] == "counter")]
    if len(vgg):
        x = float(vgg["x_memory_bound"].iloc[0])
        out["swp_bound_verdict"] = "is met" if x <= 2.0 else f"is not met on this CPU ({x:.1f}x)"
    for _, r in overhead.iterrows():
        w = f"{r['width']:g}".replace(".", "")
        out[f"ov_{r['swp_path']}_w{w}"] = pct(r["swp_fraction_of_optimised"], 1)
        out[f"ov_plain_{r['swp_path']}_w{w}"] = pct(r["swp_fraction"], 1)
        out[f"ov_train_ms_w{w}"] = f"{r['train_step_ms']:.0f} ms"
        out[f"ov_opt_ms_w{w}"] = f"{r['optimised_train_step_ms']:.0f} ms"
    full = overhead[(overhead["swp_path"] == "counter") & (overhead["width"] == 1.0)]
    if len(full):
        share = float(full["swp_fraction_of_optimised"].iloc[0])
        out["ov_verdict"] = "is met" if share <= 0.03 else f"is not met ({pct(share, 1)})"
    return out


def compaction_texts(table: pd.DataFrame, clock: str = "cpu") -> Dict[str, str]:
    """Glue texts from benchmarks/results/compaction-speed-cpu.csv.

    ``cp_<model>_<version>``: measured speedup over dense / FLOP ratio (``0.94``)
    on ``clock``; ``cp_<model>_<version>_x``: the speedup (``2.41x``);
    ``cp_<model>_ratio``: the FLOP ratio; ``cp_met``: the models whose best
    compact version reaches 0.9, ``cp_missed`` the others. Model names lose
    their dots and slashes (``vgg16-w0.25`` -> ``vgg16w025``).
    """
    out, met, missed = {}, [], []
    rows = table[
        table["version"].str.startswith("compact") & ~table["version"].str.endswith("_eager")
    ]
    for model, group in rows.groupby("model", sort=False):
        key = "".join(ch for ch in str(model) if ch.isalnum())
        out[f"cp_{key}_ratio"] = f"{float(group['flop_ratio'].iloc[0]):.2f}"
        for _, r in group.iterrows():
            out[f"cp_{key}_{r['version']}"] = f"{r[f'speedup_over_flop_ratio_{clock}']:.2f}"
            out[f"cp_{key}_{r['version']}_x"] = f"{r[f'speedup_{clock}']:.2f}x"
        best = group.loc[group[f"speedup_over_flop_ratio_{clock}"].idxmax()]
        (met if best[f"speedup_over_flop_ratio_{clock}"] >= 0.9 else missed).append(
            f"{model} ({best['version']}, {best[f'speedup_over_flop_ratio_{clock}']:.2f})"
        )
    out["cp_met"] = ", ".join(met) or "none"
    out["cp_missed"] = ", ".join(missed) or "none"
    return out
