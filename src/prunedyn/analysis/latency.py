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
"""
from __future__ import annotations

import copy
import statistics
import time
import warnings
from typing import Dict

import pandas as pd
import torch
from torch import nn

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


def speed_table(dense: nn.Module, pruned: nn.Module, x: torch.Tensor, batches=(1, 256), reps: int = 50) -> pd.DataFrame:
    """One row per (version, batch): seconds, speedup over dense, params, nonzeros, FLOPs.

    ``dense`` is the unpruned network of the same architecture; ``pruned`` the
    trained pruned one. ``x`` holds at least ``max(batches)`` inputs.
    """
    small, _ = compact(pruned, x[:8])
    versions: Dict[str, nn.Module] = {
        "dense": dense,
        "masked": pruned,
        "sparse_csr": to_sparse_csr(pruned),
        "compact": small,
    }
    nonzeros = {
        "dense": sum(int(p.count_nonzero()) for p in dense.parameters()),
        "masked": sum(int(p.count_nonzero()) for p in pruned.parameters()),
        "compact": sum(int(p.count_nonzero()) for p in small.parameters()),
    }
    nonzeros["sparse_csr"] = nonzeros["masked"]
    flops = {"dense": count_flops(dense, x[:1]), "compact": count_flops(small, x[:1])}
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
