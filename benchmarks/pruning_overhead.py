"""The cost of stochastic weight pruning inside a training step, measured in one run.

    .venv/bin/python benchmarks/pruning_overhead.py [--width 1.0 0.25] [--batch 128] [--steps 10] [--device cpu]
                                                   [--threads 2] [--note "..."]

For VGG-16 (BatchNorm, CIFAR-10 input 3x32x32) at each width it times, on
the same device and in the same process, round-robin:

- two training steps (forward, cross-entropy, backward, the L2 gradient of
  the regularizer, SGD step with momentum): ``plain`` (float32, contiguous
  NCHW tensors: the book's CPU runs) and ``optimised`` (``channels_last``
  and bf16 autocast: the fast path of ``train.channels_last`` /
  ``train.precision=bf16``; on the CPU bf16 pays only where the CPU has
  bf16 instructions, which the output names);
- the SWP step that follows (``StochasticWeightPruner.step``), Gaussian
  kernel, absolute sigma 0.002 as in the vgg16-cifar10 preset, along its
  paths: ``per_tensor`` (the default torch stream), ``multi_tensor`` (GPU,
  the ``_foreach`` path), and
  ``counter`` (``stream="counter"``: the fused kernel of prunedyn.core.fused);

and prints the median of each over ``--steps`` repetitions (after two
warm-up steps) and the SWP step's share of each training step. Targets:
SWP at most 3% of the optimised step on the CPU, 2% on a GPU. Writes
``benchmarks/results/pruning-overhead-<device>.csv`` and a JSON file with
the hardware, threads, date and load. The SWP step against the memory bound
(a copy of the same bytes): benchmarks/swp_bandwidth.py.
"""
import argparse
import datetime
import os
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import pandas as pd
import torch
from torch.nn import functional as F

from prunedyn import StochasticWeightPruner, make_regularizer, prunable_weights
from prunedyn.models import VGG
from prunedyn.atomic import atomic_write_json, atomic_write_text
from hardware import cpu_name, provenance  # benchmarks/hardware.py (the script's folder is on sys.path)

#: targets of issue #12: SWP's share of an optimised training step
TARGET = {"cpu": 0.03, "cuda": 0.02}


def _timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    tic = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - tic


def bf16_native() -> bool:
    """Whether this CPU has bf16 arithmetic (AVX512-BF16 or AMX): bf16 autocast pays only there."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def measure(width: float, batch: int, steps: int, device: torch.device) -> list:
    torch.manual_seed(0)
    model = VGG(width=width).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    decay = make_regularizer("l2", lam=5e-4)
    weights = list(prunable_weights(model).values())
    pruners = {"per_tensor": StochasticWeightPruner(model, sigma=0.002, seed=1)}
    pruners["counter"] = StochasticWeightPruner(model, sigma=0.002, seed=1, stream="counter")
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    x_last = x.contiguous(memory_format=torch.channels_last)

    def train_step(optimised: bool):
        model.to(memory_format=torch.channels_last if optimised else torch.contiguous_format)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if optimised else nullcontext()
        with autocast:
            loss = F.cross_entropy(model(x_last if optimised else x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        decay.add_gradient(weights)
        opt.step()

    # the memory format is switched outside the timed region: each step starts in its own format
    def timed_train(optimised):
        model.to(memory_format=torch.channels_last if optimised else torch.contiguous_format)
        return _timed(lambda: train_step(optimised), device)

    train = {"plain": [], "optimised": []}
    swp = {k: [] for k in pruners}
    for i in range(steps + 2):  # two warm-up rounds
        times = {"plain": timed_train(False), "optimised": timed_train(True)}
        times.update({k: _timed(p.step, device) for k, p in pruners.items()})
        if i >= 2:
            for k in train:
                train[k].append(times[k])
            for k in swp:
                swp[k].append(times[k])
    n_weights = sum(w.numel() for w in weights)
    t_train = {k: statistics.median(v) for k, v in train.items()}
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    rows = []
    for k, v in swp.items():
        t = statistics.median(v)
        backend = ",".join(sorted(set(pruners[k].stream.backends.values()))) if k == "counter" else "torch"
        rows.append({
            "device": device.type,
            "hardware": hardware,
            "threads": torch.get_num_threads(),
            "width": width,
            "batch": batch,
            "weights": n_weights,
            "swp_path": k,
            "backend": backend,
            "swp_step_ms": 1e3 * t,
            "train_step_ms": 1e3 * t_train["plain"],
            "optimised_train_step_ms": 1e3 * t_train["optimised"],
            "swp_fraction": t / t_train["plain"],
            "swp_fraction_of_optimised": t / t_train["optimised"],
            "target": TARGET[device.type],
            "met": bool(t / t_train["optimised"] <= TARGET[device.type]),
            "steps": steps,
        })
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=float, nargs="+", default=[1.0, 0.25])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--note", default="", help="a remark stored with the results (e.g. the machine's load)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    rows = [row for w in args.width for row in measure(w, args.batch, args.steps, device)]
    load_after = os.getloadavg()
    table = pd.DataFrame(rows)
    bf16 = "GPU" if device.type == "cuda" else ("native bf16 (AVX512-BF16/AMX)" if bf16_native() else "no native bf16: autocast emulates it")
    print(f"# {rows[0]['hardware']}, torch {torch.__version__}, {args.threads} thread(s), {bf16}; medians of {args.steps}"
          f" round-robin steps after 2 warm-up rounds; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    cols = ["width", "swp_path", "backend", "swp_step_ms", "train_step_ms", "optimised_train_step_ms", "swp_fraction",
            "swp_fraction_of_optimised", "met"]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if args.no_write:
        return
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / f"pruning-overhead-{device.type}.csv", table.to_csv(index=False, float_format="%.6g"))
    atomic_write_json(args.out / f"pruning-overhead-{device.type}.json", {
        **provenance(started, args.threads, load_before, load_after, args.note, hardware=rows[0]["hardware"]),
        "bf16": bf16,
        "rows": rows,
    })


if __name__ == "__main__":
    main()
