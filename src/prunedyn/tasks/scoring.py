"""Tasks: what a model's output means, how a batch is augmented, and how it is scored.

The training loop (:mod:`prunedyn.run.experiments`) is the same for every model of
the study; the task supplies the three things that differ:

- :meth:`Task.loss`: cross-entropy in both cases -- over images for
  **classification** (``out (B, K)``, ``y (B,)``) and over pixels for
  **segmentation** (``out (B, K, H, W)``, ``y (B, H, W)``);
- :meth:`Task.augment`: seeded, so an epoch repeats exactly on rerun -- crop
  and flip for CIFAR-10, the eight flips/rotations of the square (applied to
  image and target alike) for nuclei. Split into :meth:`Task.augment_draws`
  (the random numbers, on the host, from the run's CPU generator) and
  :meth:`Task.augment_with` (the transform, on whatever device the batch is
  on, without host synchronisation): ``train.resident`` draws a whole epoch's
  numbers at its start and transforms the batches on the GPU, giving the
  batches of the host path;
- :meth:`Task.evaluate`: the test metrics recorded every epoch, each a column
  ``test_<name>`` of the run's ``metrics`` table. ``test_accuracy`` (image or
  pixel accuracy) and ``test_loss`` always; classification adds balanced
  accuracy and one-vs-rest ROC AUC where a dataset asks for them (the chest
  X-rays: macro AUC over the three classes and the AUC of the binary
  COVID-vs-rest view); segmentation adds the foreground Dice and the DSB 2018
  instance metric (mean average precision over IoU 0.5..0.95, see
  :mod:`prunedyn.tasks.segmentation`).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from prunedyn.data.datasets import DatasetBundle


def augment_batch(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Standard CIFAR augmentation on a normalised batch ``(B, C, H, W)``: random crop
    after zero-padding by ``pad`` pixels, and a horizontal flip with probability 1/2.

    Driven by ``generator``, so an epoch's augmentation repeats exactly on rerun.
    One gather for the whole batch (no per-image Python loop), so it keeps up
    with a GPU. The same as :func:`crop_flip` of :func:`crop_flip_draws`.
    """
    return crop_flip(x, *crop_flip_draws(x.shape[0], generator, pad), pad=pad)


def crop_flip_draws(b: int, generator: torch.Generator, pad: int = 4):
    """The random part of :func:`augment_batch` for ``b`` images: ``(dy, dx, flip)``, each ``(b,)``.

    Separate from :func:`crop_flip` so that the draws can be made on the host
    (with the run's CPU generator, the numbers of the recorded runs) for a whole
    epoch at once and the images cropped where they live (``train.resident``).
    """
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    return dy, dx, flip


def crop_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Image ``i`` of ``x (B, C, H, W)`` zero-padded by ``pad``, cropped at offset ``(dy[i], dx[i])``
    and mirrored left-right where ``flip[i]``; on ``x``'s device, with no host synchronisation
    (the draws must be on that device too)."""
    b, c, h, w = x.shape
    dev = x.device
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    cols = torch.arange(w, device=dev)
    cols = torch.where(flip[:, None], w - 1 - cols, cols) + dx[:, None]  # (B, W): flipped crops read right to left
    rows = torch.arange(h, device=dev) + dy[:, None]  # (B, H)
    batch = torch.arange(b, device=dev)[:, None, None, None]
    chan = torch.arange(c, device=dev)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` (N,) for boolean labels ``positive`` (N,)
    (scikit-learn's ``roc_auc_score``: the Mann-Whitney statistic, ties counted half); NaN when
    one class is absent."""
    from sklearn.metrics import roc_auc_score

    pos = np.asarray(positive).astype(bool)
    if pos.all() or not pos.any():
        return float("nan")
    return float(roc_auc_score(pos, scores))


def balanced_accuracy(pred: np.ndarray, y: np.ndarray, num_classes: int) -> float:
    """Mean over the classes present in ``y`` of the recall of that class (scikit-learn's
    macro recall over those classes; ``num_classes`` bounds the labels)."""
    from sklearn.metrics import recall_score

    present = [k for k in range(num_classes) if (y == k).any()]
    return float(recall_score(y, pred, labels=present, average="macro", zero_division=0))


@torch.no_grad()
def scored_outputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device, batch: int = 1000):
    """``(summed cross-entropy, correct count, logits on the CPU)`` of ``model`` over ``(x, y)``,
    in eval mode, ``batch`` examples at a time (pixels count as examples for segmentation)."""
    model.eval()
    loss, correct, outs = 0.0, 0, []
    for i in range(0, len(y), batch):
        xb, yb = x[i : i + batch].to(device), y[i : i + batch].to(device)
        out = model(xb)
        loss += float(F.cross_entropy(out, yb, reduction="sum"))
        correct += int((out.argmax(1) == yb).sum())
        outs.append(out.float().cpu())
    model.train()
    return loss, correct, torch.cat(outs)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device, batch: int = 1000):
    """``(mean cross-entropy, accuracy)`` of a classifier ``model`` on ``(x, y)``."""
    loss, correct, _ = scored_outputs(model, x, y, device, batch)
    return loss / len(y), correct / len(y)


class Task:
    """Interface; see the module docstring."""

    name = "task"

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, y)

    def augment(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator):
        return x, y

    def augment_draws(self, b: int, generator: torch.Generator) -> Tuple[torch.Tensor, ...]:
        """The random numbers :meth:`augment` draws from ``generator`` for a batch of ``b``,
        in the same order: a tuple of ``(b,)`` tensors (empty without augmentation)."""
        return ()

    def augment_with(self, x: torch.Tensor, y: torch.Tensor, draws: Tuple[torch.Tensor, ...]):
        """:meth:`augment` with its random numbers given (on ``x``'s device): equal to
        ``augment(x, y, g)`` when ``draws == augment_draws(len(x), g)``."""
        return x, y

    def evaluate(self, model: nn.Module, data: DatasetBundle, device, batch: int = 1000) -> Dict[str, float]:
        raise NotImplementedError


class Classification(Task):
    """Image classification. ``auc_metrics``: also balanced accuracy and ROC AUCs;
    ``positive``: the class of the binary one-vs-rest view (its AUC is ``auc_<name>``)."""

    name = "classification"

    def __init__(self, augment: bool = False, auc_metrics: bool = False, positive: Optional[int] = None):
        self.crop_flip = augment
        self.auc_metrics = auc_metrics
        self.positive = positive

    def augment(self, x, y, generator):
        return (augment_batch(x, generator) if self.crop_flip else x), y

    def augment_draws(self, b, generator):
        return crop_flip_draws(b, generator) if self.crop_flip else ()

    def augment_with(self, x, y, draws):
        return (crop_flip(x, *draws) if self.crop_flip else x), y

    def evaluate(self, model, data, device, batch=1000):
        x, y = data.x_test, data.y_test
        loss, correct, logits = scored_outputs(model, x, y, device, batch)
        out = {"test_loss": loss / len(y), "test_accuracy": correct / len(y)}
        if self.auc_metrics:
            k = logits.shape[1]
            probs = torch.softmax(logits, 1).numpy()
            yn = y.numpy()
            out["test_balanced_accuracy"] = balanced_accuracy(probs.argmax(1), yn, k)
            out["test_auc"] = float(np.nanmean([roc_auc(probs[:, c], yn == c) for c in range(k)]))
            if self.positive is not None:
                names = data.class_names or [str(c) for c in range(k)]
                out[f"test_auc_{names[self.positive]}"] = roc_auc(probs[:, self.positive], yn == self.positive)
        return out


def dihedral_draws(b: int, generator: torch.Generator):
    """The random part of :func:`dihedral` for ``b`` images: ``(rot, flip)``, each ``(b,)``."""
    rot = torch.randint(0, 4, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    return rot, flip


def dihedral(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator):
    """Each image of ``x (B, C, H, W)`` and its target ``y (B, H, W)`` transformed by the
    same random element of the square's symmetry group (4 rotations x optional flip).

    The host reference (one image at a time); :func:`dihedral_gather` is the
    same transform for a batch on any device."""
    b = x.shape[0]
    rot, flip = dihedral_draws(b, generator)
    xs, ys = [], []
    for i in range(b):
        xi, yi = x[i], y[i]
        if flip[i]:
            xi, yi = xi.flip(-1), yi.flip(-1)
        k = int(rot[i])
        xs.append(torch.rot90(xi, k, (-2, -1)))
        ys.append(torch.rot90(yi, k, (-2, -1)))
    return torch.stack(xs), torch.stack(ys)


_DIHEDRAL_MAPS: Dict[Tuple[int, str], torch.Tensor] = {}


def _dihedral_maps(side: int, device: torch.device) -> torch.Tensor:
    """``(8, side*side)``: for group element ``4 * flip + rot``, the flat source pixel of each
    output pixel -- :func:`dihedral`'s own flip and rot90 applied to a grid of pixel indices,
    so the two agree by construction."""
    key = (side, str(device))
    if key not in _DIHEDRAL_MAPS:
        grid = torch.arange(side * side).view(side, side)
        maps = [torch.rot90(grid.flip(-1) if f else grid, k, (-2, -1)).reshape(-1) for f in (0, 1) for k in range(4)]
        _DIHEDRAL_MAPS[key] = torch.stack(maps).to(device)
    return _DIHEDRAL_MAPS[key]


def dihedral_gather(x: torch.Tensor, y: torch.Tensor, rot: torch.Tensor, flip: torch.Tensor):
    """:func:`dihedral` with its draws given, for a whole batch at once on ``x``'s device: one
    gather per tensor, no per-image loop and no host synchronisation (``rot``, ``flip`` on that
    device). Square images only (a quarter turn of a non-square image changes its shape)."""
    b, c, h, w = x.shape
    if h != w:
        raise ValueError(f"dihedral_gather: images must be square for the rotations, got {h}x{w}")
    src = _dihedral_maps(h, x.device)[flip.long() * 4 + rot]  # (B, H*W)
    xs = x.reshape(b, c, h * w).gather(2, src[:, None, :].expand(b, c, h * w)).view(b, c, h, w)
    ys = y.reshape(b, h * w).gather(1, src).view(b, h, w)
    return xs, ys


#: The boundary class of the nuclei segmentation (0 background, 1 interior, 2 boundary)
BOUNDARY = 2


class Segmentation(Task):
    """Per-pixel classification into background / nucleus interior / boundary, scored
    as instances (see :mod:`prunedyn.tasks.segmentation`)."""

    name = "segmentation"

    def __init__(self, augment: bool = False):
        self.dihedral = augment

    def augment(self, x, y, generator):
        return dihedral(x, y, generator) if self.dihedral else (x, y)

    def augment_draws(self, b, generator):
        return dihedral_draws(b, generator) if self.dihedral else ()

    def augment_with(self, x, y, draws):
        return dihedral_gather(x, y, *draws) if self.dihedral else (x, y)

    def evaluate(self, model, data, device, batch=32):
        from prunedyn.tasks.segmentation import segmentation_scores

        x, y = data.x_test, data.y_test
        loss, correct, logits = scored_outputs(model, x, y, device, batch)
        scores = segmentation_scores(logits.numpy(), data.extras["test_instances"].numpy())
        # does it draw the boundary class at all (a thin class a network can ignore at little cost)?
        # the share of true boundary pixels predicted as boundary
        pred, truth = logits.argmax(1) == BOUNDARY, y == BOUNDARY
        return {
            "test_loss": loss / y.numel(),
            "test_accuracy": correct / y.numel(),
            "test_dice": float(scores["dice"]),
            "test_map": float(scores["map"]),
            "test_boundary_recall": float((pred & truth).sum()) / max(1, int(truth.sum())),
        }


# Datasets whose chapters report more than accuracy: the chest X-rays' class balance
# is uneven and the question is clinical in form, so balanced accuracy and AUCs.
AUC_DATASETS = {"covid_cxr": 0}


def task_for(data: DatasetBundle, augment: bool = False) -> Task:
    """The task of a dataset bundle (its ``task`` field), with augmentation if asked."""
    if getattr(data, "task", "classification") == "segmentation":
        return Segmentation(augment)
    positive = AUC_DATASETS.get(data.name)
    return Classification(augment, auc_metrics=positive is not None, positive=positive)
