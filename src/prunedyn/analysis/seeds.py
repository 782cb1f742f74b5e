"""Claims over seeds: the spread of a metric, paired differences, and the words for them.

The book compares runs that differ in one setting (the regularizer, the
pruner, the budget) and are otherwise identical, seed for seed. A difference
between two settings is therefore read **paired by seed**: for seeds
``s = 1..n``, ``d_s = metric(a, s) - metric(b, s)``, and the claim is about
``mean(d)`` against its spread ``std(d)`` (ddof=1), not about one seed.

Input tables have one row per run and seed (``run``, ``seed`` and metric
columns), as :func:`prunedyn.book.study.summary_table` returns them.

The verdict :func:`compare` gives is the book's own rule, chosen so that it
does not flip with seed noise or with the CPU: a difference is called
"higher"/"lower" only when **every** seed agrees in sign *and* the mean
exceeds ``margin``; otherwise "no clear difference". This is a descriptive
rule, not a test: with three seeds, all three signs agree by chance one time
in four when there is no difference at all (:attr:`Difference.sign_p`), so
the margin carries much of the weight. :attr:`Difference.p_value` gives the
two-sided paired t-test beside it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence

import numpy as np
import pandas as pd


def spread(table: pd.DataFrame, metrics: Sequence[str], by: str = "run") -> pd.DataFrame:
    """Per ``by`` group: ``<metric>_mean``, ``<metric>_std`` (ddof=1), ``_min``, ``_max``, and ``n``.

    Groups keep their first-appearance order.
    """
    g = table.groupby(by, sort=False)
    out = pd.DataFrame(index=g.size().index)
    for m in metrics:
        out[f"{m}_mean"] = g[m].mean()
        out[f"{m}_std"] = g[m].std(ddof=1)
        out[f"{m}_min"] = g[m].min()
        out[f"{m}_max"] = g[m].max()
    out["n"] = g.size()
    return out


@dataclass(frozen=True)
class Difference:
    """``a - b`` of one metric, paired by seed."""

    metric: str
    a: str
    b: str
    values: tuple  # per seed, in seed order
    seeds: tuple

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else float("nan")

    @property
    def std(self) -> float:
        return float(np.std(self.values, ddof=1)) if self.n > 1 else float("nan")

    @property
    def min(self) -> float:
        return float(np.min(self.values)) if self.values else float("nan")

    @property
    def max(self) -> float:
        return float(np.max(self.values)) if self.values else float("nan")

    @property
    def p_value(self) -> float:
        """Two-sided paired t-test of ``mean(d) = 0`` (scipy); NaN below two seeds or with no spread."""
        if self.n < 2 or self.std == 0:
            return float("nan")
        from scipy import stats

        return float(stats.ttest_1samp(self.values, 0.0).pvalue)

    @property
    def sign_p(self) -> float:
        """The chance that all ``n`` seeds share a sign when the difference is symmetric about 0:
        ``2 * 0.5**n`` (0.25 for three seeds)."""
        return 2 * 0.5 ** self.n if self.n else float("nan")

    def verdict(self, margin: float = 0.0) -> str:
        """``"higher"`` (``a > b``), ``"lower"``, or ``"no clear difference"`` (see the module doc)."""
        if self.n >= 2 and self.min > 0 and self.mean > margin:
            return "higher"
        if self.n >= 2 and self.max < 0 and -self.mean > margin:
            return "lower"
        return "no clear difference"

    def text(self, fmt: str = ".4f", scale: float = 1.0, unit: str = "") -> str:
        """``"0.0138 ± 0.0029 (3 seeds)"``: mean ± std of the paired difference."""
        return f"{format(self.mean * scale, fmt)}{unit} ± {format(self.std * scale, fmt)}{unit} ({self.n} seeds)"


def paired(table: pd.DataFrame, metric: str, a: str, b: str, by: str = "run") -> Difference:
    """The paired difference ``a - b`` of ``metric`` over the seeds both groups have."""
    wide = table.pivot_table(index="seed", columns=by, values=metric, aggfunc="first")
    for key in (a, b):
        if key not in wide.columns:
            if table[by].eq(key).any():  # present, but without a value of ``metric``: no pairs
                return Difference(metric, a, b, (), ())
            raise KeyError(f"{by}={key!r} not in the table; have {list(wide.columns)}")
    both = wide[[a]].dropna() if a == b else wide[[a, b]].dropna()
    d = both[a] - both[b]  # a == b: zero for every seed it has
    return Difference(metric, a, b, tuple(float(v) for v in d), tuple(int(s) for s in both.index))


def compare(table: pd.DataFrame, metric: str, a: str, b: str, margin: float = 0.0, by: str = "run") -> str:
    """:meth:`Difference.verdict` of :func:`paired`."""
    return paired(table, metric, a, b, by).verdict(margin)


def mean_std_text(values: Sequence[float], fmt: str = ".4f", scale: float = 1.0, unit: str = "") -> str:
    """``"0.9510 ± 0.0020"`` (std with ddof=1; just the value for one seed)."""
    v = np.asarray(values, dtype=float) * scale
    if len(v) < 2:
        return f"{format(float(v[0]), fmt)}{unit}"
    return f"{format(float(v.mean()), fmt)}{unit} ± {format(float(v.std(ddof=1)), fmt)}{unit}"


def spread_texts(table: pd.DataFrame, metrics: Sequence[str], by: str = "run", fmt: str = ".4f",
                 scale: float = 1.0, unit: str = "") -> Dict[str, str]:
    """``{"<group>_<metric>": "mean ± std"}`` for every group and metric: ready to glue into prose."""
    out = {}
    for key, group in table.groupby(by, sort=False):
        for m in metrics:
            out[f"{key}_{m}"] = mean_std_text(group[m].tolist(), fmt, scale, unit)
    return out
