"""Nuclei instance segmentation from a 3-class U-Net: targets, post-processing, metrics.

The network predicts, for every pixel, one of three classes (as in the Kaggle
Data Science Bowl 2018 nuclei task)::

    0  background
    1  nucleus interior
    2  nucleus boundary

Turning the instance labels of the ground truth into such a class map, and the
predicted class map back into instances, works as follows.

Targets (:func:`class_targets`). With ``L`` the instance label image
(``0`` background, ``1..K`` nuclei) and ``N_w(p)`` the square
``(2w+1) x (2w+1)`` neighbourhood of pixel ``p`` clipped to the image
(``w = boundary_width``; ``w = 1`` is the 3x3, 8-connected neighbourhood)::

    boundary(p)  <=>  L(p) > 0  and  exists q in N_w(p): L(q) != L(p)
    interior(p)  <=>  L(p) > 0  and  not boundary(p)

i.e. a nucleus pixel touching background or another nucleus is boundary, so
two touching nuclei are separated by a boundary band ``2w`` pixels thick.
Pixels outside the image do not count: a nucleus cut by the image border is
interior up to the border. Computed as ``grey_dilation(L) != grey_erosion(L)``
with ``mode="nearest"`` (edge replication adds no new label to a window).

Instances (:func:`instances_from_classes`). Seeds are the 4-connected
components of the interior class (4-connectivity, so that two interiors that
meet only diagonally through a boundary band stay apart); seeds with fewer than
``min_size`` pixels are dropped. Every other foreground pixel ``p`` (boundary,
or interior of a dropped seed) takes the label of its nearest seed pixel
``s*(p)`` in Euclidean distance (``scipy.ndimage.distance_transform_edt`` with
``return_indices``) if ``|p - s*(p)| <= grow``, and is background otherwise::

    I(p) = seed(p)                        p in a kept seed
    I(p) = seed(s*(p))                    p foreground, |p - s*(p)| <= grow
    I(p) = 0                              otherwise

With ``boundary_width = 1`` every boundary pixel of a convex-ish nucleus lies
within 2 pixels of its own interior (the single-pixel tips of a rasterised disk
are exactly 2 away), hence ``grow = 2``. Labels are consecutive ``1..K`` in
the raster order of the seeds' first pixels.

Metrics. ``dice = 2|A n B| / (|A| + |B|)`` of foreground masks.
The IoU of every (true, predicted) pair comes from one joint histogram
``bincount(t * (K_pred + 1) + p)`` of the two label images. The DSB 2018 score
of one image, over IoU thresholds ``T = {0.5, 0.55, ..., 0.95}``::

    TP(t) = #{(i, j): IoU(true_i, pred_j) > t}   (one-to-one since t >= 0.5)
    FP(t) = K_pred - TP(t),   FN(t) = K_true - TP(t)
    AP    = mean_t  TP(t) / (TP(t) + FP(t) + FN(t))

with ``AP = 1`` when both images are empty and ``0`` when exactly one is.
For ``t >= 0.5`` a true object overlaps at most one prediction with IoU > t
(two would need more than its whole area), so counting pairs is a matching.

All functions take numpy arrays (or torch tensors, converted with
``.detach().cpu().numpy()``) and return numpy arrays or Python floats.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
from scipy import ndimage

__all__ = [
    "BACKGROUND",
    "INTERIOR",
    "BOUNDARY",
    "THRESHOLDS",
    "class_targets",
    "instances_from_classes",
    "dice",
    "iou_matrix",
    "average_precision",
    "mean_average_precision",
    "segmentation_scores",
]

from prunedyn.data.targets import BACKGROUND, BOUNDARY, INTERIOR, class_targets  # noqa: F401 (part of this module's API)

#: The DSB 2018 IoU thresholds 0.5, 0.55, ..., 0.95 (rounded, so 0.7 is 0.7).
THRESHOLDS = np.round(np.arange(0.5, 1.0, 0.05), 2)

# 4-connectivity for the seeds' connected components.
_CROSS = ndimage.generate_binary_structure(2, 1)


def _numpy(x) -> np.ndarray:
    """``x`` as a numpy array; torch tensors are detached and moved to the CPU."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def instances_from_classes(classes_or_probs, min_size: int = 8, grow: float = 2) -> np.ndarray:
    """Nucleus instances from a predicted class map or class scores.

    Args:
        classes_or_probs: either a class map ``(H, W)`` of integers in
            ``{0, 1, 2}``, or per-class scores ``(3, H, W)`` (probabilities or
            logits, any float dtype) of which the argmax over axis 0 is taken.
        min_size: interior components (4-connected) with fewer pixels are
            not seeds (their pixels may still join a nearby seed, as any
            other non-seed foreground pixel).
        grow: a non-seed foreground pixel joins its nearest seed pixel only
            when the Euclidean distance to it is at most ``grow`` pixels.

    Returns:
        ``int32`` label image ``(H, W)``: ``0`` background, nuclei ``1..K``
        consecutive, in raster order of each seed's first pixel.
    """
    x = _numpy(classes_or_probs)
    if x.ndim == 3:
        if x.shape[0] != 3:
            raise ValueError(f"class scores must be (3, H, W), got shape {x.shape}")
        x = x.argmax(axis=0)
    elif x.ndim != 2:
        raise ValueError(f"expected (H, W) classes or (3, H, W) scores, got shape {x.shape}")
    fg = x != BACKGROUND
    seeds, n = ndimage.label(x == INTERIOR, structure=_CROSS)
    if n and min_size > 1:
        sizes = np.bincount(seeds.ravel(), minlength=n + 1)
        keep = sizes >= min_size
        keep[0] = False
        remap = np.zeros(n + 1, dtype=np.int32)
        remap[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
        seeds = remap[seeds]
        n = int(keep.sum())
    seeds = seeds.astype(np.int32, copy=False)
    if n == 0:
        return np.zeros(x.shape, dtype=np.int32)
    dist, (ii, jj) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    out = seeds.copy()
    join = fg & (seeds == 0) & (dist <= grow)
    out[join] = seeds[ii[join], jj[join]]
    return out


def dice(pred_fg, true_fg) -> float:
    """Dice coefficient ``2|A n B| / (|A| + |B|)`` of two foreground masks.

    Args:
        pred_fg, true_fg: boolean (or 0/1) masks of one shape, ``(H, W)`` or a
            batch ``(N, H, W)``; a batch is pooled, i.e. all pixels of all
            images count as one mask (not a mean of per-image scores).

    Returns:
        float in ``[0, 1]``; ``1.0`` when both masks are empty.
    """
    a = _numpy(pred_fg).astype(bool)
    b = _numpy(true_fg).astype(bool)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(a & b)) / total


def _consecutive(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Nonzero labels mapped to ``1..K`` in increasing order (0 stays 0), and ``K``."""
    labels = np.asarray(labels)
    if labels.size and np.issubdtype(labels.dtype, np.integer) and labels.min() >= 0:
        present = np.bincount(labels.ravel()) > 0  # O(pixels + max label), no sort
        present[0] = False
        table = np.cumsum(present)
        return table[labels], int(table[-1])
    values = np.unique(labels)
    values = values[values != 0]
    out = np.searchsorted(values, labels) + 1
    out[labels == 0] = 0
    return out, len(values)


def iou_matrix(pred, true) -> np.ndarray:
    """Intersection over union of every (true, predicted) pair of instances.

    Args:
        pred, true: integer label images of one shape ``(H, W)``; ``0`` is
            background. Labels need not be consecutive: row ``i`` / column
            ``j`` belong to the ``i``-th / ``j``-th smallest nonzero label
            (label ``i + 1`` when labels are ``1..K``).

    Returns:
        ``float64`` array ``(K_true, K_pred)`` computed from one joint
        histogram of the two images (``np.bincount``), no per-pair loop.
    """
    p = _numpy(pred)
    t = _numpy(true)
    if p.shape != t.shape:
        raise ValueError(f"shapes differ: {p.shape} vs {t.shape}")
    p, kp = _consecutive(p.ravel())
    t, kt = _consecutive(t.ravel())
    joint = np.bincount(t * (kp + 1) + p, minlength=(kt + 1) * (kp + 1))
    joint = joint.reshape(kt + 1, kp + 1)
    inter = joint[1:, 1:].astype(np.float64)
    area_t = joint[1:, :].sum(axis=1)
    area_p = joint[:, 1:].sum(axis=0)
    union = area_t[:, None] + area_p[None, :] - inter
    return inter / union


def average_precision(pred, true, thresholds=THRESHOLDS) -> float:
    """The DSB 2018 score of one image: mean over IoU thresholds of TP/(TP+FP+FN).

    Args:
        pred, true: integer label images ``(H, W)`` (``0`` background).
        thresholds: IoU thresholds, each ``>= 0.5`` (so that "IoU > t" is a
            one-to-one matching); a prediction matches a true object when
            their IoU is strictly greater than ``t``.

    Returns:
        float in ``[0, 1]``; ``1.0`` when neither image has an object, ``0.0``
        when exactly one has.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64).ravel()
    if thresholds.size == 0 or thresholds.min() < 0.5:
        raise ValueError("thresholds must be non-empty and >= 0.5")
    iou = iou_matrix(pred, true)
    kt, kp = iou.shape
    if kt == 0 and kp == 0:
        return 1.0
    if kt == 0 or kp == 0:
        return 0.0
    # Only pairs with IoU > 0.5 can ever match; count them per threshold.
    cand = iou[iou > 0.5]
    tp = (cand[:, None] > thresholds[None, :]).sum(axis=0)
    return float(np.mean(tp / (kt + kp - tp)))


def mean_average_precision(preds: Iterable, trues: Iterable, thresholds=THRESHOLDS) -> float:
    """Mean of :func:`average_precision` over images.

    Args:
        preds, trues: equally many label images ``(H, W)``: sequences of
            arrays, or arrays ``(N, H, W)``.

    Returns:
        float; ``nan`` for zero images.
    """
    scores = [average_precision(p, t, thresholds) for p, t in zip(preds, trues, strict=True)]
    return float(np.mean(scores)) if scores else float("nan")


def segmentation_scores(logits_or_classes, true_instances, min_size: int = 8, grow: float = 2,
                        boundary_width: int = 1) -> dict[str, float]:
    """Per-epoch evaluation of a 3-class nuclei U-Net on a batch of images.

    Args:
        logits_or_classes: class scores ``(N, 3, H, W)`` (logits or
            probabilities; argmax over axis 1) or a class map ``(N, H, W)``.
            The argmax of a torch tensor on an accelerator is taken there
            before moving to the CPU (on the CPU numpy's argmax is faster).
        true_instances: integer instance labels ``(N, H, W)``.
        min_size, grow: passed to :func:`instances_from_classes`.
        boundary_width: passed to :func:`class_targets`.

    Returns:
        dict of floats:
        ``dice``: foreground (interior or boundary) Dice pooled over the batch;
        ``map``: :func:`mean_average_precision` of
        :func:`instances_from_classes` against ``true_instances``;
        ``pixel_accuracy``: fraction of pixels whose predicted class equals
        :func:`class_targets` of ``true_instances``, pooled.
    """
    x = logits_or_classes
    if hasattr(x, "detach") and x.ndim == 4 and x.device.type != "cpu":
        x = x.detach().argmax(dim=1)  # on the accelerator: move N*H*W, not 3*N*H*W
    x = _numpy(x)
    if x.ndim == 4:
        x = x.argmax(axis=1)
    true = _numpy(true_instances)
    if x.ndim != 3 or x.shape != true.shape:
        raise ValueError(f"expected (N, 3, H, W) or (N, H, W) matching {true.shape}, got {x.shape}")
    targets = class_targets(true, boundary_width=boundary_width)
    preds = [instances_from_classes(c, min_size=min_size, grow=grow) for c in x]
    return {
        "dice": dice(x != BACKGROUND, true != 0),
        "map": mean_average_precision(preds, true),
        "pixel_accuracy": float(np.mean(x == targets)),
    }
