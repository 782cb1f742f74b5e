"""Regularizers, and the tensors they act on.

================  ====================================  ===================================
kind              term in the loss                      update it causes
================  ====================================  ===================================
``none``          0                                     --
``l1``            ``lam * sum |w|``                     grad += lam * sign(w)
``l2``            ``lam / 2 * sum w^2``                 grad += lam * w  (coupled: SGD
                                                        ``weight_decay=lam``, passes through
                                                        momentum / Adam's moments)
``l2_decoupled``  --                                    after the step: w <- w - lr*lam*w
                                                        (AdamW-style, bypasses momentum)
``group_lasso``   ``lam * sum_j sqrt(n_j) * ||W_j||``   grad_j += lam * sqrt(n_j) * W_j / ||W_j||
                  over the nodes ``j`` of every tensor  (0 for an all-zero group: the
                  (group lasso over nodes)              subgradient)
================  ====================================  ===================================

``group_lasso``'s groups are a tensor's output units: group ``j`` of a Linear
or Conv weight is row / filter ``j`` (``W[j]``; ``W[:, j]`` for a ConvTranspose
weight, once the regularizer is bound to its model: ``make_regularizer(...,
model=...)``, runs and ``attach()`` bind it), i.e. node ``j``'s *incoming*
weights, ``n_j`` of them (the fan-in). A node's outgoing
column is not in its group: each weight belongs to exactly one group, the
penalty is the filter-wise group lasso of Wen et al. (2016), and the outgoing
side shrinks through the in/out dependency the study is about. Every output
unit is a group, the final classifier's rows included. On a 1-D tensor
(BatchNorm scales, biases under ``scope=all`` / ``bn``) every entry is a group
of one, so there it is L1.

Which tensors a regularizer acts on is its *scope* (:data:`SCOPES`,
:func:`regularized_tensors`; ``regularizer.scope`` in a config, ``scope=`` in
``attach()``):

===============  ===================================================================
scope            tensors
===============  ===================================================================
``weights``      the prunable Linear/Conv weights (the study's definition; default)
``all``          every trainable parameter: biases and norm scales/shifts too
                 (what ``torch.optim.SGD(weight_decay=lam)`` decays)
``bn``           the scales (``weight``, gamma) of every BatchNorm layer only:
                 ``kind=l1, scope=bn`` is network slimming (Liu et al., 2017)
``weights+bn``   both of the above
===============  ===================================================================

The coupled terms add their gradient directly (``add_gradient``) instead of
going through autograd: the result is identical (autograd's subgradient of
``|w|`` at 0 is 0, as is ``sign(0)``) and costs one fused op per tensor.
:meth:`Regularizer.penalty` gives the loss term's value for the records.
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, List, Optional, Sequence, Type

import torch
from torch import nn

from prunedyn.structure.layers import prunable_weights

REGULARIZERS: Dict[str, Type["Regularizer"]] = {}

# the values of ``regularizer.scope`` / ``attach(scope=...)``, see regularized_tensors
SCOPES = ("weights", "all", "bn", "weights+bn")


def bn_scales(model: nn.Module) -> List[torch.Tensor]:
    """The trainable scales (gamma, ``weight``) of every BatchNorm layer of ``model``, in order."""
    return [
        m.weight
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None and m.weight.requires_grad
    ]


def regularized_tensors(model: nn.Module, scope: str, field: str = "scope",
                        layers: Optional[Sequence[str]] = None) -> List[torch.Tensor]:
    """The tensors a regularizer of ``scope`` acts on (see :data:`SCOPES` and the module's table),
    and with ``layers`` (module names, as ``model.named_modules()`` gives them) only those of the
    named modules: one side of a node decayed, the intervention on the balance law.

    The one place that decides it, for runs (``regularizer.scope``, ``regularizer.layers``) and
    ``attach(scope=...)``; ``field`` names the setting in the error an unknown scope raises
    (``<section>.layers`` for an unknown module name).
    """
    tensors = _scope_tensors(model, scope, field)
    if layers is None:
        return tensors
    modules = dict(model.named_modules())
    for name in layers:
        if not name or name not in modules:
            have = [n for n, m in modules.items() if n and any(True for _ in m.parameters(recurse=False))]
            where = f"{field.rpartition('.')[0]}.layers" if "." in field else "layers"
            raise ValueError(f"{where}: {name!r} is not a module of the model; modules with parameters: {', '.join(have)}")
    keep = {id(p) for name in layers for p in modules[name].parameters(recurse=False)}
    return [t for t in tensors if id(t) in keep]


def _scope_tensors(model: nn.Module, scope: str, field: str) -> List[torch.Tensor]:
    if scope == "all":
        return [p for p in model.parameters() if p.requires_grad]
    if scope == "weights":
        return list(prunable_weights(model).values())
    if scope == "bn":
        return bn_scales(model)
    if scope == "weights+bn":
        weights = list(prunable_weights(model).values())
        seen = {id(w) for w in weights}
        return weights + [g for g in bn_scales(model) if id(g) not in seen]
    raise ValueError(f"{field}: {scope!r} is not allowed; allowed: {', '.join(SCOPES)}")


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

    def bind(self, model: nn.Module) -> "Regularizer":
        """Read what the regularizer needs to know of ``model``'s layers (nothing, except for
        :class:`GroupLasso`); returns ``self``."""
        return self


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


@register_regularizer
class GroupLasso(Regularizer):
    """Group lasso over nodes: ``lam * sum_j sqrt(n_j) * ||W_j||_2`` (see the module's table).

    Group ``j`` of a tensor is its output unit ``j``: ``W[j]`` (a Linear row, a conv
    filter), or ``W[:, j]`` for the weight of a ConvTranspose layer of the model given
    to :meth:`bind`; every entry of a 1-D tensor is a group of one.
    """

    kind = "group_lasso"

    def __init__(self, lam: float = 0.0):
        super().__init__(lam)
        self._unit_dim: Dict[int, int] = {}  # id(weight) -> its output-unit dim, when not 0

    def bind(self, model: nn.Module) -> "GroupLasso":
        """Learn which of ``model``'s weights keep their output units in dim 1 (ConvTranspose)."""
        self._unit_dim = {
            id(m.weight): 1
            for m in model.modules()
            if isinstance(m, nn.modules.conv._ConvTransposeNd) and m.weight is not None
        }
        return self

    def groups(self, w: torch.Tensor):
        """``(norms, n)``: the groups' L2 norms, shaped to broadcast against ``w``, and the
        number of entries in each group."""
        if w.dim() < 2:
            return w.abs(), 1
        dim = self._unit_dim.get(id(w), 0)
        others = [d for d in range(w.dim()) if d != dim]
        norms = torch.linalg.vector_norm(w, dim=others, keepdim=True)
        return norms, w.numel() // w.shape[dim]

    @torch.no_grad()
    def penalty(self, weights):
        total = 0.0
        for w in weights:
            norms, n = self.groups(w)
            total += math.sqrt(n) * float(norms.sum())
        return self.lam * total

    @torch.no_grad()
    def add_gradient(self, weights):
        if self.lam:
            for w in weights:
                if w.grad is not None:
                    norms, n = self.groups(w)
                    # W_j / ||W_j||: an all-zero group gets 0 (0 / tiny); clamping also keeps a
                    # denormal norm from overflowing the quotient
                    unit = w / norms.clamp_min(torch.finfo(norms.dtype).tiny)
                    w.grad.add_(unit, alpha=self.lam * math.sqrt(n))


def make_regularizer(kind: str, lam: float = 0.0, model: Optional[nn.Module] = None) -> Regularizer:
    """The regularizer ``kind`` (:data:`REGULARIZERS`) of strength ``lam``; with ``model``,
    bound to it (:meth:`Regularizer.bind`: ``group_lasso`` reads which weights are transposed convs)."""
    try:
        cls = REGULARIZERS[kind]
    except KeyError:
        raise KeyError(
            f"unknown regularizer {kind!r}; allowed: {', '.join(REGULARIZERS)}"
        ) from None
    reg = cls(lam)
    return reg.bind(model) if model is not None else reg
