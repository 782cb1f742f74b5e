"""Measured inference latency: does removing nodes pay off in speed, unlike scattered zeros?

Four versions of one trained, pruned network are compared on the same input:

- ``dense``: the unpruned baseline architecture (same widths, dense weights);
- ``masked``: the pruned network as trained, zeros kept in dense tensors (what
  unstructured pruning gives without sparse kernels);
- ``sparse_csr``: the same nonzeros with every Linear weight in
  ``torch.sparse_csr`` format;
- ``compact``: dead nodes removed (:func:`prunedyn.structure.surgery.compact`).

Timing: median over ``reps`` round-robin repetitions after ``warmup`` runs,
in eval mode under ``torch.inference_mode``; the ratio of interest is the measured speedup
of ``compact`` over ``dense`` divided by the FLOP ratio.

Inference preparation (:func:`inference_ready`), applied alike to every
version so that the comparison is fair: eval mode, every BatchNorm that
directly follows a Conv / ConvTranspose / Linear folded into it
(``W' = W * g / sqrt(v + eps)``, ``b' = (b - m) * g / sqrt(v + eps) + beta``
per output channel; :func:`fold_batchnorm`), and 4-D tensors in
``channels_last`` (NHWC) memory format. Measured with
benchmarks/compaction_speed.py on a 2-core AMD EPYC (AVX-512) with torch 2.14
(oneDNN) at one thread, batch 256: the prepared networks were the fastest,
dense and compact alike (VGG-16 at width 1/4: 108 ms dense prepared against
122-210 ms as built, NCHW with a separate BatchNorm, which also varied most
from process to process; the U-Net at width 1/16, batch 64: 230 against
630 ms); folding BatchNorm while staying in NCHW made the convolutions slower
(185 against 122 ms). Prepared, a convolution costs about what its channel
counts rounded up to 16 cost (oneDNN's NHWC kernels work on blocks of 16
channels: a 56-to-56-channel layer of the compact VGG-16 took 10.4 ms, the
dense 64-to-64 one 10.7 ms), so for the conv nets the alignment of
:func:`prunedyn.structure.surgery.compact` (``align``) adds FLOPs without
saving time, while for the MLP's matrix products it is what makes
compaction pay.

:func:`compaction_speed_table` times, round-robin with ``torch.utils.benchmark``,
any set of versions against the dense one and reports the speedup over the
dense network as a fraction of the FLOP ratio of the compact network (the
work node pruning really saves), with a wall clock and, with one torch
thread, the thread's CPU time (far less sensitive to other processes on a
shared machine).
"""
from __future__ import annotations

import copy
import statistics
import time
import warnings
from typing import Callable, Dict, Mapping, Optional, Sequence, Union

import pandas as pd
import torch
from torch import nn

from prunedyn.structure.nodes import node_layers
from prunedyn.structure.surgery import compact, count_flops, count_params


class SparseLinear(nn.Module):
    """A Linear layer whose weight is a ``torch.sparse_csr`` tensor: ``y = x W^T + b``."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            self.weight = linear.weight.detach().to_sparse_csr()
        self.bias = None if linear.bias is None else linear.bias.detach().clone()
        self.nnz = int(linear.weight.count_nonzero())

    def forward(self, x):
        y = torch.sparse.mm(self.weight, x.t()).t()
        return y if self.bias is None else y + self.bias


def to_sparse_csr(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ``nn.Linear`` replaced by :class:`SparseLinear`."""
    model = copy.deepcopy(model).eval()
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, child_name, SparseLinear(child))
    return model


@torch.inference_mode()
def latencies(models: Dict[str, nn.Module], x: torch.Tensor, reps: int = 50, warmup: int = 5) -> Dict[str, float]:
    """Median seconds of one forward pass on ``x`` for each model.

    The models are timed round-robin, one pass each per repetition, so that a
    transient load on the machine hits all of them alike and the ratios hold.
    """
    for model in models.values():
        model.eval()
        for _ in range(warmup):
            model(x)
    times: Dict[str, list] = {name: [] for name in models}
    for _ in range(reps):
        for name, model in models.items():
            tic = time.perf_counter()
            model(x)
            times[name].append(time.perf_counter() - tic)
    return {name: statistics.median(t) for name, t in times.items()}


def speed_table(
    dense: nn.Module, pruned: nn.Module, x: torch.Tensor, batches=(1, 256), reps: int = 50, aligns: Sequence[int] = ()
) -> pd.DataFrame:
    """One row per (version, batch): seconds, speedup over dense, params, nonzeros, FLOPs.

    ``dense`` is the unpruned network of the same architecture; ``pruned`` the
    trained pruned one. ``x`` holds at least ``max(batches)`` inputs.
    ``aligns``: also ``compact_align<a>`` for each ``a``, the compact network
    with its widths rounded up to multiples of ``a`` (``compact(..., align=a)``).
    """
    small, _ = compact(pruned, x[:8])
    versions: Dict[str, nn.Module] = {
        "dense": dense,
        "masked": pruned,
        "sparse_csr": to_sparse_csr(pruned),
        "compact": small,
    }
    for a in aligns:
        versions[f"compact_align{a}"] = compact(pruned, x[:8], align=a)[0]
    nonzeros = {
        name: sum(int(p.count_nonzero()) for p in model.parameters())
        for name, model in versions.items()
        if name != "sparse_csr"
    }
    nonzeros["sparse_csr"] = nonzeros["masked"]
    flops = {name: count_flops(model, x[:1]) for name, model in versions.items() if name.startswith(("dense", "compact"))}
    flops["masked"] = flops["dense"]
    flops["sparse_csr"] = flops["dense"]  # counted as dense: FlopCounterMode does not see sparsity
    rows = []
    with torch.no_grad():
        ref = pruned.eval()(x[:8])
        for name, model in versions.items():
            if name != "dense":
                assert float((model(x[:8]) - ref).abs().max()) < 1e-4, f"{name} disagrees with the pruned model"
    for batch in batches:
        secs = latencies(versions, x[:batch], reps)
        for name, model in versions.items():
            rows.append(
                {
                    "version": name,
                    "batch": batch,
                    "ms": 1000 * secs[name],
                    "speedup": secs["dense"] / secs[name],
                    "params": count_params(model) if name != "sparse_csr" else count_params(pruned),
                    "nonzeros": nonzeros[name],
                    "flop_ratio": flops["dense"] / flops[name],
                }
            )
    table = pd.DataFrame(rows)
    table["speedup_over_flop_ratio"] = table["speedup"] / table["flop_ratio"]
    return table


# ---------------------------------------------------------------- inference preparation


def _parent_and_name(model: nn.Module, target: nn.Module):
    for parent in model.modules():
        for name, child in parent.named_children():
            if child is target:
                return parent, name
    raise ValueError(f"{type(target).__name__} is not a submodule of the model")


@torch.no_grad()
def fold_batchnorm(model: nn.Module, example: Optional[torch.Tensor] = None) -> nn.Module:
    """A copy of ``model`` (eval mode) with every node layer's BatchNorm folded into its producer.

    In eval mode BatchNorm is the per-channel affine map ``y = (z - m) * g / sqrt(v + eps) + beta``
    of its producer's output ``z = W x + b``, so ``W' = W * s`` (output channel ``j``
    scaled by ``s_j = g_j / sqrt(v_j + eps)``) and ``b' = (b - m) * s + beta`` give
    the same ``y`` with one layer (``torch.nn.utils.fusion``); the BatchNorm
    module becomes ``nn.Identity``. The pairs are the ``(producer, norm)`` of
    :func:`prunedyn.structure.nodes.node_layers` (``example`` for a model that
    needs a trace): a norm that directly follows its producer. The output layer
    has no node layer, so a BatchNorm after it stays. Outputs agree with the
    model's eval outputs to float rounding.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    model = copy.deepcopy(model).eval()
    for layer in node_layers(model, example):
        for producer, norm in layer.producers:
            if norm is None or not norm.track_running_stats or norm.running_mean is None:
                continue  # batch statistics even in eval mode: not an affine map to fold
            if isinstance(producer, nn.Linear):
                fused = fuse_linear_bn_eval(producer, norm)
            else:
                fused = fuse_conv_bn_eval(
                    producer, norm, transpose=isinstance(producer, nn.modules.conv._ConvTransposeNd)
                )
            producer.weight, producer.bias = fused.weight, fused.bias
            parent, name = _parent_and_name(model, norm)
            setattr(parent, name, nn.Identity())
    return model


class ChannelsLast(nn.Module):
    """Runs ``module`` on its input in ``channels_last`` memory format.

    ``x.contiguous(memory_format=torch.channels_last)`` is free for an input
    already in that format (give it one to time the network alone) and one copy
    otherwise; 2-, 3- and 5-D inputs pass through unchanged.
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x):
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.module(x)


def _has_conv2d(model: nn.Module) -> bool:
    return any(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in model.modules())


def inference_ready(
    model: nn.Module, example: Optional[torch.Tensor] = None, fold_bn: bool = True, channels_last: bool = True
) -> nn.Module:
    """An eval-mode copy of ``model`` prepared for CPU inference; the function it computes is unchanged.

    - ``fold_bn``: BatchNorm folded into the preceding layer (:func:`fold_batchnorm`):
      one pass over the activations less per normalised layer;
    - ``channels_last``: for a model with 2-D convolutions, 4-D weights in NHWC
      order and the model wrapped in :class:`ChannelsLast`, so that oneDNN runs
      its NHWC kernels, the fastest here for dense and compact networks alike
      (module docstring).

    Apply the same preparation to every version of a network that is compared.
    """
    model = fold_batchnorm(model, example) if fold_bn else copy.deepcopy(model).eval()
    if channels_last and _has_conv2d(model):
        model = ChannelsLast(model.to(memory_format=torch.channels_last)).eval()
    return model


def semi_structured_support(device: Union[str, torch.device] = "cpu") -> Optional[str]:
    """``None`` where ``torch.sparse.to_sparse_semi_structured`` (2:4 sparsity) works on ``device``, else why not.

    Probes a 2:4-sparse half-precision 64 x 64 matrix; on the CPU torch has no
    semi-structured kernels (CUDA only, compute capability 8.0 or newer).
    """
    device = torch.device(device)
    if device.type != "cuda":
        return f"not supported on this device ({device.type}: torch's semi-structured 2:4 sparsity is CUDA only)"
    try:
        from torch.sparse import to_sparse_semi_structured

        w = torch.tensor([1.0, 1.0, 0.0, 0.0], device=device, dtype=torch.float16).repeat(64, 16)
        to_sparse_semi_structured(w)
    except Exception as err:  # the device or the build lacks the kernels
        return f"not supported on this device: {type(err).__name__}: {err}".splitlines()[0]
    return None


# ---------------------------------------------------------------- the table

#: ``wall``: elapsed time; ``cpu``: this thread's CPU time (meaningful with one torch thread,
#: where all the work runs in the calling thread)
CLOCKS: Dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.thread_time}


def compaction_speed_table(
    versions: Mapping[str, Union[nn.Module, str]],
    x: torch.Tensor,
    flops: Mapping[str, int],
    ideal_flops: int,
    rounds: int = 20,
    clocks: Optional[Mapping[str, Callable[[], float]]] = None,
    baseline: str = "dense",
    block_seconds: float = 0.02,
    inputs: Optional[Mapping[str, torch.Tensor]] = None,
    baseline_of: Optional[Mapping[str, str]] = None,
) -> pd.DataFrame:
    """Median latency of each version on ``x``, round-robin, against ``baseline``; one row per version.

    ``versions``: ``{name: model}``, or ``{name: reason}`` for a version that
    cannot run here (e.g. semi-structured sparsity on a CPU): its row has the
    reason in ``note`` and no numbers. ``flops[name]``: the FLOPs that version
    executes on ``x`` (a sparse format is counted as dense by
    ``FlopCounterMode``); ``ideal_flops``: the FLOPs the pruned network really
    needs on ``x`` (its compact network's, without alignment). ``inputs``: a
    different input per version (e.g. ``x`` in channels_last for a prepared
    model); default ``x`` for all. ``baseline_of``: a different baseline per
    version (e.g. an unprepared compact network against the unprepared dense
    one); default ``baseline`` for all.

    Timing: every model runs once (warm-up and the number of calls per timing
    block, about ``block_seconds``), then ``rounds`` rounds each time every
    version once per clock with ``torch.utils.benchmark.Timer`` under
    ``torch.inference_mode``, so that a transient load hits all versions alike;
    the median block per version and clock is the latency. ``clocks``: default
    :data:`CLOCKS` with one torch thread (``cpu`` is the thread's CPU time) and
    the wall clock alone otherwise.

    Columns: ``version, batch, ms_<clock>, speedup_<clock>`` (baseline ms /
    version ms), ``flops``, ``flop_ratio`` (baseline FLOPs / ``ideal_flops``:
    what the pruned network promises), ``executed_flop_ratio`` (baseline FLOPs /
    the version's own), ``speedup_over_flop_ratio_<clock>`` and ``met_<clock>``
    (>= 0.9), ``note``.
    """
    from torch.utils.benchmark import Timer

    if baseline not in versions or isinstance(versions[baseline], str):
        raise ValueError(f"the baseline {baseline!r} must be one of the timed versions, got {list(versions)}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if clocks is None:
        clocks = CLOCKS if torch.get_num_threads() == 1 else {"wall": CLOCKS["wall"]}
    runnable = {name: m for name, m in versions.items() if not isinstance(m, str)}
    missing = sorted(set(runnable) - set(flops))
    if missing:
        raise ValueError(f"no FLOP count for {missing}")
    inputs = dict(inputs or {})
    baseline_of = dict(baseline_of or {})
    for name, base in baseline_of.items():
        if base not in runnable or name not in versions:
            raise ValueError(f"baseline_of: {name!r} -> {base!r}: both must be timed versions")
    timers = {}
    with torch.inference_mode():
        for name, model in runnable.items():
            model.eval()
            xin = inputs.get(name, x)
            for clock_name, clock in clocks.items():
                timers[(name, clock_name)] = Timer("model(x)", globals={"model": model, "x": xin}, timer=clock)
        number = {}
        for key, timer in timers.items():
            t = timer.timeit(1).median  # also the warm-up
            number[key] = max(1, int(block_seconds / max(t, 1e-7)))
        samples = {key: [] for key in timers}
        for _ in range(rounds):
            for clock_name in clocks:
                for name in runnable:
                    key = (name, clock_name)
                    samples[key].append(timers[key].timeit(number[key]).median)
    med = {key: statistics.median(v) for key, v in samples.items()}
    rows = []
    for name, model in versions.items():
        row = {"version": name, "batch": int(x.shape[0])}
        if isinstance(model, str):
            row["note"] = model
            rows.append(row)
            continue
        base = baseline_of.get(name, baseline)
        flop_ratio = flops[base] / ideal_flops
        row["flops"] = int(flops[name])
        row["flop_ratio"] = flop_ratio
        row["executed_flop_ratio"] = flops[base] / flops[name]
        for clock_name in clocks:
            speedup = med[(base, clock_name)] / med[(name, clock_name)]
            row[f"ms_{clock_name}"] = 1e3 * med[(name, clock_name)]
            row[f"speedup_{clock_name}"] = speedup
            row[f"speedup_over_flop_ratio_{clock_name}"] = speedup / flop_ratio
            row[f"met_{clock_name}"] = bool(speedup / flop_ratio >= 0.9)
        row["note"] = "" if base == baseline else f"against {base}"
        rows.append(row)
    columns = ["version", "batch"]
    for clock_name in clocks:
        columns += [f"ms_{clock_name}", f"speedup_{clock_name}"]
    columns += ["flops", "flop_ratio", "executed_flop_ratio"]
    for clock_name in clocks:
        columns += [f"speedup_over_flop_ratio_{clock_name}", f"met_{clock_name}"]
    columns.append("note")
    return pd.DataFrame(rows).reindex(columns=columns)
