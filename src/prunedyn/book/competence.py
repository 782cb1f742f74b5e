"""Is a dense reference competent at its scale? The gate before any pruning verdict.

A pruning result compares a pruned network with its dense reference. If the
reference has not learned the task, a small gap says nothing (a network at
chance loses nothing by being pruned). Blalock et al. (2020) ask for "dense
references of standard quality for their scale"; here that is two measured
conditions, both required:

- **converged**: training the dense network on twice the budget moves its
  mean metric over the seeds by less than :data:`CONVERGED_TOL` (1 point of
  accuracy or balanced accuracy, 0.01 of Dice, 0.005 of AUC);
- **far above a trivial model**: the dense network's error, ``1 - metric``, is
  at most :data:`ERROR_RATIO` (one half) of the error of a trivial model
  fitted to the same training images and scored on the same test images:
  multinomial logistic regression on the pixels for a classifier
  (:func:`trivial_classifier`), per-pixel logistic regression on a pixel's
  3x3 neighbourhood for a segmenter (:func:`trivial_segmenter`).

Both thresholds are this book's choices, stated before any result; a row that
fails either is "not testable at this scale" and gets no verdict.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from threadpoolctl import threadpool_limits

#: Largest change of the dense network's mean metric when its budget doubles, per metric.
CONVERGED_TOL: Dict[str, float] = {"test_accuracy": 0.01, "test_balanced_accuracy": 0.01, "test_dice": 0.01,
                                   "test_auc": 0.005}
#: Largest ratio of the dense network's error to the trivial model's error.
ERROR_RATIO = 0.5


@dataclass
class Competence:
    """The gate for one dense reference. ``dense`` and ``doubled``: the metric per seed at the
    budget used and at twice that budget (``doubled`` may be ``None``: not measured); ``trivial``:
    the trivial model's metric on the same data (``None``: not measured)."""

    metric: str
    dense: Sequence[float]
    doubled: Optional[Sequence[float]]
    trivial: Optional[float]
    #: The budget (epochs) ``dense`` was trained for, where known.
    budget: Optional[int] = None

    @property
    def change(self) -> Optional[float]:
        """Mean metric at twice the budget minus mean metric at the budget (``None``: not measured)."""
        return None if self.doubled is None else float(np.mean(self.doubled) - np.mean(self.dense))

    @property
    def converged(self) -> bool:
        return self.change is not None and abs(self.change) < CONVERGED_TOL[self.metric]

    @property
    def error_ratio(self) -> Optional[float]:
        """Dense error / trivial error (``1 - metric`` each; at most :data:`ERROR_RATIO` passes)."""
        if self.trivial is None:
            return None
        return float((1 - np.mean(self.dense)) / max(1e-12, 1 - self.trivial))

    @property
    def above_trivial(self) -> bool:
        return self.error_ratio is not None and self.error_ratio <= ERROR_RATIO

    @property
    def competent(self) -> bool:
        return self.converged and self.above_trivial

    def reasons(self) -> str:
        """Why the reference fails the gate ("" when it passes), in words."""
        out = []
        if self.change is None:
            out.append("convergence not measured")
        elif not self.converged:
            out.append(f"not converged (twice the budget moves it by {self.change:+.3f})")
        if self.trivial is None:
            out.append("no trivial model measured on its data")
        elif not self.above_trivial:
            out.append(f"its error is {self.error_ratio:.2f} of a trivial model's ({self.trivial:.3f})")
        return "; ".join(out)


def _features(x: torch.Tensor) -> np.ndarray:
    return x.reshape(len(x), -1).numpy().astype(np.float64)


def trivial_classifier(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                       seed: int = 0) -> Dict[str, float]:
    """Multinomial logistic regression on the standardised pixels ``(N, C, H, W)``: test accuracy,
    balanced accuracy and the macro one-vs-rest ROC AUC (scikit-learn). L-BFGS stops at 500
    iterations, converged or not (on 9,000 CIFAR-10 images it is not quite; the cap is part of the
    definition of this baseline, so the warning is not shown). BLAS runs on one thread: the
    iterate after 500 steps depends on the thread count (30.20% or 30.30% on CIFAR-10)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, C=0.1, random_state=seed))
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(_features(x_train), y_train.numpy())
        probs = clf.predict_proba(_features(x_test))
    y = y_test.numpy()
    pred = probs.argmax(1)
    auc = (roc_auc_score(y, probs[:, 1]) if probs.shape[1] == 2
           else roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=np.arange(probs.shape[1])))
    return {"test_accuracy": float(accuracy_score(y, pred)), "test_balanced_accuracy": float(balanced_accuracy_score(y, pred)),
            "test_auc": float(auc)}


def _neighbourhoods(x: torch.Tensor) -> np.ndarray:
    """Each pixel's 3x3 neighbourhood over all channels, ``(N*H*W, 9*C)`` (zero padded)."""
    patches = torch.nn.functional.unfold(x, kernel_size=3, padding=1)  # (N, 9C, H*W)
    return patches.transpose(1, 2).reshape(-1, patches.shape[1]).numpy().astype(np.float64)


def trivial_segmenter(x_train: torch.Tensor, fg_train: torch.Tensor, x_test: torch.Tensor, fg_test: torch.Tensor,
                      max_pixels: int = 200_000, seed: int = 0) -> Dict[str, float]:
    """Per-pixel logistic regression of foreground on the pixel's 3x3 neighbourhood (images
    ``(N, C, H, W)``, foreground masks ``(N, H, W)``), fitted on at most ``max_pixels`` training
    pixels drawn with ``seed``: the foreground Dice over the whole test set
    (:func:`prunedyn.tasks.segmentation.dice`)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from prunedyn.tasks.segmentation import dice

    feats, target = _neighbourhoods(x_train), fg_train.reshape(-1).numpy().astype(int)
    if len(target) > max_pixels:
        keep = np.random.default_rng(seed).choice(len(target), max_pixels, replace=False)
        feats, target = feats[keep], target[keep]
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, random_state=seed))
    with threadpool_limits(limits=1):  # the same iterates with any number of cores
        clf.fit(feats, target)
        pred = clf.predict(_neighbourhoods(x_test)).reshape(fg_test.shape).astype(bool)
    return {"test_dice": float(dice(pred, fg_test.numpy().astype(bool)))}
