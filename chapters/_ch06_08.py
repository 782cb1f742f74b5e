"""Shared settings of chapters 6-8 (VGG-16, U-Net, X-ray CNN): the scale of their quick runs.

The three chapters compare SWP + L2 with the dense network of the same budget over
the seeds of :data:`prunedyn.run.study.SEEDS`; in the quick profile the VGG-16 and
U-Net runs are made smaller than :data:`prunedyn.run.study.QUICK` (a quarter
(VGG-16) or half (U-Net) of the training images, the batch shrunk alike so that
the number of SGD steps per epoch stays, fewer epochs; the U-Net also
scores on half of the test tiles) so that all three chapters train in about 12 minutes on a 2-core CPU.
Any chapter that reuses these runs asks for them through :func:`comparison`, so
that it gets the same cached runs.
"""
from __future__ import annotations

from typing import Dict, Sequence

from prunedyn.run import study

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
    """Every ``(source, overrides)`` the chapter of ``preset`` trains, as seeded_comparison builds them."""
    table = study.comparison_table(profile, preset)
    extra = scale(profile, preset)
    out = [(preset, [*table[k], f"seed={s}", *extra]) for k in SEEDED for s in study.SEEDS]
    out += [(preset, [*table[k], f"seed={study.SEEDS[0]}", *extra]) for k in ONE_SEED]
    return out


def comparison(profile: str, preset: str, progress: bool = True) -> Dict[str, list]:
    """``{"l2"|"dense": [RunResult per seed], "none"|"l1": [RunResult for the first seed]}``."""
    extra = scale(profile, preset)
    out = study.seeded_comparison(profile, preset, runs=list(SEEDED), overrides=extra, progress=progress)
    out.update(study.seeded_comparison(profile, preset, seeds=study.SEEDS[:1], runs=list(ONE_SEED), overrides=extra,
                                       progress=progress))
    return out


def hist_median(hist, run: str, layer: str, epoch: int) -> float:
    """Median magnitude of the non-zero weights of ``layer`` from a recorded histogram table
    (``run, epoch, layer, bin, lo, hi, count``; bin -1 holds the exact zeros): the geometric
    middle of the log-spaced bin where the cumulative count passes half."""
    import numpy as np

    h = hist[(hist["run"] == run) & (hist["layer"] == layer) & (hist["epoch"] == epoch) & (hist["bin"] >= 0)].sort_values("bin")
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
