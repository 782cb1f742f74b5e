"""The baseline pruners SWP is compared with, in the registry beside it
(:data:`prunedyn.core.pruning.PRUNERS`): magnitude pruning to a scheduled sparsity, random
pruning at the same rate, network slimming (a channel goes when its BatchNorm scale is small) and
targeted dropout (weights or whole units)."""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from prunedyn.core.pruning import WeightPruner, register_pruner
from prunedyn.core.schedules import get_schedule
from prunedyn.structure.nodes import node_layers


def _smallest(values: torch.Tensor, fraction: float) -> torch.Tensor:
    """Boolean mask of the ``floor(fraction * n)`` smallest entries of a 1-D tensor (stable on ties)."""
    k = int(fraction * values.numel())
    mask = torch.zeros(values.numel(), dtype=torch.bool, device=values.device)
    if k > 0:
        mask[torch.argsort(values, stable=True)[:k]] = True
    return mask


@register_pruner("magnitude")
class MagnitudePruner(WeightPruner):
    """Zero the smallest-magnitude weights up to ``sparsity * f(t)`` and keep them zero.

    With the ``constant`` schedule this is one-shot magnitude pruning at
    ``start_step`` followed by masked fine-tuning; with ``cubic`` and
    ``ramp_steps > 0`` it is gradual magnitude pruning (AGP). The masks only
    ever shrink, so a weight once pruned stays pruned.

    Args:
        sparsity: target fraction of zeros in ``[0, 1)``.
        scope: ``"layer"`` (each tensor reaches the target) or ``"global"``
            (one threshold over all prunable weights).
        every: re-threshold every this many steps during a ramp.
    """

    @classmethod
    def from_config(cls, p, model, *, ramp_steps, start_step, seed, last_step):
        return cls(model, sparsity=p.sparsity, scope=p.scope, schedule=p.schedule, ramp_steps=ramp_steps,
                   start_step=start_step)

    def __init__(
        self,
        model: nn.Module,
        *,
        sparsity: float = 0.9,
        scope: str = "layer",
        schedule: str = "constant",
        ramp_steps: int = 0,
        start_step: int = 0,
        every: int = 100,
    ):
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
        if scope not in ("layer", "global"):
            raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
        super().__init__(model, sticky=True, start_step=start_step)
        self.sparsity = float(sparsity)
        self.scope = scope
        self.schedule = get_schedule(schedule)
        self.ramp_steps = int(ramp_steps)
        self.every = max(1, int(every))
        self.applied = 0.0

    def target_at(self, t: int) -> float:
        return self.sparsity * self.schedule(t, self.ramp_steps)

    def _prune(self, t: int) -> None:
        target = self.target_at(t)
        ramping = t < self.ramp_steps
        if target <= self.applied or (ramping and t % self.every and t != 0):
            return
        self.prune_to(target)

    @torch.no_grad()
    def prune_to(self, sparsity: float) -> None:
        """Zero the smallest weights now so that the pruned fraction reaches ``sparsity``."""
        if self.scope == "global":
            # rank, not threshold: ties at the k-th magnitude must not overshoot the target
            drop = _smallest(torch.cat([w.detach().abs().flatten() for w in self.weights.values()]), sparsity)
            for (name, w), part in zip(self.weights.items(), drop.split([w.numel() for w in self.weights.values()])):
                self._zero(name, w, part.view_as(w))
        else:
            for name, w in self.weights.items():
                self._zero(name, w, _smallest(w.detach().abs().flatten(), sparsity).view_as(w))
        self.applied = sparsity

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["applied"] = self.applied
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.applied = float(state["applied"])


@register_pruner("random")
class RandomPruner(WeightPruner):
    """Zero a uniformly random fraction ``sparsity * f(t)`` of each weight tensor, for good.

    The control for every magnitude-aware method: the same sparsity with no
    preference for small weights. Masks only shrink, like :class:`MagnitudePruner`.
    """

    @classmethod
    def from_config(cls, p, model, *, ramp_steps, start_step, seed, last_step):
        return cls(model, sparsity=p.sparsity, schedule=p.schedule, ramp_steps=ramp_steps, start_step=start_step,
                   seed=seed)

    def __init__(
        self,
        model: nn.Module,
        *,
        sparsity: float = 0.9,
        schedule: str = "constant",
        ramp_steps: int = 0,
        start_step: int = 0,
        every: int = 100,
        seed: int = 0,
    ):
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
        super().__init__(model, sticky=True, start_step=start_step)
        self.sparsity = float(sparsity)
        self.schedule = get_schedule(schedule)
        self.ramp_steps = int(ramp_steps)
        self.every = max(1, int(every))
        self.applied = 0.0
        device = next(iter(self.weights.values())).device
        # one fixed random priority per weight: raising the sparsity prunes further down the same order
        self.generator = torch.Generator(device=device).manual_seed(int(seed))
        self.priority = {
            n: torch.rand(w.shape, generator=self.generator, device=device) for n, w in self.weights.items()
        }

    def _prune(self, t: int) -> None:
        target = self.sparsity * self.schedule(t, self.ramp_steps)
        if target <= self.applied or (t < self.ramp_steps and t % self.every and t != 0):
            return
        for name, w in self.weights.items():
            k = int(target * w.numel())
            if k > 0:
                threshold = torch.kthvalue(self.priority[name].flatten(), k).values
                self._zero(name, w, self.priority[name] <= threshold)
        self.applied = target

    def state_dict(self) -> dict:
        return {**super().state_dict(), "applied": self.applied, "priority": self.priority}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.applied = float(state["applied"])
        self.priority = {k: v.clone() for k, v in state["priority"].items()}


@register_pruner("slimming")
class BatchNormScalePruner(WeightPruner):
    """Network slimming's channel removal (Liu et al., 2017), applied during training.

    Every BatchNorm scale ``gamma_j`` with ``|gamma_j| < threshold`` is set to
    zero after the optimiser step and kept zero (the removal is permanent, as
    in slimming's prune step). A channel with ``gamma_j = 0`` emits the
    constant ``act(beta_j)``: it is in-dead (:mod:`prunedyn.structure.nodes`)
    and compaction folds the constant into the next layer. Pair it with
    ``regularizer.kind=l1, scope=bn`` (the sparsity term on the scales) to get
    slimming; the Linear/Conv weights are not touched.

    ``self.weights`` maps each BatchNorm module's name to its scale (shape
    ``(C,)``); the masks are boolean of the same shapes.
    """

    @classmethod
    def from_config(cls, p, model, *, ramp_steps, start_step, seed, last_step):
        return cls(model, threshold=p.threshold, start_step=start_step)

    def __init__(self, model: nn.Module, *, threshold: float = 0.01, start_step: int = 0):
        if not threshold >= 0:
            raise ValueError(f"threshold must be >= 0, got {threshold!r}")
        self.weights = {
            name: m.weight
            for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None
        }
        if not self.weights:
            raise ValueError("pruner 'slimming' needs BatchNorm layers with a scale (affine=True); the model has none")
        self.sticky = True
        self.start_step = int(start_step)
        self.steps_done = 0
        self.masks = {n: torch.ones_like(w, dtype=torch.bool) for n, w in self.weights.items()}
        self.threshold = float(threshold)

    def _prune(self, t: int) -> None:
        for name, w in self.weights.items():
            self._zero(name, w, w.detach().abs() < self.threshold)


@register_pruner("targeted_dropout")
class TargetedDropout(WeightPruner):
    """Targeted dropout (Gomez et al. 2019), then magnitude pruning at the end of training.

    During training, in each layer the fraction ``gamma`` of candidates with
    the smallest magnitude is *targeted*, and each targeted candidate is
    dropped for this forward pass with probability ``alpha``:

    - ``unit=False`` (weight variant): candidates are single weights, ``|w|``;
    - ``unit=True`` (unit variant): candidates are the nodes of
      :mod:`prunedyn.structure.nodes` (rows / filters of every layer but the output
      layer), ranked by the L2 norm of their incoming weights, with one
      Bernoulli draw per unit.

    The drop is a train-time mask ``m``: the forward pass sees ``W * m`` and the
    gradient is ``m * dL/d(W m)``, exactly as ``weight = W * m`` under autograd
    (``before_forward`` applies it, ``before_step`` masks the gradient and
    restores ``W``). At step ``end_step`` the targeted fraction is pruned for
    good (weights or whole units), which is what the method trains the network
    to survive.
    """

    @classmethod
    def from_config(cls, p, model, *, ramp_steps, start_step, seed, last_step):
        # the targeted fraction is pruned for good after the run's last step
        return cls(model, gamma=p.gamma, alpha=p.alpha, unit=p.unit, end_step=last_step, seed=seed)

    def __init__(
        self,
        model: nn.Module,
        *,
        gamma: float = 0.5,
        alpha: float = 0.5,
        unit: bool = False,
        end_step: int = 0,
        seed: int = 0,
    ):
        for name, v in (("gamma", gamma), ("alpha", alpha)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v!r}")
        super().__init__(model, sticky=True)
        if unit:
            # units are nodes: the output layer's rows are classes and are never targeted
            producers = {id(layer.producer) for layer in node_layers(model)}
            names = {n for n, m in model.named_modules() if id(m) in producers}
            self.weights = {n: w for n, w in self.weights.items() if n in names}
            self.masks = {n: m for n, m in self.masks.items() if n in names}
        self.gamma, self.alpha, self.unit = float(gamma), float(alpha), bool(unit)
        self.end_step = int(end_step)
        self.pruned = False
        device = next(iter(self.weights.values())).device
        self.generator = torch.Generator(device=device).manual_seed(int(seed))
        self._stash: Dict[str, torch.Tensor] = {}
        self._drop: Dict[str, torch.Tensor] = {}

    def _targeted(self, w: torch.Tensor) -> torch.Tensor:
        """Boolean mask of the targeted candidates of ``w`` (shape of ``w``)."""
        if self.unit:
            target = _smallest(w.detach().reshape(w.shape[0], -1).norm(dim=1), self.gamma)
            return target.view(-1, *([1] * (w.dim() - 1))).expand_as(w)
        return _smallest(w.detach().abs().flatten(), self.gamma).view_as(w)

    @torch.no_grad()
    def before_forward(self) -> None:
        if self.pruned or self.alpha == 0 or self.gamma == 0:
            return
        for name, w in self.weights.items():
            target = self._targeted(w)
            if self.unit:
                coin = torch.rand(w.shape[0], generator=self.generator, device=w.device) < self.alpha
                coin = coin.view(-1, *([1] * (w.dim() - 1))).expand_as(w)
            else:
                coin = torch.rand(w.shape, generator=self.generator, device=w.device) < self.alpha
            drop = target & coin
            self._stash[name] = w.detach().clone()
            self._drop[name] = drop
            w.masked_fill_(drop, 0.0)

    @torch.no_grad()
    def before_step(self) -> None:
        for name, w in self.weights.items():
            if name in self._stash:
                if w.grad is not None:
                    w.grad.masked_fill_(self._drop[name], 0.0)
                w.copy_(self._stash[name])
        self._stash.clear()
        self._drop.clear()

    def _prune(self, t: int) -> None:
        if t >= self.end_step and not self.pruned:
            self.prune_targeted()

    @torch.no_grad()
    def prune_targeted(self) -> None:
        """Zero the targeted fraction for good (weights or whole units)."""
        for name, w in self.weights.items():
            self._zero(name, w, self._targeted(w))
        self.pruned = True

    def state_dict(self) -> dict:
        return {**super().state_dict(), "pruned": self.pruned, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.pruned = bool(state["pruned"])
        self.generator.set_state(state["generator"])
