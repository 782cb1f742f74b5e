"""Shared settings of chapters 6-8 (VGG-16, U-Net, X-ray CNN): the scale of their quick runs.

The three chapters compare SWP + L2 with the dense network of the same budget over
the seeds of :data:`prunedyn.book.study.SEEDS`; in the quick profile the VGG-16 and
U-Net runs are made smaller than :data:`prunedyn.book.study.QUICK` (a quarter
(VGG-16) or half (U-Net) of the training images, the batch shrunk alike so that
the number of SGD steps per epoch stays, fewer epochs; the U-Net also
scores on half of the test tiles) so that all three chapters train in about 12 minutes on a
2-core CPU.
Any chapter that reuses these runs asks for them through :func:`comparison`, so
that it gets the same cached runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import pandas as pd

from prunedyn.book import baselines as B
from prunedyn.book import fronts as FR
from prunedyn.book import tradeoffs as T
from prunedyn.book import study

#: Overrides on top of the quick profile (none in the full profile).
QUICK_SCALE: Dict[str, Sequence[str]] = {
    "vgg16-cifar10": ("epochs=10", "data.train_size=2500", "data.batch_size=32"),
    "unet-dsb2018": ("epochs=4", "data.train_size=216", "data.batch_size=4", "data.test_size=216"),
    "cxr-cnn": (),
}
#: The runs over all seeds (the headline comparison); the others run for the first seed only.
SEEDED = ("l2", "dense")
ONE_SEED = ("none", "l1")


def scale(profile: str, preset: str) -> list:
    """The chapter's overrides for ``preset`` under ``profile``."""
    return list(QUICK_SCALE.get(preset, ())) if profile == "quick" else []


def requests(profile: str, preset: str) -> list:
    """Every ``(source, overrides)`` the chapter of ``preset`` trains, as
    seeded_comparison builds them."""
    table = study.comparison_table(profile, preset)
    extra = scale(profile, preset)
    out = [(preset, [*table[k], f"seed={s}", *extra]) for k in SEEDED for s in study.SEEDS]
    out += [(preset, [*table[k], f"seed={study.SEEDS[0]}", *extra]) for k in ONE_SEED]
    return out


def comparison(profile: str, preset: str, progress: bool = True) -> Dict[str, list]:
    """``{"l2"|"dense": [RunResult per seed], "none"|"l1": [RunResult for the first seed]}``."""
    extra = scale(profile, preset)
    out = study.seeded_comparison(
        profile, preset, runs=list(SEEDED), overrides=extra, progress=progress
    )
    out.update(
        study.seeded_comparison(
            profile,
            preset,
            seeds=study.SEEDS[:1],
            runs=list(ONE_SEED),
            overrides=extra,
            progress=progress,
        )
    )
    return out


def hist_median(hist, run: str, layer: str, epoch: int) -> float:
    """Median magnitude of the non-zero weights of ``layer`` from a recorded histogram table
    (``run, epoch, layer, bin, lo, hi, count``; bin -1 holds the exact zeros): the geometric
    middle of the log-spaced bin where the cumulative count passes half."""
    import numpy as np

    h = hist[
        (hist["run"] == run)
        & (hist["layer"] == layer)
        & (hist["epoch"] == epoch)
        & (hist["bin"] >= 0)
    ].sort_values("bin")
    cum = h["count"].cumsum().to_numpy()
    i = int(np.searchsorted(cum, cum[-1] / 2))
    row = h.iloc[i]
    return float(np.sqrt(row["lo"] * row["hi"]))


def zero_share(hist, run: str, layer: str, epoch: int) -> float:
    """Share of the exact zeros of ``layer`` in a recorded histogram table."""
    h = hist[(hist["run"] == run) & (hist["layer"] == layer) & (hist["epoch"] == epoch)]
    return float(h.loc[h["bin"] == -1, "count"].sum() / h["count"].sum())


def sci(v: float, digits: int = 1) -> str:
    """``6.5\\cdot10^{-3}`` for glue into math-free prose: ``6.5e-3``."""
    m, e = f"{v:.{digits}e}".split("e")
    return f"{m}e{int(e)}"


# ---------------------------------------------------------------- the recorded CPU-scale comparison
# Chapters 6-8 read the BatchNorm-aware comparison, claim 4's second stage and the schedule study
# from recorded sweeps (results/README.md): too many runs for a book build, the same configs as the
# chapters' own live runs (whose folders the sweeps share).
RESULTS = Path(__file__).resolve().parent / "results"
RECORDS = {
    "vgg16-cifar10": "cpu-baselines-vgg16",
    "unet-dsb2018": "cpu-baselines-unet",
    "cxr-cnn": "cpu-baselines-cxr",
}
SCHEDULES = {
    "vgg16-cifar10": "cpu-schedule-vgg16",
    "unet-dsb2018": "cpu-schedule-unet",
    "cxr-cnn": "cpu-schedule-cxr",
}
METRIC = {"vgg16-cifar10": "test_accuracy", "unet-dsb2018": "test_dice", "cxr-cnn": "test_auc"}
METRIC_WORD = {"test_accuracy": "accuracy", "test_dice": "Dice", "test_auc": "AUC"}
#: Each method at the strength the chapters' comparison uses (the other strengths are labelled
#: method@lambda).
MAIN = ("dense", "swp-l2", "swp-l1", "swp-group-lasso", "slimming")
#: The same SWP + L2 with the decay on every parameter / the conv and linear weights / the BatchNorm
#: scales.
SCOPES = ("swp-l2", "swp-l2-weights", "swp-l2-bn")
STAGE_LABELS = ("compact-then-magnitude", "dense-more")


def recorded(preset: str, kind: str = "baselines") -> pd.DataFrame:
    """The recorded sweep table of ``preset`` (``kind``: ``baselines`` or ``schedule``), with
    ``node_fraction``: the share of the conv filters removed for VGG-16 (what the paper counts;
    its classifier's hidden units are left out), the share of all nodes otherwise."""
    from prunedyn.book import conv_report as R

    name = (RECORDS if kind == "baselines" else SCHEDULES)[preset]
    table = pd.read_csv(RESULTS / f"{name}.csv")
    if preset == "vgg16-cifar10":
        counts = R.filter_counts(pd.read_csv(RESULTS / f"{name}-layers.csv")).set_index("run")
        table["node_fraction"] = table["run"].map(counts["filters_removed"])
    else:
        table["node_fraction"] = table["dead_node_fraction"]
    return table


def provenance(preset: str, kind: str = "baselines") -> dict:
    import json

    name = (RECORDS if kind == "baselines" else SCHEDULES)[preset]
    return json.loads((RESULTS / "provenance.json").read_text())[name]


def fmt_metric(metric: str, v: float, sd: Optional[float] = None) -> str:
    """Accuracy in % (gaps in points), Dice and AUC with three decimals."""
    if metric == "test_accuracy":
        s = f"{100 * v:.2f}"
        return s + (f" ± {100 * sd:.2f}" if sd is not None and np.isfinite(sd) else "")
    s = f"{v:.3f}"
    return s + (f" ± {sd:.3f}" if sd is not None and np.isfinite(sd) else "")


def gap_unit(metric: str) -> str:
    return " points" if metric == "test_accuracy" else ""


def method_frame(mt: pd.DataFrame, metric: str, table: pd.DataFrame) -> pd.DataFrame:
    """:func:`prunedyn.book.baselines.method_table` as the chapters print it."""
    lam = table.groupby("label")["regularizer.lam"].first()
    unit = "%" if metric == "test_accuracy" else ""
    return pd.DataFrame(
        {
            "method": [B.describe(x).split(", lambda")[0] for x in mt.index],
            "lambda": [f"{lam[x]:g}" for x in mt.index],
            "seeds": mt["seeds"].astype(int),
            "nodes dead": [
                f"{100 * a:.1f} ± {100 * b:.1f}%" for a, b in zip(mt["dead_mean"], mt["dead_sd"])
            ],
            "weights zero": [f"{100 * a:.1f}%" for a in mt["sparsity_mean"]],
            f"{METRIC_WORD[metric]}{' (%)' if unit else ''}": [
                fmt_metric(metric, a, b) for a, b in zip(mt["metric_mean"], mt["metric_sd"])
            ],
            f"gap to dense{' (points)' if unit else ''}": [
                fmt_metric(metric, a, b) if x != "dense" else ""
                for x, a, b in zip(mt.index, mt["gap_mean"], mt["gap_sd"])
            ],
            "every seed": list(mt["verdict"]),
        },
        index=mt.index,
    )


def method_texts(mt: pd.DataFrame, metric: str, prefix: str) -> Dict[str, str]:
    """Glue texts per label (``-``/``@`` replaced): ``<prefix>_<label>_dead`` /
    ``_gap`` / ``_metric`` / ``_verdict``."""
    out = {}
    for label, r in mt.iterrows():
        k = f"{prefix}_{label.replace('-', '_').replace('@', '_at_').replace('.', 'p')}"
        out[f"{k}_dead"] = f"{100 * r['dead_mean']:.1f} ± {100 * r['dead_sd']:.1f}%"
        out[f"{k}_gap"] = fmt_metric(metric, r["gap_mean"], r["gap_sd"]) + gap_unit(metric)
        out[f"{k}_metric"] = fmt_metric(metric, r["metric_mean"], r["metric_sd"]) + (
            "%" if metric == "test_accuracy" else ""
        )
        out[f"{k}_verdict"] = r["verdict"]
    return out


def markdown(df: pd.DataFrame) -> str:
    """A DataFrame as a GitHub/MyST pipe table (the book renders text/markdown outputs as GFM;
    no extra dependency). Chapter 9's tables use it too."""
    esc = lambda x: str(x).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(esc(c) for c in df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _pm(values, scale: float = 1.0, fmt: str = ".1f", unit: str = "") -> str:
    v = np.asarray(values, dtype=float) * scale
    return (
        f"{format(v.mean(), fmt)}{unit}"
        if len(v) < 2
        else f"{format(v.mean(), fmt)} ± {format(v.std(ddof=1), fmt)}{unit}"
    )


def scope_texts(table: pd.DataFrame, metric: str, nodes: str = "node_fraction") -> Dict[str, str]:
    """Glue texts for SWP + L2 with the decay on every parameter / the weights / the BatchNorm
    scales:
    the dead shares, and the paired differences of the dead share (points) between the scopes."""
    from prunedyn.analysis.seeds import paired

    out = {}
    for label in SCOPES:
        g = table[table["label"] == label]
        out[label.replace("-", "_") + "_dead"] = _pm(g[nodes], 100, ".1f", "%")
    for a, b in (
        ("swp-l2", "swp-l2-weights"),
        ("swp-l2", "swp-l2-bn"),
        ("swp-l2-weights", "swp-l2-bn"),
    ):
        d = paired(table, nodes, a, b, by="label")
        key = f"{a}_minus_{b}".replace("-", "_")
        out[key] = f"{100 * d.mean:+.1f} ± {100 * d.std:.1f} points"
        out[key + "_verdict"] = {
            "higher": "more in every seed",
            "lower": "fewer in every seed",
        }.get(d.verdict(), "no clear difference")
    return out


def staged_frame(staged: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Claim 4's per-arm summary as the chapters print it."""
    ss = B.staged_summary(staged, metric)
    unit = " (points)" if metric == "test_accuracy" else ""
    names = {
        "swp-l2": "SWP + L2 (node-pruned)",
        "compact-then-magnitude": "compacted, then magnitude-pruned and fine-tuned",
        "dense-magnitude": "dense, magnitude-pruned to that sparsity and fine-tuned (control)",
    }
    ep = staged.groupby("arm", sort=False)["epochs"].first()
    return pd.DataFrame(
        {
            "network": [names.get(a, a) for a in ss.index],
            "epochs in all": [int(ep[a]) for a in ss.index],
            "seeds": ss["seeds"].astype(int),
            "weights removed (of the dense network's)": [
                f"{100 * a:.2f} ± {100 * b:.2f}%"
                for a, b in zip(ss["total_sparsity_mean"], ss["total_sparsity_sd"])
            ],
            metric_column(metric): [
                fmt_metric(metric, a, b) for a, b in zip(ss[f"{metric}_mean"], ss[f"{metric}_sd"])
            ],
            f"gap to dense of the same epochs{unit}": [
                fmt_metric(metric, a, b) for a, b in zip(ss["gap_mean"], ss["gap_sd"])
            ],
        }
    )


def metric_column(metric: str) -> str:
    return METRIC_WORD[metric] + (" (%)" if metric == "test_accuracy" else "")


def staged_texts(
    staged: pd.DataFrame, ss: pd.DataFrame, metric: str, prefix: str
) -> Dict[str, str]:
    src, st = "swp-l2", "compact-then-magnitude"
    u = gap_unit(metric)
    ep = staged.groupby("arm", sort=False)["epochs"].first()
    gaps = staged.loc[staged["arm"] == st, "gap"].to_numpy(dtype=float)
    # the share of the source's nonzero weights the second stage removed
    kept_nonzero = (1 - ss.loc[st, "total_sparsity_mean"]) / (
        1 - ss.loc[src, "total_sparsity_mean"]
    )
    return {
        f"{prefix}_st_src_sparsity": f"{100 * ss.loc[src, 'total_sparsity_mean']:.1f}%",
        f"{prefix}_st_sparsity": f"{100 * ss.loc[st, 'total_sparsity_mean']:.2f} ± "
        f"{100 * ss.loc[st, 'total_sparsity_sd']:.2f}%",
        f"{prefix}_st_src_gap": fmt_metric(metric, ss.loc[src, "gap_mean"], ss.loc[src, "gap_sd"])
        + u,
        f"{prefix}_st_gap": fmt_metric(metric, ss.loc[st, "gap_mean"], ss.loc[st, "gap_sd"]) + u,
        f"{prefix}_st_gap_max": fmt_metric(metric, float(gaps.max())) + u,
        f"{prefix}_st_epochs": str(int(ep[st] - ep[src])),
        f"{prefix}_st_total_epochs": str(int(ep[st])),
        f"{prefix}_st_alive": _pm(staged[staged["arm"] == st]["nodes_alive"], 1, ".0f"),
        f"{prefix}_st_removed": f"{100 * (1 - kept_nonzero):.0f}%",
    }


def schedule_frame(st: pd.DataFrame, metric: str) -> pd.DataFrame:
    unit = " (points)" if metric == "test_accuracy" else ""
    return pd.DataFrame(
        {
            "seeds": st["seeds"].astype(int),
            "nodes dead, SWP + L2": [
                f"{100 * a:.1f} ± {100 * b:.1f}%" for a, b in zip(st["dead_mean"], st["dead_sd"])
            ],
            f"dense {metric_column(metric)}": [
                fmt_metric(metric, a, b) for a, b in zip(st["reference_mean"], st["reference_sd"])
            ],
            f"SWP + L2 {metric_column(metric)}": [
                fmt_metric(metric, a, b) for a, b in zip(st["metric_mean"], st["metric_sd"])
            ],
            f"gap{unit}": [fmt_metric(metric, a, b) for a, b in zip(st["gap_mean"], st["gap_sd"])],
        },
        index=pd.Index(st.index, name="epochs"),
    )


def schedule_texts(st: pd.DataFrame, metric: str, prefix: str) -> Dict[str, str]:
    u = gap_unit(metric)
    out = {}
    for e, r in st.iterrows():
        out[f"{prefix}_sch_{e}_dead"] = f"{100 * r['dead_mean']:.1f} ± {100 * r['dead_sd']:.1f}%"
        out[f"{prefix}_sch_{e}_gap"] = fmt_metric(metric, r["gap_mean"], r["gap_sd"]) + u
        out[f"{prefix}_sch_{e}_dense"] = fmt_metric(
            metric, r["reference_mean"], r["reference_sd"]
        ) + ("%" if metric == "test_accuracy" else "")
        out[f"{prefix}_sch_{e}_pruned"] = fmt_metric(metric, r["metric_mean"], r["metric_sd"]) + (
            "%" if metric == "test_accuracy" else ""
        )
        out[f"{prefix}_sch_{e}_verdict"] = (
            "every seed loses"
            if r["gap_min"] > 0
            else "every seed gains"
            if r["gap_max"] < 0
            else "no clear difference"
        )
    e = list(st.index)
    out[f"{prefix}_sch_epochs"] = (
        " and ".join(str(x) for x in e)
        if len(e) < 3
        else ", ".join(str(x) for x in e[:-1]) + f" and {e[-1]}"
    )
    return out


# --------------------------------------------------------------------------
# the recorded comparison of every node-removing method (one section of each chapter)
# --------------------------------------------------------------------------
#: Left out of the cost figure: the dense reference (the origin) and the scopes (their own table).
NOT_PLOTTED = ("dense", "swp-l2-weights", "swp-l2-bn")
NODE_AXIS = {
    "vgg16-cifar10": "conv filters dead at the end (share of all 4224)",
    "unet-dsb2018": "channels dead at the end (share of all)",
    "cxr-cnn": "channels dead at the end (share of all)",
}


#: The pruned arms of the schedule sweeps: SWP + L2, the same with sigma ramped up from 0, and
#: the same with lambda scaled so that its total decay matches the shortest run's.
SCHEDULE_ARMS = ("swp-l2", "swp-l2-ramp", "swp-l2-drift")


class Study:
    """The recorded CPU-scale comparison of one conv net (``chapters/results/cpu-baselines-*``
    and ``cpu-schedule-*``): the tables, figures and glue texts of the chapters' section on it.
    ``node_fraction`` is the node measure throughout (see :func:`recorded`)."""

    def __init__(self, preset: str):
        self.preset, self.metric = preset, METRIC[preset]
        self.table = recorded(preset)
        lam = self.table.groupby("label")["regularizer.lam"].first()
        order = list(B.METHODS)
        # each method's settings by lambda: the rows of one method read as its trade-off curve
        self.labels = sorted(
            (x for x in lam.index if B.method_of(x) in B.METHODS),
            key=lambda x: (order.index(B.method_of(x)), lam[x]),
        )
        self.methods = B.method_table(
            self.table, self.metric, labels=self.labels, nodes="node_fraction"
        )
        self.staged = B.staged_table(self.table, self.metric, nodes="node_fraction")
        self.staged_summary = B.staged_summary(self.staged, self.metric)
        has_schedule = (RESULTS / f"{SCHEDULES[preset]}.csv").exists()
        self.schedule_runs = recorded(preset, "schedule") if has_schedule else None
        #: {label: schedule table}: SWP + L2 and, where the sweep has them, its variants
        #: (SCHEDULE_ARMS)
        self.schedule_by_label: Dict[str, pd.DataFrame] = {}
        if has_schedule:
            runs = self.schedule_runs
            for label in SCHEDULE_ARMS:
                if label in set(runs["label"]):
                    self.schedule_by_label[label] = B.schedule_table(
                        runs, self.metric, pruned=label, nodes="node_fraction"
                    )
        #: the same, keyed by the arms' readable names
        self.schedule_arms = {self.arm_name(k): t for k, t in self.schedule_by_label.items()}
        self.schedule = self.schedule_by_label.get("swp-l2")

    def arm_name(self, label: str) -> str:
        runs = self.schedule_runs
        first = runs.loc[runs["label"] == label].iloc[0]
        if label == "swp-l2-ramp":
            return f"SWP + L2, sigma ramped up over {first['pruner.ramp_epochs']:g} epochs"
        if label == "swp-l2-drift":
            return f"SWP + L2, lambda {first['regularizer.lam']:g} (the shortest run's total decay)"
        return "SWP + L2"

    def provenance(self, kind: str = "baselines") -> dict:
        return provenance(self.preset, kind)

    def live_difference(self, results: Dict[str, list]) -> float:
        """The largest absolute difference of the metric between this machine's live runs
        (``results["l2"|"dense"]``, the chapters' comparison) and the recorded runs of the same
        label and seed: the recorded sweep repeats the chapters' runs. Floating point differs
        between CPUs, so this is reported, not asserted."""
        rec = self.table.set_index(["label", "seed"])[self.metric]
        diffs = [
            abs(float(r.summary[self.metric]) - float(rec[(label, r.config.seed)]))
            for key, label in (("l2", "swp-l2"), ("dense", "dense"))
            for r in results[key]
        ]
        return max(diffs)

    def method_frame(self) -> pd.DataFrame:
        return method_frame(self.methods, self.metric, self.table)

    def scope_frame(self) -> pd.DataFrame:
        return method_frame(self.methods.loc[["dense", *SCOPES]], self.metric, self.table)

    def plot_costs(self, title: str = ""):
        from prunedyn.book.tradeoff_plots import plot_method_costs

        return plot_method_costs(
            self.table,
            self.metric,
            [x for x in self.labels if x not in NOT_PLOTTED],
            nodes="node_fraction",
            nodes_label=NODE_AXIS[self.preset],
            title=title,
        )

    def plot_staged(self, title: str = ""):
        from prunedyn.book.tradeoff_plots import plot_staged

        return plot_staged(self.staged, self.metric, title=title)

    def plot_schedule(self, title: str = ""):
        from prunedyn.book.tradeoff_plots import plot_schedule

        return plot_schedule(self.schedule_arms, self.metric, title=title)

    def schedule_paired(self, a: str, b: str, column: str) -> pd.DataFrame:
        """Per budget where both schedule arms ran: ``column`` of arm ``a`` minus arm ``b``, paired
        by seed (mean, sd and the book's verdict: ``higher``/``lower`` in every seed, else ``no
        clear``)."""
        from prunedyn.analysis.seeds import paired

        rows = []
        for epochs, g in self.schedule_runs.groupby("epochs"):
            if {a, b} <= set(g["label"]):
                d = paired(g, column, a, b, by="label")
                rows.append(
                    {
                        "epochs": int(epochs),
                        "mean": d.mean,
                        "sd": d.std,
                        "verdict": {"higher": "higher", "lower": "lower"}.get(
                            d.verdict(), "no clear"
                        ),
                    }
                )
        return pd.DataFrame(rows).set_index("epochs")

    def schedule_frame(self) -> pd.DataFrame:
        """The schedule table as the chapters print it, one block of rows per arm."""
        frames = [
            schedule_frame(t, self.metric).reset_index().assign(arm=name)
            for name, t in self.schedule_arms.items()
        ]
        out = pd.concat(frames, ignore_index=True).rename(
            columns={"nodes dead, SWP + L2": "nodes dead"}
        )
        out.columns = [c.replace("SWP + L2 ", "pruned ") for c in out.columns]
        return out[["arm", *[c for c in out.columns if c != "arm"]]]

    def texts(self, prefix: str) -> Dict[str, str]:
        """Every glue text of the section, keys starting with ``prefix``."""
        p = self.provenance()
        out = {
            f"{prefix}_runs": str(len(self.table)),
            f"{prefix}_n_settings": str(len(self.labels) - 1),
            f"{prefix}_rec_hours": f"{p['train_seconds_total'] / 3600:.1f}"
            if "train_seconds_total" in p
            else "?",
        }
        out.update(method_texts(self.methods, self.metric, prefix))
        out.update(
            {f"{prefix}_scope_{k}": v for k, v in scope_texts(self.table, self.metric).items()}
        )
        out.update(staged_texts(self.staged, self.staged_summary, self.metric, prefix))
        if self.schedule is not None:
            out.update(schedule_texts(self.schedule, self.metric, prefix))
        for label, t in self.schedule_by_label.items():
            if label != "swp-l2":  # e.g. swp-l2-ramp -> <prefix>_ramp_sch_<epochs>_gap
                word = label.split("-")[-1]
                out.update(schedule_texts(t, self.metric, f"{prefix}_{word}"))
                # the metric of SWP + L2 minus the variant's, paired by seed, where both ran
                for e, r in self.schedule_paired("swp-l2", label, self.metric).iterrows():
                    scale = 100 if self.metric == "test_accuracy" else 1
                    fmt = ".2f" if self.metric == "test_accuracy" else ".3f"
                    out[f"{prefix}_{word}_vs_{e}"] = (
                        f"{format(scale * r['mean'], '+' + fmt)} ± "
                        f"{format(scale * r['sd'], fmt)}{gap_unit(self.metric)}"
                    )
                    out[f"{prefix}_{word}_vs_{e}_verdict"] = {
                        "higher": "SWP + L2 higher in every seed",
                        "lower": "SWP + L2 lower in every seed",
                    }.get(r["verdict"], "no clear difference")
        return out


# --------------------------------------------------------------------------
# a conv net at the CPU scale its gate judges (issue 21): the gate study and the front, recorded
# --------------------------------------------------------------------------
#: preset -> (the schedule study of the dense network, the front, the front's epochs)
COMPETENT = {
    "unet-dsb2018": ("unet-cpu-competence", "unet-cpu-front", 32),
    # the X-ray CNN with a validation split: its gate fails (a linear model on the pixels comes
    # close: chapter 9), so its front is context
    "cxr-cnn": ("cxr-cpu-competence", "cxr-cpu-front", 30),
}
#: Claim 4's two stages at that scale, with the matched-sparsity control (results/<name>.csv)
COMPETENT_CLAIM4 = {"unet-dsb2018": "unet-cpu-claim4"}
#: The test metrics :meth:`Front.test_frame` shows: (header, column, (format, scale, unit)).
TEST_COLUMNS = {
    "unet-dsb2018": [
        ("test Dice", "test_dice", (".3f",)),
        ("test mAP", "test_map", (".3f",)),
        ("boundary pixels found", "test_boundary_recall", (".1f", 100, "%")),
    ],
    "cxr-cnn": [
        ("test AUC", "test_auc", (".4f",)),
        ("test balanced accuracy", "test_balanced_accuracy", (".1f", 100, "%")),
        ("test accuracy", "test_accuracy", (".1f", 100, "%")),
    ],
}
#: The tolerance of a paired gap (chapter 9's rule): 1.5 accuracy points, 0.02 Dice, 0.02 AUC.
TOLERANCE = {"test_accuracy": 0.015, "test_dice": 0.02, "test_auc": 0.02}


class Front:
    """A conv net's recorded front at the CPU scale its gate judges
    (``chapters/results/<front>.csv``): every method along its strength, three seeds, a validation
    split; each method's setting chosen on it (:func:`prunedyn.book.fronts.choose`), the test split
    read for the chosen ones only."""

    def __init__(self, preset: str):
        self.preset, self.metric = preset, METRIC[preset]
        self.short = self.metric.split("_", 1)[1]
        gate_name, self.name, self.epochs = COMPETENT[preset]
        self.tol = TOLERANCE[self.metric]
        self.schedule = pd.read_csv(RESULTS / f"{gate_name}.csv")
        table = T.load_table(RESULTS / f"{self.name}.csv")
        # a setting is judged on every seed of the dense network, or not at all (a sweep recorded
        # while it still ran has settings with fewer)
        seeds = set(table.loc[table["setting"] == "dense", "seed"])
        complete = table.groupby("setting")["seed"].apply(lambda s: seeds <= set(s))
        self.table = table[table["setting"].map(complete)].reset_index(drop=True)
        self.incomplete = sorted(set(table["setting"]) - set(self.table["setting"]))
        methods = dict.fromkeys(self.table["method"])
        self.context = tuple(m for m in methods if m not in FR.PAPER_METHODS and m != "dense")
        self.chosen = FR.choose(self.table, self.tol, metric=self.short, context=self.context)
        self.val = FR.paired_front(self.table, self.short, "val")

    def provenance(self) -> dict:
        import json

        return json.loads((RESULTS / "provenance.json").read_text())[self.name]

    def dense(self, column: str, epochs: Optional[int] = None) -> np.ndarray:
        """``column`` of the dense network's seeds at ``epochs`` (default the front's budget)."""
        d = self.schedule[self.schedule["epochs"] == (epochs or self.epochs)]
        return d.sort_values("seed")[column].to_numpy(dtype=float)

    def choice_frame(self) -> pd.DataFrame:
        return FR.choice_frame(self.chosen, scale=1.0, unit=METRIC_WORD[self.metric], digits=4)

    def plot(self, target: float, title: str = ""):
        fig = FR.plot_front(
            self.table,
            self.chosen,
            self.tol,
            metric=self.short,
            context=self.context,
            target=target,
            scale=1.0,
            unit="",
            nodes="channels",
            ycap=0.2,
        )
        if title:
            fig.suptitle(title, fontsize=10)
        return fig

    def test_frame(self) -> pd.DataFrame:
        """The dense network and each method's chosen setting on the test split (read once, for
        these only), mean ± sd over the seeds: for the U-Net foreground Dice, the instance metric
        (mAP over IoU 0.5..0.95) and the share of true boundary pixels labelled boundary; for the
        X-ray CNN the AUC, the balanced accuracy (the mean recall of the three classes) and the
        accuracy."""
        pm = lambda v, f, k=1, u="": (  # noqa: E731
            f"{k * np.mean(v):{f}}{u} ± {k * np.std(v, ddof=1):{f}}"
        )
        columns = TEST_COLUMNS[self.preset]
        rows = []
        for setting in ["dense", *self.chosen["setting"]]:
            g = self.table[self.table["setting"] == setting]
            row = {"setting": setting, "channels dead": f"{100 * g['nodes_removed'].mean():.1f}%"}
            row.update({name: pm(g[col], *how) for name, col, how in columns})
            rows.append(row)
        return pd.DataFrame(rows)

    def staged(self) -> pd.DataFrame:
        """Claim 4 at this scale (:func:`prunedyn.book.baselines.staged_table`): the chosen SWP + L2
        network, it compacted, magnitude-pruned and fine-tuned, and the dense network
        magnitude-pruned to the same total sparsity and fine-tuned as long (``dense-magnitude``)."""
        table = T.load_table(RESULTS / f"{COMPETENT_CLAIM4[self.preset]}.csv")
        return B.staged_table(table, self.metric, matched="dense-magnitude")

    def claim4_texts(self, staged: pd.DataFrame, prefix: str) -> Dict[str, str]:
        """Glue texts of :meth:`staged`: the second stage's settings (read from the recorded
        table's ``pruner.sparsity`` and ``epochs``: what ran), each arm's gap and total
        sparsity, and the control's gap minus the staged network's, paired by seed."""
        table = T.load_table(RESULTS / f"{COMPETENT_CLAIM4[self.preset]}.csv")

        def ran(label: str, column: str):
            """The one value ``column`` took in the runs labelled ``label``."""
            (value,) = table.loc[table["label"] == label, column].unique()
            return value

        ss = B.staged_summary(staged, self.metric)
        arm = {a: staged[staged["arm"] == a].set_index("seed") for a in ss.index}
        src, st, mt = arm["swp-l2"], arm["compact-then-magnitude"], arm["dense-magnitude"]
        kept = ((1 - st["total_sparsity"]) / (1 - src["total_sparsity"])).mean()
        paired = mt["gap"] - st["gap"]
        g = {
            "target": f"{100 * ran('compact-then-magnitude', 'pruner.sparsity'):.0f}%",
            "matched_target": f"{100 * ran('dense-magnitude', 'pruner.sparsity'):.2f}%",
            "epochs": str(int(ran("compact-then-magnitude", "epochs"))),
            "total": str(int(st["epochs"].iloc[0])),
            "removed": f"{100 * (1 - kept):.0f}%",
            "paired": fmt_metric(self.metric, paired.mean(), paired.std(ddof=1)),
            "paired_seeds": ", ".join(f"{v:+.3f}" for v in paired),
            "seeds": ", ".join(str(s) for s in paired.index),
            "worst": str(paired.idxmin()),
            "worst_dead": f"{100 * src.loc[paired.idxmin(), 'dead_node_fraction']:.0f}%",
            "worst_alive": str(int(st.loc[paired.idxmin(), "nodes_alive"])),
        }
        arms = (("swp-l2", "src"), ("compact-then-magnitude", "st"), ("dense-magnitude", "mt"))
        for a, key in arms:
            g[f"{key}_gap"] = fmt_metric(self.metric, ss.loc[a, "gap_mean"], ss.loc[a, "gap_sd"])
            g[f"{key}_sparsity"] = f"{100 * ss.loc[a, 'total_sparsity_mean']:.2f}%"
        return {f"{prefix}_{k}": v for k, v in g.items()}

    def plot_staged(self, staged: pd.DataFrame, title: str = ""):
        from prunedyn.book.tradeoff_plots import plot_staged

        return plot_staged(staged, self.metric, title=title)

    def best_paper(self) -> pd.Series:
        """The paper's method's chosen setting with the most channels dead."""
        paper = self.chosen[self.chosen["method"].isin(FR.PAPER_METHODS)]
        return paper.sort_values("share_mean", ascending=False, kind="mergesort").iloc[0]

    def texts(self, prefix: str) -> Dict[str, str]:
        """Glue texts: the dense network at the budget and at twice it (the chapter glues the
        chosen settings it discusses itself)."""
        g = {}
        d, d2 = self.dense(self.metric), self.dense(self.metric, 2 * self.epochs)
        g[f"{prefix}_dense"] = fmt_metric(self.metric, d.mean(), d.std(ddof=1))
        g[f"{prefix}_dense2"] = fmt_metric(self.metric, d2.mean(), d2.std(ddof=1))
        g[f"{prefix}_change"] = f"{d2.mean() - d.mean():+.4f}"
        bnd = (
            self.dense("test_boundary_recall") if "test_boundary_recall" in self.schedule else None
        )
        if bnd is not None:
            g[f"{prefix}_boundary"] = f"{100 * bnd.mean():.0f}%"
        return g


def budget_frame(paths: Dict[str, pd.DataFrame], metric: str) -> pd.DataFrame:
    """The dense runs of recorded competence studies (``label``, ``epochs``, ``seed``, ``metric``),
    one table per arithmetic path: per path and budget the seeds, the mean and sd of ``metric``, and
    ``change``, the mean minus the mean at half the budget on the same path (the change chapter 9's
    gate reads; NaN where half the budget was not run)."""
    rows = []
    for path, t in paths.items():
        d = t[t["label"] == "dense"]
        by = d.groupby("epochs")[metric]
        means = by.mean()
        for e, g in by:
            half = means.get(e // 2) if e % 2 == 0 else None
            rows.append(
                {
                    "path": path,
                    "epochs": int(e),
                    "seeds": ", ".join(str(s) for s in sorted(d.loc[g.index, "seed"])),
                    "mean": float(g.mean()),
                    "sd": float(g.std(ddof=1)) if len(g) > 1 else np.nan,
                    "change": np.nan if half is None else float(g.mean() - half),
                }
            )
    return pd.DataFrame(rows)


def plot_budgets(paths: Dict[str, pd.DataFrame], metric: str, rule: float, title: str = ""):
    """The dense metric against the budget (log2 axis), one colour per arithmetic path: a dot per
    seed, the mean joined across budgets, and each doubling's change of the mean written on its
    segment, in bold where it is at least ``rule`` (not converged under chapter 9's gate)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, NullLocator

    scale = 100.0 if metric.endswith("accuracy") else 1.0
    frame = budget_frame(paths, metric)
    fig = Figure(figsize=(7.0, 3.6), layout="constrained")
    ax = fig.subplots()
    for i, (path, t) in enumerate(paths.items()):
        d, f = t[t["label"] == "dense"], frame[frame["path"] == path]
        color, shift = f"C{i}", 1.0 + 0.02 * (i - (len(paths) - 1) / 2)
        ax.scatter(d["epochs"] * shift, d[metric] * scale, s=14, color=color, alpha=0.5)
        ax.plot(f["epochs"] * shift, f["mean"] * scale, "o-", color=color, label=path)
        for r0, r1 in zip(f.itertuples(), f.iloc[1:].itertuples()):
            if np.isnan(r1.change):
                continue
            big = abs(r1.change) >= rule
            ax.annotate(
                f"{r1.change * scale:+.2f}",
                (r1.epochs / np.sqrt(2) * shift, (r0.mean + r1.mean) / 2 * scale),
                textcoords="offset points",
                xytext=(0, 8 if i == 0 else -14),
                ha="center",
                fontsize=8,
                color=color,
                fontweight="bold" if big else "normal",
            )
    ticks = sorted(frame["epochs"].unique())
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(x) for x in ticks])
    ax.set_xlabel("epochs (the whole budget; cosine schedule over it)")
    ax.set_ylabel(f"dense {metric.replace('_', ' ')}" + (" (%)" if scale == 100 else ""))
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    ax.text(
        0.01,
        0.98,
        f"bold: twice the budget moves the mean by {rule * scale:g}"
        f"{' point' if scale == 100 else ''} or more (not converged)",
        transform=ax.transAxes,
        fontsize=8,
        va="top",
        color="0.3",
    )
    if title:
        ax.set_title(title, fontsize=10)
    return fig
