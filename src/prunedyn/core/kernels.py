"""Pruning kernels: the probability that a weight is zeroed, as a function of its value.

A kernel maps a weight tensor ``w`` (any shape) and a scale ``sigma > 0`` to a
tensor ``kappa(w; sigma)`` of the same shape with values in ``[0, 1]`` that is
non-increasing in ``|w|``:

=========  ===========================================  =============================
name       kappa(w; sigma)                              note
=========  ===========================================  =============================
gaussian   ``exp(-w^2 / (2 sigma^2))``                  default; the paper's sampling
laplace    ``exp(-|w| / sigma)``                        heavier tail: larger weights
                                                        keep a non-negligible risk
hard       ``1[|w| < sigma]``                           deterministic magnitude
                                                        threshold: the zero-noise limit
=========  ===========================================  =============================

Kernels live in a registry so that a new one is one decorated function::

    @register_kernel("cauchy")
    def cauchy(w, sigma):
        return 1.0 / (1.0 + (w / sigma) ** 2)
"""
from __future__ import annotations

from typing import Callable

import torch

from prunedyn.core.registry import Registry

Kernel = Callable[[torch.Tensor, float], torch.Tensor]

KERNELS: Registry[Kernel] = Registry("kernel")


def register_kernel(name: str) -> Callable[[Kernel], Kernel]:
    """Register ``fn(w, sigma) -> probabilities`` under ``name``."""
    return KERNELS.register(name)


def get_kernel(name: str) -> Kernel:
    """The kernel registered as ``name``; ``KeyError`` names the allowed ones."""
    return KERNELS.get(name)


@register_kernel("gaussian")
def gaussian(w: torch.Tensor, sigma: float) -> torch.Tensor:
    return torch.exp(-(w * w) / (2.0 * sigma * sigma))


@register_kernel("laplace")
def laplace(w: torch.Tensor, sigma: float) -> torch.Tensor:
    return torch.exp(-w.abs() / sigma)


@register_kernel("hard")
def hard(w: torch.Tensor, sigma: float) -> torch.Tensor:
    return (w.abs() < sigma).to(w.dtype)


def expected_pruning_rate(w: torch.Tensor, kernel: str, sigma: float) -> float:
    """Mean of ``kappa(w; sigma)`` over ``w``: the fraction one sampling step zeroes."""
    return float(get_kernel(kernel)(w, sigma).mean())


# ----------------------------------------------------------------------------- the SWP decision
#
# A step of stochastic weight pruning zeroes ``w`` where ``u < kappa(w; sigma)``,
# ``u`` from ``torch.rand``: on the CPU a float32 draw is ``k * 2**-24`` with
# ``k`` uniform on ``0 .. 2**24 - 1`` (``2**-53`` steps for float64), so
# ``P(prune) = ceil(kappa * 2**d) / 2**d`` with ``d`` the dtype's mantissa
# digits: every ``kappa`` in ``(0, 2**-d]`` prunes with probability exactly
# ``2**-d`` (the draw ``u == 0``), and ``kappa == 0`` never prunes.
#
# Two implementations of the rule below take the draws ``u`` as an argument
# so that they can be compared on the same draws:
#
# - :func:`prune_decision`, the reference, ``u < kernel(w, sigma)``;
# - :func:`fast_decision`, the same decisions, faster for the exponential
#   kernels: ``exp`` of an argument below about -87 (a result under float32's
#   smallest normal number) takes a slow path in the CPU's vectorised ``exp``
#   (10-35 times slower, measured), and with ``sigma`` a few times smaller
#   than the weights most arguments are far below it. Clamping the argument
#   at ``EXP_FLOOR = -80`` changes no decision for a draw ``u > exp(-80)``
#   (about 1.8e-35, below every positive draw of any dtype): both kappas are
#   then below ``u``. A ``u`` with an exact zero among its draws (probability
#   ``2**-24`` per draw) takes the reference instead, so the decisions are
#   identical for every ``u``.

#: exp arguments are clamped from below at this value by :func:`fast_decision`.
EXP_FLOOR = -80.0


def _gaussian_exponent(w: torch.Tensor, sigma: float) -> torch.Tensor:
    # the operations of ``gaussian`` in the same order, on one buffer: -(w * w) / (2 sigma^2)
    x = torch.mul(w, w)
    x.neg_()
    return x.div_(2.0 * sigma * sigma)


def _laplace_exponent(w: torch.Tensor, sigma: float) -> torch.Tensor:
    x = torch.abs(w)
    x.neg_()
    return x.div_(sigma)


#: Kernels of the form ``exp(exponent(w, sigma))``: name -> (kernel, exponent).
#: The kernel object is kept so that a kernel re-registered under a built-in
#: name never takes the fast form of the old one.
EXPONENTIAL_FORMS = {
    "gaussian": (gaussian, _gaussian_exponent),
    "laplace": (laplace, _laplace_exponent),
}


def _kernel_fn(kernel) -> Kernel:
    return get_kernel(kernel) if isinstance(kernel, str) else kernel


def prune_decision(w: torch.Tensor, u: torch.Tensor, kernel, sigma: float) -> torch.Tensor:
    """Reference SWP decision: boolean ``u < kappa(w; sigma)`` (``kernel``: a name or a function)."""
    return u < _kernel_fn(kernel)(w, sigma)


def fast_decision(w: torch.Tensor, u: torch.Tensor, kernel, sigma: float) -> torch.Tensor:
    """:func:`prune_decision`, the same booleans for every ``u``, faster for exponential kernels.

    For the Gaussian and Laplace kernels: one buffer instead of four
    temporaries, and the exp argument clamped at :data:`EXP_FLOOR` (see the
    notes above); any other kernel, or draws ``u`` holding an exact 0, take
    the reference. ``w`` and ``u`` have the same shape.
    """
    kappa = clamped_kappa(w, u, kernel, sigma)
    if kappa is None:
        return prune_decision(w, u, kernel, sigma)
    return u < kappa


def clamped_kappa(w: torch.Tensor, u: torch.Tensor, kernel, sigma: float):
    """``exp(max(exponent(w, sigma), EXP_FLOOR))`` for an exponential kernel, in one new buffer.

    ``None`` where the clamp could change a decision (another kernel, a
    re-registered built-in name, an exact 0 among the draws ``u``), so the
    caller takes the reference. Otherwise ``u < result`` are the decisions of
    :func:`prune_decision`, and ``result >= exp(-80)`` is a normal float, so
    ``result - u > 0`` exactly when ``u < result`` even with denormals
    flushed (the pruner's keep factor relies on it).
    """
    form = EXPONENTIAL_FORMS.get(kernel) if isinstance(kernel, str) else None
    if form is None or dict.get(KERNELS, kernel) is not form[0] or u.numel() == 0 or float(u.min()) <= 0.0:
        return None
    x = form[1](w, sigma)
    x.clamp_min_(EXP_FLOOR)
    return x.exp_()
