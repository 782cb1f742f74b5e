"""Weight pruners: operators applied in place after every optimiser step.

Two pruners share one interface (:class:`WeightPruner`): construct it on a
model, call :meth:`~WeightPruner.step` right after ``optimizer.step()``, and
save / restore it with ``state_dict`` / ``load_state_dict`` so that resumed
runs repeat exactly.

Only the weights of ``Linear`` and convolution layers are pruned
(:func:`prunable_weights`); biases and normalisation parameters never are.

Stochastic weight pruning (SWP), for every prunable weight tensor ``W``::

    s_t = sigma * f(t)                      (absolute sigma, schedule f)
    s_t = sigma * f(t) * rms(W)             (sigma relative to the layer's RMS)
    u ~ Uniform(0, 1)  elementwise, from the pruner's own torch.Generator
    W <- 0  where  u < kappa(W; s_t)

so a weight is zeroed with probability ``kappa`` (:mod:`prunedyn.core.kernels`),
higher the smaller it is. Zeroed weights are free to regrow through their
gradient unless ``sticky=True``, which keeps a boolean mask per tensor and
re-applies it after every step.

Magnitude pruning (the classic baseline, Han et al. 2015) zeroes the
fraction ``sparsity * f(t)`` of smallest-magnitude weights (per layer or
globally) and keeps them at zero: one-shot with the ``constant`` schedule,
gradual (Zhu & Gupta's AGP) with ``cubic``.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Type

import torch
from torch import nn

from prunedyn.core.kernels import clamped_kappa, get_kernel
from prunedyn.core.fused import CounterStream
from prunedyn.core.registry import Registry
from prunedyn.core.schedules import get_schedule
from prunedyn.structure.layers import PRUNABLE_TYPES, prunable_weights, weight_sparsity  # noqa: F401 (re-exported)

#: Pruners by name (``pruner.kind`` of a run config, the ``pruner`` argument of
#: :func:`prunedyn.attach`). Adding a pruner takes one class in one file:
#: subclass :class:`WeightPruner`, decorate it with ``@register_pruner("name")``
#: and, if its constructor needs more than the model, override :meth:`WeightPruner.from_config`.
PRUNERS: Registry[Type["WeightPruner"]] = Registry("pruner")


def register_pruner(name: str):
    """Class decorator: register a :class:`WeightPruner` subclass as pruner ``name``."""

    def decorator(cls):
        cls.kind = name
        return PRUNERS.register(name)(cls)

    return decorator


class WeightPruner:
    """Base class: holds the prunable weights, a step counter and optional masks.

    Subclasses implement :meth:`_prune` which receives the 0-based index of the
    optimiser step that just finished.
    """

    kind = "base"

    @classmethod
    def from_config(cls, p, model: nn.Module, *, ramp_steps: int, start_step: int, seed: int, last_step: int) -> "WeightPruner":
        """The pruner a run's ``pruner`` config section ``p`` asks for.

        ``ramp_steps`` and ``start_step`` are ``p.ramp_epochs`` and
        ``p.start_epoch`` converted to optimiser steps; ``seed`` is the pruner's
        own stream; ``last_step`` the 0-based index of the run's last step.
        """
        return cls(model)

    def __init__(self, model: nn.Module, *, sticky: bool = False, start_step: int = 0):
        self.weights = prunable_weights(model)
        if not self.weights:
            raise ValueError("the model has no Linear or Conv weights to prune")
        self.sticky = sticky
        self.start_step = int(start_step)
        self.steps_done = 0
        self.masks: Dict[str, torch.Tensor] = {}
        if sticky:
            self.masks = {n: torch.ones_like(w, dtype=torch.bool) for n, w in self.weights.items()}

    @torch.no_grad()
    def step(self) -> None:
        """Apply the pruner after one optimiser step."""
        t = self.steps_done
        self.steps_done += 1
        if self.sticky:
            # the optimiser may have moved masked weights (momentum, decay): re-zero first
            for name, w in self.weights.items():
                w.mul_(self.masks[name])
        if t < self.start_step:
            return
        self._prune(t - self.start_step)

    def before_forward(self) -> None:
        """Hook before each training forward pass (train-time masks such as targeted dropout)."""

    def before_step(self) -> None:
        """Hook between ``loss.backward()`` and ``optimizer.step()``."""

    def _prune(self, t: int) -> None:
        raise NotImplementedError

    def _zero(self, name: str, w: torch.Tensor, drop: torch.Tensor) -> None:
        w.masked_fill_(drop, 0.0)
        if self.sticky:
            self.masks[name] &= ~drop

    def state_dict(self) -> dict:
        return {"steps_done": self.steps_done, "masks": {k: v.clone() for k, v in self.masks.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.steps_done = int(state["steps_done"])
        if self.sticky:
            for k, v in state["masks"].items():
                self.masks[k] = v.to(self.weights[k].device).clone()


@register_pruner("none")
class NoPruner(WeightPruner):
    """Leaves the weights alone (the dense baseline), with the same interface."""

    def __init__(self, model: nn.Module):
        self.weights = prunable_weights(model)
        self.sticky = False
        self.start_step = 0
        self.steps_done = 0
        self.masks = {}

    def _prune(self, t: int) -> None:
        pass


class TorchStream:
    """SWP's default draws (``pruner.stream=torch``): one ``torch.rand`` draw per weight from the
    pruner's own ``torch.Generator``, tensor after tensor: the *exact stream*, the numbers of every
    recorded run.

    On the CPU the draws fill one reused buffer of :attr:`SLICE` elements, slice after slice (256
    KiB of float32: the rule's temporaries stay in cache), the same numbers as one draw for all
    tensors (tested) in half its time (``benchmarks/results/swp-bandwidth-cpu.csv``: 2.46 against
    5.20 ms a step on the MLP). Elsewhere one draw for all tensors: one launch.
    """

    name = "torch"
    SLICE = 1 << 16

    def __init__(self, seed: int, device: torch.device):
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(int(seed))
        self._buffer: Optional[torch.Tensor] = None

    def prune_(self, todo, step: int, rule) -> None:
        """``rule(w, u, scale, mask)`` on every ``(name, w, scale, mask)`` of ``todo`` (or on slices of
        ``w`` and ``mask``) with its draws ``u``."""
        first = todo[0][1]
        if first.device.type != "cpu":
            u = torch.rand(sum(w.numel() for _, w, _, _ in todo), generator=self.generator, device=first.device,
                           dtype=first.dtype)
            for (_, w, scale, mask), part in zip(todo, u.split([w.numel() for _, w, _, _ in todo])):
                rule(w, part.view_as(w), scale, mask)
            return
        b = self._buffer
        if b is None or b.numel() < self.SLICE or b.dtype != first.dtype:
            b = self._buffer = torch.empty(self.SLICE, dtype=first.dtype)
        for _, w, scale, mask in todo:
            if not w.is_contiguous():
                rule(w, torch.empty(w.shape, dtype=w.dtype).uniform_(generator=self.generator), scale, mask)
                continue
            flat, flat_mask = w.view(-1), None if mask is None else mask.view(-1)
            for start in range(0, flat.numel(), self.SLICE):
                part = flat[start : start + self.SLICE]
                u = b[: part.numel()].uniform_(generator=self.generator)
                rule(part, u, scale, None if flat_mask is None else flat_mask[start : start + self.SLICE])

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


#: random streams of :class:`StochasticWeightPruner` (``pruner.stream`` of a run config)
STREAMS = ("torch", "counter")


@register_pruner("stochastic")
class StochasticWeightPruner(WeightPruner):
    """Zero each weight ``w`` independently with probability ``kappa(w; s_t)``: ``w <- 0`` where
    ``u < kappa(w; s_t)`` (:meth:`rule`), the draws ``u`` supplied by the pruner's stream.

    Args:
        model: the network; its Linear/Conv weights are pruned in place.
        kernel: name in :data:`prunedyn.core.kernels.KERNELS` (gaussian, laplace, hard, ...).
        sigma: scale ``> 0``; absolute, or a multiple of the layer's weight RMS
            when ``sigma_mode="relative"``.
        schedule: name in :data:`prunedyn.core.schedules.SCHEDULES`; multiplies sigma.
        ramp_steps: ramp length of the schedule, in optimiser steps.
        start_step: no pruning before this optimiser step.
        sticky: keep pruned weights at zero for good.
        seed: seeds the stream, so the pruning noise neither disturbs nor depends on the global RNG.
        stream: ``"torch"`` (default, :class:`TorchStream`: one ``torch.rand`` draw per weight from
            the pruner's own generator, the numbers of every recorded run; the probability of
            pruning is ``kappa`` rounded up to a multiple of ``2**-24``) or ``"counter"``
            (:class:`prunedyn.core.fused.CounterStream`: a function of ``(seed, step, tensor,
            element)``, drawn and applied in one fused pass, the same decisions on every device and
            thread count; ``kappa`` rounded to the nearest multiple of ``2**-23``, 0 below ``2**-24``).
    """

    @classmethod
    def from_config(cls, p, model, *, ramp_steps, start_step, seed, last_step):
        return cls(model, kernel=p.kernel, sigma=p.sigma, sigma_mode=p.sigma_mode, schedule=p.schedule,
                   ramp_steps=ramp_steps, start_step=start_step, sticky=p.sticky, seed=seed,
                   stream=getattr(p, "stream", "torch"))

    def __init__(
        self,
        model: nn.Module,
        *,
        kernel: str = "gaussian",
        sigma: float = 0.003,
        sigma_mode: str = "absolute",
        schedule: str = "constant",
        ramp_steps: int = 0,
        start_step: int = 0,
        sticky: bool = False,
        seed: int = 0,
        stream: str = "torch",
    ):
        if stream not in STREAMS:
            raise ValueError(f"stream must be one of {', '.join(STREAMS)}, got {stream!r}")
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"sigma must be a positive finite number, got {sigma!r}")
        if sigma_mode not in ("absolute", "relative"):
            raise ValueError(f"sigma_mode must be 'absolute' or 'relative', got {sigma_mode!r}")
        super().__init__(model, sticky=sticky, start_step=start_step)
        self.kernel_name = kernel
        self.kernel = get_kernel(kernel)
        self.sigma = float(sigma)
        self.sigma_mode = sigma_mode
        self.schedule = get_schedule(schedule)
        self.ramp_steps = int(ramp_steps)
        device = next(iter(self.weights.values())).device
        self.stream = TorchStream(seed, device) if stream == "torch" else CounterStream(seed, self.weights, kernel)

    def sigma_at(self, t: Optional[int] = None) -> float:
        """The (absolute-mode) sigma in force at pruning step ``t`` (default: the next one)."""
        if t is None:
            t = max(0, self.steps_done - self.start_step)
        return self.sigma * self.schedule(t, self.ramp_steps)

    def _prune(self, t: int) -> None:
        s = self.sigma_at(t)
        if s <= 0:
            return
        todo = []
        for name, w in self.weights.items():
            scale = s * float(w.pow(2).mean().sqrt()) if self.sigma_mode == "relative" else s
            if scale > 0:
                todo.append((name, w, scale, self.masks.get(name)))
        if todo:
            self.stream.prune_(todo, self.steps_done - 1, self.rule)

    def rule(self, w: torch.Tensor, u: torch.Tensor, scale: float, mask: Optional[torch.Tensor] = None) -> None:
        """``w <- 0`` where ``u < kappa(w; scale)``, and ``mask`` (a sticky pruner's) closed there.

        ``w`` may be a slice of a weight tensor and ``mask`` the same slice of its mask. For the
        exponential kernels, with no boolean tensor (comparisons into ``bool`` and ``masked_fill_``
        with a random mask are several times slower on the CPU than float arithmetic): ``kappa``
        from :func:`prunedyn.core.kernels.clamped_kappa`, the keep factor ``1 - max(sign(kappa -
        u), 0)`` (1 where kept, 0 where pruned), ``w *= keep`` and ``w += 0`` (a pruned negative
        weight becomes +0.0, as ``masked_fill_`` writes): the decisions of ``u < kernel(w, scale)``
        bit for bit, which other kernels take (tested on strided, contiguous and short inputs).
        """
        kappa = clamped_kappa(w, u, self.kernel_name, scale)
        if kappa is None:
            drop = u < self.kernel(w, scale)
            w.masked_fill_(drop, 0.0)
            if mask is not None:
                mask &= ~drop
            return
        keep = kappa.sub_(u).sign_().clamp_min_(0.0)  # 1 where pruned
        if mask is not None:
            mask &= (keep > 0).logical_not_()  # a NaN weight (keep NaN) stays unmasked, as in the reference
        keep.neg_().add_(1.0)
        w.mul_(keep).add_(0.0)

    def state_dict(self) -> dict:
        return {**super().state_dict(), **self.stream.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.stream.load_state_dict(state)
