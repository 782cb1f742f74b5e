"""The paper's claims against the book's records: the verdict rule, one row per claim, the table.

Used by the chapter "What reproduced, and what did not" (09-conclusions). Every
row is computed from run records (cached runs shared with the other chapters,
or the recorded result files in ``results/``); nothing here trains a run that
another chapter does not train.

The verdict rule (the book's own), in order:

1. **The gate.** A row that compares with a dense network first checks that the
   dense reference is competent at its scale (:mod:`prunedyn.book.competence`:
   converged, and far above a trivial model on the same data). A row that fails
   the gate is *not testable at this scale* and gets no verdict.
2. **The paper's method only.** A claim is judged on SWP with L1 or L2. Rows of
   other methods (slimming, group lasso, targeted dropout) are *context*.
3. **Two conditions.** Each claim is split into two conditions (for the node
   claims: "the mean over seeds reaches the paper's node fraction" and "the
   paired gap to the dense network, mean over seeds, is within the tolerance");
   a claim is *reproduced* when both hold, *partly* when one holds, and *not at
   this scale* when neither does.

Claim 1 is the method's definition: its row says whether the library
implements it as specified and is left out of the tally.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from _ch06_08 import TOLERANCE as CH_TOLERANCE
from _ch06_08 import markdown as markdown_table  # one pipe-table writer for chapters 6-9
from prunedyn import StochasticWeightPruner, get_kernel
from prunedyn.book import competence as K
from prunedyn.analysis import dependency as dep
from prunedyn.analysis import seeds as S
from prunedyn.book import tradeoffs as T
from prunedyn.book import fronts as FR
from prunedyn.book.fronts import FRONT_NAME, PAPER_METHODS

#: "Little loss": the largest mean paired gap to the dense network that still counts as little.
TOLERANCE: Dict[str, float] = CH_TOLERANCE  # one definition: chapters 6-8 judge by it too
#: How a metric is named and shown: accuracy in percentage points, Dice and AUC as they are.
METRIC_LABEL = {
    "test_accuracy": "accuracy",
    "test_balanced_accuracy": "balanced accuracy (the mean recall of the classes)",
    "test_dice": "Dice",
    "test_auc": "AUC (one-vs-rest, macro)",
}
SCALE = {
    "test_accuracy": (100.0, ".2f", " points"),
    "test_balanced_accuracy": (100.0, ".2f", " points"),
    "test_dice": (1.0, ".3f", ""),
    "test_auc": (1.0, ".3f", ""),
}


def metric_word(metric: str) -> str:
    """A metric's name in a sentence: ``METRIC_LABEL`` without its explanation in brackets."""
    return METRIC_LABEL[metric].split(" (")[0]


#: The metrics shown in percent.
PERCENT = ("test_accuracy", "test_balanced_accuracy")
VERDICTS = ("reproduced", "partly", "not at this scale")
#: The verdict of a row whose dense reference fails the gate, of a context row, and of claim 1.
NOT_TESTABLE = "not testable at this scale"
CONTEXT = "context (not the paper's method)"
#: The verdict of a live row whose setting (the preset's lambda) was not chosen on a validation
#: split: shown, never tallied (its numbers depend on the CPU's arithmetic; a verdict should not).
ILLUSTRATION = "illustration (setting not chosen on validation)"
IMPLEMENTED = ("implemented as specified", "not as specified")
#: The paper's node fractions (abstract), per preset.
PAPER_FRACTION = {"mlp-mnist": 0.5, "vgg16-cifar10": 0.6, "unet-dsb2018": 0.6, "cxr-cnn": 0.5}
#: What the paper counts: hidden nodes, filters, channels.
NODE_WORD = {
    "mlp-mnist": "hidden nodes",
    "vgg16-cifar10": "filters",
    "unet-dsb2018": "channels",
    "cxr-cnn": "channels",
}
#: The metric each preset is judged on (the paper's "little loss").
PRESET_METRIC = {
    "mlp-mnist": "test_accuracy",
    "vgg16-cifar10": "test_accuracy",
    "unet-dsb2018": "test_dice",
    "cxr-cnn": "test_auc",
}
MODEL_WORD = {
    "mlp-mnist": "MLP on MNIST",
    "vgg16-cifar10": "VGG-16 on CIFAR-10",
    "unet-dsb2018": "U-Net, nuclei (DSB 2018)",
    "cxr-cnn": "CNN, COVID-19 chest X-rays",
}


def verdict(first: bool, second: bool) -> str:
    """The rule: both conditions -> reproduced, one -> partly, none -> not at this scale."""
    return VERDICTS[0] if first and second else VERDICTS[1] if first or second else VERDICTS[2]


def pct(x: float, fmt: str = ".1f") -> str:
    return f"{format(100 * x, fmt)}%"


def pct_spread(values: Sequence[float], fmt: str = ".1f") -> str:
    v = np.asarray(values, dtype=float)
    return (
        pct(v.mean(), fmt)
        if len(v) < 2
        else f"{pct(v.mean(), fmt)} ± {format(100 * v.std(ddof=1), fmt)}"
    )


def gap_text(values: Sequence[float], metric: str) -> str:
    scale, fmt, unit = SCALE[metric]
    return S.mean_std_text(values, fmt, scale) + unit


def tol_text(metric: str) -> str:
    scale, fmt, unit = SCALE[metric]
    return f"{format(TOLERANCE[metric] * scale, '.3g')}{unit}"


@dataclass
class Row:
    """One claim (or one model of claim 3) against what the book measured."""

    key: str
    claim: str
    result: str
    scale: str
    seeds: str
    first: bool
    second: bool
    conditions: str = ""
    values: dict = field(default_factory=dict)
    #: "claim": judged by the rule; "context": another method, no verdict; "implementation": claim
    #: 1.
    kind: str = "claim"
    #: The competence gate of the row's dense reference (None: the row does not compare with one).
    gate: Optional[K.Competence] = None

    @property
    def testable(self) -> bool:
        return self.gate is None or self.gate.competent

    @property
    def verdict(self) -> str:
        if self.kind == "implementation":
            return IMPLEMENTED[0] if self.first and self.second else IMPLEMENTED[1]
        if not self.testable:
            return NOT_TESTABLE
        if self.kind == "context":
            return CONTEXT
        if self.kind == "illustration":
            return ILLUSTRATION
        v = verdict(self.first, self.second)
        return v + (" (one seed)" if self.values.get("n_seeds", 3) == 1 else "")

    @property
    def tallied(self) -> bool:
        """Counted among the paper's claims: judged by the rule, on a competent reference."""
        return self.kind == "claim" and self.testable


# --------------------------------------------------------------------------
# what ran: the scale column
# --------------------------------------------------------------------------
def _timing(result) -> dict:
    f = Path(result.folder) / "timing.json"
    return json.loads(f.read_text()) if f.exists() else {}


def model_text(cfg) -> str:
    m = cfg.model
    if m.name == "mlp":
        return "MLP " + "-".join(str(int(h * m.width)) for h in m.hidden) + " hidden"
    names = {
        "vgg16": "VGG-16 (BatchNorm)",
        "unet": "U-Net",
        "cxr_cnn": "CXR CNN",
        "cxr-cnn": "CXR CNN",
    }
    return f"{names.get(m.name, m.name)}, width x{m.width:g}"


def data_text(summary: dict, cfg) -> str:
    desc = str(summary.get("data", ""))
    used = desc.split("used ")[-1] if "used " in desc else ""
    name = {
        "mnist": "MNIST",
        "cifar10": "CIFAR-10",
        "dsb2018": "DSB 2018",
        "covid_cxr": "chest X-rays",
    }.get(cfg.data.name, cfg.data.name)
    return f"{name} {cfg.data.source}" + (f", {used}" if used else "")


def hardware_text(timing: dict) -> str:
    if not timing:
        return "?"
    if timing.get("gpu"):
        return f"GPU ({timing['gpu']})"
    return f"CPU, {timing.get('threads', '?')} thread{'s' if timing.get('threads', 1) != 1 else ''}"


def scale_text(result) -> str:
    cfg = result.config
    return (
        f"{model_text(cfg)}; {data_text(result.summary, cfg)}; {cfg.epochs} epochs; "
        f"{hardware_text(_timing(result))}"
    )


def seeds_text(seeds: Sequence[int]) -> str:
    s = sorted(int(x) for x in seeds)
    return ", ".join(str(x) for x in s) + (" (one seed)" if len(s) == 1 else "")


# --------------------------------------------------------------------------
# claim 1: the pruner samples w -> 0 with probability kappa(w; sigma)
# --------------------------------------------------------------------------
def sampling_check(
    seeds: Sequence[int] = (0, 1, 2),
    kernel: str = "gaussian",
    sigma: float = 0.003,
    levels: int = 25,
    copies: int = 4000,
) -> pd.DataFrame:
    """One step of :class:`StochasticWeightPruner` on weights at ``levels`` evenly spaced magnitudes
    in ``(0, 4 sigma]`` (``copies`` weights each, half of them negative), per pruner seed: the
    observed share zeroed at each magnitude against ``kappa``, its binomial standard error,
    and the deviation in standard errors. No training; seconds on a CPU."""
    mags = torch.linspace(4.0 * sigma / levels, 4.0 * sigma, levels, dtype=torch.float64)
    signs = torch.where(torch.arange(copies) % 2 == 0, 1.0, -1.0).to(torch.float64)
    w0 = (mags[:, None] * signs[None, :]).reshape(-1, 1)
    kappa = get_kernel(kernel)(mags, sigma).numpy()
    rows = []
    for seed in seeds:
        layer = nn.Linear(1, w0.shape[0], bias=False).double()
        with torch.no_grad():
            layer.weight.copy_(w0)
        pruner = StochasticWeightPruner(nn.Sequential(layer), kernel=kernel, sigma=sigma, seed=seed)
        pruner.step()
        zeroed = (layer.weight.detach().reshape(levels, copies) == 0).double().mean(1).numpy()
        se = np.sqrt(np.maximum(kappa * (1 - kappa), 1e-12) / copies)
        for m, k, z, e in zip(mags.numpy(), kappa, zeroed, se):
            rows.append(
                {
                    "seed": int(seed),
                    "w_over_sigma": float(m / sigma),
                    "kappa": float(k),
                    "zeroed": float(z),
                    "se": float(e),
                    "z": float((z - k) / e) if k * (1 - k) > 0 else 0.0,
                }
            )
    out = pd.DataFrame(rows)
    out.attrs.update(kernel=kernel, sigma=sigma)
    return out


def claim1_row(check: pd.DataFrame, max_z: float = 4.0) -> Row:
    z = check.groupby("seed")["z"].apply(lambda s: float(np.abs(s).max()))
    dev = check.assign(d=(check["zeroed"] - check["kappa"]).abs()).groupby("seed")["d"].max()
    within = bool((z <= max_z).all())
    # smaller weights more often: the observed share falls from the smallest |w| to 4 sigma in every
    # seed
    ends = check.sort_values("w_over_sigma").groupby("seed")["zeroed"].agg(["first", "last"])
    falls = bool((ends["first"] > ends["last"] + 0.5).all())
    n_levels = check["w_over_sigma"].nunique()
    copies_se = float(check["se"].max())
    return Row(
        key="claim1",
        claim="1. Weight pruning by sampling: w is zeroed with a probability kappa(w) that is "
        "higher the smaller |w|",
        result=(
            f"observed share zeroed in one step vs kappa at {n_levels} magnitudes from 4 "
            f"sigma/{n_levels} to 4 sigma: largest deviation "
            f"{S.mean_std_text(dev.tolist(), '.4f')} (per seed; binomial s.e. up to "
            f"{copies_se:.4f}), at most "
            f"{z.max():.1f} s.e.; share falls from "
            f"{check[check['w_over_sigma'] == check['w_over_sigma'].min()]['zeroed'].mean():.3f} "
            f"at the smallest to "
            f"{check[check['w_over_sigma'] == check['w_over_sigma'].max()]['zeroed'].mean():.4f} "
            f"at 4 sigma"
        ),
        scale=(
            f"the library's pruner, one step on synthetic weights "
            f"({check.attrs.get('kernel', '?')} kernel, "
            f"sigma {check.attrs.get('sigma', float('nan')):g}); no training"
        ),
        seeds=seeds_text(check["seed"].unique()),
        first=within,
        second=falls,
        conditions=f"(a) every magnitude within {max_z:g} binomial s.e. of kappa in every seed; "
        f"(b) "
        f"the share zeroed falls with |w| in every seed",
        values={"max_dev": dev, "max_z": float(z.max())},
        kind="implementation",
    )


# --------------------------------------------------------------------------
# claim 2: L1 and L2 shape node death (MLP, SWP alone against SWP + L1 / L2)
# --------------------------------------------------------------------------
def claim2_row(
    table: pd.DataFrame,
    scale: str,
    margin: float = 0.05,
    front: Optional[pd.DataFrame] = None,
    chosen: Optional[pd.DataFrame] = None,
) -> Row:
    """Claim 2. (a) from the live runs (one lambda each: SWP alone against SWP + L1 and + L2); (b),
    with ``front`` (the recorded mlp-front table) and ``chosen``
    (:func:`prunedyn.book.fronts.choose`), along the
    front: L2 against L1 each at the setting chosen on the validation split at the same tolerance,
    i.e. at matched accuracy, paired by seed. Without them (b) compares the live runs' lambdas."""
    d = {k: S.paired(table, "dead_node_fraction", k, "none") for k in ("l1", "l2")}
    l2_l1 = S.paired(table, "dead_node_fraction", "l2", "l1")
    ws = S.paired(table, "weight_sparsity", "l2", "l1")
    both_change = all(d[k].verdict(margin) != "no clear difference" for k in d)
    sp = table.groupby("run")["dead_node_fraction"].apply(list)
    values = {"l1_none": d["l1"], "l2_none": d["l2"], "l2_l1": l2_l1, "ws": ws, "spread": sp}
    if front is None:
        on_front, how = l2_l1, "L1 and L2 differ from each other, same test"
        extra = ""
    else:
        c = chosen.set_index("method")
        on_front = S.paired(
            front,
            "nodes_removed",
            c.loc["swp-l2", "setting"],
            c.loc["swp-l1", "setting"],
            by="setting",
        )
        how = (
            "L2 and L1 differ in the share dead at matched accuracy (each at its lambda "
            "chosen on the "
            "validation split at the tolerance; recorded front), same test"
        )
        extra = (
            f"; along the front at matched validation accuracy: L2 "
            f"{pct(c.loc['swp-l2', 'share_mean'])}, "
            f"L1 {pct(c.loc['swp-l1', 'share_mean'])}, paired L2 - L1 {d_text(on_front)}"
        )
        values.update(front_l2_l1=on_front, front_l2=c.loc["swp-l2"], front_l1=c.loc["swp-l1"])
    return Row(
        key="claim2",
        claim="2. L1 and L2 shape node pruning while one optimises weight pruning; L2 + SWP "
        "the headline",
        result=(
            f"hidden nodes dead: SWP alone {pct_spread(sp['none'])}, + L1 "
            f"{pct_spread(sp['l1'])}, + L2 {pct_spread(sp['l2'])}; "
            f"paired L2 - L1 {d_text(l2_l1)} at a weight-sparsity difference of {d_text(ws)}"
            + extra
        ),
        scale=scale,
        seeds=seeds_text(table["seed"].unique()),
        first=both_change,
        second=on_front.verdict(margin) != "no clear difference",
        conditions=(
            f"(a) each regularizer changes the dead share against SWP alone, every seed the "
            f"same sign, mean beyond "
            f"{100 * margin:.0f} points; (b) {how}"
        ),
        values=values,
    )


def margin_text(row: Row) -> str:
    """A sentence on how far a node row's two conditions are from their thresholds, in
    seed spreads."""
    v = row.values
    nodes, gap, metric = np.asarray(v["nodes"], dtype=float), v["gap"], v["metric"]
    scale, fmt, unit = SCALE[metric]
    dn = 100 * (nodes.mean() - v["target"])
    sn = 100 * nodes.std(ddof=1)
    dg = (v["tol"] - gap.mean) * scale
    out = (
        f"The mean dead share is {abs(dn):.1f} points {'above' if dn >= 0 else 'below'} "
        f"the paper's {pct(v['target'], '.0f')} "
        f"(the seeds spread by {sn:.1f} points), and the mean gap is "
        f"{format(abs(dg), fmt)}{unit} "
        f"{'inside' if dg >= 0 else 'outside'} the tolerance (spread "
        f"{format(gap.std * scale, fmt)}{unit})."
    )
    close = [
        name
        for name, d, sd in (("share", abs(dn), sn), ("gap", abs(dg), gap.std * scale))
        if d < 2 * sd
    ]
    if close:
        out += (
            " With the "
            + " and the ".join(close)
            + " within two seed spreads of "
            + ("its threshold" if len(close) == 1 else "their thresholds")
            + (
                ", these runs could land on the other side with other seeds or on another machine"
                " (one reason they illustrate and do not decide)."
                if row.kind == "illustration"
                else ", this verdict could change with other seeds or another machine."
            )
        )
    return out


def d_text(d: S.Difference, fmt: str = ".1f") -> str:
    return f"{format(100 * d.mean, '+' + fmt)} ± {format(100 * d.std, fmt)} points"


# --------------------------------------------------------------------------
# claim 3: the node fraction, with little loss, per model
# --------------------------------------------------------------------------
def node_row(
    key: str,
    preset: str,
    table: pd.DataFrame,
    scale: str,
    pruned: str = "l2",
    dense: str = "dense",
    label: str = "",
    metric: Optional[str] = None,
    fraction: str = "dead_node_fraction",
    kind: str = "claim",
) -> Row:
    """Claim 3 for one model: ``table`` has one row per run (``pruned`` / ``dense``) and seed.
    ``kind="illustration"``: a row whose setting was not chosen on validation (shown, not
    tallied)."""
    metric = metric or PRESET_METRIC[preset]
    target, tol = PAPER_FRACTION[preset], TOLERANCE[metric]
    nodes = table[table["run"] == pruned].sort_values("seed")[fraction].to_numpy(dtype=float)
    gap = S.paired(table, metric, dense, pruned)
    dense_vals = table[table["run"] == dense][metric].to_numpy(dtype=float)
    scale_m = SCALE[metric]
    n = len(nodes)
    return Row(
        key=key,
        claim=f"3. {MODEL_WORD[preset]}: {pct(target, '.0f')} of the {NODE_WORD[preset]} "
        f"removed with little loss" + (f" ({label})" if label else ""),
        result=(
            f"{NODE_WORD[preset]} dead {pct_spread(nodes)}; "
            f"{METRIC_LABEL[metric].split(' ')[0]} gap to dense "
            f"{gap_text(gap.values, metric)} (dense "
            f"{S.mean_std_text(dense_vals, scale_m[1], scale_m[0])}"
            f"{'%' if metric == 'test_accuracy' else ''})"
        ),
        scale=scale,
        seeds=seeds_text(gap.seeds),
        first=bool(nodes.mean() >= target),
        second=bool(gap.mean <= tol),
        kind=kind,
        conditions=f"(a) mean dead share >= {pct(target, '.0f')}; (b) mean paired "
        f"{METRIC_LABEL[metric].split(' ')[0]} gap <= {tol_text(metric)}",
        values={
            "nodes": nodes,
            "gap": gap,
            "target": target,
            "tol": tol,
            "metric": metric,
            "n_seeds": n,
            "dense": dense_vals,
        },
    )


def recorded_mlp_best(phase: pd.DataFrame, min_removed: float = 0.5) -> pd.DataFrame:
    """The recorded MLP sweep's most accurate setting removing >= ``min_removed`` on average,
    with the
    dense runs, as a table of ``run`` (``best`` / ``dense``), ``seed`` and metrics."""
    agg = T.aggregate(phase)
    best = T.best_setting(agg, min_removed=min_removed)
    rows = phase[phase["setting"].isin([best["setting"], "dense"])].copy()
    rows["run"] = np.where(rows["setting"] == "dense", "dense", "best")
    rows["dead_node_fraction"] = rows["nodes_removed"]
    rows.attrs["setting"] = best["setting"]
    rows.attrs["settings"] = int(agg["method"].ne("dense").sum())
    return rows


def recorded_vgg_row(rec: pd.DataFrame) -> Row:
    """Claim 3 for VGG-16 at full scale, from
    :func:`prunedyn.book.conv_report.load_recorded`'s table
    (filters removed, gap to the best dense run of the same epochs): the pruned run with the best
    verdict (ties: the smallest gap)."""
    target, tol = PAPER_FRACTION["vgg16-cifar10"], TOLERANCE["test_accuracy"]
    r = rec[rec["pruned"] & (rec["regularizer"] != "none")].copy()
    r["first"] = r["filters_removed"] >= target
    r["second"] = r["gap_points"] <= 100 * tol
    # the most accurate run that reaches the paper's fraction; if none does, the one removing the
    # most
    reach = r[r["first"]]
    best = (
        reach.sort_values("gap_points", kind="mergesort").iloc[0]
        if len(reach)
        else r.sort_values("filters_removed", ascending=False, kind="mergesort").iloc[0]
    )
    within = r[r["second"]].sort_values("filters_removed", ascending=False, kind="mergesort")
    return Row(
        key="vgg_full",
        claim="3. VGG-16 on CIFAR-10: 60% of the filters removed with little loss (full scale, "
        "recorded)",
        result=(
            f"the most accurate of {len(r)} recorded regularized runs with >= "
            f"{pct(target, '.0f')} of the filters dead: "
            f"{best['setting']}, {best['epochs']} epochs: filters dead "
            f"{pct(best['filters_removed'])}; accuracy gap to "
            f"the best dense run of the same epochs {best['gap_points']:.2f} points (dense "
            f"{100 * best['dense_ref']:.2f}%)"
            + (
                f"; most filters dead within {tol_text('test_accuracy')}: "
                f"{pct(within.iloc[0]['filters_removed'])} "
                f"({within.iloc[0]['setting']}, {within.iloc[0]['epochs']} epochs)"
                if len(within)
                else ""
            )
        ),
        scale=(
            f"VGG-16 (BatchNorm), full width; CIFAR-10 complete (JPEG copy), "
            f"{str(best['data']).split('used ')[-1]}; "
            f"{best['epochs']} epochs; GPU ({best['gpu']})"
        ),
        seeds="0 (one seed)",
        first=bool(best["first"]),
        second=bool(best["second"]),
        conditions=(
            f"(a) dead share >= {pct(target, '.0f')}; (b) gap <= {tol_text('test_accuracy')}"
        ),
        values={
            "best": best,
            "all": r,
            "within": within.iloc[0] if len(within) else None,
            "n_seeds": 1,
        },
    )


def recorded_conv_best_row(
    preset: str, table: pd.DataFrame, scale: str, nodes: str = "dead_node_fraction"
) -> Row:
    """Claim 3 for a conv net from its recorded CPU-scale comparison (chapters 6-8): of every
    method and strength (``label``), the one with the smallest mean paired gap among those whose
    mean dead share reaches the paper's; if none does, the one removing the most. Chosen on the
    test metric among many settings: an optimistic pick, which the row says."""
    from prunedyn.book import baselines as B

    metric = PRESET_METRIC[preset]
    target, tol = PAPER_FRACTION[preset], TOLERANCE[metric]
    labels = [
        x
        for x in dict.fromkeys(table["label"])
        if x not in ("dense", "dense-more", "compact-then-magnitude")
    ]
    mt = B.method_table(table, metric, labels=["dense", *labels], nodes=nodes)
    cand = mt.drop(index="dense")
    reach = cand[cand["dead_mean"] >= target]
    best = (
        reach.sort_values("gap_mean", kind="mergesort").index[0]
        if len(reach)
        else cand.sort_values("dead_mean", ascending=False, kind="mergesort").index[0]
    )
    ok = cand[cand["gap_mean"] <= tol]
    within = (
        ok.sort_values("dead_mean", ascending=False, kind="mergesort").index[0] if len(ok) else None
    )
    shares = table[table["label"] == best].sort_values("seed")[nodes].to_numpy(dtype=float)
    gap = S.paired(table, metric, "dense", best, by="label")
    dense_vals = table[table["label"] == "dense"][metric].to_numpy(dtype=float)
    sc = SCALE[metric]
    # a label "method@lambda" names its lambda already
    lam_text = (
        ""
        if "@" in best
        else f" (lambda {table.loc[table['label'] == best, 'regularizer.lam'].iloc[0]:g})"
    )
    return Row(
        key=f"{preset.split('-')[0]}_cpu_best",
        claim=(
            f"3. {MODEL_WORD[preset]}: {pct(target, '.0f')} of the {NODE_WORD[preset]} "
            f"removed with little loss "
            f"(recorded CPU-scale comparison, best of {len(cand)} method settings)"
        ),
        result=(
            f"{B.describe(best)}{lam_text}: "
            f"{NODE_WORD[preset]} dead {pct_spread(shares)}; "
            f"{METRIC_LABEL[metric].split(' ')[0]} gap to dense "
            f"{gap_text(gap.values, metric)} (dense "
            f"{S.mean_std_text(dense_vals, sc[1], sc[0])}"
            f"{'%' if metric == 'test_accuracy' else ''})"
        ),
        scale=scale,
        seeds=seeds_text(gap.seeds),
        first=bool(shares.mean() >= target),
        second=bool(gap.mean <= tol),
        conditions=f"(a) mean dead share >= {pct(target, '.0f')}; (b) mean paired "
        f"{METRIC_LABEL[metric].split(' ')[0]} gap <= {tol_text(metric)}",
        values={
            "nodes": shares,
            "gap": gap,
            "target": target,
            "tol": tol,
            "metric": metric,
            "n_seeds": len(shares),
            "dense": dense_vals,
            "best": best,
            "methods": mt,
            "within": within,
        },
        kind="context",
    )


def conv_claim4_row(
    preset: str,
    staged: pd.DataFrame,
    scale: str,
    nodes: str = "dead_node_fraction",
    key: Optional[str] = None,
) -> Row:
    """Claim 4 for a conv net: ``staged`` is :func:`prunedyn.book.baselines.staged_table` of its
    recorded comparison (the SWP + L2 network, then compacted, weight-pruned further and
    fine-tuned; where it has one, the matched-sparsity control ``dense-magnitude``),
    with the dead share in column ``nodes``."""
    metric = PRESET_METRIC[preset]
    src = staged[staged["arm"] == "swp-l2"].sort_values("seed")
    st = staged[staged["arm"] == "compact-then-magnitude"].sort_values("seed")
    matched = staged[staged["arm"] == "dense-magnitude"].sort_values("seed")
    gaps = st["gap"].to_numpy(dtype=float)
    control = (
        f"; the dense network magnitude-pruned to "
        f"{pct_spread(matched['total_sparsity'].tolist())} and fine-tuned as long (control): gap "
        f"{gap_text(matched['gap'].tolist(), metric)}"
        if len(matched)
        else ""
    )
    # the share of the source's nonzero weights the second stage removed
    removed = 1 - (1 - st["total_sparsity"].to_numpy(dtype=float)) / (
        1 - src["total_sparsity"].to_numpy(dtype=float)
    )
    return Row(
        key=key or f"claim4_{preset.split('-')[0]}",
        claim=f"4. {MODEL_WORD[preset]}: the node-pruned network weight-pruned further, "
        f"{METRIC_LABEL[metric].split(' ')[0]} only slightly below the dense one",
        result=(
            f"source (SWP + L2) {NODE_WORD[preset]} dead {pct_spread(src[nodes].tolist())}, "
            f"total weight sparsity "
            f"{pct_spread(src['total_sparsity'].tolist())}, gap "
            f"{gap_text(src['gap'].tolist(), metric)}; "
            f"compacted, {pct(removed.mean(), '.0f')} of its nonzero weights removed by "
            f"global magnitude and {int(st['epochs'].iloc[0] - src['epochs'].iloc[0])} epochs "
            f"of fine-tuning: total sparsity {pct_spread(st['total_sparsity'].tolist())}, gap "
            f"to the dense network of the same "
            f"{int(st['epochs'].iloc[0])} epochs {gap_text(gaps, metric)}{control}"
        ),
        scale=scale,
        seeds=seeds_text(st["seed"].unique()),
        first=bool(src[nodes].mean() >= PAPER_FRACTION[preset]),
        second=bool(gaps.mean() <= TOLERANCE[metric]),
        conditions=(
            f"(a) the source network's mean dead share >= "
            f"{pct(PAPER_FRACTION[preset], '.0f')}; (b) mean gap after "
            f"further pruning, against the dense network of the same total epochs, <= "
            f"{tol_text(metric)}"
        ),
        values={
            "gaps": gaps,
            "n_seeds": len(gaps),
            "sparsity": st["total_sparsity"].to_numpy(dtype=float),
            "source_gaps": src["gap"].to_numpy(dtype=float),
            "source_dead": src[nodes].to_numpy(dtype=float),
            "removed": removed,
            "source_sparsity": src["total_sparsity"].to_numpy(dtype=float),
            "matched_gaps": matched["gap"].to_numpy(dtype=float),
            "metric": metric,
        },
    )


# --------------------------------------------------------------------------
# claim 4: node-pruned networks weight-pruned further
# --------------------------------------------------------------------------
def claim4_row(
    staged: pd.DataFrame, source_dead: Sequence[float], f: float, scale: str, target: float = 0.5
) -> Row:
    """``staged``: chapter 5's table, one row per seed and arm, with ``f`` (share of the remaining
    weights removed), ``total sparsity`` and ``gap to dense, same epochs`` (against the dense
    network trained as many epochs in all)."""
    import _ch05

    at = staged[staged["f"] == f].sort_values("seed")
    gaps = at["gap to dense, same epochs"].to_numpy(dtype=float)
    matched = staged[staged["arm"] == _ch05.MATCHED.format(f=f)].sort_values("seed")
    n = len(gaps)
    return Row(
        key="claim4",
        claim="4. Node-pruned networks can be weight-pruned further, accuracy only slightly "
        "below the dense originals",
        result=(
            f"source (SWP + L2) hidden nodes dead {pct_spread(source_dead)}; compacted, then "
            f"{pct(f, '.0f')} of its remaining "
            f"weights removed (total weight sparsity "
            f"{pct_spread(at['total sparsity'].tolist())}) and fine-tuned: "
            f"accuracy gap to dense {gap_text(gaps, 'test_accuracy')}; the dense network "
            f"magnitude-pruned to the same "
            f"sparsity and fine-tuned as long (control): gap "
            f"{gap_text(matched['gap to dense, same epochs'], 'test_accuracy')}"
        ),
        scale=scale,
        seeds=seeds_text(at["seed"].unique()),
        first=bool(np.mean(source_dead) >= target),
        second=bool(gaps.mean() <= TOLERANCE["test_accuracy"]),
        conditions=f"(a) the source network's mean dead share >= {pct(target, '.0f')}; (b) mean "
        f"gap "
        f"after further pruning <= {tol_text('test_accuracy')}",
        values={
            "gaps": gaps,
            "n_seeds": n,
            "sparsity": at["total sparsity"].to_numpy(dtype=float),
            "matched_gaps": matched["gap to dense, same epochs"].to_numpy(dtype=float),
        },
    )


# --------------------------------------------------------------------------
# the dependency: L2 balances a node's two sides, and a dead node is dead on both
# --------------------------------------------------------------------------
def dependency_values(runs: Dict[str, list], epoch: int = 10) -> pd.DataFrame:
    """Per run and seed: ``rel_l2``, the median relative L2 imbalance of the alive nodes at
    ``epoch``
    (the worse of the hidden layers); ``lag``, the mean number of epochs between the deaths of a
    node's two sides (over the nodes both of whose sides died); ``both_share``, the share of the
    nodes dead at the end that are dead on both sides."""
    rows = []
    for key, results in runs.items():
        for r in results:
            bal = dep.balance_table({key: r.nodes}, [epoch])
            first = dep.first_death(r.nodes).dropna(subset=["gap"])
            s = r.summary
            dead = s["nodes_total"] - s["nodes_alive"]
            both = s["nodes_in_dead"] + s["nodes_out_dead"] - dead
            rows.append(
                {
                    "run": key,
                    "seed": r.config.seed,
                    "rel_l2": float(bal["rel_l2"].max()),
                    "lag": float(first["gap"].abs().mean()) if len(first) else float("nan"),
                    "dead": int(dead),
                    "both_share": both / dead if dead else float("nan"),
                }
            )
    return pd.DataFrame(rows)


def dependency_row(
    values: pd.DataFrame,
    scale: str,
    epoch: int = 10,
    ratio: float = 0.5,
    max_lag: float = 1.5,
    both_min: float = 0.9,
) -> Row:
    v = values.set_index(["run", "seed"])
    seeds = sorted(values[values["run"] == "l2"]["seed"])
    l2_bal, none_bal = v.loc["l2"]["rel_l2"].loc[seeds], v.loc["none"]["rel_l2"].loc[seeds]
    balanced = bool((l2_bal < ratio * none_bal).all())
    lag, both = v.loc["l2"]["lag"].loc[seeds], v.loc["l2"]["both_share"].loc[seeds]
    follows = bool((lag <= max_lag).all() and (both >= both_min).all())
    l1_lag, l1_both = v.loc["l1"]["lag"], v.loc["l1"]["both_share"]
    return Row(
        key="dependency",
        claim="Dependency: L2 drives ||w_in||^2 - ||w_out||^2 towards 0, so once one side of a "
        "node is pruned the other follows",
        result=(
            f"median relative imbalance of alive nodes at epoch {epoch}: SWP + L2 "
            f"{S.mean_std_text(l2_bal.tolist(), '.3f')}, "
            f"SWP alone {S.mean_std_text(none_bal.tolist(), '.3f')}; epochs from one side's "
            f"death to the other's: "
            f"L2 {S.mean_std_text(lag.tolist(), '.2f')}, L1 "
            f"{S.mean_std_text(l1_lag.tolist(), '.2f')}; dead nodes dead on "
            f"both sides at the end: L2 {pct_spread(both.tolist())}, L1 "
            f"{pct_spread(l1_both.tolist())}"
        ),
        scale=scale,
        seeds=seeds_text(seeds),
        first=balanced,
        second=follows,
        conditions=(
            f"(a) L2's imbalance at epoch {epoch} below {ratio:g} x SWP alone's in every "
            f"seed; (b) under L2 the second "
            f"side dies within {max_lag:g} epochs of the first on average, and >= "
            f"{pct(both_min, '.0f')} of the dead "
            f"nodes are dead on both sides, in every seed"
        ),
        values={
            "l2_bal": l2_bal,
            "none_bal": none_bal,
            "lag": lag,
            "both": both,
            "l1_lag": l1_lag,
            "l1_both": l1_both,
        },
    )


# --------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------
COLUMNS = [
    "claim",
    "our result (mean ± sd over seeds)",
    "scale",
    "seeds",
    "dense reference",
    "verdict",
]


def gate_text(row: Row) -> str:
    if row.gate is None:
        return "no dense comparison"
    return "competent" if row.gate.competent else "not competent: " + row.gate.reasons()


def claims_frame(rows: Sequence[Row]) -> pd.DataFrame:
    return pd.DataFrame(
        [[r.claim, r.result, r.scale, r.seeds, gate_text(r), r.verdict] for r in rows],
        columns=COLUMNS,
    )


def conditions_frame(rows: Sequence[Row]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            [
                r.claim.split(":")[0],
                r.conditions,
                "yes" if r.first else "no",
                "yes" if r.second else "no",
                "yes" if r.testable else "no",
                r.verdict,
            ]
            for r in rows
        ],
        columns=["claim", "conditions", "(a) holds", "(b) holds", "reference competent", "verdict"],
    )


def tally_text(rows: Sequence[Row]) -> str:
    """The verdicts of the rows that count (the paper's method on a competent reference), by
    verdict,
    and how many rows were not testable or context."""
    counted = [r.verdict.replace(" (one seed)", "") for r in rows if r.tallied]
    parts = [f"{counted.count(v)} {v}" for v in VERDICTS if counted.count(v)]
    untestable = sum(r.verdict == NOT_TESTABLE for r in rows)
    context = sum(r.kind == "context" and r.testable for r in rows)
    shown = sum(r.kind == "illustration" and r.testable for r in rows)
    return (
        (", ".join(parts) or "no row")
        + f"; {untestable} not testable at this scale; {context} context"
        + (f"; {shown} illustration{'s' if shown != 1 else ''}" if shown else "")
    )


# --------------------------------------------------------------------------
# the gate: is each dense reference competent at its scale?
# --------------------------------------------------------------------------
def schedule_gate(
    table: pd.DataFrame, metric: str, trivial: float, budget: Optional[int] = None
) -> K.Competence:
    """The gate from a recorded schedule study (``label``, ``epochs``, ``seed``, metrics): its dense
    runs at ``budget`` epochs (default the shortest) and at twice that."""
    d = table[table["label"] == "dense"]
    e0 = int(budget or d["epochs"].min())
    # noqa: E731
    at = lambda e: d[d["epochs"] == e].sort_values("seed")[metric].to_numpy(dtype=float)
    doubled = at(2 * e0)
    return K.Competence(metric, at(e0), doubled if len(doubled) else None, trivial, budget=e0)


def _finer(fmt: str) -> str:
    """A fixed-point format with one digit more than ``fmt`` (".3f" -> ".4f")."""
    return f".{int(fmt[1:-1]) + 1}f"


def competence_frame(gates: Dict[str, K.Competence]) -> pd.DataFrame:
    """One row per dense reference: its metric at the budget and at twice it, the trivial model's,
    and the two conditions of the gate."""
    out = []
    for name, g in gates.items():
        scale, fmt, unit = SCALE[g.metric]
        pct_sign = "%" if g.metric in PERCENT else ""
        # noqa: E731
        show = lambda vals: (
            S.mean_std_text(list(vals), fmt, scale) + pct_sign
            if vals is not None
            else "not measured"
        )
        out.append(
            {
                "dense reference": name,
                "metric": metric_word(g.metric),
                "at the budget": f"{show(g.dense)} ({g.budget} epochs)"
                if g.budget
                else show(g.dense),
                "at twice the budget": show(g.doubled),
                "change": ""
                if g.change is None
                else format(g.change * scale, "+" + _finer(fmt)) + unit,
                "converged (|change| under 1 point, 0.01 Dice, 0.005 AUC)": "not measured"
                if g.change is None
                else "yes"
                if g.converged
                else "no",
                "trivial model": "not measured"
                if g.trivial is None
                else format(g.trivial * scale, fmt) + pct_sign,
                f"far above trivial (error / trivial's ≤ {K.ERROR_RATIO:g})": "not measured"
                if g.trivial is None
                else f"{'yes' if g.above_trivial else 'no'} ({g.error_ratio:.2f})",
                "competent": "yes" if g.competent else "no",
            }
        )
    return pd.DataFrame(out)


def staged_runs(profile: str, seeds: Sequence[int], levels: Sequence[float], epochs: int) -> tuple:
    """Chapter 5's node-then-weight pruning runs, by chapter 5's own request builder (``_ch05``),
    so they are the same cached runs: per seed, the SWP + L2 source run and the dense run of the
    book's comparison; the compacted source fine-tuned for ``epochs`` under global magnitude
    pruning that removes the share ``f`` of its remaining weights, for each ``f`` in ``levels``;
    and the dense control trained as many epochs more. Returns ``(staged, sources)``: chapter 5's
    table (one row per seed and arm) and the source runs per seed."""
    import _ch05
    from prunedyn.data.datasets import load_dataset
    from prunedyn.book.study import COMPARISON, resolve, run_many

    base = run_many(
        [("mlp-mnist", [*COMPARISON[k], f"seed={s}"]) for s in seeds for k in ("l2", "dense")],
        profile,
        progress=False,
    )
    sources = {s: base[2 * i] for i, s in enumerate(seeds)}
    dense = {s: base[2 * i + 1] for i, s in enumerate(seeds)}
    data = load_dataset(resolve("mlp-mnist", [], profile).data)
    compacted = {s: _ch05.compacted_sparsity(sources[s], data) for s in seeds}
    results = run_many(
        _ch05.staged_requests(sources, dense, compacted, levels, epochs), profile, progress=False
    )
    return _ch05.staged_table(sources, dense, compacted, levels, results), sources


# --------------------------------------------------------------------------
# the figure: every node claim against its target
# --------------------------------------------------------------------------
#: Gaps beyond this many tolerances are drawn at it, with their value written beside them.
Y_CAP = 5.0


def _capped(ax, x: float, y: float, color) -> float:
    """``y``, or :data:`Y_CAP` with a note of the true value when it is off the scale."""
    if y <= Y_CAP:
        return y
    ax.annotate(
        f"{y:.0f}x the tolerance",
        (x, Y_CAP),
        xytext=(-6, 6),
        textcoords="offset points",
        ha="right",
        fontsize=7.5,
        color=color,
        arrowprops=None,
    )
    return Y_CAP


def plot_node_claims(rows: Sequence[Row]):
    """Each claim-3 row as a point: dead share over the paper's share (x, 1 = the paper) against the
    mean paired gap over the tolerance (y, 1 = the tolerance); error bars one sd over seeds (live
    rows), hollow markers for recorded one-seed runs, grey where the dense reference fails the gate
    (no verdict). The shaded corner is "reproduced"."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.6, 6.0), layout="constrained")
    ax = fig.add_subplot()
    ax.axvspan(1.0, 10, ymin=0, ymax=1, color="none")
    ax.fill_between(
        [1.0, 3.0], -1.0, 1.0, color="#2ca02c", alpha=0.12, lw=0, label="reproduced: (a) and (b)"
    )
    ax.axvline(1.0, color="0.4", lw=0.8, ls="--")
    ax.axhline(1.0, color="0.4", lw=0.8, ls="--")
    colors = {
        "mlp": "#1f77b4",
        "mlp_best": "#1f77b4",
        "vgg": "#d62728",
        "vgg_full": "#d62728",
        "unet": "#9467bd",
        "cxr": "#ff7f0e",
        "vgg16_cpu_best": "#d62728",
        "unet_cpu_best": "#9467bd",
        "cxr_cpu_best": "#ff7f0e",
        "unet_front": "#9467bd",
    }
    xs, ys = [], []
    for r in rows:
        v = r.values
        if r.key == "vgg_full":
            best = v["best"]
            x = float(best["filters_removed"]) / PAPER_FRACTION["vgg16-cifar10"]
            y = float(best["gap_points"]) / (100 * TOLERANCE["test_accuracy"])
            c = colors[r.key] if r.testable else "0.6"
            y = _capped(ax, x, y, c)
            ax.plot(
                [x],
                [y],
                "s",
                mfc="none",
                mec=c,
                ms=9,
                mew=1.6,
                label="VGG-16, full scale on a GPU (recorded, one seed)"
                + ("" if r.testable else ": not testable"),
            )
        elif "nodes" in v and "gap" in v and "tol" in v and r.key in colors:
            nodes = np.asarray(v["nodes"], dtype=float) / v["target"]
            gaps = np.asarray(v["gap"].values, dtype=float) / v["tol"]
            x, y = float(nodes.mean()), float(gaps.mean())
            sx = float(nodes.std(ddof=1)) if len(nodes) > 1 else 0.0
            sy = float(gaps.std(ddof=1)) if len(gaps) > 1 else 0.0
            front = r.key == "mlp_best" or r.key.endswith("_front")
            recorded = front or r.key.endswith("_cpu_best")
            label = r.claim.split(":")[0].replace("3. ", "") + (
                " (best method, recorded CPU comparison)"
                if r.key.endswith("_cpu_best")
                else " (recorded front, competent scale, chosen on validation)"
                if r.key.endswith("_front")
                else " (recorded front, chosen on validation)"
                if front
                else " (live, quick scale, SWP + L2)"
            )
            # a reference that fails the gate: grey, no verdict
            c = colors[r.key] if r.testable else "0.6"
            label += "" if r.testable else ": not testable"
            if y > Y_CAP:
                y, sy = _capped(ax, x, y, c), 0.0
            ax.errorbar(
                [x],
                [y],
                xerr=[sx],
                yerr=[sy],
                fmt="D" if recorded else "o",
                color=c,
                mfc="none" if recorded else c,
                ms=7,
                capsize=3,
                label=label,
            )
        else:
            continue
        xs.append(x)
        ys.append(y)
    ax.set_xlim(0, max(1.4, max(xs) * 1.1))
    ax.set_ylim(min(-0.5, min(ys) * 1.1), max(1.5, min(Y_CAP * 1.12, max(ys) * 1.15)))
    ax.set_xlabel("share of nodes dead / the paper's share (1 = the paper's 50% or 60%)")
    ax.set_ylabel("mean paired gap to dense / tolerance")
    ax.set_title(
        "Claim 3 per model: (a) right of the dashed line, (b) below it; grey: not testable",
        fontsize=10,
    )
    fig.legend(
        *ax.get_legend_handles_labels(),
        fontsize=7.5,
        loc="outside lower center",
        ncols=2,
        frameon=False,
    )
    return fig


#: Colours of the verdicts in the headline figure.
VERDICT_COLOR = {
    VERDICTS[0]: "#2ca02c",
    VERDICTS[1]: "#ff7f0e",
    VERDICTS[2]: "#d62728",
    NOT_TESTABLE: "0.55",
    CONTEXT: "0.35",
    ILLUSTRATION: "#6b8fb3",
}


def node_share_frame(rows: Sequence[Row]) -> pd.DataFrame:
    """One line per claim-3 row (per model and scale): the paper's share of nodes, ours (mean and
    sd over the seeds, or one recorded run), the verdict and whether the row is a live run."""
    out = []
    for r in rows:
        v = r.values
        if r.key == "vgg_full":
            nodes = [float(v["best"]["filters_removed"])]
            target = PAPER_FRACTION["vgg16-cifar10"]
            how = "full scale on a GPU, recorded (one seed)"
        elif "nodes" in v and "gap" in v and "tol" in v and "target" in v:
            nodes = [float(x) for x in np.asarray(v["nodes"], dtype=float)]
            target = float(v["target"])
            how = (
                "best method, recorded CPU comparison"
                if r.key.endswith("_cpu_best")
                else "recorded front, chosen on validation"
                if r.key == "mlp_best" or r.key.endswith("_front")
                else "live, quick scale, SWP + L2"
            )
        else:
            continue
        out.append(
            {
                "key": r.key,
                "model": r.claim.split(":")[0].replace("3. ", ""),
                "how": how,
                "paper": target,
                "ours": float(np.mean(nodes)),
                "sd": float(np.std(nodes, ddof=1)) if len(nodes) > 1 else 0.0,
                "seeds": len(nodes),
                "verdict": r.verdict,
                "live": how.startswith("live"),
            }
        )
    return pd.DataFrame(out)


def plot_headline(rows: Sequence[Row]):
    """The book's headline: per model (and scale), the share of nodes dead in our runs (bars, one
    sd over the seeds) against the paper's share (black tick), with the verdict of the rule at the
    right; hollow bars are recorded runs, grey verdicts rest on a dense reference that fails the
    gate."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    t = node_share_frame(rows)
    fig = Figure(figsize=(9.0, 0.5 * len(t) + 1.6), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(t))[::-1]
    colors = [VERDICT_COLOR.get(v, "0.4") for v in t["verdict"]]
    for yi, c, (_, r) in zip(y, colors, t.iterrows()):
        ax.barh(
            yi,
            100 * r["ours"],
            xerr=100 * r["sd"] if r["seeds"] > 1 else None,
            height=0.62,
            color=c if r["live"] else "none",
            edgecolor=c,
            lw=1.6,
            alpha=0.85,
            error_kw={"ecolor": "0.25", "capsize": 3, "lw": 1},
        )
        ax.plot([100 * r["paper"]] * 2, [yi - 0.42, yi + 0.42], color="black", lw=2.4)
    ax.set_yticks(y, [f"{m}\n{h}" for m, h in zip(t["model"], t["how"])], fontsize=8)
    ax.set_ylim(-0.6, len(t) - 0.4)
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of the nodes (hidden units, filters, channels) dead after training, %")
    ax.spines[["top"]].set_visible(False)
    # the verdicts as the right-hand axis' labels, in their colours
    right = ax.twinx()
    right.set_ylim(ax.get_ylim())
    right.set_yticks(y, list(t["verdict"]), fontsize=9)
    for label, c in zip(right.get_yticklabels(), colors):
        label.set_color(c)
    right.tick_params(length=0)
    right.spines[["top"]].set_visible(False)
    right.set_ylabel("verdict of the book's rule", fontsize=9)
    handles = [
        Line2D([], [], color="black", lw=2.4, label="the paper's share"),
        Patch(facecolor="0.6", edgecolor="0.6", label="ours: live runs (one sd over 3 seeds)"),
        Patch(facecolor="none", edgecolor="0.4", label="ours: recorded runs"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    return fig


def trivial_metrics(preset: str, overrides: Sequence[str] = ()) -> Dict[str, float]:
    """The gate's trivial model on the data ``preset`` (with ``overrides``) trains and tests on:
    :func:`prunedyn.book.competence.trivial_segmenter` for the U-Net, else
    :func:`~prunedyn.book.competence.trivial_classifier`. Seconds on a CPU."""
    from prunedyn.data.datasets import load_dataset
    from prunedyn.run.config import load_config

    b = load_dataset(load_config(preset, list(overrides)).data)
    if b.task == "segmentation":
        return K.trivial_segmenter(
            b.x_train, b.y_train != 0, b.x_test, b.extras["test_instances"] != 0
        )
    return K.trivial_classifier(b.x_train, b.y_train, b.x_test, b.y_test)


def gate_sentence(name: str, g: K.Competence) -> str:
    """One sentence on a dense reference's gate, for the prose."""
    scale, fmt, unit = SCALE[g.metric]
    m = metric_word(g.metric)
    article = "an" if m[0].lower() in "aeiou" else "a"
    dense = S.mean_std_text(list(g.dense), fmt, scale) + ("%" if g.metric in PERCENT else "")
    conv = (
        "its convergence was not measured"
        if g.change is None
        else f"twice the epochs move it by {format(g.change * scale, '+' + _finer(fmt))}{unit}"
    )
    triv = (
        "no trivial model was fitted to its data"
        if g.trivial is None
        else f"a trivial model on the same images reaches {format(g.trivial * scale, fmt)}"
        f"{'%' if g.metric in PERCENT else ''} (error ratio {g.error_ratio:.2f})"
    )
    return f"The dense {name} reaches {article} {m} of {dense}; {conv}, and {triv}: " + (
        "a competent reference."
        if g.competent
        else f"the gate fails, so its rows are {NOT_TESTABLE}."
    )


# --------------------------------------------------------------------------
# the MLP's fronts (recorded, mlp-front.csv): settings chosen on the validation split
# --------------------------------------------------------------------------
CONTEXT_METHODS = ("swp-group-lasso", "targeted-dropout-unit")


def front_best_table(table: pd.DataFrame, chosen: pd.DataFrame) -> pd.DataFrame:
    """The runs of the paper's method's chosen setting with the most nodes dead (run ``best``) and
    the dense runs (run ``dense``), for :func:`node_row`; ``attrs``: the setting and how many
    settings of the paper's method it was chosen from."""
    paper = chosen[chosen["method"].isin(PAPER_METHODS)].sort_values("share_mean", ascending=False)
    setting = paper.iloc[0]["setting"]
    rows = table[table["setting"].isin([setting, "dense"])].copy()
    rows["run"] = np.where(rows["setting"] == "dense", "dense", "best")
    rows["node_fraction"] = rows["nodes_removed"]
    rows.attrs["setting"] = setting
    rows.attrs["settings"] = int(
        table.loc[table["method"].isin(PAPER_METHODS), "setting"].nunique()
    )
    return rows


def conv_front_row(key: str, front, scale: str) -> Row:
    """Claim 3 for a conv net from its recorded front at a competent scale
    (:class:`_ch06_08.Front`):
    the paper's method's setting chosen on the validation split with the most nodes dead, judged
    on the test split (read once) against the dense network of the same seeds."""
    best = front.best_paper()
    t = front.table[front.table["setting"].isin([best["setting"], "dense"])].copy()
    t["run"] = np.where(t["setting"] == "dense", "dense", "best")
    t["node_fraction"] = t["nodes_removed"]
    n = int(front.table.loc[front.table["method"].isin(PAPER_METHODS), "setting"].nunique())
    return node_row(
        key,
        front.preset,
        t,
        scale,
        pruned="best",
        fraction="node_fraction",
        metric=front.metric,
        label=f"recorded front at a competent scale, chosen on validation among {n} settings: "
        f"{best['setting']}",
    )


def headline_frame(table: pd.DataFrame, z: float = 2.0) -> pd.DataFrame:
    """The paper's methods' trade-off numbers on the validation split
    (:func:`prunedyn.book.tradeoffs.headline_share`): against each context method alone and
    against the better of them, the largest node share at which the method's mean gap stays within
    the baseline front's gap at that share plus ``z`` standard errors of the difference. Hidden
    columns (``_<baseline>``): the Series, for the prose and the checks."""
    val = FR.paired_front(table, split="val")
    out = []
    for m in PAPER_METHODS:
        row = {"method": FRONT_NAME[m]}
        for b in (*CONTEXT_METHODS, None):
            h = FR.headline_share(val, m, [b] if b else list(CONTEXT_METHODS), z=z)
            name = f"against {FRONT_NAME[b]}" if b else "against the better of them"
            row[name] = (
                "none"
                if h["setting"] is None
                else f"{pct(h['share_mean'])} ({h['setting'].split(', ', 1)[1]}; gap "
                f"{100 * h['gap_mean']:.2f} "
                f"within {100 * h['tol']:.2f} points)"
            )
            row[f"_{b or 'best'}"] = h
        out.append(row)
    return pd.DataFrame(out)


# --------------------------------------------------------------------------
# the MLP's controls (recorded): the pruned widths from scratch, and the best recipe of the paper's
# method
# --------------------------------------------------------------------------
HIDDEN = (300, 100)


def chosen_widths(table: pd.DataFrame, layers: pd.DataFrame, setting: str) -> tuple:
    """The hidden widths a setting's runs keep (alive nodes per layer, from the front's layers
    table: for the MLP, compaction removes every dead node), averaged over seeds and rounded."""
    runs = table.loc[table["setting"] == setting, "run"]
    alive = layers[layers["run"].isin(runs)].groupby("layer", sort=False)["alive"].mean()
    return tuple(int(round(x)) for x in alive)


#: The recorded controls' labels (sweeps/mlp-controls.yaml) and the arms chapter 9 names them by.
CONTROL_ARMS = {
    "dense": "dense",
    "scratch-l2": "scratch SWP + L2",
    "scratch-l1": "scratch SWP + L1",
    "recipe@0.01": "recipe lam=0.01",
    "recipe@0.02": "recipe lam=0.02",
}


def recorded_controls(table: pd.DataFrame, layers: pd.DataFrame) -> pd.DataFrame:
    """The MLP's controls (``results/mlp-controls.csv``, its layers table beside it), per seed,
    one row
    per arm (:data:`CONTROL_ARMS`):

    - ``dense``: the dense network (no pruner, no regularizer), 40 epochs, on the fronts' data;
    - ``scratch ...``: a dense network of the hidden widths of the setting chosen on validation,
      trained from scratch with the same recipe and epochs (Liu et al. 2019): does the pruned
      network's accuracy need pruning?
    - ``recipe lam=...``: the paper's method as a structure finder at equal total epochs: SWP +
    L2 at
      ``lam`` for 20 epochs, then compacted and trained 20 more without pruner or regularizer.

    ``hidden``: the arm's hidden widths; ``share``: the share of the 400 hidden nodes it does
    not have.
    """
    t = table[table["label"].isin(list(CONTROL_ARMS))]
    widths = layers.groupby("run", sort=False)["nodes"].apply(list)
    return pd.DataFrame(
        [
            {
                "arm": CONTROL_ARMS[r["label"]],
                "seed": int(r["seed"]),
                "val_accuracy": r["val_accuracy"],
                "test_accuracy": r["test_accuracy"],
                "hidden": "-".join(str(w) for w in widths[r["run"]]),
                "share": 1 - sum(widths[r["run"]]) / sum(HIDDEN),
            }
            for _, r in t.iterrows()
        ]
    )


def control_frame(controls: pd.DataFrame, chosen: pd.DataFrame) -> pd.DataFrame:
    """The controls against the dense network of the same seed (paired gaps, validation and test),
    with the front's chosen settings beside them."""
    d = controls[controls["arm"] == "dense"].set_index("seed")
    out = []
    for arm, g in controls[controls["arm"] != "dense"].groupby("arm", sort=False):
        g = g.set_index("seed")
        gv = d.loc[g.index, "val_accuracy"] - g["val_accuracy"]
        gt = d.loc[g.index, "test_accuracy"] - g["test_accuracy"]
        out.append(
            {
                "arm": arm,
                "hidden widths": ", ".join(sorted(set(g["hidden"]))),
                "nodes removed": pct_spread(g["share"].tolist()),
                "validation gap (points)": f"{100 * gv.mean():+.2f} ± {100 * gv.std(ddof=1):.2f}",
                "test gap (points)": f"{100 * gt.mean():+.2f} ± {100 * gt.std(ddof=1):.2f}",
                "_val_gap": float(gv.mean()),
                "_test_gap": float(gt.mean()),
                "_share": float(g["share"].mean()),
                "_val_gaps": gv.to_numpy(),
                "_test_gaps": gt.to_numpy(),
            }
        )
    return pd.DataFrame(out)
