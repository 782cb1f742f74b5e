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

import numpy as np
import torch
from torch import nn

from prunedyn.core.kernels import EXPONENTIAL_FORMS, KERNELS, clamped_kappa, get_kernel
from prunedyn.core.fused import FUSED_KERNELS, TritonGroup, fused_prune_, reference_draws, storage_order, stream_key, triton_kernel
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


#: random streams of :class:`StochasticWeightPruner` (``pruner.stream`` of a run config)
STREAMS = ("torch", "counter")


@register_pruner("stochastic")
class StochasticWeightPruner(WeightPruner):
    """Zero each weight ``w`` independently with probability ``kappa(w; s_t)``.

    Args:
        model: the network; its Linear/Conv weights are pruned in place.
        kernel: name in :data:`prunedyn.core.kernels.KERNELS` (gaussian, laplace, hard, ...).
        sigma: scale ``> 0``; absolute, or a multiple of the layer's weight RMS
            when ``sigma_mode="relative"``.
        schedule: name in :data:`prunedyn.core.schedules.SCHEDULES`; multiplies sigma.
        ramp_steps: ramp length of the schedule, in optimiser steps.
        start_step: no pruning before this optimiser step.
        sticky: keep pruned weights at zero for good.
        seed: seeds the pruner's own ``torch.Generator``, so the pruning noise
            neither disturbs nor depends on the global RNG.
        fused: on a GPU, apply the Gaussian kernel to all tensors at once with
            PyTorch's multi-tensor (``_foreach``) ops: about ten kernel launches
            per step instead of about seven per tensor, the same decisions
            (``w <- 0`` where ``u < kappa``). The CPU always takes the per-tensor path.
        stream: ``"torch"`` (default): the draws come from the pruner's
            ``torch.Generator``, one ``torch.rand`` draw per weight, tensor
            after tensor (the *exact stream*: the numbers of every recorded
            run). ``"counter"``: the counter-based stream of
            :mod:`prunedyn.core.fused`, a function of ``(seed, step, tensor,
            element)``, applied in one fused pass per tensor (a compiled C
            kernel on the CPU, a Triton kernel on a GPU, NumPy elsewhere; the
            same decisions on every device and thread count). Its probability
            of pruning is ``kappa`` rounded to the nearest multiple of
            ``2**-23`` (0 below ``2**-24``); the ``torch`` stream's is ``kappa``
            rounded up to a multiple of ``2**-24``. Kernels without a fused form
            draw from the same stream and compare with ``kernel(w, s)``.

    The exact stream itself is computed faster than it used to be on the
    CPU (:func:`prunedyn.core.kernels.clamped_kappa`: the same decisions,
    tested), drawing tensor by tensor into one reused buffer, which on the
    CPU gives the same numbers as one draw for all weights.
    """

    #: elements per slice of the exact stream on the CPU (256 KiB of float32: its temporaries stay in cache)
    SLICE = 1 << 16

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
        fused: bool = True,
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
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(int(seed))
        self.fused = fused
        self.stream = stream
        self.seed = int(seed)
        #: backend of the counter stream's last step per tensor (c, triton, reference): benchmarks report it
        self.backends: Dict[str, str] = {}
        self._group: Optional[TritonGroup] = None  # the GPU's one-launch tables, rebuilt when the weights move
        #: each tensor's index in the counter stream's key: its position among the prunable weights
        self._stream_index = {name: j for j, name in enumerate(self.weights)}
        self._buffer: Optional[torch.Tensor] = None  # the exact stream's draws, reused across steps

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
            scale = s
            if self.sigma_mode == "relative":
                scale = s * float(w.pow(2).mean().sqrt())
                if scale <= 0:
                    continue
            todo.append((name, w, scale))
        if not todo:
            return
        if self.stream == "counter":
            self._prune_counter(todo)
            return
        first = todo[0][1]
        if first.device.type == "cpu":
            # The exact stream: slice after slice of tensor after tensor into one
            # small buffer (cache-resident, as are the temporaries of each slice),
            # the same numbers as one draw for all tensors on the CPU (tested).
            buffer = self._draw_buffer(min(self.SLICE, max(w.numel() for _, w, _ in todo)), first)
            for name, w, scale in todo:
                if not w.is_contiguous():
                    u = torch.empty(w.shape, dtype=first.dtype).uniform_(generator=self.generator)
                    self._zero_exact(name, w, u, scale, self.masks.get(name))
                    continue
                flat = w.view(-1)
                mask = self.masks[name].view(-1) if self.sticky else None
                for start in range(0, flat.numel(), self.SLICE):
                    part = flat[start : start + self.SLICE]
                    u = buffer[: part.numel()].uniform_(generator=self.generator)
                    self._zero_exact(name, part, u, scale, None if mask is None else mask[start : start + self.SLICE])
            return
        # One draw for all tensors: one launch instead of many on a GPU.
        u_all = torch.rand(sum(w.numel() for _, w, _ in todo), generator=self.generator, device=first.device, dtype=first.dtype)
        us, offset = [], 0
        for _, w, _ in todo:
            us.append(u_all[offset : offset + w.numel()].view_as(w))
            offset += w.numel()
        if self._fused(todo):
            _gaussian_zero_foreach([w for _, w, _ in todo], us, todo[0][2])
            return
        for (name, w, scale), u in zip(todo, us):
            self._zero(name, w, u < self.kernel(w, scale))

    def _prune_counter(self, todo) -> None:
        """One fused pass per tensor on the counter stream (:mod:`prunedyn.core.fused`).

        The stream's step is the optimiser step's 0-based index (``steps_done - 1``),
        its tensor index the position in :attr:`weights`: a resumed run draws the
        same numbers with no generator state to restore.
        """
        step = self.steps_done - 1
        index = self._stream_index
        fused_form = self.kernel_name in FUSED_KERNELS and dict.get(KERNELS, self.kernel_name) is EXPONENTIAL_FORMS[self.kernel_name][0]
        if fused_form and self._prune_group(todo, step, index):
            return
        for name, w, scale in todo:
            key = stream_key(self.seed, step, index[name])
            mask = self.masks.get(name)
            if fused_form:
                self.backends[name] = fused_prune_(w, mask, key, self.kernel_name, scale)
                continue
            order = storage_order(w)  # numbered in memory order, as the fused kernels number them
            u = torch.from_numpy(reference_draws(w.numel(), key)).view(w.permute(order).shape)
            u = u.permute(tuple(int(d) for d in np.argsort(order))).to(device=w.device, dtype=w.dtype)
            self._zero(name, w, u < self.kernel(w, scale))
            self.backends[name] = "reference"

    def _prune_group(self, todo, step: int, index) -> bool:
        """On a GPU, all tensors in one Triton launch (:class:`prunedyn.core.fused.TritonGroup`).

        Taken when every tensor is a dense float32 CUDA tensor, they share one
        sigma (absolute mode) and any masks lie in their weights' memory order;
        returns False otherwise (the caller goes tensor by tensor, with the
        same decisions).
        """
        first = todo[0][1]
        if first.device.type != "cuda" or triton_kernel() is None or len({scale for _, _, scale in todo}) != 1:
            return False
        views, masks = [], [] if self.sticky else None
        for name, w, _ in todo:
            view = w.permute(storage_order(w))
            if w.dtype != torch.float32 or not view.is_contiguous():
                return False
            views.append(view)
            if self.sticky:
                m = self.masks[name].permute(storage_order(w))
                if not m.is_contiguous():
                    return False
                masks.append(m.view(torch.uint8))
        if self._group is None or not self._group.matches(views, masks):
            self._group = TritonGroup(views, masks)
        self._group.launch([stream_key(self.seed, step, index[name]) for name, _, _ in todo], self.kernel_name, todo[0][2])
        for name, w, _ in todo:
            torch.autograd.graph.increment_version(w)
            self.backends[name] = "triton-group"
        return True

    def _zero_exact(self, name: str, w: torch.Tensor, u: torch.Tensor, scale: float,
                    mask: Optional[torch.Tensor] = None) -> None:
        """``w <- 0`` where ``u < kappa(w; scale)``: the decisions of the reference, bit for bit.

        For the exponential kernels, with no boolean tensor (comparisons into
        ``bool`` and ``masked_fill_`` with a random mask are several times
        slower on the CPU than float arithmetic): ``kappa`` from
        :func:`prunedyn.core.kernels.clamped_kappa`, then the keep factor
        ``1 - max(sign(kappa - u), 0)`` (1 where kept, 0 where pruned) as in
        the multi-tensor GPU path, ``w *= keep`` and ``w += 0`` (a pruned
        negative weight becomes +0.0, as ``masked_fill_`` writes). ``w`` may be
        a slice of a weight tensor and ``mask`` the same slice of its sticky mask.

        Slicing changes no number: the elementwise operations are exact
        (IEEE) or, for ``exp``, give the same result wherever an element
        falls in a tensor (the vectorised kernel handles tails too; a test
        compares strided, contiguous and short inputs).
        """
        kappa = clamped_kappa(w, u, self.kernel_name, scale)
        if kappa is None:
            drop = u < self.kernel(w, scale)
            w.masked_fill_(drop, 0.0)
            if self.sticky:
                mask &= ~drop
            return
        keep = kappa.sub_(u).sign_().clamp_min_(0.0)  # 1 where pruned
        if self.sticky:
            mask &= (keep > 0).logical_not_()  # a NaN weight (keep NaN) stays unmasked, as in the reference
        keep.neg_().add_(1.0)
        w.mul_(keep).add_(0.0)

    def _draw_buffer(self, n: int, like: torch.Tensor) -> torch.Tensor:
        b = self._buffer
        if b is None or b.numel() < n or b.dtype != like.dtype or b.device != like.device:
            b = self._buffer = torch.empty(n, dtype=like.dtype, device=like.device)
        return b

    def _fused(self, todo) -> bool:
        """The multi-tensor path: CUDA, Gaussian kernel, one sigma for all tensors, no masks."""
        return (
            self.fused
            and todo[0][1].is_cuda
            and self.kernel_name == "gaussian"
            and self.sigma_mode == "absolute"
            and not self.sticky
        )

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["generator"] = self.generator.get_state()
        state["backends"] = dict(self.backends)
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.generator.set_state(state["generator"])
        self.backends = dict(state.get("backends", {}))  # absent from checkpoints written before it was kept


@torch.no_grad()
def _gaussian_zero_foreach(weights, us, sigma: float) -> None:
    """``w <- 0`` where ``u < exp(-w^2 / (2 sigma^2))`` for every pair, with multi-tensor ops.

    ``u < p`` is decided as ``sign(p - u) == 1``: on a GPU, with no flushing of
    denormals, ``p - u > 0`` exactly when ``p > u``.
    """
    p = torch._foreach_mul(weights, weights)
    torch._foreach_neg_(p)
    torch._foreach_div_(p, 2.0 * sigma * sigma)
    torch._foreach_exp_(p)
    torch._foreach_sub_(p, us)
    torch._foreach_sign_(p)  # 1 where u < p (prune), 0 or -1 elsewhere
    torch._foreach_clamp_min_(p, 0.0)
    torch._foreach_neg_(p)
    torch._foreach_add_(p, 1.0)  # keep factor: 0 where pruned, 1 elsewhere
    torch._foreach_mul_(weights, p)
