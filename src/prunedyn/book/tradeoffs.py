"""Trade-off analysis of sweeps: accuracy against nodes removed, weight sparsity, size and speed.

Everything here works on *tidy tables*: one row per run, as written by
:func:`prunedyn.run.sweeps.run_sweep` to ``summary.csv``. The columns are

- the **keys** of the run: the config keys the sweep varied, named
  ``section.key`` (``regularizer.kind``, ``regularizer.lam``, ``pruner.sigma``,
  ``pruner.sparsity``, ...; empty where a point did not set the key, i.e. the
  base config's value applies), an optional ``label`` (the name a sweep gives
  a baseline method), ``seed`` and ``run`` (the run's folder name);
- the **scalars** of the run's ``summary.json``: ``test_accuracy``,
  ``weight_sparsity``, ``nodes_total``, ``nodes_alive``, ``dead_node_fraction``,
  ``params_dense``, ``params_compact``, ``flops_dense``, ``flops_compact``, ...

:func:`load_table` reads such a table from a recorded CSV or from a sweep
folder, also while the sweep is still running (from the finished runs), and
:func:`tidy` adds the derived columns used throughout:

``method``
    the point's ``label`` if it has one; otherwise ``dense`` for a run
    without pruner, else ``swp+<regularizer>`` for stochastic weight pruning
    (the base config's pruner when the sweep did not set ``pruner.kind``) or
    ``<pruner kind>+<regularizer>`` for another pruner; ``base`` stands for a
    regularizer the sweep did not set.
``setting``
    ``method`` plus the keys that vary *within* that method, e.g.
    ``swp+l2, lam=0.005, sigma=0.003``: the runs of one setting differ only
    in their seed.
``nodes_removed``
    fraction of hidden nodes removed, :math:`1 - \\text{alive}/\\text{total}`
    (= ``dead_node_fraction``). For the MLPs of this book compaction removes
    every dead node (all consumers are Linear layers, into which the constant
    of an in-dead unit folds exactly), so this is also the fraction removed by
    :func:`prunedyn.structure.surgery.compact`.
``nodes_removed_count``
    the same as a number of nodes, ``nodes_total - nodes_alive``.
``param_ratio`` / ``flop_ratio``
    dense over compact parameters / FLOPs (compression and theoretical
    speedup from node removal; 1 when no node is dead).

Aggregation over seeds (:func:`aggregate`) gives, per setting and metric,
``<metric>_mean``, ``<metric>_std`` (sample standard deviation, ``ddof=1``;
NaN for a single seed) and the number of seeds ``n``. Comparisons with the
dense network (:func:`gap_to_dense`) are **paired by seed**: run ``s`` of a
setting and the dense run ``s`` share the initialisation and the data order,
so the gap is computed per seed and then averaged, as ShrinkBench recommends
(Blalock et al. 2020: same initial model, same budget, several seeds).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import pandas as pd
import yaml

from prunedyn.analysis import seeds as seed_stats

#: Run metrics that :func:`aggregate` summarises by default.
METRICS = (
    "test_accuracy",
    "weight_sparsity",
    "nodes_removed",
    "nodes_removed_count",
    "nodes_alive",
    "param_ratio",
    "flop_ratio",
    "params_compact",
    "flops_compact",
)

#: Columns that identify a run but are not settings.
NON_KEYS = ("seed", "run")


def key_columns(table: pd.DataFrame) -> List[str]:
    """The config-key columns of a table (``section.key``) plus ``label`` if present."""
    keys = [c for c in table.columns if "." in c]
    return (["label"] if "label" in table.columns else []) + keys


def _flatten(cfg: dict, prefix: str = "") -> Dict[str, object]:
    out: Dict[str, object] = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    return a == b


def _sweep_rows(folder: Path) -> Optional[pd.DataFrame]:
    """The summary table of a (possibly unfinished) sweep folder, rebuilt from its finished runs.

    ``sweep.yaml`` (written by :func:`prunedyn.run.sweeps.run_sweep` before any run
    starts) lists the variants and seeds. A finished run (one with
    ``summary.json``) belongs to the point whose resolved config agrees with
    the run's ``config.yaml`` on every field both have: matching on the
    recorded configs rather than on folder hashes keeps the loader valid when
    the library later gains config fields. Rows are in the sweep's order, as
    ``summary.csv`` will have them.
    """
    from prunedyn.run.config import load_config
    from prunedyn.run.sweeps import LABEL, format_value, in_run_order, reference_label

    spec_file = folder / "sweep.yaml"
    if not spec_file.exists():
        return None
    spec = yaml.safe_load(spec_file.read_text())
    finished = {}
    for done in sorted(folder.glob("*/summary.json")):
        cfg_file = done.parent / "config.yaml"
        if cfg_file.exists():
            finished[done.parent.name] = _flatten(yaml.safe_load(cfg_file.read_text()))
    rows = []
    points = [{**variant, "seed": seed} for variant in spec.get("variants") or [{}] for seed in spec.get("seeds") or [0]]
    points = in_run_order(points)  # as run_sweep runs and tables them: a "@label" point after its source
    runs_of: Dict[tuple, str] = {}
    for point in points:
        ref = reference_label(point)
        if ref is not None:
            if (ref, point["seed"]) not in runs_of:
                continue  # its source has not finished: neither has it
            point = {**point, "init.run": str(folder.resolve() / runs_of[(ref, point["seed"])])}
        overrides = [*(spec.get("set") or []), *(f"{k}={format_value(v)}" for k, v in point.items() if k != LABEL)]
        want = _flatten(load_config(spec["base"], overrides).to_dict())
        match = [
            name for name, have in finished.items()
            if all(_same(want[k], have[k]) for k in set(want) & set(have))
        ]
        if not match:
            continue
        run = match[0]
        runs_of.setdefault((point.get(LABEL), point["seed"]), run)
        s = json.loads((folder / run / "summary.json").read_text())
        shown = point if ref is None else {**point, "init.run": f"@{ref}"}
        row = {**{k: format_value(v) if isinstance(v, (list, dict)) else v for k, v in shown.items()}, "run": run}
        row.update({k: v for k, v in s.items() if not isinstance(v, (dict, list))})
        rows.append(row)
    return pd.DataFrame(rows)


def sweep_points(folder: Union[str, Path]) -> int:
    """How many runs the sweep in ``folder`` has in all (variants x seeds, from ``sweep.yaml``)."""
    spec = yaml.safe_load((Path(folder) / "sweep.yaml").read_text())
    return len(spec.get("variants") or [{}]) * len(spec.get("seeds") or [0])


def load_table(source: Union[str, Path], derived: bool = True) -> pd.DataFrame:
    """The per-run table of a sweep, with :func:`tidy`'s columns if ``derived``.

    ``source`` is a CSV file (a recorded ``summary.csv``) or a sweep folder.
    For a folder, its ``summary.csv`` is used when it lists every point of the
    sweep; otherwise (a sweep still running, or interrupted) the table is
    rebuilt from the runs that have finished, so analysis can start early.
    """
    source = Path(source)
    if source.is_file():
        table = pd.read_csv(source)
    elif source.is_dir():
        csv = source / "summary.csv"
        table = None
        if csv.exists():
            table = pd.read_csv(csv)
            if (source / "sweep.yaml").exists() and len(table) < sweep_points(source):
                table = None
        if table is None:
            table = _sweep_rows(source)
        if table is None:
            raise FileNotFoundError(f"{source} holds neither summary.csv nor sweep.yaml")
    else:
        raise FileNotFoundError(f"no sweep table at {source}")
    return tidy(table) if derived else table


def _method(row: pd.Series) -> str:
    label = row.get("label")
    if isinstance(label, str) and label:
        return label
    kind = row.get("pruner.kind")
    kind = kind if isinstance(kind, str) else "stochastic"  # not varied: the base config's SWP
    if kind == "none":
        return "dense"
    reg = row.get("regularizer.kind")
    reg = reg if isinstance(reg, str) else "base"  # not varied: the base config's regularizer
    return f"{'swp' if kind == 'stochastic' else kind}+{reg}"


def _short_key(key: str) -> str:
    return key.split(".")[-1]


def _value_text(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def tidy(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``table`` with ``method``, ``setting``, ``nodes_removed``, ratios (see module doc)."""
    t = table.copy()
    if t.empty:
        for c in ("method", "setting", "nodes_removed", "nodes_removed_count", "param_ratio", "flop_ratio"):
            t[c] = pd.Series(dtype=object if c in ("method", "setting") else float)
        return t
    t["method"] = [_method(r) for _, r in t.iterrows()]
    keys = [k for k in key_columns(t) if k != "label"]
    varying: Dict[str, List[str]] = {}
    for m, g in t.groupby("method", sort=False):
        varying[m] = [k for k in keys if g[k].astype(str).nunique(dropna=False) > 1]
    labels = []
    for _, r in t.iterrows():
        parts = [f"{_short_key(k)}={_value_text(r[k])}" for k in varying[r["method"]] if not pd.isna(r[k])]
        labels.append(", ".join([r["method"], *parts]))
    t["setting"] = labels
    t["nodes_removed"] = 1.0 - t["nodes_alive"] / t["nodes_total"]
    t["nodes_removed_count"] = t["nodes_total"] - t["nodes_alive"]
    t["param_ratio"] = t["params_dense"] / t["params_compact"]
    t["flop_ratio"] = t["flops_dense"] / t["flops_compact"]
    return t


def aggregate(table: pd.DataFrame, metrics: Sequence[str] = METRICS, by: Sequence[str] = ("setting",)) -> pd.DataFrame:
    """One row per ``by`` group (default: per setting): mean, std (ddof=1) and n over seeds.

    The key columns (``method`` and the config keys) are carried over from the
    group's first row, so the result can be filtered and pivoted by them.
    Rows keep the order in which settings first appear in ``table``.
    """
    by = list(by)
    metrics = [m for m in metrics if m in table.columns]
    carry = [c for c in ["method", "setting", *key_columns(table)] if c in table.columns and c not in by]
    g = table.groupby(by, sort=False, dropna=False)
    out = g[carry].first() if carry else pd.DataFrame(index=g.size().index)
    for m in metrics:
        out[f"{m}_mean"] = g[m].mean()
        out[f"{m}_std"] = g[m].std(ddof=1)
    out["n"] = g.size()
    if "seed" in table.columns:
        out["seeds"] = g["seed"].apply(lambda s: ",".join(str(int(v)) for v in sorted(s)))
    return out.reset_index()


def pareto_front(df: pd.DataFrame, x: str, y: str, maximize_x: bool = True, maximize_y: bool = True) -> pd.Series:
    """Boolean Series (aligned with ``df``): True for the points on the Pareto front of (x, y).

    A point is on the front when no other point is at least as good on both
    axes and strictly better on one ("good" = larger when ``maximize_*``, else
    smaller). Duplicated points are all kept. Rows with NaN are never on it.
    """
    xs = df[x].to_numpy(dtype=float) * (1 if maximize_x else -1)
    ys = df[y].to_numpy(dtype=float) * (1 if maximize_y else -1)
    ok = ~(np.isnan(xs) | np.isnan(ys))
    on = np.zeros(len(df), dtype=bool)
    for i in np.flatnonzero(ok):
        better_eq = ok & (xs >= xs[i]) & (ys >= ys[i])
        strictly = better_eq & ((xs > xs[i]) | (ys > ys[i]))
        on[i] = not strictly.any()
    return pd.Series(on, index=df.index, name="pareto")


def best_setting(
    agg: pd.DataFrame,
    min_removed: float = 0.5,
    removed: str = "nodes_removed_mean",
    accuracy: str = "test_accuracy_mean",
    exclude: Iterable[str] = ("dense",),
) -> Optional[pd.Series]:
    """The aggregated setting with the highest mean accuracy among those removing ``>= min_removed``.

    "Removing >= X" is judged on the *mean over seeds* of ``removed`` (by
    default the fraction of hidden nodes removed). Ties in accuracy go to the
    setting removing more. Methods in ``exclude`` are skipped. None if no
    setting qualifies.
    """
    cand = agg[(agg[removed] >= min_removed) & ~agg["method"].isin(list(exclude))]
    if cand.empty:
        return None
    cand = cand.sort_values([accuracy, removed], ascending=[False, False], kind="mergesort")
    return cand.iloc[0]


def gap_to_dense(table: pd.DataFrame, setting: str, dense: str = "dense") -> Dict[str, object]:
    """Accuracy gap ``dense - setting``, paired by seed: mean, std (ddof=1), n and per-seed values.

    ``setting`` and ``dense`` are values of the ``setting`` column (the dense
    runs' setting is ``dense``). Only seeds present in both count.
    """
    d = seed_stats.paired(table, "test_accuracy", dense, setting, by="setting")
    gaps = pd.Series(d.values, index=list(d.seeds), name="gap", dtype=float)
    acc = table.pivot_table(index="seed", columns="setting", values="test_accuracy", aggfunc="first").loc[list(d.seeds)]
    return {
        "mean": d.mean if d.n else math.nan,
        "std": d.std if d.n > 1 else math.nan,
        "n": d.n,
        "per_seed": gaps,
        "dense_mean": float(acc[dense].mean()) if d.n else math.nan,
        "setting_mean": float(acc[setting].mean()) if d.n else math.nan,
    }


def phase_grid(agg: pd.DataFrame, metric: str, method: str, row: str = "regularizer.lam", col: str = "pruner.sigma") -> pd.DataFrame:
    """``agg`` of one method pivoted to a (lambda x sigma) grid of ``metric`` (e.g. ``nodes_removed_mean``)."""
    sub = agg[agg["method"] == method]
    return sub.pivot_table(index=row, columns=col, values=metric, aggfunc="first").sort_index().sort_index(axis=1)


def curves(table: pd.DataFrame, methods: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Per-method trade-off curves: :func:`aggregate` per setting, sorted by mean weight sparsity.

    One row per (method, setting) with the means / stds of accuracy, weight
    sparsity and nodes removed; ``methods`` keeps only those (in that order).
    """
    agg = aggregate(table)
    if methods is not None:
        agg = agg[agg["method"].isin(list(methods))]
        order = {m: i for i, m in enumerate(methods)}
    else:
        order = {m: i for i, m in enumerate(dict.fromkeys(agg["method"]))}
    agg = agg.assign(_o=agg["method"].map(order))
    return agg.sort_values(["_o", "weight_sparsity_mean"], kind="mergesort").drop(columns="_o").reset_index(drop=True)


def node_removal_table(table: pd.DataFrame, methods: Optional[Sequence[str]] = None, min_fraction: float = 0.0) -> pd.DataFrame:
    """Per method and setting: weight sparsity, nodes removed (count of ``nodes_total``), accuracy, compression.

    ``removes_nodes`` is True when the setting removes more than
    ``min_fraction`` of the hidden nodes on average over seeds (with the
    default 0: at least one node on average). A method that only *scatters*
    zeros leaves (nearly) every node alive and gains (almost) nothing from
    compaction (``param_ratio`` near 1).
    """
    c = curves(table, methods)
    out = pd.DataFrame(
        {
            "method": c["method"],
            "setting": c["setting"],
            "weight_sparsity": c["weight_sparsity_mean"],
            "nodes_removed": c["nodes_removed_count_mean"],
            "nodes_removed_std": c["nodes_removed_count_std"],
            "nodes_total": table.groupby("setting", sort=False)["nodes_total"].first().reindex(c["setting"]).to_numpy(),
            "accuracy": c["test_accuracy_mean"],
            "accuracy_std": c["test_accuracy_std"],
            "param_ratio": c["param_ratio_mean"],
            "flop_ratio": c["flop_ratio_mean"],
            "n": c["n"],
        }
    )
    out["removes_nodes"] = (out["nodes_removed"] >= 1) & (out["nodes_removed"] > min_fraction * out["nodes_total"])
    return out


def load_layers(source: Union[str, Path], runs: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Final per-layer node counts of every run: one row per run x node layer.

    ``source`` is a recorded CSV (as written by :func:`final_layers`) or a sweep
    folder, whose runs' ``layers.csv`` are read at their last epoch (only the
    runs in ``runs``, if given). Columns: ``run, layer, nodes, alive, in_dead,
    out_dead, both_dead, weight_sparsity``; a node is removed when it is in-dead
    or out-dead, so ``removed = nodes - alive``.
    """
    source = Path(source)
    if source.is_file():
        t = pd.read_csv(source)
    else:
        t = final_layers(source, runs)
    t["removed"] = t["nodes"] - t["alive"]
    return t


def final_layers(folder: Union[str, Path], runs: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """The last epoch's rows of ``layers.csv`` of each finished run in a sweep folder (see :func:`load_layers`)."""
    folder = Path(folder)
    names = list(runs) if runs is not None else sorted(p.parent.name for p in folder.glob("*/summary.json"))
    parts = []
    for name in names:
        layers = pd.read_csv(folder / name / "layers.csv")
        last = layers[layers["epoch"] == layers["epoch"].max()].drop(columns="epoch")
        parts.append(last.assign(run=name))
    cols = ["run", "layer", "nodes", "alive", "in_dead", "out_dead", "both_dead", "weight_sparsity"]
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)


def layer_removal(table: pd.DataFrame, layers: pd.DataFrame) -> pd.DataFrame:
    """Per setting and layer, means over seeds of nodes removed, in-dead, out-dead and the layer's weight sparsity.

    ``table``: a tidy run table (for ``run -> setting``); ``layers``: :func:`load_layers`.
    Returns a wide table, one row per setting, columns ``<layer>_<quantity>``
    with the short layer name (``fc1_removed``, ``fc1_in_dead``, ...).
    """
    m = layers.merge(table[["run", "method", "setting"]], on="run")
    m["layer"] = m["layer"].astype(str).str.split(".").str[-1]
    g = m.groupby(["setting", "layer"], sort=False)[["removed", "in_dead", "out_dead", "weight_sparsity"]].mean()
    wide = g.unstack("layer")
    wide.columns = [f"{layer}_{q}" for q, layer in wide.columns]
    order = list(dict.fromkeys(table["setting"]))
    wide = wide.reindex([s for s in order if s in wide.index])
    layer_names = list(dict.fromkeys(m["layer"]))
    cols = [f"{layer}_{q}" for layer in layer_names for q in ("removed", "in_dead", "out_dead", "weight_sparsity")]
    return wide[cols].reset_index()


# --- runs outside a sweep -------------------------------------------------------------


def weight_counts(folder: Union[str, Path]) -> Dict[str, int]:
    """``{"weights": n, "nonzero": k}`` over the prunable weights in a run's last checkpoint.

    Prunable weights are the ``*.weight`` tensors with at least two dimensions
    (Linear and convolution weights; biases and normalisation scales are 1-D).
    Read from the state dict, so it works for compacted (init-from-run) models
    whose widths differ from the config's.
    """
    from prunedyn.atomic import load_checkpoint

    ckpt = load_checkpoint(Path(folder) / "checkpoint.pt")
    weights = [v for k, v in ckpt["model"].items() if k.endswith("weight") and v.dim() >= 2]
    return {"weights": int(sum(w.numel() for w in weights)), "nonzero": int(sum(int(w.count_nonzero()) for w in weights))}


def total_weight_sparsity(nonzero: int, dense_weights: int) -> float:
    """Sparsity relative to the *original* dense network: ``1 - nonzero / dense_weights``.

    For a node-pruned (compacted) network that is then weight-pruned,
    ``nonzero`` counts the nonzero weights of the small network and
    ``dense_weights`` the weights of the original architecture (266,200 for the
    784-300-100-10 MLP), so removed nodes count as removed weights.
    """
    return 1.0 - nonzero / dense_weights


def mlp_weights(sizes: Sequence[int]) -> int:
    """Number of weights (no biases) of an MLP with layer sizes ``sizes``, e.g. ``[784, 300, 100, 10]``."""
    return int(sum(a * b for a, b in zip(sizes[:-1], sizes[1:])))


def sweep_seconds(folder: Union[str, Path]) -> Dict[str, float]:
    """Training time of the finished runs of a sweep folder, from their ``timing.json``.

    ``train_seconds`` is the sum over runs of the time spent in training epochs
    (evaluation, records and checkpoints excluded); ``runs`` the number counted.
    """
    total, n = 0.0, 0
    for f in sorted(Path(folder).glob("*/timing.json")):
        total += float(json.loads(f.read_text())["train_seconds"])
        n += 1
    return {"train_seconds": total, "runs": n}


# --- recording a sweep for the book ------------------------------------------------------


def record_sweep(
    folder: Union[str, Path],
    dest: Union[str, Path],
    name: str,
    node_runs: Sequence[str] = (),
    parts: Sequence[str] = ("metrics", "layers", "hist", "nodes"),
) -> Dict[str, Path]:
    """Write the tables a chapter needs from a sweep folder into ``dest``.

    Run folders hold large per-node and histogram tables for every epoch (about
    10 MB per VGG-16 run); the book keeps what it shows:

    - ``<name>.csv``: the summary table (one row per run) with each run's
      ``train_seconds``, ``device`` and ``gpu`` from ``timing.json``, and
      ``weights`` / ``nonzero_weights`` (:func:`weight_counts` of its last
      checkpoint: a compacted run's own widths);
    - ``<name>-metrics.csv`` and ``<name>-layers.csv``: every epoch of every run;
    - ``<name>-hist.csv``: the magnitude histograms of the first and last epoch;
    - ``<name>-nodes.csv``: per-node norms at the last epoch, for ``node_runs`` only.

    ``parts``: which of the per-run tables to write besides the summary.
    Every table has a ``run`` column (the run folder's name). Written atomically.

    A sweep longer than one sitting is recorded in parts: the rows ``dest`` already holds for
    runs of this sweep that ``folder`` lacks (an earlier sitting's, on another checkout) are kept,
    in the sweep's order; rows of runs no longer in the sweep are dropped. The folder's table may
    list runs it took from such a record (``run_sweep(recorded=...)``): their rows are kept as read.
    """
    unknown = set(parts) - {"metrics", "layers", "hist", "nodes"}
    if unknown:
        raise ValueError(f"record_sweep parts: unknown {sorted(unknown)[0]!r}; allowed: metrics, layers, hist, nodes")
    from prunedyn.atomic import atomic_write_text
    from prunedyn.run.sweeps import SweepSpec, plan

    folder, dest = Path(folder), Path(dest)
    table = load_table(folder, derived=False)
    if table.empty:
        raise ValueError(f"record_sweep: {folder} has no finished run to record")
    dest.mkdir(parents=True, exist_ok=True)
    here = [r for r in table["run"] if (folder / r / "summary.json").exists()]
    extra = {}
    for run in here:
        timing, counts = json.loads((folder / run / "timing.json").read_text()), weight_counts(folder / run)
        extra[run] = {**{k: timing.get(k) for k in ("train_seconds", "device", "gpu")},
                      "weights": counts["weights"], "nonzero_weights": counts["nonzero"]}
    for key in ("train_seconds", "device", "gpu", "weights", "nonzero_weights"):
        kept = table[key] if key in table else [None] * len(table)  # a row taken from a record keeps its own
        table[key] = [extra[run][key] if run in extra else v for run, v in zip(table["run"], kept)]
    table = table.astype({"weights": "Int64", "nonzero_weights": "Int64"})
    tables: Dict[str, list] = {k: [] for k in ("metrics", "layers", "hist", "nodes")}
    for run in here:
        rf = folder / run
        if "metrics" in parts:
            tables["metrics"].append(pd.read_csv(rf / "metrics.csv").assign(run=run))
        if "layers" in parts:
            tables["layers"].append(pd.read_csv(rf / "layers.csv").assign(run=run))
        if "hist" in parts:
            h = pd.read_csv(rf / "histograms.csv")
            tables["hist"].append(h[h["epoch"].isin([h["epoch"].min(), h["epoch"].max()])].assign(run=run))
        if "nodes" in parts and run in node_runs:
            n = pd.read_csv(rf / "nodes.csv")
            tables["nodes"].append(n[n["epoch"] == n["epoch"].max()].assign(run=run))
    order = []  # the sweep's runs, in its order, from the spec it ran (sweep.yaml)
    if (folder / "sweep.yaml").exists():
        d = yaml.safe_load((folder / "sweep.yaml").read_text())
        spec = SweepSpec(d["name"], d["base"], d.get("set") or [], d.get("variants") or [{}], d.get("seeds") or [0])
        order = [f.name for _, _, f, _ in plan(spec, folder)]
    rank = {run: i for i, run in enumerate(order)}
    written = {}
    frames = {"": table, **{f"-{k}": pd.concat(v, ignore_index=True) for k, v in tables.items() if v}}
    for suffix, frame in frames.items():
        path = dest / f"{name}{suffix}.csv"
        if order and path.exists():  # an earlier sitting's rows of this sweep's other runs
            earlier = pd.read_csv(path)
            earlier = earlier[earlier["run"].isin(set(order) - set(table["run"] if suffix == "" else here))]
            frame = pd.concat([earlier, frame], ignore_index=True)
            frame = frame.sort_values("run", key=lambda runs: runs.map(rank), kind="stable", ignore_index=True)
        atomic_write_text(path, frame.to_csv(index=False, float_format="%.6g"))
        written[suffix.lstrip("-") or "summary"] = path
    return written
