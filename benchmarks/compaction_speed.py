"""Does compaction pay its FLOP ratio on the CPU? Ratios measured in one run, no timed tests.

    .venv/bin/python benchmarks/compaction_speed.py [--models mlp vgg16-w0.25 unet-w1/16 vgg16-w1]
        [--batch 256] [--threads 1] [--rounds-scale 1.0] [--write] [--note "..."]

Target (issue #12, target 4): the compact network's measured speedup over the
dense one at batch 256 is at least 0.9 of its FLOP ratio, for the MLP and for
the compact VGG-16 and U-Net, with the unstructured alternatives beside it.

Models:

- ``mlp``: the book's quick-profile MLP 784-300-100-10 trained with L2 + SWP
  and its dense baseline, exactly as benchmarks/speed.py gets them
  (``regularizer_comparison("quick")``, ``load_model``; trained once into
  runs/ if missing), on MNIST test digits;
- ``vgg16-w0.25`` and ``unet-w1/16``: the architectures of chapters 6 and 7's
  CPU runs (presets vgg16-cifar10 / unet-dsb2018 with the overrides of
  chapters/sweeps/cpu-baselines-{vgg16,unet}.yaml), seeded random weights,
  with exactly as many nodes per layer made dead
  (:func:`prunedyn.structure.surgery.silence_nodes`: incoming weights and
  BatchNorm scale and shift zeroed) as the recorded ``swp-l2`` run of seed 0
  left alive at its last epoch (chapters/results/cpu-baselines-*-layers.csv);
  no training needed. Input: CIFAR-size 3x32x32 / the preset's 1x128x128 tiles;
- ``vgg16-w1``: full-width VGG-16 with the death pattern of the recorded
  full-scale run with L2 5e-3 on every parameter (chapters/results/vgg16-full-long*,
  30 epochs, 1.93x FLOP ratio).

Versions, all with the same inference preparation
(:func:`prunedyn.analysis.latency.inference_ready`: eval mode, BatchNorm
folded into the convolutions, channels_last for conv nets; the input is given
in channels_last): ``dense``; ``masked`` (the pruned network, zeros in dense
tensors; for the conv nets the zeroed weights of its dead nodes, so the same
work as ``dense``: its speedup, ideally 1, shows the run's noise);
``sparse_csr`` (MLP: every Linear weight as ``torch.sparse_csr``; conv nets:
not applicable, torch has no sparse convolution on the CPU); ``semi_structured_2:4``
(``torch.sparse.to_sparse_semi_structured``: CUDA only, recorded as not
supported here); ``compact``; ``compact_align8`` and ``compact_align16``
(:func:`prunedyn.structure.surgery.compact` with ``align``). For the conv nets
also ``dense_eager`` and ``compact_eager`` (VGG-16 at width 1/4 only, to keep the
run short): the two networks as they come (NCHW, BatchNorm as a separate
layer), compared with each other, to show what the preparation changes.

Timing: :func:`prunedyn.analysis.latency.compaction_speed_table`: at batch
``--batch`` (default 256; 64 for the U-Net, where one unprepared forward at 256
takes 4 s on one core), ``torch.utils.benchmark.Timer``, round-robin rounds
(every version once per round, so a transient load hits all alike), median;
with ``--threads 1`` (the default) both the wall clock and the thread's CPU
time (``time.thread_time``; far less sensitive to the other processes of a
shared machine). Columns: speedup over dense per clock, ``flop_ratio`` (dense
FLOPs / the unaligned compact network's, counted with
``torch.utils.flop_counter.FlopCounterMode``: what node pruning saves),
``executed_flop_ratio`` (dense FLOPs / the version's own, counted as dense for
a sparse format), speedup / FLOP ratio and ``met`` (>= 0.9).

With ``--write``: benchmarks/results/compaction-speed-cpu.csv (the table) and
compaction-speed-cpu.json (it, the compact widths, the hardware, date,
threads, load average and ``--note``).
"""
import argparse
import copy
import datetime
import os
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from hardware import cpu_name, provenance  # benchmarks/hardware.py (the script's folder is on sys.path)
from prunedyn.analysis.latency import (
    compaction_speed_table,
    inference_ready,
    semi_structured_support,
    to_sparse_csr,
)
from prunedyn.atomic import atomic_write_json, atomic_write_text
from prunedyn.models.registry import build_model
from prunedyn.run.config import load_config
from prunedyn.structure.nodes import node_layers
from prunedyn.structure.surgery import compact, count_flops, silence_nodes

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "chapters" / "results"

#: conv nets rebuilt from a recorded run's death pattern: preset, overrides as in the recorded
#: sweep, input shape, classes, sweep table, how to pick the run; and how to time it: rounds,
#: batch, and whether to time the unprepared (eager) networks too
CONV_MODELS = {
    "vgg16-w0.25": dict(preset="vgg16-cifar10", overrides=["model.width=0.25"], shape=(3, 32, 32), classes=10,
                        sweep="cpu-baselines-vgg16", pick={"label": "swp-l2", "seed": 0},
                        rounds=25, batch=256, eager=True),
    # batch 64: at 256 one eager forward takes 4 s on one core (1.4 s prepared), the U-Net alone
    # would take most of the ten minutes; no eager pair (0.6 s per forward even at 64), more rounds
    "unet-w1/16": dict(preset="unet-dsb2018", overrides=["model.width=0.0625"], shape=(1, 128, 128), classes=3,
                       sweep="cpu-baselines-unet", pick={"label": "swp-l2", "seed": 0},
                       rounds=20, batch=64, eager=False),
    # about 1.5 s per dense forward at batch 256: no eager pair, few rounds
    "vgg16-w1": dict(preset="vgg16-cifar10", overrides=[], shape=(3, 32, 32), classes=10,
                     sweep="vgg16-full-long", pick={"regularizer.kind": "l2", "regularizer.lam": 0.005, "pruner.sigma": 0.002},
                     rounds=4, batch=256, eager=False),
}
MLP = dict(rounds=40, batch=256, eager=False)


def recorded_pattern(sweep: str, pick: dict):
    """(run id, {layer: alive nodes at the last epoch}, recorded FLOP ratio) of the run of ``sweep`` matching ``pick``."""
    runs = pd.read_csv(RESULTS / f"{sweep}.csv")
    for key, value in pick.items():
        runs = runs[runs[key] == value]
    if len(runs) != 1:
        raise ValueError(f"{sweep}: {len(runs)} runs match {pick}, expected 1")
    row = runs.iloc[0]
    layers = pd.read_csv(RESULTS / f"{sweep}-layers.csv")
    layers = layers[layers.run == row.run]
    last = layers[layers.epoch == layers.epoch.max()]
    return row.run, dict(zip(last.layer, last.alive.astype(int))), float(row.flops_dense / row.flops_compact)


def conv_pair(name: str, batch: int):
    """(dense, pruned, input batch, facts) for a conv net of :data:`CONV_MODELS`."""
    spec = CONV_MODELS[name]
    preset, overrides, shape, sweep = spec["preset"], spec["overrides"], spec["shape"], spec["sweep"]
    cfg = load_config(preset, overrides)
    torch.manual_seed(0)
    dense = build_model(cfg.model, shape, spec["classes"]).eval()
    with torch.no_grad():  # trained-looking BatchNorm statistics instead of the identity of a fresh layer
        for m in dense.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
    x = torch.randn(batch, *shape)
    run, alive, recorded_ratio = recorded_pattern(sweep, spec["pick"])
    pruned = copy.deepcopy(dense)
    sizes = {layer.name: layer.size for layer in node_layers(pruned, x[:2])}
    missing = sorted(set(sizes) ^ set(alive))
    if missing:
        raise ValueError(f"{name}: the recorded run {run} and the model disagree on the node layers {missing}")
    silence_nodes(pruned, {k: sizes[k] - alive[k] for k in sizes}, x[:2], torch.Generator().manual_seed(0))
    facts = {"recorded_run": f"{sweep}: {run}", "recorded_alive": alive, "recorded_flop_ratio": recorded_ratio,
             "preset": preset, "overrides": overrides, "input": list(shape)}
    return dense, pruned, x, facts


def mlp_pair(batch: int):
    from prunedyn.data.datasets import load_dataset
    from prunedyn.book.study import load_model, regularizer_comparison

    runs = regularizer_comparison("quick")
    dense, pruned = load_model(runs["dense"]), load_model(runs["l2"])
    x = load_dataset(runs["l2"].config.data).x_test[:batch]
    if len(x) < batch:
        raise ValueError(f"the MNIST test set has {len(x)} digits, fewer than --batch {batch}")
    facts = {"recorded_run": f"runs/{runs['l2'].folder.name} (L2 + SWP), dense runs/{runs['dense'].folder.name}"}
    return dense, pruned, x, facts


def measure(name: str, batch: int, rounds: int, eager: bool):
    dense, pruned, x, facts = mlp_pair(batch) if name == "mlp" else conv_pair(name, batch)
    example = x[:8]
    small, report = compact(pruned, example)
    aligned = {a: compact(pruned, example, align=a) for a in (8, 16)}
    conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in dense.modules())
    prepare = lambda m: inference_ready(m, example)  # noqa: E731 - the same preparation for every version
    versions = {"dense": prepare(dense), "masked": prepare(pruned)}
    if conv:
        versions["sparse_csr"] = "not applicable: torch has no sparse (CSR) convolution on the CPU"
    else:
        versions["sparse_csr"] = to_sparse_csr(prepare(pruned))
    versions["semi_structured_2:4"] = semi_structured_support(x.device) or "supported here, but not measured"
    versions["compact"] = prepare(small)
    for a, (m, _) in aligned.items():
        versions[f"compact_align{a}"] = prepare(m)
    baselines = {}
    if conv and eager:
        versions["dense_eager"], versions["compact_eager"] = dense.eval(), small.eval()
        baselines["compact_eager"] = "dense_eager"
    # FLOPs per input, times the batch (linear in it); a sparse format counted as dense
    per_input = {n: count_flops(m, x[:1]) for n, m in versions.items() if not isinstance(m, str) and n != "sparse_csr"}
    flops = {n: f * batch for n, f in per_input.items()}
    if "sparse_csr" in versions and not isinstance(versions["sparse_csr"], str):
        flops["sparse_csr"] = flops["masked"]
    # every prepared version computes what the pruned network computes
    with torch.inference_mode():
        ref = pruned.eval()(example)
        for n, m in versions.items():
            if not isinstance(m, str) and n not in ("dense", "dense_eager"):
                diff = float((m(example) - ref).abs().max())
                if diff > 1e-3 * max(1.0, float(ref.abs().max())):
                    raise AssertionError(f"{name} {n} disagrees with the pruned network by {diff}")
    x_cl = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
    inputs = {n: x for n in ("dense_eager", "compact_eager")}
    table = compaction_speed_table(
        versions, x_cl, flops, ideal_flops=per_input["compact"] * batch, rounds=rounds, inputs=inputs,
        baseline_of=baselines,
    )
    table.insert(0, "model", name)
    facts.update({
        "widths_before": report.widths_before,
        "widths_compact": report.widths_after,
        **{f"widths_align{a}": rep.widths_after for a, (_, rep) in aligned.items()},
        "compact_max_abs_diff": report.max_abs_diff,
        "rounds": rounds,
    })
    return table, facts


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["mlp", "vgg16-w0.25", "unet-w1/16", "vgg16-w1"],
                        choices=["mlp", *CONV_MODELS])
    parser.add_argument("--batch", type=int, default=None,
                        help="batch for every model (default: 256, the U-Net 64)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds-scale", type=float, default=1.0,
                        help="multiply every model's round-robin rounds (mlp 40, vgg16-w0.25 25, unet 20, vgg16-w1 4)")
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    tic = time.perf_counter()
    print(f"# {cpu_name()}, torch {torch.__version__}, {args.threads} thread(s);"
          f" speedup / FLOP ratio target >= 0.9 for compact")
    tables, facts = [], {}
    for name in args.models:
        spec = MLP if name == "mlp" else CONV_MODELS[name]
        rounds = max(1, round(args.rounds_scale * spec["rounds"]))
        batch = args.batch or spec["batch"]
        t0 = time.perf_counter()
        table, fact = measure(name, batch, rounds, spec["eager"])
        fact["seconds"] = time.perf_counter() - t0
        tables.append(table)
        facts[name] = fact
        print(f"\n## {name}, batch {batch} ({fact['recorded_run']}; {rounds} rounds, {fact['seconds']:.0f} s)")
        print(f"# widths before {list(fact['widths_before'].values())}")
        print(f"# compact       {list(fact['widths_compact'].values())}")
        print(f"# align 16      {list(fact['widths_align16'].values())}")
        show = table.drop(columns=["model", "batch", "flops"]).astype(object).where(table.notna(), "")
        print(show.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    table = pd.concat(tables, ignore_index=True)
    clocks = [c[3:] for c in table.columns if c.startswith("ms_")]
    print("\n# compact vs dense (speedup / FLOP ratio; target >= 0.9)")
    headline = {}
    for name in args.models:
        for version in ("compact", "compact_align8", "compact_align16", "compact_eager"):
            row = table[(table.model == name) & (table.version == version)]
            if row.empty:
                continue
            row = row.iloc[0]
            headline.setdefault(name, {})[version] = {
                c: {"speedup": float(row[f"speedup_{c}"]), "flop_ratio": float(row.flop_ratio),
                    "speedup_over_flop_ratio": float(row[f"speedup_over_flop_ratio_{c}"]),
                    "met": bool(row[f"met_{c}"])} for c in clocks}
            print(f"# {name:12s} batch {row.batch:3d} {version:16s} " + "  ".join(
                f"{c}: {row[f'speedup_{c}']:.2f}x / {row.flop_ratio:.2f} = {row[f'speedup_over_flop_ratio_{c}']:.3f}"
                f" ({'met' if row[f'met_{c}'] else 'NOT met'})" for c in clocks))
    load_after = os.getloadavg()
    print(f"# load average {load_before[0]:.1f} before, {load_after[0]:.1f} after; {time.perf_counter() - tic:.0f} s in all;"
          f" on a shared machine trust the cpu clock (one thread's CPU time) over the wall clock")
    if args.write:
        out = Path(__file__).parent / "results"
        atomic_write_text(out / "compaction-speed-cpu.csv", table.to_csv(index=False, float_format="%.6g"))
        atomic_write_json(out / "compaction-speed-cpu.json", {
            **provenance(started, args.threads, load_before, load_after, args.note),
            "batch": {name: int(table[table.model == name].batch.iloc[0]) for name in args.models},
            "seconds": time.perf_counter() - tic,
            "target_speedup_over_flop_ratio": 0.9,
            "preparation": "inference_ready: eval, BatchNorm folded, channels_last (conv nets); *_eager: as built",
            "compact_batch": headline,
            "models": facts,
            "table": table.to_dict(orient="records"),
        })


if __name__ == "__main__":
    main()
