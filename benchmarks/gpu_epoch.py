"""Epoch time of VGG-16 on CIFAR-10 along the reference and the fast training paths, against
the compute bound. Measured in one run, no timed tests.

    .venv/bin/python benchmarks/gpu_epoch.py [--device cuda] [--width 1.0] [--images 50000]
                                            [--epochs 3] [--paths reference fast fast-compiled] [--write]
    # on a CPU, at a tiny size (a check that it runs, not a figure):
    .venv/bin/python benchmarks/gpu_epoch.py --device cpu --width 0.0625 --images 256 --epochs 2 --paths reference fast

Each path trains VGG-16 with BatchNorm (``--width``; 1.0 is the paper's network)
through the library's own loop (:func:`prunedyn.run.experiments.train_epoch`
of a trainer built from the vgg16-cifar10 preset: SGD with momentum, cosine
learning rate, L2 decay, the stochastic weight pruner after every step,
crop-and-flip augmentation, batch ``--batch``) for ``--epochs`` epochs of
``--images`` training images; the first epoch is a warm-up (cuDNN's algorithm
search, ``torch.compile``) and the median of the others is reported, with
images per second. Evaluation and the per-epoch tables are not timed. The paths
are the settings of the config section ``train``:

==================  =====================================================================
``reference``       as the recorded runs: host batches, fp32, NCHW, eager, a host read per step
``resident``        the training set on the device, augmented there; host read once per epoch
``fast``            ``resident`` + bf16 autocast + channels_last
``fast-compiled``   ``fast`` + ``torch.compile``
==================  =====================================================================

The compute bound of an epoch is its FLOPs (the forward FLOPs of one image,
counted by ``torch.utils.flop_counter.FlopCounterMode``, x 3 for forward and
backward, x the images) divided by the device's measured matrix-multiply
throughput (a square ``--matmul-size`` matmul timed with
``torch.utils.benchmark.Timer``) in the path's arithmetic: bf16 for the bf16
paths; for fp32 paths on a GPU, TF32 where cuDNN is allowed to use it for
convolutions (PyTorch's default, ``torch.backends.cudnn.allow_tf32``), else
plain fp32. ``x_bound`` = measured / bound: how many times slower than the
matmul units could do the same FLOPs. The pruner, optimiser, BatchNorm, ReLU
and pooling are memory-bound work the bound leaves out, so 1 is out of reach.

The complete CIFAR-10 training set is used when present (torchvision files, or
the full JPEG copy: data.source=jpeg), else the embedded subset (10,000 images)
when ``--images`` fits in it; with fewer images than ``--images`` at hand,
random images of CIFAR's shape are used instead (the time of a dense
network does not depend on the pixel values) and the output says so.

With ``--write``: benchmarks/results/gpu-epoch-<device>.csv and .json (with
the hardware, date, torch version and data source).
"""
import argparse
import datetime
import os
import statistics
import time
from pathlib import Path

import pandas as pd
import torch
from torch.utils.benchmark import Timer
from torch.utils.flop_counter import FlopCounterMode

from hardware import cpu_name  # benchmarks/hardware.py (the script's folder is on sys.path)
from prunedyn.atomic import atomic_write_json, atomic_write_text
from prunedyn.data.datasets import DatasetBundle, load_dataset
from prunedyn.run.config import load_config
from prunedyn.run.device import train_path
from prunedyn.run.experiments import build, train_epoch

#: path name -> the ``train`` section's settings
PATHS = {
    "reference": {},
    "resident": {"resident": True, "sync_every": 0},
    "fast": {"resident": True, "sync_every": 0, "precision": "bf16", "channels_last": True},
    "fast-compiled": {"resident": True, "sync_every": 0, "precision": "bf16", "channels_last": True, "compile": True},
}


def cifar_images(n: int):
    """``(bundle, note)``: the first ``n`` CIFAR-10 training images, or random ones of that shape."""
    for source in ("torchvision", "jpeg", "embedded"):
        try:
            cfg = load_config("vgg16-cifar10", [f"data.source={source}"]).data
            data = load_dataset(cfg)
        except Exception as e:  # noqa: BLE001 - any failure to load means: not here
            last = f"{type(e).__name__}: {e}"
            continue
        if len(data.y_train) >= n:
            data.x_train, data.y_train = data.x_train[:n], data.y_train[:n]
            return data, f"CIFAR-10 ({source}), first {n} training images"
        last = f"only {len(data.y_train)} training images ({source})"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    data = DatasetBundle(name="cifar10", source="random", x_train=x, y_train=y, x_test=x[:256], y_test=y[:256],
                         description="random images of CIFAR-10's shape")
    return data, f"RANDOM images of CIFAR-10's shape (the complete CIFAR-10 is not here: {last})"


def forward_flops(model: torch.nn.Module, device: torch.device) -> int:
    """FLOPs of one image's forward pass (multiply and add counted apart), in eval mode."""
    was = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 32, 32, device=device))
    model.train(was)
    return counter.get_total_flops()


def matmul_tflops(device: torch.device, size: int, mode: str) -> float:
    """Measured TFLOP/s of a square ``size`` matmul; ``mode``: fp32, tf32 (GPU) or bf16."""
    dtype = torch.bfloat16 if mode == "bf16" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
    try:
        t = Timer("a @ b", globals={"a": a, "b": b}).blocked_autorange(min_run_time=1.0).median
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    return 2 * size**3 / t / 1e12


def arithmetic(path: dict, device: torch.device) -> str:
    """The matmul arithmetic the path's convolutions use: bf16, tf32 or fp32."""
    if path.get("precision") == "bf16":
        return "bf16"
    return "tf32" if device.type == "cuda" and torch.backends.cudnn.allow_tf32 else "fp32"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name: str, data: DatasetBundle, args, device: torch.device, throughput: dict) -> dict:
    settings = PATHS[name]
    overrides = [f"model.width={args.width}", f"data.batch_size={args.batch}", f"epochs={args.epochs}",
                 f"device={device.type}", "threads=0", *(f"train.{k}={str(v).lower()}" for k, v in settings.items())]
    cfg = load_config("vgg16-cifar10", overrides)
    trainer = build(cfg, data)
    times = []
    for epoch in range(1, args.epochs + 1):
        sync(device)
        tic = time.perf_counter()
        train_epoch(trainer, epoch)
        sync(device)
        times.append(time.perf_counter() - tic)
        print(f"# {name}: epoch {epoch} {times[-1]:.3f} s", flush=True)
    timed = times[1:] or times
    epoch_s = statistics.median(timed)
    n = len(data.y_train)
    flops = 3 * forward_flops(trainer.model, device) * n
    mode = arithmetic(settings, device)
    bound_s = flops / (throughput[mode] * 1e12)
    row = {
        "path": name,
        "train_path": train_path(cfg, trainer.device),
        "device": device.type,
        "width": args.width,
        "images": n,
        "batch": args.batch,
        "epoch_s": epoch_s,
        "first_epoch_s": times[0],
        "images_per_s": n / epoch_s,
        "tflop_per_epoch": flops / 1e12,
        "matmul": mode,
        "matmul_tflops": throughput[mode],
        "bound_s": bound_s,
        "x_bound": epoch_s / bound_s,
        "timed_epochs": len(timed),
    }
    del trainer
    if device.type == "cuda":
        row["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.empty_cache()
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cuda = torch.cuda.is_available()
    parser.add_argument("--device", default="cuda" if cuda else "cpu", choices=["cuda", "cpu"])
    parser.add_argument("--width", type=float, default=1.0, help="VGG-16 width multiplier (1.0: the paper's)")
    parser.add_argument("--images", type=int, default=50_000, help="training images per epoch (50000: all of CIFAR-10)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per path; the first is a warm-up")
    parser.add_argument("--paths", nargs="+", choices=list(PATHS), default=["reference", "resident", "fast", "fast-compiled"])
    parser.add_argument("--matmul-size", type=int, default=None, help="side of the timed matmul (default 8192 GPU, 1024 CPU)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads on the CPU (0: torch's default)")
    parser.add_argument("--write", action="store_true", help="write benchmarks/results/gpu-epoch-<device>.{csv,json}")
    parser.add_argument("--note", default="", help="a remark stored with the results")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if args.device == "cuda" and not cuda:
        parser.error("--device cuda: no CUDA device here; use --device cpu (with a small --width and --images)")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    started = datetime.datetime.now(datetime.timezone.utc)
    size = args.matmul_size or (8192 if device.type == "cuda" else 1024)
    modes = ["fp32", "bf16"] + (["tf32"] if device.type == "cuda" else [])
    throughput = {m: matmul_tflops(device, size, m) for m in modes}
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"# {hardware}; torch {torch.__version__}; matmul {size}^2: "
          + ", ".join(f"{m} {v:.3g} TFLOP/s" for m, v in throughput.items()), flush=True)
    data, note = cifar_images(args.images)
    print(f"# data: {note}", flush=True)
    rows = [measure(name, data, args, device, throughput) for name in args.paths]
    table = pd.DataFrame(rows)
    cols = ["path", "train_path", "width", "images", "epoch_s", "first_epoch_s", "images_per_s", "tflop_per_epoch",
            "matmul", "matmul_tflops", "bound_s", "x_bound"]
    print(f"# VGG-16 width {args.width}, batch {args.batch}, {len(data.y_train)} images per epoch; "
          f"median of {max(1, args.epochs - 1)} epoch(s) after a warm-up epoch; {torch.get_num_threads()} CPU thread(s)")
    print(table[cols + (["peak_memory_gb"] if "peak_memory_gb" in table else [])]
          .to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if args.write:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = f"gpu-epoch-{device.type}"
        atomic_write_text(args.out / f"{stem}.csv", table.to_csv(index=False, float_format="%.6g"))
        atomic_write_json(args.out / f"{stem}.json", {
            "date_utc": started.isoformat(timespec="seconds"),
            "hardware": hardware,
            "cpu": cpu_name(),
            "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_size": size,
            "matmul_tflops": throughput,
            "data": note,
            "note": args.note,
            "rows": rows,
        })


if __name__ == "__main__":
    main()
