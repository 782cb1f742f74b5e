"""How far is the SWP step from the memory bound? Ratios measured in one run, no timed tests.

    .venv/bin/python benchmarks/swp_bandwidth.py [--models mlp vgg0.25 vgg1] [--rounds 30] [--threads 1]
                                                [--train-rounds 10] [--device cpu|cuda] [--write]

For each model (the book's MLP 784-300-100-10 with sigma 0.003, VGG-16 with
BatchNorm at width 0.25 and 1 with sigma 0.002, CIFAR-10 input, batch 128)
it times, round-robin in one process (so that a transient load on the
machine hits every entry alike and the ratios hold):

- ``copy``: ``dst.copy_(src)`` of as many bytes as all prunable weights
  (``torch.utils.benchmark.Timer``): one read and one write of every weight,
  the memory bound of any in-place step;
- the SWP step (``StochasticWeightPruner._prune``, Gaussian kernel, absolute
  sigma) along its paths: ``previous`` (the implementation before issue
  #12, kept here verbatim: one ``torch.rand`` for all weights, four
  temporaries, ``masked_fill_``), ``exact`` (the default ``torch`` stream:
  the same decisions, tested bit for bit in tests/test_swp_fast.py) and ``counter``
  (``stream="counter"``: the fused one-pass kernel of prunedyn.core.fused, C
  on the CPU, Triton on a GPU; on a GPU also ``multi_tensor``, the default
  torch stream's ``_foreach`` path). Each timing restores the initial
  weights first (one copy, subtracted), so that every repetition prunes the
  same weights;
- a training step (forward, cross-entropy, backward, L2 gradient, SGD with
  momentum), for the SWP step's share of it.

Each model is measured twice, with the wall clock and with the thread's
CPU time (``--clock``): on a machine shared with other work the first is
inflated by waiting for a core, the second much less.

It prints ``swp / copy`` ("x of the memory bound"), ``previous / path``
(speed-up) and ``swp / train`` per model and path. With ``--write`` the
table goes to benchmarks/results/swp-bandwidth-<device>.csv and, with the
hardware, date, thread count and load average, to a JSON file next to it.
"""
import argparse
import datetime
import os
import statistics
import time
from pathlib import Path

import pandas as pd
import torch
from torch.nn import functional as F
from torch.utils.benchmark import Timer

from prunedyn import StochasticWeightPruner, make_regularizer, prunable_weights
from hardware import cpu_name, provenance  # benchmarks/hardware.py (the script's folder is on sys.path)
from prunedyn.atomic import atomic_write_json, atomic_write_text
from prunedyn.models import MLP, VGG

MODELS = {
    # name: (constructor, sigma, input shape without batch)
    "mlp": (lambda: MLP(784, [300, 100], 10), 0.003, (784,)),
    "vgg0.25": (lambda: VGG(width=0.25), 0.002, (3, 32, 32)),
    "vgg1": (lambda: VGG(width=1.0), 0.002, (3, 32, 32)),
}


@torch.no_grad()
def previous_prune(pruner: StochasticWeightPruner) -> None:
    """The SWP step before issue #12 (CPU, absolute sigma, constant schedule)."""
    todo = [(n, w, pruner.sigma) for n, w in pruner.weights.items()]
    first = todo[0][1]
    u_all = torch.rand(sum(w.numel() for _, w, _ in todo), generator=pruner.stream.generator, dtype=first.dtype)
    offset = 0
    for name, w, scale in todo:
        u = u_all[offset : offset + w.numel()].view_as(w)
        offset += w.numel()
        pruner._zero(name, w, u < pruner.kernel(w, scale))


#: the SWP paths per device type
PATHS = {"cpu": ("previous", "exact", "counter"), "cuda": ("previous", "exact", "counter")}

#: ``wall``: elapsed time; ``cpu``: this thread's CPU time (with one torch thread all the work runs
#: in it), far less sensitive to other processes sharing the cores, though not to their use of
#: caches and memory bandwidth
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def measure(name: str, rounds: int, train_rounds: int, batch: int, clock: str, device: torch.device) -> list:
    build, sigma, shape = MODELS[name]
    torch.manual_seed(0)
    model = build().to(device).train()
    weights = list(prunable_weights(model).values())
    n = sum(w.numel() for w in weights)
    initial = [w.detach().clone() for w in weights]
    src = torch.cat([w.flatten() for w in initial])
    dst = torch.empty_like(src)

    @torch.no_grad()
    def restore():
        for w, w0 in zip(weights, initial):
            w.copy_(w0)

    options = {"previous": {}, "exact": {}, "counter": {"stream": "counter"}}
    pruners = {path: StochasticWeightPruner(model, sigma=sigma, seed=1, **options[path]) for path in PATHS[device.type]}

    def swp(path):
        pruner = pruners[path]

        def run():
            restore()
            if path == "previous":
                previous_prune(pruner)
            else:
                pruner.step()  # the counter stream draws with the step's index: a new key each call

        return run

    stmts = {"copy": ("dst.copy_(src)", {"dst": dst, "src": src}), "restore": ("restore()", {"restore": restore})}
    stmts.update({path: ("run()", {"run": swp(path)}) for path in pruners})
    # on a GPU the Timer synchronises the device around each block (the wall clock only)
    timers = {key: Timer(stmt, globals=g, timer=CLOCKS[clock]) for key, (stmt, g) in stmts.items()}
    # warm-up, and the number of calls per timing block (about 20 ms per block)
    number = {}
    for key, timer in timers.items():
        t = timer.timeit(1).median
        number[key] = max(1, int(0.02 / max(t, 1e-7)))
    samples = {key: [] for key in timers}
    for _ in range(rounds):
        for key, timer in timers.items():
            samples[key].append(timer.timeit(number[key]).median)
    med = {key: statistics.median(v) for key, v in samples.items()}

    # training steps, round-robin with nothing else: their own medians
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    decay = make_regularizer("l2", lam=5e-4)
    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def train_step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        decay.add_gradient(weights)
        opt.step()

    train = []
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for i in range(train_rounds + 1):
        sync()
        tic = CLOCKS[clock]()
        train_step()
        sync()
        if i:
            train.append(CLOCKS[clock]() - tic)
    t_train = statistics.median(train)

    rows = []
    for path in pruners:
        t_swp = max(med[path] - med["restore"], 0.0)
        backend = ",".join(sorted(set(pruners[path].stream.backends.values()))) if path == "counter" else "torch"
        rows.append({
            "device": device.type,
            "clock": clock,
            "model": name,
            "weights": n,
            "weight_mb": 4 * n / 2**20,
            "copy_ms": 1e3 * med["copy"],
            "copy_gbps": 2 * 4 * n / med["copy"] / 1e9,
            "path": path,
            "backend": backend,
            "swp_ms": 1e3 * t_swp,
            "x_memory_bound": t_swp / med["copy"],
            "speedup_over_previous": (med["previous"] - med["restore"]) / t_swp if t_swp > 0 else float("nan"),
            "train_step_ms": 1e3 * t_train,
            "swp_share_of_train_step": t_swp / t_train,
            "rounds": rounds,
            "train_rounds": train_rounds,
        })
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["mlp", "vgg0.25", "vgg1"], choices=list(MODELS))
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--train-rounds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, nargs="+", default=[1],
                        help="torch threads (also the C kernel's); the cpu clock is measured with 1 only")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--clock", choices=list(CLOCKS), nargs="+", default=["cpu", "wall"],
                        help="cpu: the thread's CPU time (needs --threads 1), wall: elapsed time")
    parser.add_argument("--write", action="store_true", help="write benchmarks/results/swp-bandwidth-<device>.{csv,json}")
    parser.add_argument("--note", default="", help="a remark stored with the results (e.g. the machine's load)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    rows = []
    device = torch.device(args.device)
    if device.type == "cuda":
        args.clock = ["wall"]  # a thread's CPU time says nothing of the GPU's work
        torch.backends.cudnn.benchmark = True
    for threads in args.threads:
        torch.set_num_threads(threads)
        # a thread's CPU time measures one thread's work: with more, the wall clock only
        clocks = args.clock if threads == 1 else [c for c in args.clock if c != "cpu"] or ["wall"]
        for name in args.models:
            for clock in clocks:
                part = measure(name, args.rounds, args.train_rounds, args.batch, clock, device)
                rows += [{"threads": threads, **r} for r in part]
                print(f"# {name} ({clock} clock, {threads} thread(s)) done", flush=True)
    load_after = os.getloadavg()
    table = pd.DataFrame(rows)
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"# {hardware}, torch {torch.__version__}, {args.threads} thread(s), medians of {args.rounds} round-robin rounds;"
          f" load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    cols = ["threads", "clock", "model", "weights", "copy_ms", "copy_gbps", "path", "backend", "swp_ms", "x_memory_bound", "speedup_over_previous",
            "train_step_ms", "swp_share_of_train_step"]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if args.write:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / f"swp-bandwidth-{device.type}.csv", table.to_csv(index=False, float_format="%.6g"))
        atomic_write_json(args.out / f"swp-bandwidth-{device.type}.json", {
            **provenance(started, args.threads, load_before, load_after, args.note, hardware=hardware),
            "numpy": __import__("numpy").__version__,
            "rows": rows,
        })


if __name__ == "__main__":
    main()
