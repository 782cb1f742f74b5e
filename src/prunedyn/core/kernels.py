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
