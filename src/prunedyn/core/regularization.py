"""Regularizers on the prunable weights (Linear/Conv weights; never biases or norms).

================  ==============================  ===================================
kind              term in the loss                update it causes
================  ==============================  ===================================
``none``          0                               --
``l1``            ``lam * sum |w|``               grad += lam * sign(w)
``l2``            ``lam / 2 * sum w^2``           grad += lam * w  (coupled: SGD
                                                  ``weight_decay=lam``, passes through
                                                  momentum / Adam's moments)
``l2_decoupled``  --                              after the step: w <- w - lr*lam*w
                                                  (AdamW-style, bypasses momentum)
================  ==============================  ===================================

The coupled terms add their gradient directly (``add_gradient``) instead of
going through autograd: the result is identical (autograd's subgradient of
``|w|`` at 0 is 0, as is ``sign(0)``) and costs one fused op per tensor.
:meth:`Regularizer.penalty` gives the loss term's value for the records.
"""
from __future__ import annotations

from typing import Dict, Iterable, Type

import torch

REGULARIZERS: Dict[str, Type["Regularizer"]] = {}


def register_regularizer(cls):
    REGULARIZERS[cls.kind] = cls
    return cls


class Regularizer:
    kind = "none"

    def __init__(self, lam: float = 0.0):
        lam = float(lam)
        if not lam >= 0.0 or lam != lam or lam == float("inf"):
            raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
        self.lam = lam

    @torch.no_grad()
    def penalty(self, weights: Iterable[torch.Tensor]) -> float:
        """Value of the loss term (0 for the decoupled and empty regularizers)."""
        return 0.0

    @torch.no_grad()
    def add_gradient(self, weights: Iterable[torch.Tensor]) -> None:
        """Before ``optimizer.step()``: add the term's gradient to ``w.grad``."""

    @torch.no_grad()
    def after_step(self, weights: Iterable[torch.Tensor], lr: float) -> None:
        """After ``optimizer.step()``: a decoupled update, if any."""


register_regularizer(Regularizer)


@register_regularizer
class L1(Regularizer):
    kind = "l1"

    @torch.no_grad()
    def penalty(self, weights):
        return self.lam * float(sum(w.abs().sum() for w in weights))

    @torch.no_grad()
    def add_gradient(self, weights):
        if self.lam:
            for w in weights:
                if w.grad is not None:
                    w.grad.add_(torch.sign(w), alpha=self.lam)


@register_regularizer
class L2(Regularizer):
    kind = "l2"

    @torch.no_grad()
    def penalty(self, weights):
        return 0.5 * self.lam * float(sum(w.pow(2).sum() for w in weights))

    @torch.no_grad()
    def add_gradient(self, weights):
        if self.lam:
            for w in weights:
                if w.grad is not None:
                    w.grad.add_(w, alpha=self.lam)


@register_regularizer
class L2Decoupled(Regularizer):
    kind = "l2_decoupled"

    @torch.no_grad()
    def after_step(self, weights, lr):
        if self.lam:
            for w in weights:
                w.mul_(1.0 - lr * self.lam)


def make_regularizer(kind: str, lam: float = 0.0) -> Regularizer:
    try:
        cls = REGULARIZERS[kind]
    except KeyError:
        raise KeyError(
            f"unknown regularizer {kind!r}; allowed: {', '.join(REGULARIZERS)}"
        ) from None
    return cls(lam)
