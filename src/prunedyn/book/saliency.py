"""What a classifier looks at: occlusion sensitivity and input-gradient saliency.

Both methods explain the score :math:`S_c(x)` that a classifier ``model``
gives class :math:`c` for an image :math:`x \\in \\mathbb{R}^{C\\times H\\times W}`
(by default the class it predicts), and both return one non-negative or
signed map ``(H, W)`` per image, so that maps of two networks (a dense one
and its compacted version) can be laid over the same X-ray and compared.

**Occlusion sensitivity** (Zeiler & Fergus 2014). A square patch of side
:math:`k` slides over the image with stride :math:`s`; at every position
:math:`p` the pixels under the patch (mask :math:`M_p \\in \\{0,1\\}^{H\\times W}`,
all channels) are replaced by a baseline value :math:`b`, and the drop of the
score is recorded:

.. math::

    \\Delta_p(x) = S_c(x) - S_c\\big(x \\odot (1 - M_p) + b\\,M_p\\big).

:math:`\\Delta_p > 0`: hiding that region lowers the evidence for :math:`c`.
The per-pixel map averages the drops of every patch that covers the pixel,

.. math::

    A(i, j) = \\frac{\\sum_p \\Delta_p\\,M_p(i, j)}{\\sum_p M_p(i, j)}.

Positions run from 0 in steps of :math:`s`, plus a last one flush with the
bottom/right border, so every pixel is covered at least once even when
:math:`s` does not divide :math:`H - k`. The score is the softmax probability
of :math:`c` by default (``score="prob"``, drops in [-1, 1]) or its logit
(``"logit"``). With the book's normalised images, the baseline ``b = 0`` is
the data set's mean intensity, a flat grey patch. Cost: one forward pass per
image and patch position, run in batches of ``batch`` occluded images.

**Input gradient** (Simonyan et al. 2014). The sensitivity of the score to
each pixel, :math:`G = \\partial S_c / \\partial x`, reduced over channels to
:math:`A(i, j) = \\max_{ch} |G_{ch,i,j}|` (``reduce="absmax"``) or kept signed
and summed (``"sum"``); ``times_input=True`` gives gradient x input. With
``samples > 0`` it is SmoothGrad (Smilkov et al. 2017): the average of
:math:`G` over ``samples`` noisy copies :math:`x + \\epsilon`,
:math:`\\epsilon \\sim \\mathcal N(0, (\\nu\\,(x_{max} - x_{min}))^2)` per image,
drawn from a seeded generator so that maps repeat exactly. All images of a
batch go through one forward and one backward pass: in eval mode the
outputs of different images do not interact, so the gradient of
:math:`\\sum_n S_{c_n}(x_n)` with respect to :math:`x_n` is image :math:`n`'s own.

Shapes: ``x (N, C, H, W)`` float; ``target`` ``None`` (the predicted class),
an int (the same class for all) or ``(N,)`` ints; maps ``(N, H, W)`` float32
on the CPU. The model is evaluated in eval mode (BatchNorm with its running
statistics) and left in the mode it was in; no parameter gradient is kept.

Summaries to compare maps: :func:`normalise_maps` (per-image scaling for
display), :func:`map_correlation` (Pearson correlation of two maps per
image), :func:`region_share` (share of the positive saliency inside a mask,
e.g. the image border, where X-ray markers and collimation edges lie), and
:func:`top_region` (the position of the largest occlusion drop).

Why not Captum's ``Occlusion`` and ``NoiseTunnel`` themselves: Captum places windows at ``0, s,
2s, ...`` only, leaving the border pixels uncovered where ``s`` does not divide ``H - k`` (the
X-rays' markers lie there), and draws SmoothGrad's noise from the global generator. Where the
windows agree, and without noise, the maps equal Captum's ``Occlusion``, ``Saliency`` and
``InputXGradient`` (tests/test_saliency.py).
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch
from torch import nn

from prunedyn.modes import eval_mode

Target = Union[None, int, Sequence[int], torch.Tensor]


def _device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Softmax probabilities ``(N, K)`` (float32, CPU) of ``model`` on ``x (N, C, H, W)``, in eval mode."""
    dev = _device(model)
    with eval_mode(model):
        outs = [torch.softmax(model(x[i : i + batch].to(dev)).float(), 1).cpu() for i in range(0, len(x), batch)]
    return torch.cat(outs) if outs else torch.empty(0, 0)


def resolve_target(model: nn.Module, x: torch.Tensor, target: Target = None) -> torch.Tensor:
    """The class explained for each image, ``(N,)`` int64: ``target`` broadcast, or the prediction."""
    n = len(x)
    if target is None:
        return predict_proba(model, x).argmax(1)
    t = torch.as_tensor(target, dtype=torch.int64).flatten()
    if t.numel() == 1:
        return t.expand(n).clone()
    if t.numel() != n:
        raise ValueError(f"target: {t.numel()} classes for {n} images")
    return t


def _score(out: torch.Tensor, target: torch.Tensor, score: str) -> torch.Tensor:
    """``(B,)`` score of class ``target[b]`` from logits ``out (B, K)``."""
    if score == "prob":
        out = torch.softmax(out.float(), 1)
    elif score == "log_prob":
        out = torch.log_softmax(out.float(), 1)
    elif score != "logit":
        raise ValueError(f"score: {score!r}; allowed: prob, log_prob, logit")
    return out.gather(1, target.view(-1, 1).to(out.device)).squeeze(1)


def patch_positions(size: int, patch: int, stride: int) -> list:
    """Start offsets ``0, s, 2s, ...`` of a patch of side ``patch`` along an axis of
    length ``size``, plus ``size - patch`` if the last one falls short of the border."""
    if not 1 <= patch <= size:
        raise ValueError(f"patch: {patch} must be between 1 and the image side {size}")
    if stride < 1:
        raise ValueError(f"stride: {stride} must be >= 1")
    pos = list(range(0, size - patch + 1, stride))
    if pos[-1] != size - patch:
        pos.append(size - patch)
    return pos


def occlusion_masks(height: int, width: int, patch: int, stride: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Boolean masks ``(P, H, W)`` of every patch position (row-major over the
    ``(n_rows, n_cols)`` grid of positions, returned as the second value)."""
    rows, cols = patch_positions(height, patch, stride), patch_positions(width, patch, stride)
    masks = torch.zeros(len(rows) * len(cols), height, width, dtype=torch.bool)
    for a, r in enumerate(rows):
        for b, c in enumerate(cols):
            masks[a * len(cols) + b, r : r + patch, c : c + patch] = True
    return masks, (len(rows), len(cols))


@torch.no_grad()
def occlusion_drops(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    patch: int = 16,
    stride: int = 8,
    baseline: float = 0.0,
    score: str = "prob",
    batch: int = 256,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Score drops ``Delta (N, n_rows, n_cols)`` of every patch position, and the masks ``(P, H, W)``.

    See the module docstring; ``P = n_rows * n_cols``. The occluded images are
    built ``batch`` at a time (never all ``N * P`` at once).
    """
    n, _, h, w = x.shape
    masks, grid = occlusion_masks(h, w, patch, stride)
    p = len(masks)
    tgt = resolve_target(model, x, target)
    dev = _device(model)
    drops = torch.empty(n * p)
    with eval_mode(model):
        base = torch.cat([_score(model(x[i : i + batch].to(dev)), tgt[i : i + batch], score).float().cpu() for i in range(0, n, batch)])
        keep = (~masks).to(x.dtype).unsqueeze(1)  # (P, 1, H, W)
        fill = masks.to(x.dtype).unsqueeze(1) * baseline
        for start in range(0, n * p, batch):
            idx = torch.arange(start, min(start + batch, n * p))
            img, pos = idx // p, idx % p
            occluded = x[img] * keep[pos] + fill[pos]  # (B, C, H, W)
            s = _score(model(occluded.to(dev)), tgt[img], score).float().cpu()
            drops[idx] = base[img] - s
    return drops.view(n, *grid), masks


def occlusion_map(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    patch: int = 16,
    stride: int = 8,
    baseline: float = 0.0,
    score: str = "prob",
    batch: int = 256,
) -> torch.Tensor:
    """Occlusion sensitivity ``A (N, H, W)``: per pixel, the mean score drop of the patches covering it."""
    drops, masks = occlusion_drops(model, x, target, patch, stride, baseline, score, batch)
    m = masks.flatten(1).to(torch.float32)  # (P, H*W)
    maps = drops.flatten(1) @ m / m.sum(0)  # (N, H*W)
    return maps.view(len(x), *masks.shape[1:])


def input_gradient(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    score: str = "logit",
    reduce: str = "absmax",
    times_input: bool = False,
    samples: int = 0,
    noise: float = 0.15,
    seed: int = 0,
    batch: int = 64,
) -> torch.Tensor:
    """Input-gradient saliency ``A (N, H, W)`` (SmoothGrad with ``samples > 0``); see the module docstring."""
    if reduce not in ("absmax", "abssum", "sum"):
        raise ValueError(f"reduce: {reduce!r}; allowed: absmax, abssum, sum")
    tgt = resolve_target(model, x, target)
    dev = _device(model)
    gen = torch.Generator().manual_seed(seed)
    out = []
    with eval_mode(model):
        for i in range(0, len(x), batch):
            xb, tb = x[i : i + batch], tgt[i : i + batch]
            spread = (xb.flatten(1).amax(1) - xb.flatten(1).amin(1)).view(-1, 1, 1, 1)
            copies = [xb] if samples <= 0 else [xb + noise * spread * torch.randn(xb.shape, generator=gen) for _ in range(samples)]
            g = torch.zeros_like(xb)
            for xc in copies:
                xc = xc.detach().to(dev).requires_grad_(True)
                s = _score(model(xc), tb, score).sum()
                (grad,) = torch.autograd.grad(s, xc)
                g += grad.detach().cpu()
            g /= len(copies)
            if times_input:
                g = g * xb
            if reduce == "absmax":
                a = g.abs().amax(1)
            elif reduce == "abssum":
                a = g.abs().sum(1)
            else:
                a = g.sum(1)
            out.append(a.float())
    return torch.cat(out)


def normalise_maps(maps: torch.Tensor, q: float = 0.99, signed: bool = False) -> torch.Tensor:
    """Each map of ``(N, H, W)`` divided by its ``q``-quantile and clipped: of the
    positive part :math:`A^+` to [0, 1] (negative values to 0), or with
    ``signed`` of :math:`|A|` to [-1, 1]."""
    flat = maps.flatten(1).float()
    flat = flat.abs() if signed else flat.clamp_min(0)
    scale = torch.quantile(flat, q, dim=1).clamp_min(1e-12).view(-1, 1, 1)
    out = maps.float() / scale
    return out.clamp(-1.0, 1.0) if signed else out.clamp(0.0, 1.0)


def map_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation ``(N,)`` over pixels between maps ``a`` and ``b`` ``(N, H, W)``;
    NaN where a map is constant."""
    if a.shape != b.shape:
        raise ValueError(f"maps of different shapes {tuple(a.shape)} and {tuple(b.shape)}")
    x = a.flatten(1).double()
    y = b.flatten(1).double()
    x = x - x.mean(1, keepdim=True)
    y = y - y.mean(1, keepdim=True)
    den = x.norm(dim=1) * y.norm(dim=1)
    r = (x * y).sum(1) / den
    return torch.where(den > 0, r, torch.full_like(r, float("nan"))).float()


def border_mask(height: int, width: int, margin: float = 0.125) -> torch.Tensor:
    """Boolean ``(H, W)``: True within ``margin`` (a fraction of the side) of any edge."""
    mh, mw = max(1, int(round(margin * height))), max(1, int(round(margin * width)))
    m = torch.ones(height, width, dtype=torch.bool)
    m[mh : height - mh, mw : width - mw] = False
    return m


def region_share(maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Share ``(N,)`` of each map's positive mass inside ``mask (H, W)``:
    :math:`\\sum_{mask} A^+ / \\sum A^+` (NaN for a map with no positive value)."""
    pos = maps.clamp_min(0).flatten(1).double()
    inside = (pos * mask.flatten().to(pos.dtype)).sum(1)
    total = pos.sum(1)
    r = inside / total
    return torch.where(total > 0, r, torch.full_like(r, float("nan"))).float()


def top_region(drops: torch.Tensor) -> torch.Tensor:
    """``(N, 2)`` (row, col) grid index of the largest drop of :func:`occlusion_drops`'s ``(N, R, C)``."""
    n, _, c = drops.shape
    flat = drops.flatten(1).argmax(1)
    return torch.stack([flat // c, flat % c], 1)
