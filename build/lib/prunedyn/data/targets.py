"""Per-pixel training targets made from instance labels (the nuclei data set).

A nucleus is split into interior and a thin boundary so that touching nuclei
stay separable after prediction (:func:`prunedyn.tasks.segmentation.instances_from_classes`).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2


def _numpy(x) -> np.ndarray:
    """``x`` as a numpy array; torch tensors are detached and moved to the CPU."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def class_targets(instances, boundary_width: int = 1) -> np.ndarray:
    """The 3-class target (background / interior / boundary) of instance labels.

    Args:
        instances: integer label image of shape ``(H, W)``, or a batch
            ``(N, H, W)``; ``0`` is background, other values are nuclei.
        boundary_width: ``w >= 1``; a nucleus pixel is boundary when its
            ``(2w+1) x (2w+1)`` neighbourhood (clipped to the image) holds
            another label, background or another nucleus.

    Returns:
        ``int64`` array of the input's shape with values ``0`` background,
        ``1`` interior, ``2`` boundary.
    """
    labels = _numpy(instances)
    if labels.ndim not in (2, 3):
        raise ValueError(f"instances must be (H, W) or (N, H, W), got shape {labels.shape}")
    if boundary_width < 1:
        raise ValueError(f"boundary_width must be >= 1, got {boundary_width}")
    if labels.dtype.kind in "iu" and labels.size and labels.max() < 2**31 and labels.min() >= -2**31:
        labels = labels.astype(np.int32, copy=False)  # narrower: faster filters
    k = 2 * int(boundary_width) + 1
    size = (k, k) if labels.ndim == 2 else (1, k, k)
    hi = ndimage.grey_dilation(labels, size=size, mode="nearest")
    lo = ndimage.grey_erosion(labels, size=size, mode="nearest")
    fg = labels != 0
    out = np.zeros(labels.shape, dtype=np.int64)
    out[fg] = INTERIOR
    out[fg & (hi != lo)] = BOUNDARY
    return out
