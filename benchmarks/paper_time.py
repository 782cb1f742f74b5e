"""Expected time per run of the paper-scale sweeps (chapters/sweeps/paper-*.yaml), measured in one run.

    .venv/bin/python benchmarks/paper_time.py [--steps 3] [--threads 2] [--write]

For each sweep, the SWP + L2 point of seed 0 is built with the library's own
trainer (model, optimiser, regularizer and stochastic pruner as the sweep
configures them) and a few training steps are timed on this machine's CPU
(after one warm-up step), through :func:`prunedyn.run.experiments.train_epoch`
on a training set of exactly those steps. From the median step:

- ``cpu_hours_per_run``: step time x steps per epoch x epochs, where steps per
  epoch come from the sweep's full training set (VGG-16: the 50,000 images of
  CIFAR-10, which are not embedded, so its steps are timed on the embedded
  images of the same size);
- ``gpu_minutes_per_run``: an estimate, not a measurement: the recorded
  full-width VGG-16 runs took about 10 s per epoch on one H100/H200 shared by
  5 runs (chapters/results/README.md), scaled by the sweep's training FLOPs
  per epoch (forward FLOPs per image x images; backward taken as twice the
  forward for every model alike) against VGG-16's.

With ``--write``: benchmarks/results/paper-time-cpu.csv and .json (with the
hardware, threads, torch version and date).
"""
import argparse
import datetime
import math
import statistics
import time
from pathlib import Path

import pandas as pd
import torch

from hardware import cpu_name  # benchmarks/hardware.py (the script's folder is on sys.path)
from prunedyn.atomic import atomic_write_json, atomic_write_text
from prunedyn.data.datasets import load_dataset
from prunedyn.run.config import load_config
from prunedyn.run.experiments import build, train_epoch
from prunedyn.run.sweeps import load_spec, overrides_of
from prunedyn.structure.surgery import count_flops

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ("paper-vgg16", "paper-unet", "paper-cxr")
#: Training images of the complete data sets the sweeps use where they are not embedded.
FULL_TRAIN = {"paper-vgg16": 50_000}
#: The recorded reference: full-width VGG-16 on the complete CIFAR-10, s per epoch on one GPU shared by 5 runs.
VGG_GPU_S_PER_EPOCH = 10.0


def sweep_config(name: str):
    spec = load_spec(ROOT / "chapters" / "sweeps" / f"{name}.yaml")
    point = next(p for p in spec.points() if str(p.get("label", "")).startswith("swp-l2") and p["seed"] == 0)
    over = overrides_of(spec, point)
    if name in FULL_TRAIN:  # the complete data set is not on this machine: time on embedded images of the same size
        over = [*over, "data.source=embedded"]
    return load_config(spec.base, [*over, "device=cpu"])


def measure(name: str, steps: int) -> dict:
    cfg = sweep_config(name)
    full = load_dataset(cfg.data)
    n_train = FULL_TRAIN.get(name, len(full.y_train))
    batch = cfg.data.batch_size
    cfg.data.train_size = batch * (steps + 1)  # one warm-up step, then the timed ones
    trainer = build(cfg)
    flops = count_flops(trainer.model, trainer.data.x_test[:1])
    times = []
    # time each step: train_epoch over a one-batch order per call keeps the library's own step
    xs, ys = trainer.data.x_train, trainer.data.y_train
    for i in range(steps + 1):
        trainer.data.x_train, trainer.data.y_train = xs[i * batch:(i + 1) * batch], ys[i * batch:(i + 1) * batch]
        t0 = time.perf_counter()
        train_epoch(trainer, 1)
        if i:
            times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    steps_per_epoch = math.ceil(n_train / batch)
    return {
        "sweep": name, "model": cfg.model.name, "width": cfg.model.width, "image_size": cfg.data.image_size,
        "batch": batch, "epochs": cfg.epochs, "train_images": n_train, "steps_per_epoch": steps_per_epoch,
        "forward_gflops_per_image": flops / 1e9, "cpu_step_s": step_s,
        "cpu_hours_per_run": step_s * steps_per_epoch * cfg.epochs / 3600,
        "train_tflops_per_epoch": 3 * flops * n_train / 1e12,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="+", choices=SWEEPS, default=list(SWEEPS))
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [measure(name, args.steps) for name in args.only]
    table = pd.DataFrame(rows)
    vgg = table.set_index("sweep").get("train_tflops_per_epoch", pd.Series(dtype=float)).get("paper-vgg16")
    if vgg:
        table["gpu_minutes_per_run"] = (VGG_GPU_S_PER_EPOCH * table["train_tflops_per_epoch"] / vgg
                                        * table["epochs"] / 60)
    print(f"# {cpu_name()}, {args.threads} torch threads, torch {torch.__version__}; median of {args.steps} steps after 1 warm-up")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if args.write:
        out = Path(__file__).parent / "results"
        atomic_write_text(out / "paper-time-cpu.csv", table.to_csv(index=False, float_format="%.6g"))
        atomic_write_json(out / "paper-time-cpu.json", {
            "hardware": cpu_name(), "threads": args.threads, "torch": torch.__version__,
            "date": datetime.date.today().isoformat(), "steps": args.steps,
            "gpu_estimate": f"scaled from {VGG_GPU_S_PER_EPOCH:g} s per epoch of the recorded full-width VGG-16 (one H100/H200 shared by 5 runs) by training FLOPs per epoch",
            "rows": rows,
        })


if __name__ == "__main__":
    main()
