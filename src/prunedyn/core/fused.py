"""The counter stream's kernels and its operator: ``torch.ops.prunedyn.swp_counter_``.

The stream and its NumPy reference are defined in :mod:`prunedyn.core.counter` (re-exported
here). This module compiles the CPU kernel (C, cached in a private folder and verified by hash),
holds the GPU kernel (Triton, all tensors of a step in one launch) and registers the op whose
definition is the reference, with the C kernel on the CPU and Triton on CUDA.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from prunedyn.core.counter import (  # noqa: F401 (re-exported: the stream is part of this API)
    MASK64,
    GAMMA,
    MIX1,
    MIX2,
    FUSED_KERNELS,
    EXP_FLOOR,
    mix64,
    stream_key,
    fused_scale,
    reference_words,
    reference_draws,
    exp_poly,
    reference_kappa,
    storage_order,
    reference_decisions,
)
from prunedyn.core.kernels import EXPONENTIAL_FORMS, KERNELS

# ----------------------------------------------------------------------------- the CPU kernel (C)
C_SOURCE = r"""
#include <stdint.h>
#include <omp.h>

static inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* exp(a) for a in [-20, 0]: IEEE float32 operations in a fixed order, no FMA (-ffp-contract=off) */
static inline float exp_poly(float a) {
  float n = (a * 1.44269504f + 12582912.0f) - 12582912.0f;
  float r = a - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  union { int32_t i; float f; } s;
  s.i = ((int32_t)n + 127) << 23;
  return p * s.f;
}

static inline int pruned(float w, uint32_t x, float c, int laplace) {
  float a = laplace ? (w < 0.0f ? -w : w) * c : w * w * c;
  a = a < -20.0f ? -20.0f : a;
  float u = (float)((x >> 9) * 2u + 1u) * 5.9604644775390625e-8f;
  return u < exp_poly(a);
}

#define WORDS(b) \
  uint64_t z0 = mix64(key + (2 * (uint64_t)(b) + 1) * 0x9E3779B97F4A7C15ull); \
  uint64_t z1 = mix64(key + (2 * (uint64_t)(b) + 2) * 0x9E3779B97F4A7C15ull); \
  uint32_t x0 = (uint32_t)z0, x1 = (uint32_t)(z0 >> 32), x2 = (uint32_t)z1, x3 = (uint32_t)(z1 >> 32);

/* a pruned weight becomes +0.0 (as masked_fill_ writes), a kept one is rewritten unchanged: a blend, no branch */
#define APPLY(i, x) { int p = pruned(w[i], x, c, laplace); w[i] = p ? 0.0f : w[i]; }
#define APPLY_MASK(i, x) { int p = pruned(w[i], x, c, laplace); w[i] = p ? 0.0f : w[i]; mask[i] = p ? 0 : mask[i]; }
#define CHUNK 4096

/* w (n float32, contiguous) <- 0 where u < kappa(w); mask (n bytes or NULL) <- 0 where pruned */
void prunedyn_swp_f32(float *w, uint8_t *mask, int64_t n, uint64_t key, float c, int laplace, int threads) {
  int64_t nb = n / 4;
  #pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t start = 0; start < nb; start += CHUNK) {
    int64_t stop = start + CHUNK < nb ? start + CHUNK : nb;
    if (mask) {
      #pragma omp simd
      for (int64_t b = start; b < stop; b++) {
        WORDS(b)
        APPLY_MASK(b, x0) APPLY_MASK(nb + b, x1) APPLY_MASK(2 * nb + b, x2) APPLY_MASK(3 * nb + b, x3)
      }
    } else {
      #pragma omp simd
      for (int64_t b = start; b < stop; b++) {
        WORDS(b)
        APPLY(b, x0) APPLY(nb + b, x1) APPLY(2 * nb + b, x2) APPLY(3 * nb + b, x3)
      }
    }
  }
  if (n > 4 * nb) {
    WORDS(nb)
    uint32_t x[4] = {x0, x1, x2, x3};
    for (int64_t i = 4 * nb; i < n; i++) {
      if (mask) APPLY_MASK(i, x[i - 4 * nb]) else APPLY(i, x[i - 4 * nb])
    }
  }
}
"""

#: flags of the CPU kernel; -ffp-contract=off keeps multiply and add apart (the same bits as NumPy)
C_FLAGS = ["-O3", "-ffp-contract=off", "-fopenmp", "-shared", "-fPIC"]
#: tried in order until one compiles: wide vectors where the CPU has them (x86: 512-bit measured
#: 5% faster than gcc's default 256 here), the native instruction set, then portable code
C_TARGET_FLAGS = (["-march=native", "-mprefer-vector-width=512"], ["-march=native"], [])

_lock = threading.Lock()
_library: Optional[ctypes.CDLL] = None
_library_error: Optional[str] = None


def _cache_dir() -> Path:
    root = os.environ.get("PRUNEDYN_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "prunedyn")
    return Path(root) / "kernels"


def _machine_tag() -> str:
    """What ``-march=native`` depends on: the CPU's flags (a library built elsewhere is not reused)."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    except OSError:
        pass
    return flags or platform.processor() or platform.machine()


def cpu_library() -> Optional[ctypes.CDLL]:
    """The compiled CPU kernel, built on first use into ``~/.cache/prunedyn/kernels`` (``$PRUNEDYN_CACHE``).

    ``None`` (and a warning, once) where it cannot be built: no C compiler
    (``$CC``, else ``cc`` / ``gcc``), or ``PRUNEDYN_NATIVE=0``. Callers then
    take :func:`reference_decisions`, which gives the same decisions, slower.
    The library's name holds a hash of the source, the flags, the compiler
    and the CPU's flags; it is written under a temporary name and renamed,
    so concurrent runs never load a half-written file.
    """
    global _library, _library_error
    if _library is not None or _library_error is not None:
        return _library
    with _lock:
        if _library is not None or _library_error is not None:
            return _library
        try:
            _library = _build()
        except (OSError, subprocess.SubprocessError, RuntimeError) as err:
            _library_error = str(err)
            warnings.warn(f"prunedyn: the fused CPU kernel is unavailable ({err}); the counter stream falls back to NumPy",
                          RuntimeWarning, stacklevel=3)
        return _library


def _private_dir(folder: Path) -> Path:
    """``folder``, created 0700; refused unless it is a real folder of this user that no one else can write."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise RuntimeError(f"kernel cache {folder} is not a folder owned by this user")
    if st.st_mode & 0o077:
        os.chmod(folder, 0o700)
    return folder


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _trusted(path: Path, digest: Path) -> bool:
    """Whether the cached library is this user's, writable by no one else, and has the recorded hash."""
    try:
        for f in (path, digest):
            st = os.lstat(f)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
                return False
        return digest.read_text().strip() == _sha256(path)
    except OSError:
        return False


def _load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    lib.prunedyn_swp_f32.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64, ctypes.c_float,
                                     ctypes.c_int, ctypes.c_int]
    lib.prunedyn_swp_f32.restype = None
    return lib


def _build() -> ctypes.CDLL:
    """Compile (or reuse) the CPU kernel. The cache folder is private (0700, this user's); a cached
    library is loaded only with the SHA-256 recorded beside it when it was built, and one that fails
    that check or fails to load is compiled again."""
    if os.environ.get("PRUNEDYN_NATIVE", "1") == "0":
        raise RuntimeError("PRUNEDYN_NATIVE=0")
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise RuntimeError("no C compiler found (set CC)")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60).stdout
    tag = hashlib.sha256("\0".join([C_SOURCE, " ".join(C_FLAGS), repr(C_TARGET_FLAGS), version, _machine_tag()]).encode()).hexdigest()[:16]
    folder = _private_dir(_cache_dir())
    path, digest = folder / f"swp-{tag}.so", folder / f"swp-{tag}.so.sha256"
    if _trusted(path, digest):
        try:
            return _load(path)
        except OSError:  # a corrupt library with a matching hash cannot happen; a failed load rebuilds anyway
            pass
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        src = Path(tmp) / "swp.c"
        src.write_text(C_SOURCE)
        out = Path(tmp) / "swp.so"
        for target in C_TARGET_FLAGS:
            done = subprocess.run([cc, *C_FLAGS, *target, str(src), "-o", str(out)], capture_output=True, text=True, timeout=300)
            if done.returncode == 0:
                break
        else:
            raise RuntimeError(f"{cc} failed: {done.stderr.strip()[-500:]}")
        os.chmod(out, 0o700)
        sha = Path(tmp) / "swp.so.sha256"
        sha.write_text(_sha256(out) + "\n")
        os.replace(out, path)  # the library first: a reader that finds the new hash finds the new library
        os.replace(sha, digest)
    return _load(path)


# ----------------------------------------------------------------------------- the GPU kernel (Triton)
_triton_kernel = None


def triton_kernel():
    """The Triton kernel (compiled per device on first launch), or ``None`` without Triton.

    One launch prunes a whole group of float32 tensors: each program handles
    ``BLOCK`` blocks of four weights of one tensor, found through tables of
    data pointers, sizes, keys and first blocks (:class:`TritonGroup`), so a
    step costs one launch however many layers the model has (sixteen
    launches cost more than the work on a large GPU).
    """
    global _triton_kernel
    if _triton_kernel is not None:
        return _triton_kernel
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None

    @triton.jit
    def swp_group_kernel(ptrs, mptrs, ns, keys, prog_tensor, prog_block0, c, LAPLACE: tl.constexpr,
                         HAS_MASK: tl.constexpr, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        j = tl.load(prog_tensor + pid)
        w_ptr = tl.load(ptrs + j).to(tl.pointer_type(tl.float32))
        n = tl.load(ns + j)
        key = tl.load(keys + j).to(tl.uint64, bitcast=True)
        nb = n // 4
        # block indices b in [0, nb]; block nb holds the last n % 4 elements
        bi = tl.load(prog_block0 + pid) + tl.arange(0, BLOCK)
        b = bi.to(tl.uint64)
        z0 = key + (2 * b + 1) * 0x9E3779B97F4A7C15
        z1 = key + (2 * b + 2) * 0x9E3779B97F4A7C15
        z0 = (z0 ^ (z0 >> 30)) * 0xBF58476D1CE4E5B9
        z0 = (z0 ^ (z0 >> 27)) * 0x94D049BB133111EB
        z0 = z0 ^ (z0 >> 31)
        z1 = (z1 ^ (z1 >> 30)) * 0xBF58476D1CE4E5B9
        z1 = (z1 ^ (z1 >> 27)) * 0x94D049BB133111EB
        z1 = z1 ^ (z1 >> 31)
        for m in tl.static_range(4):
            if m == 0:
                x = (z0 & 0xFFFFFFFF).to(tl.uint32)
            elif m == 1:
                x = (z0 >> 32).to(tl.uint32)
            elif m == 2:
                x = (z1 & 0xFFFFFFFF).to(tl.uint32)
            else:
                x = (z1 >> 32).to(tl.uint32)
            i = tl.where(bi < nb, m * nb + bi, 4 * nb + m)
            valid = (bi <= nb) & (i < n)
            w32 = tl.load(w_ptr + i, mask=valid, other=1.0)
            if LAPLACE:
                a = tl.abs(w32) * c
            else:
                a = w32 * w32 * c
            a = tl.where(a < -20.0, -20.0, a)
            nn_ = (a * 1.44269504 + 12582912.0) - 12582912.0
            r = a - nn_ * 0.693359375
            r = r - nn_ * -2.12194440e-4
            p = r * 1.9875691500e-4 + 1.3981999507e-3
            p = p * r + 8.3334519073e-3
            p = p * r + 4.1665795894e-2
            p = p * r + 1.6666665459e-1
            p = p * r + 5.0000001201e-1
            p = p * r * r + r + 1.0
            s = ((nn_.to(tl.int32) + 127) << 23).to(tl.float32, bitcast=True)
            u = ((x >> 9) * 2 + 1).to(tl.float32) * 5.9604644775390625e-8
            prune = u < p * s
            tl.store(w_ptr + i, tl.where(prune, 0.0, w32), mask=valid)
            if HAS_MASK:
                m_ptr = tl.load(mptrs + j).to(tl.pointer_type(tl.uint8))
                mv = tl.load(m_ptr + i, mask=valid, other=0)
                tl.store(m_ptr + i, tl.where(prune, 0, mv).to(tl.uint8), mask=valid)

    _triton_kernel = swp_group_kernel
    return _triton_kernel


#: blocks (of four weights) per Triton program
TRITON_BLOCK = 1024


def _signed64(k: int) -> int:
    return k - (1 << 64) if k >= (1 << 63) else k


class TritonGroup:
    """Tables for one launch of the Triton kernel over contiguous float32 tensors of one device.

    ``weights``: the tensors (each contiguous, in the order the kernel numbers
    its elements); ``masks``: ``None`` or one contiguous bool tensor per weight.
    The tables hold data pointers: a group is valid while the tensors keep
    their storage (:meth:`matches`).
    """

    def __init__(self, weights, masks=None):
        self.device = weights[0].device
        self.signature = self._signature(weights, masks)
        self.has_mask = masks is not None
        long = dict(dtype=torch.int64, device=self.device)
        self.ptrs = torch.tensor([w.data_ptr() for w in weights], **long)
        self.mptrs = torch.tensor([m.data_ptr() for m in masks], **long) if masks is not None else self.ptrs
        self.ns = torch.tensor([w.numel() for w in weights], **long)
        prog_tensor, prog_block0 = [], []
        for j, w in enumerate(weights):
            blocks = w.numel() // 4 + 1
            starts = range(0, blocks, TRITON_BLOCK)
            prog_tensor += [j] * len(starts)
            prog_block0 += list(starts)
        self.prog_tensor = torch.tensor(prog_tensor, dtype=torch.int32, device=self.device)
        self.prog_block0 = torch.tensor(prog_block0, **long)

    @staticmethod
    def _signature(weights, masks):
        return (tuple((w.data_ptr(), w.numel()) for w in weights),
                None if masks is None else tuple(m.data_ptr() for m in masks))

    def matches(self, weights, masks=None) -> bool:
        return self.signature == self._signature(weights, masks)

    def launch(self, keys, kernel: str, scale: float) -> None:
        """Prune every tensor of the group in place: tensor ``j`` with stream ``keys[j]``, one ``scale`` for all."""
        table = torch.tensor([_signed64(k) for k in keys], dtype=torch.int64)
        if self.device.type == "cuda":
            table = table.pin_memory().to(self.device, non_blocking=True)
        grid = (self.prog_tensor.numel(),)
        triton_kernel()[grid](self.ptrs, self.mptrs, self.ns, table, self.prog_tensor, self.prog_block0,
                              float(fused_scale(kernel, scale)), LAPLACE=FUSED_KERNELS[kernel], HAS_MASK=self.has_mask,
                              BLOCK=TRITON_BLOCK, enable_fp_fusion=False)


def triton_prune_(w: torch.Tensor, mask: Optional[torch.Tensor], key: int, kernel: str, scale: float) -> None:
    """The Triton kernel on one contiguous float32 ``w`` (and its contiguous bool ``mask``), in place."""
    TritonGroup([w], None if mask is None else [mask.view(torch.uint8)]).launch([key], kernel, scale)


# ----------------------------------------------------------------------------- dispatch
def counter_backend(w: torch.Tensor) -> str:
    """Which kernel the op :func:`swp_counter_` runs on ``w``: ``"c"`` (dense float32 on the CPU with
    the compiled kernel), ``"triton"`` (dense float32 on a GPU with Triton), else ``"reference"``."""
    if not (w.numel() and w.dtype == torch.float32 and w.permute(storage_order(w)).is_contiguous()):
        return "reference"
    if w.device.type == "cpu" and cpu_library() is not None:
        return "c"
    if w.device.type == "cuda" and triton_kernel() is not None:
        return "triton"
    return "reference"


def _reference_pass(w: torch.Tensor, mask: Optional[torch.Tensor], key: int, kernel: str, scale: float) -> None:
    drop = reference_decisions(w, key & MASK64, kernel, scale).to(w.device)
    w.masked_fill_(drop, 0.0)
    if mask is not None:
        mask &= ~drop


@torch.library.custom_op("prunedyn::swp_counter_", mutates_args=("w", "mask"))
def swp_counter_(w: torch.Tensor, mask: Optional[torch.Tensor], key: int, kernel: str, scale: float) -> None:
    """The counter stream's SWP step as one PyTorch operator (``torch.ops.prunedyn.swp_counter_``):
    ``w <- 0`` in place where stream ``key`` (a signed 64-bit int) decides so, ``mask`` closed there.
    This definition runs :func:`reference_decisions` on any device; the CPU and CUDA kernels
    registered below run the C and Triton kernels where :func:`counter_backend` says they can."""
    _reference_pass(w, mask, key, kernel, scale)


def _kernel_pass(w: torch.Tensor, mask: Optional[torch.Tensor], run) -> None:
    """Run ``run(weights_view, mask_view)`` on ``w`` in memory order; a mask in another memory format than
    its weights (made before a format change) goes via a contiguous copy."""
    order = storage_order(w)
    view = w.permute(order)  # contiguous for a dense w: the kernels run on its memory as it lies
    mview = None if mask is None else mask.permute(order)
    mwork = None if mview is None or mview.is_contiguous() else mview.contiguous()
    run(view, mwork if mwork is not None else mview)
    if mwork is not None:
        mview.copy_(mwork)
    _bump_version(w)


@swp_counter_.register_kernel("cpu")
def _swp_counter_cpu(w, mask, key, kernel, scale):
    if counter_backend(w) != "c":
        return _reference_pass(w, mask, key, kernel, scale)
    _kernel_pass(w, mask, lambda v, m: cpu_library().prunedyn_swp_f32(
        v.data_ptr(), None if m is None else m.data_ptr(), w.numel(), key & MASK64,
        float(fused_scale(kernel, scale)), FUSED_KERNELS[kernel], torch.get_num_threads()))


@swp_counter_.register_kernel("cuda")
def _swp_counter_cuda(w, mask, key, kernel, scale):
    if counter_backend(w) != "triton":
        return _reference_pass(w, mask, key, kernel, scale)
    _kernel_pass(w, mask, lambda v, m: triton_prune_(v, m, key & MASK64, kernel, scale))


def fused_prune_(w: torch.Tensor, mask: Optional[torch.Tensor], key: int, kernel: str, scale: float) -> str:
    """Zero ``w`` in place where the stream ``key`` decides so (module notes), through the operator
    :func:`swp_counter_`; returns the backend it ran (:func:`counter_backend`).

    ``mask``: ``None`` or a bool tensor of ``w``'s shape and device, closed
    (set False) where a weight is pruned. ``kernel`` must be in
    :data:`FUSED_KERNELS`. Backends: ``"c"`` (contiguous float32 on the CPU
    with the compiled kernel), ``"triton"`` (contiguous weights on a GPU with
    Triton; :class:`TritonGroup` prunes many tensors in one launch), else
    ``"reference"`` (NumPy on a CPU copy; the same decisions).
    """
    if kernel not in FUSED_KERNELS:
        raise ValueError(f"kernel {kernel!r} has no fused form; allowed: {', '.join(FUSED_KERNELS)}")
    backend = counter_backend(w)
    torch.ops.prunedyn.swp_counter_(w, mask, _signed64(key & MASK64), kernel, float(scale))
    return backend


def _bump_version(w: torch.Tensor) -> None:
    # a write through a raw pointer does not move autograd's version counter, which guards
    # tensors saved for backward against in-place changes; move it as masked_fill_ would
    torch.autograd.graph.increment_version(w)


# ----------------------------------------------------------------------------- the stream
class CounterStream:
    """SWP's counter-based draws (``pruner.stream=counter``): ``u`` is a function of ``(seed, step,
    tensor, element)`` (:mod:`prunedyn.core.counter`), computed inside the op :func:`swp_counter_`,
    which applies the rule ``w <- 0 where u < kappa`` in the same pass (C on the CPU; on a GPU every
    tensor of a step in one Triton launch, :class:`TritonGroup`). Kernels with no fused form take
    ``u`` from the NumPy reference and the pruner's own rule. The step is the optimiser step's
    0-based index and the tensor its position among the prunable weights: a resumed run draws the
    same numbers with no state to restore."""

    name = "counter"

    def __init__(self, seed: int, names, kernel: str):
        self.seed, self.kernel = int(seed), kernel
        self.index = {name: j for j, name in enumerate(names)}
        self.fused = kernel in FUSED_KERNELS and dict.get(KERNELS, kernel) is EXPONENTIAL_FORMS[kernel][0]
        #: the backend of the last step per tensor (c, triton, triton-group, reference): runs record it
        self.backends: dict[str, str] = {}
        self._group: Optional[TritonGroup] = None  # the GPU's one-launch tables, rebuilt when the weights move

    def prune_(self, todo, step: int, rule) -> None:
        """Prune every ``(name, w, scale, mask)`` of ``todo`` at optimiser step ``step``; ``rule(w, u,
        scale, mask)`` applies the pruner's rule to reference draws ``u``."""
        if self.fused and self._prune_group(todo, step):
            return
        for name, w, scale, mask in todo:
            key = stream_key(self.seed, step, self.index[name])
            if self.fused:
                self.backends[name] = fused_prune_(w, mask, key, self.kernel, scale)
                continue
            order = storage_order(w)  # numbered in memory order, as the fused kernels number them
            u = torch.from_numpy(reference_draws(w.numel(), key)).view(w.permute(order).shape)
            rule(w, u.permute(tuple(int(d) for d in np.argsort(order))).to(device=w.device, dtype=w.dtype), scale, mask)
            self.backends[name] = "reference"

    def _prune_group(self, todo, step: int) -> bool:
        """All tensors in one Triton launch, where every one is a dense float32 CUDA tensor, they share
        one scale and any masks lie in their weights' memory order; False otherwise (the caller goes
        tensor by tensor, with the same decisions)."""
        if todo[0][1].device.type != "cuda" or triton_kernel() is None or len({t[2] for t in todo}) != 1:
            return False
        views, masks = [], None if todo[0][3] is None else []
        for _, w, _, mask in todo:
            view, m = w.permute(storage_order(w)), None if mask is None else mask.permute(storage_order(w))
            if w.dtype != torch.float32 or not view.is_contiguous() or (m is not None and not m.is_contiguous()):
                return False
            views.append(view)
            if m is not None:
                masks.append(m.view(torch.uint8))
        if self._group is None or not self._group.matches(views, masks):
            self._group = TritonGroup(views, masks)
        self._group.launch([stream_key(self.seed, step, self.index[name]) for name, *_ in todo], self.kernel, todo[0][2])
        for name, w, *_ in todo:
            _bump_version(w)
            self.backends[name] = "triton-group"
        return True

    def state_dict(self) -> dict:
        return {"backends": dict(self.backends)}

    def load_state_dict(self, state: dict) -> None:
        self.backends = dict(state.get("backends", {}))
