"""SWP and the regularizers on anyone's own training loop: :func:`attach`.

``attach(optimizer, model, ...)`` hooks the optimizer's ``step`` so that a
plain loop (``forward; zero_grad; backward; optimizer.step()``) makes these
calls around every step; prunedyn's own loop
(:func:`prunedyn.run.experiments.train_epoch`) is such a loop over the same
hooks (one path)::

    pruner.before_forward()         model forward pre-hook, first training forward after a step
    ... forward, zero_grad, backward (the user's loop) ...
    pruner.before_step()            optimizer step pre-hook
    regularizer.add_gradient(ws)    optimizer step pre-hook (L1 / coupled L2)
    optimizer.step()
    regularizer.after_step(ws, lr)  optimizer step post-hook (decoupled L2, lr of each param group)
    pruner.step()                   optimizer step post-hook (w <- 0 where u < kappa(w; sigma), ...)

``before_forward`` / ``before_step`` matter only for targeted dropout (its
train-time masks); every other pruner acts in ``pruner.step()`` alone.

Saving and resuming. The handle puts the pruner's state (its RNG state,
step count and masks) into ``optimizer.state_dict()`` under the key
``"prunedyn"`` and reads it back in ``optimizer.load_state_dict()``, so the
usual ``torch.save({"model": model.state_dict(), "optimizer":
optimizer.state_dict()}, path)`` and, after ``attach`` on the fresh model
and optimizer, ``model.load_state_dict(...)``,
``optimizer.load_state_dict(...)`` resume to the same weights as an
uninterrupted run. ``handle.state_dict()`` / ``handle.load_state_dict()``
give the same state for checkpoints kept separately
(``state_dict_hooks=False``).

Mixed precision. ``GradScaler.step(optimizer)`` unscales the gradients and
then calls ``optimizer.step()`` only if they are finite: a skipped step runs
none of the hooks (no regularizer gradient, no decay, no pruning, no step
counted, targeted dropout keeps the current mask until the next real step).
Optimizers that unscale inside their own step (``fused=True``, which GradScaler
hands ``optimizer.grad_scale`` and ``optimizer.found_inf``) see scaled
gradients in the pre-hook: the regularizer's gradient is then added scaled by
the same factor, and a step with ``found_inf`` runs none of the hooks either.

Not supported: optimizers that compute the gradient inside ``step(closure)``
(LBFGS) with a coupled regularizer or targeted dropout -- the pre-hook runs
before the closure; put the penalty in the closure's loss instead.
"""
from __future__ import annotations

import inspect
import warnings
from typing import Any, Dict, List, Optional, Union

import torch
from torch import nn

from prunedyn.core.pruning import PRUNERS, WeightPruner, prunable_weights
from prunedyn.core.regularization import (
    L2Decoupled,
    Regularizer,
    make_regularizer,
    regularized_tensors,
)

STATE_KEY = "prunedyn"


def build_pruner(kind: str, model: nn.Module, *, seed: int = 0, **options: Any) -> WeightPruner:
    """The pruner ``kind`` on ``model`` with constructor ``options`` (all counted in optimiser steps)."""
    if kind not in PRUNERS or kind == "none":
        raise KeyError(f"unknown pruner {kind!r}; allowed: none, {', '.join(k for k in PRUNERS if k != 'none')}")
    cls = PRUNERS[kind]
    if kind == "targeted_dropout" and "end_step" not in options:
        raise ValueError(
            "targeted_dropout needs end_step: the 0-based optimiser step after which the targeted "
            "weights are pruned for good (prunedyn's runs use the last step, epochs * steps_per_epoch - 1)"
        )
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "model")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"pruner {kind!r} takes no option {unknown[0]!r}; its options: {', '.join(allowed)}")
    if "seed" in allowed:
        options["seed"] = seed
    return cls(model, **options)


class PruningHooks:
    """What :func:`attach` returns: the live pruner and regularizer and their hooks.

    Attributes:
        optimizer, model: what the hooks are on.
        pruner: the :class:`~prunedyn.core.pruning.WeightPruner`, or ``None``.
        regularizer: the :class:`~prunedyn.core.regularization.Regularizer`, or ``None``.
        weights: the tensors the regularizer acts on (those of ``scope`` that the optimizer holds).
        steps: optimiser steps the hooks ran on (skipped AMP steps do not count).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        model: nn.Module,
        pruner: Optional[WeightPruner],
        regularizer: Optional[Regularizer],
        weights: List[torch.Tensor],
        *,
        forward_hook: bool,
        state_dict_hooks: bool,
    ):
        self.optimizer = optimizer
        self.model = model
        self.pruner = pruner
        self.regularizer = regularizer
        self.weights = weights
        self.steps = 0
        self._armed = True  # the next training forward draws targeted dropout's mask
        self._skip = False
        self._handles = [
            optimizer.register_step_pre_hook(self._pre_step),
            optimizer.register_step_post_hook(self._post_step),
        ]
        self._masks_forward = pruner is not None and type(pruner).before_forward is not WeightPruner.before_forward
        # only a regularizer that acts after the step (decoupled L2) needs the post-hook's per-group work
        self._acts_after_step = regularizer is not None and type(regularizer).after_step is not Regularizer.after_step
        if self._masks_forward and forward_hook:
            self._handles.append(model.register_forward_pre_hook(self._forward_pre))
        if state_dict_hooks:
            self._handles.append(optimizer.register_state_dict_post_hook(self._save_into))
            self._handles.append(optimizer.register_load_state_dict_pre_hook(self._load_from))
        self.removed = False
        optimizer._prunedyn_hooks = self  # one attach per optimizer

    # ------------------------------------------------------------------ hooks

    def before_forward(self) -> None:
        """Draw targeted dropout's masks now (what the forward hook does; call it yourself with
        ``forward_hook=False``, once per optimiser step, before the forward pass)."""
        if self.pruner is not None and self._armed:
            self.pruner.before_forward()
            self._armed = False

    def _forward_pre(self, module, args) -> None:
        if module.training and torch.is_grad_enabled():
            self.before_forward()

    def _pre_step(self, optimizer, args, kwargs) -> None:
        found_inf = getattr(optimizer, "found_inf", None)
        self._skip = found_inf is not None and bool(found_inf.item() if torch.is_tensor(found_inf) else found_inf)
        if self._skip:
            return  # a fused optimizer under GradScaler will skip this step itself
        coupled = self.regularizer is not None and self.regularizer.lam and not isinstance(self.regularizer, L2Decoupled)
        if (coupled or self._masks_forward) and (len(args) > 1 or kwargs.get("closure") is not None):
            raise RuntimeError(
                "attach: optimizer.step(closure) computes the gradient after the step pre-hook, so a coupled "
                "regularizer or targeted dropout cannot be applied; add the penalty to the closure's loss"
            )
        if self.pruner is not None:
            self.pruner.before_step()
        if coupled:
            scale = getattr(optimizer, "grad_scale", None)  # set for fused optimizers under GradScaler
            scale = 1.0 if scale is None else float(scale)
            if scale == 1.0:
                self.regularizer.add_gradient(self.weights)
            else:  # the gradients are still multiplied by the loss scale: so is the term
                lam = self.regularizer.lam
                self.regularizer.lam = lam * scale
                try:
                    self.regularizer.add_gradient(self.weights)
                finally:
                    self.regularizer.lam = lam

    def _post_step(self, optimizer, args, kwargs) -> None:
        if self._skip:
            self._skip = False
            return
        if self._acts_after_step and self.regularizer.lam:
            held = {id(w) for w in self.weights}
            for group in optimizer.param_groups:
                ws = [p for p in group["params"] if id(p) in held]
                if ws:
                    self.regularizer.after_step(ws, float(group["lr"]))
        if self.pruner is not None:
            self.pruner.step()
        self.steps += 1
        self._armed = True

    # ------------------------------------------------------------------ state

    def state_dict(self) -> Dict[str, Any]:
        """The pruner's state (RNG, step count, masks) and the hooks' step count."""
        return {
            "pruner": None if self.pruner is None else self.pruner.state_dict(),
            "pruner_class": None if self.pruner is None else type(self.pruner).__name__,
            "steps": self.steps,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        want = None if self.pruner is None else type(self.pruner).__name__
        if state.get("pruner_class") != want:
            raise ValueError(f"saved hooks state is of pruner {state.get('pruner_class')}, these hooks have {want}")
        if self.pruner is not None:
            self.pruner.load_state_dict(state["pruner"])
        self.steps = int(state.get("steps", 0))
        self._armed = True

    def _save_into(self, optimizer, state_dict):
        state_dict[STATE_KEY] = self.state_dict()
        return state_dict

    def _load_from(self, optimizer, state_dict):
        state = state_dict.pop(STATE_KEY, None)
        if state is None:
            warnings.warn(
                "optimizer.load_state_dict: the state dict carries no prunedyn hooks state; "
                "the pruner keeps its current state (RNG, step count)",
                stacklevel=3,
            )
        else:
            self.load_state_dict(state)
        return state_dict

    # ------------------------------------------------------------------ misc

    def penalty(self) -> float:
        """The regularizer's loss term now (0 without one, or for decoupled decay)."""
        return 0.0 if self.regularizer is None else self.regularizer.penalty(self.weights)

    def remove(self) -> None:
        """Take the hooks off (the weights keep their zeros; a pending targeted-dropout mask is undone)."""
        if self.removed:
            return
        for h in self._handles:
            h.remove()
        if self.pruner is not None and getattr(self.pruner, "_stash", None):
            self.pruner.before_step()  # restores the weights the mask zeroed for this forward
        if getattr(self.optimizer, "_prunedyn_hooks", None) is self:
            del self.optimizer._prunedyn_hooks
        self.removed = True

    def __enter__(self) -> "PruningHooks":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        reg = "none" if self.regularizer is None else f"{self.regularizer.kind}(lam={self.regularizer.lam})"
        pr = "none" if self.pruner is None else type(self.pruner).__name__
        return f"PruningHooks(pruner={pr}, regularizer={reg}, steps={self.steps}{', removed' if self.removed else ''})"


def unprunable_matrices(model: nn.Module) -> List[str]:
    """Names of the parameters of two or more dimensions that are not a Linear / Conv weight (which
    :func:`prunable_weights` covers): what a pruner attached to ``model`` leaves alone."""
    covered = {id(w) for w in prunable_weights(model).values()}
    return [n for n, p in model.named_parameters() if p.dim() >= 2 and id(p) not in covered]


def attach(
    optimizer: torch.optim.Optimizer,
    model: nn.Module,
    pruner: Union[str, WeightPruner, None] = "stochastic",
    *,
    regularizer: Union[str, Regularizer, None] = None,
    lam: float = 0.0,
    scope: str = "weights",
    seed: int = 0,
    forward_hook: bool = True,
    state_dict_hooks: bool = True,
    **pruner_options: Any,
) -> PruningHooks:
    """Prune and regularize ``model`` on every ``optimizer.step()`` of any training loop.

    Args:
        optimizer: any ``torch.optim.Optimizer`` holding the model's parameters;
            ``GradScaler.step(optimizer)`` works too (skipped steps run no hook).
        model: the network; its Linear/Conv weights are pruned.
        pruner: a kind -- ``"stochastic"`` (SWP, the default), ``"magnitude"``,
            ``"random"``, ``"targeted_dropout"`` (needs ``end_step``), ``"torch_l1"``
            -- built with ``pruner_options``; a ready
            :class:`~prunedyn.core.pruning.WeightPruner` on ``model``; or
            ``None`` / ``"none"`` for the regularizer alone.
        regularizer: ``None`` / ``"none"``, ``"l1"``, ``"l2"`` (coupled), ``"l2_decoupled"``
            (after the step: ``w <- w - lr * lam * w`` with each param group's lr),
            ``"group_lasso"`` (over each weight's output units: rows / filters),
            or a ready :class:`~prunedyn.core.regularization.Regularizer` (bound to ``model``).
        lam: the regularizer's strength (with a regularizer name).
        scope: ``"weights"`` (Linear/Conv weights, the study's definition), ``"all"``
            (every parameter, biases and norms too, as the optimizer's ``weight_decay``),
            ``"bn"`` (BatchNorm scales only; with ``"l1"``: network slimming) or
            ``"weights+bn"`` (:func:`~prunedyn.core.regularization.regularized_tensors`).
        seed: seeds the pruner's own ``torch.Generator`` (kinds that draw at random).
        forward_hook: draw targeted dropout's masks in a forward pre-hook on ``model``
            (first training-mode forward with grad enabled after each step); with
            ``False`` call ``handle.before_forward()`` before the forward pass yourself.
        state_dict_hooks: carry the pruner's state in ``optimizer.state_dict()`` and
            restore it in ``optimizer.load_state_dict()``.
        **pruner_options: the pruner's constructor options, counted in optimiser steps:
            ``kernel``, ``sigma``, ``sigma_mode``, ``schedule``, ``ramp_steps``,
            ``start_step``, ``sticky`` (stochastic); ``sparsity``, ``scope``, ``every``
            (magnitude); ``gamma``, ``alpha``, ``unit``, ``end_step`` (targeted dropout)...

    Returns:
        a :class:`PruningHooks` handle: ``.pruner``, ``.regularizer``, ``.remove()``,
        ``.state_dict()`` / ``.load_state_dict()``, ``.penalty()``.
    """
    if getattr(optimizer, "_prunedyn_hooks", None) is not None:
        raise RuntimeError("this optimizer already has prunedyn hooks attached; remove() them first")
    if isinstance(pruner, WeightPruner):
        if pruner_options:
            raise TypeError(f"options {sorted(pruner_options)} apply to a pruner built by name, not to a ready one")
        if not {id(w) for w in pruner.weights.values()} <= {id(p) for p in model.parameters()}:
            raise ValueError("the pruner was built on another model")
    elif pruner is None or pruner == "none":
        if pruner_options:
            raise TypeError(f"options {sorted(pruner_options)} given without a pruner")
        pruner = None
    else:
        pruner = build_pruner(pruner, model, seed=seed, **pruner_options)

    if isinstance(regularizer, Regularizer):
        if lam:
            raise TypeError("lam applies to a regularizer given by name; a ready one has its own lam")
    elif regularizer is None or regularizer == "none":
        regularizer = None
    else:
        regularizer = make_regularizer(regularizer, lam)
    if regularizer is not None and type(regularizer) is Regularizer:
        regularizer = None  # "none" by class
    if regularizer is not None:
        regularizer.bind(model)  # group_lasso: which weights are transposed convs

    held = {id(p) for g in optimizer.param_groups for p in g["params"]}
    if pruner is not None:
        outside = [n for n, w in pruner.weights.items() if id(w) not in held]
        if outside:
            warnings.warn(f"attach: the optimizer does not hold {outside}; they are pruned but never trained", stacklevel=2)
        unpruned = unprunable_matrices(model)
        if unpruned:
            warnings.warn(f"attach: {len(unpruned)} weight matrices are not Linear/Conv weights and are never pruned: "
                          f"{', '.join(unpruned[:6])}{', ...' if len(unpruned) > 6 else ''} "
                          "(attention in-projections, recurrent weights, embeddings)", stacklevel=2)
    weights = [w for w in regularized_tensors(model, scope) if id(w) in held]
    if regularizer is not None and regularizer.lam and not weights:
        warnings.warn(f"attach: scope {scope!r} selects no parameter the optimizer holds; the regularizer does nothing", stacklevel=2)
    if regularizer is not None and regularizer.lam and any(float(g.get("weight_decay", 0) or 0) for g in optimizer.param_groups):
        warnings.warn(
            "attach: the optimizer has weight_decay as well as the regularizer, so weights are decayed twice; "
            "set weight_decay=0 (AdamW's default is 0.01)",
            stacklevel=2,
        )
    return PruningHooks(
        optimizer,
        model,
        pruner,
        regularizer,
        weights,
        forward_hook=forward_hook,
        state_dict_hooks=state_dict_hooks,
    )
