"""The cost of stochastic weight pruning inside a training step, measured in one run.

    .venv/bin/python benchmarks/pruning_overhead.py [--width 1.0 0.25] [--batch 128] [--steps 10] [--device cpu]

For VGG-16 (BatchNorm, CIFAR-10 input 3x32x32) at each width it times, on
the same device and in the same process:

- a training step: forward, cross-entropy, backward, the L2 gradient of the
  regularizer, SGD step;
- the SWP step that follows it (``StochasticWeightPruner.step``: one uniform
  draw per weight, the Gaussian kernel, the masked zeroing), Gaussian kernel,
  absolute sigma 0.002, as in the vgg16-cifar10 preset; on a GPU both the
  multi-tensor path (``fused``, the default there) and the per-tensor one;
  on the CPU the default exact stream (``per_tensor``) and ``fast=True``
  (another random stream, the same probabilities);

and prints the median of each over ``--steps`` repetitions (after warm-up)
and their ratio. Target: SWP under 3% of a training step. Writes
``benchmarks/results/pruning-overhead-<device>.csv``. The SWP step against
the memory bound (a copy of the same bytes): benchmarks/swp_bandwidth.py.
"""
import argparse
import platform
import statistics
import time
from pathlib import Path

import pandas as pd
import torch
from torch.nn import functional as F

from prunedyn import StochasticWeightPruner, make_regularizer, prunable_weights
from prunedyn.models import VGG
from prunedyn.atomic import atomic_write_text


def _timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    tic = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - tic


def measure(width: float, batch: int, steps: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = VGG(width=width).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    decay = make_regularizer("l2", lam=5e-4)
    weights = list(prunable_weights(model).values())
    pruners = {"per_tensor": StochasticWeightPruner(model, kernel="gaussian", sigma=0.002, seed=1, fused=False)}
    if device.type == "cuda":
        pruners["fused"] = StochasticWeightPruner(model, kernel="gaussian", sigma=0.002, seed=1, fused=True)
    else:
        pruners["fast"] = StochasticWeightPruner(model, kernel="gaussian", sigma=0.002, seed=1, fast=True)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def train_step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        decay.add_gradient(weights)
        opt.step()

    train, swp = [], {k: [] for k in pruners}
    for i in range(steps + 2):  # two warm-up steps
        t = _timed(train_step, device)
        times = {k: _timed(p.step, device) for k, p in pruners.items()}
        if i >= 2:
            train.append(t)
            for k, v in times.items():
                swp[k].append(v)
    n_weights = sum(w.numel() for w in weights)
    t_med = statistics.median(train)
    return [{
        "device": str(device),
        "hardware": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "width": width,
        "batch": batch,
        "weights": n_weights,
        "swp_path": k,
        "train_step_ms": 1e3 * t_med,
        "swp_step_ms": 1e3 * statistics.median(v),
        "swp_fraction": statistics.median(v) / t_med,
        "steps": steps,
    } for k, v in swp.items()]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=float, nargs="+", default=[1.0, 0.25])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rows = [row for w in args.width for row in measure(w, args.batch, args.steps, device)]
    table = pd.DataFrame(rows)
    print(f"# torch {torch.__version__}; medians of {args.steps} steps after 2 warm-up steps")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / f"pruning-overhead-{device.type}.csv", table.to_csv(index=False, float_format="%.6g"))


if __name__ == "__main__":
    main()
