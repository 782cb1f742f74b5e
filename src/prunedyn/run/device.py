"""Where and how a run computes, and what its records say about it: the device (a sweep worker's
own GPU), autocast to ``train.precision``, the CPU kernels' numeric path, the training path and
SWP's random-number backend (``summary.json``'s ``train_path`` and ``swp_backend``)."""
from __future__ import annotations

import json
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import torch

from prunedyn.core.pruning import StochasticWeightPruner, WeightPruner
from prunedyn.run.backends import WORKER_SLOT
from prunedyn.run.config import ExperimentConfig
from prunedyn.run.folders import RunError


def resolve_device(name: str) -> torch.device:
    """The device of ``device: cpu | cuda | auto``. In a sweep's worker process on a machine with
    several GPUs, ``cuda`` is the worker's own GPU (:func:`worker_gpu`); with one GPU every worker
    shares it."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RunError("device: 'cuda' requested but no CUDA device is available; allowed here: cpu, auto")
    if name == "cuda":
        index = worker_gpu(os.environ.get(WORKER_SLOT), torch.cuda.device_count())
        if index is not None:
            return torch.device("cuda", index)
    return torch.device(name)


def worker_gpu(slot: Optional[str], gpus: int) -> Optional[int]:
    """The GPU of sweep worker ``slot`` among ``gpus``: round robin, so that ``--workers k`` on a
    machine with ``n`` GPUs puts ``k / n`` runs on each. None outside a worker or with one GPU
    (then ``cuda`` means the current device, as in a single run)."""
    if slot is None or gpus <= 1:
        return None
    return int(slot) % gpus


AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def autocast(t):
    """The context of a :class:`~prunedyn.run.experiments.Trainer` `t`'s training forward and loss:
    autocast to ``train.precision``, or none."""
    dtype = AUTOCAST_DTYPES[t.cfg.train.precision]
    return nullcontext() if dtype is None else torch.autocast(t.device.type, dtype=dtype)


#: Variables that choose the CPU kernels of MKL, ATen and oneDNN; ``make ... NUMERICS=emulated`` sets
#: them to the portable kernels (another CPU's arithmetic, the same bits on any x86-64 CPU tried).
NUMERIC_VARS = ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")


def numeric_path() -> dict:
    """Which CPU kernels this process computes with: ATen's capability and the variables that pin them."""
    return {"aten_capability": torch.backends.cpu.get_cpu_capability(),
            **{k: os.environ[k] for k in NUMERIC_VARS if k in os.environ}}


def train_path(cfg: ExperimentConfig, device: torch.device) -> str:
    """The training path of a run, as recorded in its summary (``train_path``): the device
    type and the precision, then ``channels_last``, ``compiled``, ``resident`` where set.
    E.g. ``cpu fp32`` (the reference path) or ``cuda bf16 channels_last compiled resident``."""
    tc = cfg.train
    flags = [name for name, on in (("channels_last", tc.channels_last), ("compiled", tc.compile),
                                   ("resident", tc.resident)) if on]
    return " ".join([device.type, tc.precision, *flags])


def swp_backend(pruner: WeightPruner) -> str:
    """Which code drew SWP's random numbers, as recorded in a run's summary (``swp_backend``):
    ``torch`` (the exact stream), ``counter:`` and the kernels its last step ran (``c``, ``triton``,
    ``triton-group``, ``reference``; comma-separated), or ``none`` for other pruners."""
    if not isinstance(pruner, StochasticWeightPruner):
        return "none"
    if pruner.stream.name != "counter":
        return pruner.stream.name
    return "counter:" + (",".join(sorted(set(pruner.stream.backends.values()))) or "not run")


def recorded_train_path(folder: Path) -> str:
    """The training path of the finished run in ``folder``, for a figure's caption. Runs made
    before the path was recorded ran the reference path (fp32, host batches) on the device their
    ``timing.json`` names."""
    folder = Path(folder)
    summary = json.loads((folder / "summary.json").read_text())
    if "train_path" in summary:
        return summary["train_path"]
    timing = folder / "timing.json"
    device = json.loads(timing.read_text()).get("device", "cpu") if timing.exists() else "cpu"
    return f"{torch.device(device).type} fp32"
