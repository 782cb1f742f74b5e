"""The fused SWP step: one pass over the weights on a counter-based random stream.

:class:`~prunedyn.core.pruning.StochasticWeightPruner` with ``stream="counter"``
calls :func:`fused_prune_` for every weight tensor after every optimiser step: one PyTorch
operator, ``torch.ops.prunedyn.swp_counter_`` (:func:`swp_counter_`, ``torch.library``), with a
CPU and a CUDA kernel.
It reads each weight once and writes it once, generating its random draw in
registers, instead of drawing a tensor of uniforms, building ``kappa`` in
temporaries and masking (ten passes over memory). Three implementations give
the same decisions, bit for bit:

- a C kernel on the CPU (compiled on first use with the system's C compiler,
  vectorised, OpenMP threads: :func:`cpu_library`);
- a Triton kernel on a GPU (:func:`triton_prune_`);
- :func:`reference_decisions`, NumPy, the definition: the tests compare the
  two kernels with it (the Triton one in Triton's CPU interpreter), and it is
  the fallback where neither kernel can run.

The stream
----------
The draw of element ``i`` of the ``j``-th prunable tensor (``n`` elements) at
optimiser step ``t`` of a pruner seeded with ``seed``::

    key   = mix64(mix64(seed) ^ (t * 2**24 + j))          stream of (seed, t, j)
    nb    = n // 4;  block b of element i: i % nb, word m: i // nb   (i < 4 nb)
                     block nb, word i - 4 nb                           (the last n % 4)
    z_k   = mix64(key + (2 b + k + 1) * GAMMA),  k = 0, 1             (64 bits each)
    x     = (lo32(z_0), hi32(z_0), lo32(z_1), hi32(z_1))[m]
    u     = (2 (x >> 9) + 1) * 2**-24                                 (23 bits, midpoints)

``mix64`` is SplitMix64's output function and ``GAMMA`` its increment (Steele,
Lea & Flood 2014): ``mix64(key + c * GAMMA)`` for ``c = 1, 2, ...`` is exactly
SplitMix64's sequence from state ``key``, which passes TestU01's BigCrush. A
counter-based stream needs no state: any element's draw is a function of
``(seed, t, j, i)``, so a resumed run, any thread count and any device draw
the same numbers, and the kernels need no random tensor in memory. Each
(step, tensor) pair gets its own key, a 64-bit offset into the sequence; two
streams overlap only if their keys fall within ``n`` counters of each other
(about ``n / 2**63`` per pair). Philox (Triton's and cuRAND's generator) was
measured first: its ten rounds of 32-bit products cost this CPU twice a
copy of the weights by themselves, SplitMix64 a quarter of that.

The decision
------------
For the exponential kernels, Gaussian ``exp(-w^2 / (2 s^2))`` and Laplace
``exp(-|w| / s)``, with ``c = -1 / (2 s^2)`` or ``-1 / s`` rounded to float32::

    a     = max(w * w * c, -20)   or   max(|w| * c, -20)     (float32)
    kappa = exp_poly(a)                                      (below)
    w    <- 0  where  u < kappa

``u`` lies on the odd multiples of ``2**-24``, so the probability of pruning
is ``kappa`` rounded to the nearest multiple of ``2**-23``: within ``2**-24``
of the kernel for every weight, and exactly 0 where ``kappa < 2**-24`` (the
``torch.rand`` stream instead prunes every weight with ``kappa > 0`` at the
rate ``2**-24`` at least, see :mod:`prunedyn.core.kernels`). The clamp at -20
changes no decision (``exp(-20) < 2**-24 <= u``). ``exp_poly`` is Cephes'
single-precision ``expf`` (Cody-Waite reduction, degree-6 polynomial,
relative error about 1e-7) written as IEEE float32 operations in a fixed
order, with no fused multiply-add: the C kernel (``-ffp-contract=off``), the
Triton kernel (``enable_fp_fusion=False``) and NumPy compute the same bits.

Elements are numbered in memory order (:func:`storage_order`): row-major
for contiguous tensors, ``(O, H, W, I)`` for ``channels_last`` conv weights.
Weights of other floating dtypes are decided on their float32 value and
written back as zeros; a sticky mask closes where a weight was pruned. Other
kernels (``hard``, user-registered ones) take ``u < kernel(w, s)`` with ``u``
from the same stream (:func:`reference_draws`).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

MASK64 = (1 << 64) - 1
#: SplitMix64's increment (the golden ratio in 64-bit fixed point) and its mixer's constants
GAMMA = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB

#: kernels with a fused form: name -> 0 (Gaussian, ``w * w * c``) or 1 (Laplace, ``|w| * c``)
FUSED_KERNELS = {"gaussian": 0, "laplace": 1}

#: exp arguments below this are clamped: ``exp(-20)`` is below the smallest draw ``2**-24``
EXP_FLOOR = -20.0


def mix64(z: int) -> int:
    """SplitMix64's output function on a Python integer (mod 2**64)."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * MIX1) & MASK64
    z = ((z ^ (z >> 27)) * MIX2) & MASK64
    return z ^ (z >> 31)


def stream_key(seed: int, step: int, index: int) -> int:
    """The 64-bit key of tensor ``index``'s draws at optimiser step ``step`` (see the module notes)."""
    if not 0 <= index < 2**24:
        raise ValueError(f"tensor index must be in [0, 2**24), got {index}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return mix64(mix64(seed) ^ ((step << 24) + index))


def fused_scale(kernel: str, scale: float) -> np.float32:
    """``c`` of the module notes, rounded to float32: ``-1 / (2 s^2)`` (Gaussian) or ``-1 / s`` (Laplace)."""
    return np.float32(-1.0 / (2.0 * scale * scale) if FUSED_KERNELS[kernel] == 0 else -1.0 / scale)


# ----------------------------------------------------------------------------- reference (NumPy)
def _mix64_np(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
    return z ^ (z >> np.uint64(31))


def reference_words(n: int, key: int) -> np.ndarray:
    """The 32-bit words ``x`` of elements ``0 .. n-1`` (uint32, length ``n``) for stream ``key``."""
    nb = n // 4
    blocks = np.arange(nb + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = [_mix64_np(np.uint64(key) + (np.uint64(2) * blocks + np.uint64(k + 1)) * np.uint64(GAMMA)) for k in (0, 1)]
    words = np.stack([z[0] & np.uint64(0xFFFFFFFF), z[0] >> np.uint64(32), z[1] & np.uint64(0xFFFFFFFF), z[1] >> np.uint64(32)])
    words = words.astype(np.uint32)  # (4, nb + 1): word m of block b
    out = np.empty(n, dtype=np.uint32)
    out[: 4 * nb] = words[:, :nb].reshape(-1)  # element m * nb + b
    out[4 * nb :] = words[: n - 4 * nb, nb]
    return out


def reference_draws(n: int, key: int) -> np.ndarray:
    """The uniforms ``u`` (float32, on the odd multiples of ``2**-24``) of elements ``0 .. n-1``."""
    x = reference_words(n, key)
    return ((x >> np.uint32(9)).astype(np.float32) * np.float32(2.0) + np.float32(1.0)) * np.float32(2.0**-24)


_EXP_P = [np.float32(v) for v in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                                   1.6666665459e-1, 5.0000001201e-1)]


def exp_poly(a: np.ndarray) -> np.ndarray:
    """``exp(a)`` for float32 ``a`` in ``[-20, 0]``: the kernels' operations, in their order."""
    f = np.float32
    a = a.astype(np.float32, copy=False)
    with np.errstate(invalid="ignore", over="ignore"):
        n = (a * f(1.44269504) + f(12582912.0)) - f(12582912.0)  # round to nearest (even)
        r = a - n * f(0.693359375)
        r = r - n * f(-2.12194440e-4)
        p = np.full_like(r, _EXP_P[0])
        for coef in _EXP_P[1:]:
            p = p * r + coef
        p = p * r * r + r + f(1.0)
        bits = (np.nan_to_num(n, nan=0.0).astype(np.int32) + np.int32(127)) << np.int32(23)
        return p * bits.view(np.float32)


def reference_kappa(w: np.ndarray, kernel: str, scale: float) -> np.ndarray:
    """``kappa`` of the fused kernels for float32 weights ``w`` (any shape)."""
    c = fused_scale(kernel, scale)
    w = w.astype(np.float32, copy=False)
    with np.errstate(invalid="ignore", over="ignore"):
        a = (np.abs(w) * c) if FUSED_KERNELS[kernel] else (w * w * c)
        a = np.where(a < np.float32(EXP_FLOOR), np.float32(EXP_FLOOR), a)  # NaN stays NaN, as in C
    return exp_poly(a)


def storage_order(w: torch.Tensor) -> Tuple[int, ...]:
    """The permutation of ``w``'s dimensions whose row-major order is its order in memory.

    ``w.permute(order)`` is contiguous for a dense tensor in any memory format
    (``channels_last`` conv weights: ``(0, 2, 3, 1)``); for a tensor that is
    not dense (a strided slice) the identity, its logical order. The stream
    numbers elements in this order, so the kernels read memory front to back
    and a weight's draw depends on the run's memory format, which is part of
    its config, not on anything else.
    """
    order = tuple(sorted(range(w.dim()), key=lambda d: (-w.stride(d), -w.shape[d])))
    return order if w.permute(order).is_contiguous() else tuple(range(w.dim()))


def reference_decisions(w: torch.Tensor, key: int, kernel: str, scale: float) -> torch.Tensor:
    """Boolean tensor (shape of ``w``, on the CPU): where the fused step zeroes ``w`` for stream ``key``.

    The definition of the fused kernels' decisions (module notes), elements
    numbered in :func:`storage_order`; ``kernel`` must be in :data:`FUSED_KERNELS`.
    """
    order = storage_order(w)
    view = w.detach().permute(order)
    flat = view.reshape(-1).to("cpu", torch.float32).numpy()
    u = reference_draws(flat.size, key)
    with np.errstate(invalid="ignore"):
        drop = torch.from_numpy(u < reference_kappa(flat, kernel, scale)).view(view.shape)
    return drop.permute(tuple(int(d) for d in np.argsort(order)))
