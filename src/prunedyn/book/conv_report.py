"""The numbers of the VGG-16 / CIFAR-10 chapter: filters (not nodes), recorded sweeps, BatchNorm balance, timing.

In a VGG every conv channel and every hidden unit of the classifier is a node
(:mod:`prunedyn.structure.nodes`); the paper's VGG claim is about **filters**, the conv
channels only. The helpers here keep the two apart:

- :func:`load_recorded` reads recorded sweeps (``chapters/results/<name>.csv``
  and ``<name>-layers.csv``) and matches every row to its exact config through
  the sweep spec (``chapters/sweeps/<name>.yaml``, by config hash), adding the
  fraction of *filters* removed, the accuracy gap to the best dense run of the
  same budget (epochs), and a readable ``setting``;
- :func:`meets_target` / :func:`best_at` answer "is there a run that removes
  at least x of the filters within y points of dense?";
- :func:`bn_balance` splits a node's "incoming" norm, which with BatchNorm is
  two different things: the conv filter ``W_j`` (scale-free: BatchNorm
  undoes its scale) and the BatchNorm affine pair ``(gamma_j, beta_j)``, which
  with the outgoing weights forms the ReLU rescaling symmetry of chapter 4;
- :func:`vgg_from_widths` builds a (randomly initialised) VGG with given
  per-layer widths, to time a compact architecture whose weights were not
  kept; :func:`time_architectures` times several networks round-robin.

Tables: a *layers* table is one row per (run,) epoch x node layer with
``nodes, alive, in_dead, out_dead, both_dead`` (as :mod:`prunedyn.run.records`
writes it); ``run`` identifies the run when several are stacked.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import torch
from torch import nn

from prunedyn.analysis.latency import latencies
from prunedyn.models import VGG, VGG16_CFG
from prunedyn.run.config import config_hash, load_config
from prunedyn.run.sweeps import load_spec, overrides_of
from prunedyn.structure.nodes import (
    incoming_rows,
    layer_nodes,
    node_layers,
    outgoing_columns,
)
from prunedyn.structure.surgery import count_flops, count_params

#: The recorded full-scale VGG-16 sweeps (GPU), in the order they were run.
RECORDED = ("vgg16-full", "vgg16-full-all", "vgg16-full-long")


def is_filter_layer(layer: str) -> bool:
    """True for a conv layer's channels (``features.conv3_1``), False for hidden units (``classifier.fc1``)."""
    return str(layer).split(".")[-1].startswith("conv")


def sci(x: float) -> str:
    """``0.005 -> '5e-3'``, ``2e-05 -> '2e-5'``, ``0 -> '0'``: short scientific notation for labels."""
    if x == 0:
        return "0"
    e = int(math.floor(math.log10(abs(x)) + 1e-9))
    m = x / 10**e
    return f"{m:.3g}e{e}"


def setting_label(cfg) -> str:
    """A readable name of a VGG run's regime, e.g. ``SWP + L2 5e-3 (all)``, ``dense + wd 5e-4 (weights)``.

    ``(weights)``: the regularizer acts on conv/linear weights only;
    ``(all)``: on BatchNorm scales/shifts and biases too. sigma is added when
    it is not the preset's 0.002.
    """
    reg = cfg.regularizer
    if cfg.pruner.kind == "none":
        if reg.kind == "none" or reg.lam == 0:
            return "dense"
        return f"dense + wd {sci(reg.lam)} ({reg.scope})"
    sig = "" if cfg.pruner.sigma == 0.002 else f", σ {cfg.pruner.sigma:g}"
    if reg.kind == "none" or reg.lam == 0:
        return f"SWP alone{sig}"
    return f"SWP + {reg.kind.upper()} {sci(reg.lam)} ({reg.scope}){sig}"


def final_epoch(layers: pd.DataFrame) -> pd.DataFrame:
    """The rows of each run's last epoch (a table without ``run`` is one run)."""
    if "run" in layers.columns:
        last = layers.groupby("run")["epoch"].transform("max")
    else:
        last = layers["epoch"].max()
    return layers[layers["epoch"] == last].reset_index(drop=True)


def filter_counts(layers: pd.DataFrame) -> pd.DataFrame:
    """Per run (or for the one run), at its last epoch: filters and hidden units, total and removed.

    Columns ``filters, filters_removed_count, filters_removed`` (fraction),
    ``filters_in_dead, filters_out_dead`` and the same with ``units`` for the
    non-conv node layers (the classifier's hidden layer). A node is removed
    when it is in-dead or out-dead (``nodes - alive``).
    """
    last = final_epoch(layers).copy()
    if "run" not in last.columns:
        last["run"] = ""
    last["conv"] = last["layer"].map(is_filter_layer)
    last["removed"] = last["nodes"] - last["alive"]
    rows = []
    for run, g in last.groupby("run", sort=False):
        row = {"run": run}
        for name, part in (("filters", g[g["conv"]]), ("units", g[~g["conv"]])):
            total = int(part["nodes"].sum())
            removed = int(part["removed"].sum())
            row[name] = total
            row[f"{name}_removed_count"] = removed
            row[f"{name}_removed"] = removed / total if total else float("nan")
            row[f"{name}_in_dead"] = int(part["in_dead"].sum())
            row[f"{name}_out_dead"] = int(part["out_dead"].sum())
        rows.append(row)
    return pd.DataFrame(rows)


def filters_dead_by_epoch(layers: pd.DataFrame) -> pd.Series:
    """Dead filters (conv channels, in- or out-dead) of one run at every epoch, indexed by epoch."""
    conv = layers[layers["layer"].map(is_filter_layer)]
    g = conv.groupby("epoch")
    return (g["nodes"].sum() - g["alive"].sum()).rename("dead_filters")


def spec_configs(spec_path: Union[str, Path]) -> Dict[str, object]:
    """``{config hash: config}`` for every point of a sweep spec."""
    spec = load_spec(spec_path)
    out = {}
    for point in spec.points():
        cfg = load_config(spec.base, overrides_of(spec, point))
        out[config_hash(cfg)] = cfg
    return out


def add_dense_gap(table: pd.DataFrame, by: str = "epochs") -> pd.DataFrame:
    """Add ``dense_ref`` (the best accuracy of a dense run with the same ``by``), its setting
    ``dense_ref_setting`` and ``gap_points = 100 * (dense_ref - test_accuracy)`` (points of accuracy lost)."""
    t = table.copy()
    dense = t[~t["pruned"]]
    best = dense.sort_values("test_accuracy", ascending=False).groupby(by).head(1).set_index(by)
    t["dense_ref"] = t[by].map(best["test_accuracy"])
    t["dense_ref_setting"] = t[by].map(best["setting"])
    t["gap_points"] = 100.0 * (t["dense_ref"] - t["test_accuracy"])
    return t


def load_recorded(
    results: Union[str, Path], sweeps: Union[str, Path], names: Sequence[str] = RECORDED
) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """The recorded sweeps ``names``: ``(runs, layers)``.

    ``runs``: one row per run with ``sweep, run, setting, pruned, regularizer,
    lam, scope, sigma, epochs`` (from the run's config, found in
    ``<sweeps>/<name>.yaml`` by config hash), the summary's ``test_accuracy,
    weight_sparsity, nodes_total, nodes_alive, params_*, flops_*
    train_seconds, gpu, torch_version, data``, the filter and hidden-unit counts
    of :func:`filter_counts`, ``param_ratio, flop_ratio`` (dense / compact) and
    the gap to dense of :func:`add_dense_gap`. ``layers``: the stacked
    ``<name>-layers.csv`` tables (every epoch) with a ``sweep`` column.
    Raises ``ValueError`` if a recorded run is not a point of its spec (the
    preset or the spec changed since the recording).
    """
    results, sweeps = Path(results), Path(sweeps)
    parts, layer_parts = [], []
    for name in names:
        summary = pd.read_csv(results / f"{name}.csv")
        layers = pd.read_csv(results / f"{name}-layers.csv")
        configs = spec_configs(sweeps / f"{name}.yaml")
        rows = []
        for _, r in summary.iterrows():
            if r["config_hash"] not in configs:
                raise ValueError(f"{name}: recorded run {r['run']} (config {r['config_hash']}) is not a point of {name}.yaml")
            cfg = configs[r["config_hash"]]
            rows.append(
                {
                    "sweep": name,
                    "run": r["run"],
                    "setting": setting_label(cfg),
                    "pruned": cfg.pruner.kind != "none",
                    "regularizer": cfg.regularizer.kind,
                    "lam": cfg.regularizer.lam,
                    "scope": cfg.regularizer.scope,
                    "sigma": cfg.pruner.sigma if cfg.pruner.kind != "none" else float("nan"),
                    "epochs": cfg.epochs,
                    **{k: r[k] for k in ("test_accuracy", "weight_sparsity", "nodes_total", "nodes_alive",
                                         "params_dense", "params_compact", "flops_dense", "flops_compact",
                                         "train_seconds", "gpu", "torch_version", "data")},
                }
            )
        t = pd.DataFrame(rows).merge(filter_counts(layers), on="run", how="left")
        parts.append(t)
        layer_parts.append(layers.assign(sweep=name))
    runs = pd.concat(parts, ignore_index=True)
    runs["nodes_removed"] = 1.0 - runs["nodes_alive"] / runs["nodes_total"]
    runs["param_ratio"] = runs["params_dense"] / runs["params_compact"]
    runs["flop_ratio"] = runs["flops_dense"] / runs["flops_compact"]
    return add_dense_gap(runs), pd.concat(layer_parts, ignore_index=True)


def meets_target(runs: pd.DataFrame, min_filters: float = 0.6, max_gap_points: float = 1.5) -> pd.DataFrame:
    """The pruned runs that remove at least ``min_filters`` of the filters and lose less than ``max_gap_points``."""
    ok = runs["pruned"] & (runs["filters_removed"] >= min_filters) & (runs["gap_points"] < max_gap_points)
    return runs[ok]


def best_at(runs: pd.DataFrame, min_filters: float) -> Optional[pd.Series]:
    """The most accurate pruned run (smallest gap) that removes at least ``min_filters`` of the filters, or None."""
    c = runs[runs["pruned"] & (runs["filters_removed"] >= min_filters)]
    return None if c.empty else c.sort_values("gap_points").iloc[0]


def pareto(runs: pd.DataFrame, x: str = "filters_removed", y: str = "gap_points") -> pd.DataFrame:
    """Pruned runs not dominated by another (another removes at least as many filters and loses no more,
    one of the two strictly), sorted by ``x``."""
    p = runs[runs["pruned"]]
    keep = []
    for i, r in p.iterrows():
        dom = (p[x] >= r[x]) & (p[y] <= r[y]) & ((p[x] > r[x]) | (p[y] < r[y]))
        keep.append(not dom.any())
    return p[np.array(keep, dtype=bool)].sort_values(x)


def layer_widths(layers: pd.DataFrame, run: Optional[str] = None, epoch: Optional[int] = None) -> Tuple[Dict[str, int], Dict[str, int]]:
    """``(dense widths, alive widths)`` per node layer, in forward order, at ``epoch`` (default: the run's last).

    The alive count is what compaction keeps, up to one "carrier" channel per
    layer that holds the merged constants of in-dead channels
    (:func:`prunedyn.structure.surgery.compact`, ``kept_constant``), and at least one
    channel in a layer whose every node is dead.
    """
    d = layers if run is None else layers[layers["run"] == run]
    e = d["epoch"].max() if epoch is None else epoch
    d = d[d["epoch"] == e]
    before = OrderedDict((str(r["layer"]), int(r["nodes"])) for _, r in d.iterrows())
    after = OrderedDict((str(r["layer"]), max(1, int(r["alive"]))) for _, r in d.iterrows())
    return dict(before), dict(after)


def death_table(layers: pd.DataFrame, thresholds: Sequence[float] = (0.1, 0.5)) -> pd.DataFrame:
    """Per node layer: the epoch of its first dead node, of reaching each dead-fraction threshold
    (NaN if never) and its final dead count and fraction, in forward order (one run).

    :func:`prunedyn.analysis.dependency.layer_death_order` in the layers' forward order, with short names."""
    from prunedyn.analysis.dependency import layer_death_order

    order = list(dict.fromkeys(layers["layer"]))
    t = layer_death_order(layers, thresholds).set_index("layer").loc[order].reset_index()
    last = layers[layers["epoch"] == layers["epoch"].max()].set_index("layer").loc[order]
    t.insert(len(t.columns) - 1, "final_dead", (last["nodes"] - last["alive"]).to_numpy().astype(int))
    t["layer"] = t["layer"].astype(str).str.split(".").str[-1]
    return t


def vgg_fan_in(widths: Mapping[str, int], in_channels: int = 3, kernel: int = 3) -> Dict[str, int]:
    """Incoming weights per node of a VGG's node layers (dense ``widths`` in forward order):
    ``kernel**2 * C_in`` for a conv, the last conv's width for the classifier's hidden layer (1x1 map)."""
    out, prev = {}, in_channels
    for name, w in widths.items():
        out[name] = kernel * kernel * prev if is_filter_layer(name) else prev
        prev = int(w)
    return out


def nonzero_per_alive(layers: pd.DataFrame, fan_in: Mapping[str, int]) -> pd.DataFrame:
    """At each run's last epoch, per layer: the non-zero incoming weights per *alive* node, on average
    (``(1 - weight_sparsity) * nodes * fan_in / alive``), next to the fan-in. Dead nodes hold
    (almost) none, so this is how sparse the surviving filters are."""
    last = final_epoch(layers).copy()
    if "run" not in last.columns:
        last["run"] = ""
    last["fan_in"] = last["layer"].map(fan_in)
    nnz = (1.0 - last["weight_sparsity"]) * last["nodes"] * last["fan_in"]
    last["nonzero_per_alive"] = nnz / last["alive"].where(last["alive"] > 0)
    return last[["run", "layer", "nodes", "alive", "fan_in", "weight_sparsity", "nonzero_per_alive"]]


# ---------------------------------------------------------------------------
# BatchNorm and the balance of chapter 4
# ---------------------------------------------------------------------------
@torch.no_grad()
def bn_balance(model: nn.Module) -> pd.DataFrame:
    """Per node: the three norms that BatchNorm separates, and its state.

    Columns ``layer, node, bn`` (the layer has BatchNorm), ``filter_l2`` (the
    conv filter / weight row ``||W_j||``; scale-free under BatchNorm),
    ``affine_l2`` (``||(gamma_j, beta_j)||``, or ``|b_j|`` without
    BatchNorm), ``in_l2`` (both together, as the recorded nodes tables hold
    it), ``out_l2`` (``||w_out,j||``, all consumers), ``nonzero_in, fan_in``
    (non-zero weights of the filter, and its size), ``in_dead, out_dead, dead``.
    """
    rows = []
    for layer in node_layers(model):
        st = layer_nodes(layer)
        w = incoming_rows(layer.producer).detach().float().cpu()
        n = w.shape[0]
        if layer.norm is not None and layer.norm.weight is not None:
            affine = torch.stack([layer.norm.weight.float(), layer.norm.bias.float()], 1).cpu()
            bn = True
        else:
            b = getattr(layer.producer, "bias", None)
            affine = (b.float().cpu() if b is not None else torch.zeros(n)).reshape(n, 1)
            bn = False
        out_sq = torch.zeros(n)
        for consumer in layer.consumers:
            out_sq += outgoing_columns(consumer, n).float().cpu().pow(2).sum(1)
        f2, a2 = w.pow(2).sum(1), affine.pow(2).sum(1)
        rows.append(
            pd.DataFrame(
                {
                    "layer": layer.name,
                    "node": np.arange(n),
                    "bn": bn,
                    "filter_l2": f2.sqrt().numpy(),
                    "affine_l2": a2.sqrt().numpy(),
                    "in_l2": (f2 + a2).sqrt().numpy(),
                    "out_l2": out_sq.sqrt().numpy(),
                    "nonzero_in": (w != 0).sum(1).numpy(),
                    "fan_in": w.shape[1],
                    "in_dead": st.in_dead.numpy(),
                    "out_dead": st.out_dead.numpy(),
                }
            )
        )
    out = pd.concat(rows, ignore_index=True)
    out["dead"] = out["in_dead"] | out["out_dead"]
    return out


def balance_summary(bal: pd.DataFrame) -> pd.DataFrame:
    """Per layer, over its alive nodes: medians of ``log10(affine / out)`` and ``log10(filter / out)``
    (0: balanced; +1: the in-side ten times larger), the median share of non-zero filter weights,
    and the alive / total counts."""
    rows = []
    for layer, g in bal.groupby("layer", sort=False):
        a = g[~g["dead"]]
        with np.errstate(divide="ignore", invalid="ignore"):
            ra = np.log10(a["affine_l2"] / a["out_l2"])
            rf = np.log10(a["filter_l2"] / a["out_l2"])
        rows.append(
            {
                "layer": str(layer).split(".")[-1],
                "alive": len(a),
                "nodes": len(g),
                "log10_affine_over_out": float(np.nanmedian(ra)) if len(a) else np.nan,
                "log10_filter_over_out": float(np.nanmedian(rf)) if len(a) else np.nan,
                "nonzero_share_alive": float((a["nonzero_in"] / a["fan_in"]).median()) if len(a) else np.nan,
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------
# architectures and their measured latency
# ---------------------------------------------------------------------------
def vgg_from_widths(widths: Union[Mapping[str, int], Sequence[int]], in_channels: int = 3, num_classes: int = 10, seed: int = 0) -> nn.Module:
    """A randomly initialised VGG-16 (BatchNorm, CIFAR variant) with the given widths, in eval mode.

    ``widths``: 14 numbers (13 conv layers, then the classifier's hidden
    layer), or a mapping in that order (e.g. :func:`layer_widths`'s output,
    keys ``features.conv1_1 ... classifier.fc1``). Same layout as
    :class:`prunedyn.models.VGG`: for timing a compact architecture, whose cost
    does not depend on the weights' values.
    """
    w = list(widths.values()) if isinstance(widths, Mapping) else list(widths)
    n_conv = sum(1 for v in VGG16_CFG if v != "M")
    if len(w) != n_conv + 1 or any(int(v) < 1 for v in w):
        raise ValueError(f"expected {n_conv + 1} positive widths (13 conv layers and fc1), got {w}")
    it = iter(int(v) for v in w[:n_conv])
    cfg = tuple(v if v == "M" else next(it) for v in VGG16_CFG)
    torch.manual_seed(seed)
    return VGG(cfg, width=1.0, hidden=int(w[-1]), in_channels=in_channels, num_classes=num_classes).eval()


def time_architectures(
    models: Mapping[str, nn.Module], x: torch.Tensor, batches: Sequence[int] = (1, 64), reps: int = 20, reference: Optional[str] = None
) -> pd.DataFrame:
    """Median latency of one forward pass per model and batch size, measured round-robin.

    One row per (model, batch): ``model, batch, ms, speedup`` (over
    ``reference``, default the first model), ``params``, ``mflops`` (per
    image, a multiply-add counts 2) and ``flop_ratio`` (reference FLOPs /
    model FLOPs: the speedup if time were proportional to FLOPs).
    """
    names = list(models)
    ref = reference or names[0]
    flops = {k: count_flops(m, x[:1]) for k, m in models.items()}
    rows = []
    for b in batches:
        secs = latencies(dict(models), x[:b], reps=reps, warmup=2)
        for k in names:
            rows.append(
                {
                    "model": k,
                    "batch": b,
                    "ms": 1000.0 * secs[k],
                    "speedup": secs[ref] / secs[k],
                    "params": count_params(models[k]),
                    "mflops": flops[k] / 1e6,
                    "flop_ratio": flops[ref] / flops[k],
                }
            )
    return pd.DataFrame(rows)
