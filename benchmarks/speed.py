"""CPU inference speed of node pruning against unstructured sparsity, measured in one run.

    .venv/bin/python benchmarks/speed.py [--reps 200] [--threads 1] [--write] [--note "..."]

Trains (or reuses, from runs/) the book's L2 + SWP MLP and its dense
baseline, then prints, for batch 1 and 256, the latency of the dense, masked,
sparse-CSR and compact networks, their speedup over dense, and the speedup as
a fraction of the FLOP ratio ("measured speedup / FLOP ratio"; target: at
least 0.9 for compact at batch 256).

Where the target is missed, the breakdown that follows says why: each
Linear layer of the dense and the compact network timed alone on its own
input at batch 256 (``addmm``: matrix product and bias; ``mm``: the product
alone; ``mm_out_pad16``: the compact layer's product with its output width
padded to a multiple of 16), round-robin, with the thread's CPU time when ``--threads 1`` (less
sensitive to other processes on a shared machine) and the wall clock; the
rest of a forward pass (ReLU, flatten, module calls) is the forward time
minus the layers'. A layer's speedup below its FLOP ratio, and a fixed cost
that does not shrink with the widths, are the two ways to fall short. The table also
has ``compact_align16``: the compact network with its widths rounded up to multiples
of 16 (``compact(..., align=16)``), which removes the first (benchmarks/compaction_speed.py
compares the alignments and the conv nets).

With ``--write``: benchmarks/results/speed-mlp.csv (the table),
speed-mlp-layers.csv (the breakdown) and speed-mlp.json (both, with the
hardware, date, threads, load average and ``--note``).
"""
import argparse
import datetime
import os
import statistics
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.benchmark import Timer

from prunedyn.analysis.latency import speed_table
from hardware import cpu_name, provenance  # benchmarks/hardware.py (the script's folder is on sys.path)
from prunedyn.atomic import atomic_write_json, atomic_write_text
from prunedyn.data.datasets import load_dataset
from prunedyn.book.study import load_model, regularizer_comparison
from prunedyn.structure.surgery import compact


def linear_inputs(model: nn.Module, x: torch.Tensor):
    """(name, layer, its input) for every Linear of ``model`` on ``x``."""
    seen = []
    hooks = [m.register_forward_pre_hook(lambda m, a, name=n: seen.append((name, m, a[0].detach().clone())))
             for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    with torch.inference_mode():
        model(x)
    for h in hooks:
        h.remove()
    return seen


@torch.inference_mode()
def layer_breakdown(dense: nn.Module, small: nn.Module, x: torch.Tensor, rounds: int, clock) -> pd.DataFrame:
    """Per Linear layer of both networks: ms of addmm and mm, round-robin; plus each whole forward."""
    stmts = {}
    for version, model in (("dense", dense), ("compact", small)):
        model.eval()
        stmts[(version, "forward", "forward")] = Timer("model(x)", globals={"model": model, "x": x}, timer=clock)
        for name, layer, inp in linear_inputs(model, x):
            g = {"F": F, "x": inp, "w": layer.weight.detach(), "b": layer.bias.detach(), "torch": torch}
            stmts[(version, name, "addmm")] = Timer("F.linear(x, w, b)", globals=g, timer=clock)
            stmts[(version, name, "mm")] = Timer("torch.mm(x, w.t())", globals=g, timer=clock)
            stmts[(version, name, "shape")] = (tuple(inp.shape), tuple(layer.weight.shape))
            out = layer.weight.shape[0]
            if version == "compact" and out % 16:
                # the same product with the output width rounded up to a multiple of 16 (zero rows):
                # does the width's alignment, not its FLOPs, set the time?
                pad = torch.zeros(-out % 16, layer.weight.shape[1])
                g16 = {"x": inp, "w": torch.cat([layer.weight.detach(), pad]), "torch": torch}
                stmts[(version, name, "mm_out_pad16")] = Timer("torch.mm(x, w.t())", globals=g16, timer=clock)
                stmts[(version, name, "shape_pad16")] = (tuple(inp.shape), tuple(g16["w"].shape))
    number = {}
    for key, t in stmts.items():
        if isinstance(t, Timer):
            number[key] = max(1, int(0.01 / max(t.timeit(3).median, 1e-7)))
    samples = {key: [] for key in number}
    for _ in range(rounds):
        for key in number:
            samples[key].append(stmts[key].timeit(number[key]).median)
    med = {key: statistics.median(v) for key, v in samples.items()}
    rows = []
    for (version, name, kind), sec in med.items():
        if kind == "forward":
            continue
        (batch, n_in), (n_out, _) = stmts[(version, name, "shape_pad16" if kind == "mm_out_pad16" else "shape")]
        rows.append({"version": version, "layer": name, "op": kind, "batch": batch, "in": n_in, "out": n_out,
                     "mflop": 2 * batch * n_in * n_out / 1e6, "ms": 1e3 * sec})
    table = pd.DataFrame(rows)
    fwd = {v: med[(v, "forward", "forward")] for v in ("dense", "compact")}
    for v in ("dense", "compact"):
        layers_ms = table[(table.version == v) & (table.op == "addmm")].ms.sum()
        rows.append({"version": v, "layer": "forward", "op": "forward", "batch": x.shape[0], "mflop": table[(table.version == v) & (table.op == "mm")].mflop.sum(),
                     "ms": 1e3 * fwd[v]})
        rows.append({"version": v, "layer": "rest", "op": "forward - layers", "batch": x.shape[0], "mflop": 0.0,
                     "ms": 1e3 * fwd[v] - layers_ms})
    table = pd.DataFrame(rows)
    table["gflops"] = table.mflop / table.ms
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=30, help="round-robin rounds of the per-layer breakdown")
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)

    runs = regularizer_comparison("quick")
    dense, pruned = load_model(runs["dense"]), load_model(runs["l2"])
    x = load_dataset(runs["l2"].config.data).x_test[:256]
    table = speed_table(dense, pruned, x, reps=args.reps, aligns=(16,))
    header = f"# {cpu_name()}, torch {torch.__version__}, {args.threads} thread(s), median of {args.reps}"
    print(header)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    row = table[(table.version == "compact") & (table.batch == 256)].iloc[0]
    ratio = row.speedup / row.flop_ratio
    print(f"\n# compact vs dense, batch 256, wall clock (the table): measured speedup {row.speedup:.3f}"
          f" / FLOP ratio {row.flop_ratio:.3f} = {ratio:.3f} (target >= 0.9: {'met' if ratio >= 0.9 else 'NOT met'})")
    row16 = table[(table.version == "compact_align16") & (table.batch == 256)].iloc[0]
    ratio16 = row16.speedup / row.flop_ratio  # against what pruning saves, not the padded network's own FLOPs
    print(f"# compact with widths aligned to 16 (benchmarks/compaction_speed.py): measured speedup {row16.speedup:.3f}"
          f" / FLOP ratio {row.flop_ratio:.3f} = {ratio16:.3f} (target >= 0.9: {'met' if ratio16 >= 0.9 else 'NOT met'})")

    small, _ = compact(pruned, x[:8])
    clocks = {"wall": time.perf_counter}
    if args.threads == 1:
        clocks["cpu"] = time.thread_time
    parts = []
    for clock_name, clock in clocks.items():
        part = layer_breakdown(dense, small, x[:256], args.rounds, clock)
        part.insert(0, "clock", clock_name)
        parts.append(part)
    layers = pd.concat(parts, ignore_index=True)
    print("\n# per layer at batch 256 (median of round-robin rounds)")
    print(layers.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    summary = {}
    for clock_name in clocks:
        t = layers[layers.clock == clock_name].set_index(["version", "layer", "op"]).ms
        fwd_ratio = t[("dense", "forward", "forward")] / t[("compact", "forward", "forward")]
        mm = {v: layers[(layers.clock == clock_name) & (layers.version == v) & (layers.op == "mm")].ms.sum() for v in ("dense", "compact")}
        addmm = {v: layers[(layers.clock == clock_name) & (layers.version == v) & (layers.op == "addmm")].ms.sum() for v in ("dense", "compact")}
        summary[clock_name] = {
            "forward_speedup_over_flop_ratio": fwd_ratio / row.flop_ratio,
            "addmm_speedup_over_flop_ratio": addmm["dense"] / addmm["compact"] / row.flop_ratio,
            "mm_speedup_over_flop_ratio": mm["dense"] / mm["compact"] / row.flop_ratio,
            "rest_ms_dense": float(t[("dense", "rest", "forward - layers")]),
            "rest_ms_compact": float(t[("compact", "rest", "forward - layers")]),
        }
        print(f"# {clock_name} clock: forward {summary[clock_name]['forward_speedup_over_flop_ratio']:.3f},"
              f" the layers' addmm alone {summary[clock_name]['addmm_speedup_over_flop_ratio']:.3f},"
              f" mm alone {summary[clock_name]['mm_speedup_over_flop_ratio']:.3f} of the FLOP ratio;"
              f" the rest of a forward {summary[clock_name]['rest_ms_dense']:.3f} ms dense,"
              f" {summary[clock_name]['rest_ms_compact']:.3f} ms compact")
    headline = {"wall_table": {"speedup": float(row.speedup), "flop_ratio": float(row.flop_ratio),
                               "speedup_over_flop_ratio": float(ratio), "met": bool(ratio >= 0.9)}}
    for clock_name in clocks:
        r = summary[clock_name]["forward_speedup_over_flop_ratio"]
        headline[f"{clock_name}_breakdown_forward"] = {"speedup": float(r * row.flop_ratio), "flop_ratio": float(row.flop_ratio),
                                                       "speedup_over_flop_ratio": float(r), "met": bool(r >= 0.9)}
        print(f"# compact vs dense, batch 256, {clock_name} clock (round-robin forwards of the breakdown):"
              f" measured speedup {r * row.flop_ratio:.3f} / FLOP ratio {row.flop_ratio:.3f} = {r:.3f}"
              f" (target >= 0.9: {'met' if r >= 0.9 else 'NOT met'})")
    load_after = os.getloadavg()
    print(f"# load average {load_before[0]:.1f} before, {load_after[0]:.1f} after; on a shared machine trust the"
          f" cpu clock (one thread's CPU time) over the wall clock")

    if args.write:
        out = Path(__file__).parent / "results"
        atomic_write_text(out / "speed-mlp.csv", table.to_csv(index=False, float_format="%.6g"))
        atomic_write_text(out / "speed-mlp-layers.csv", layers.to_csv(index=False, float_format="%.6g"))
        atomic_write_json(out / "speed-mlp.json", {
            **provenance(started, args.threads, load_before, load_after, args.note),
            "reps": args.reps,
            "rounds": args.rounds,
            "target_speedup_over_flop_ratio": 0.9,
            "compact_batch256": headline,
            "breakdown": summary,
            "table": table.to_dict(orient="records"),
            "layers": layers.to_dict(orient="records"),
        })


if __name__ == "__main__":
    main()
