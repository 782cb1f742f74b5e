"""CPU inference speed of node pruning against unstructured sparsity, measured in one run.

    .venv/bin/python benchmarks/speed.py [--reps 200] [--threads 1]

Trains (or reuses, from runs/) the book's L2 + SWP MLP and its dense
baseline, then prints, for batch 1 and 256, the latency of the dense, masked,
sparse-CSR and compact networks, their speedup over dense, and the speedup as
a fraction of the FLOP ratio. Writes benchmarks/results/speed-mlp.csv.
"""
import argparse
import platform
from pathlib import Path

import torch

from prunedyn.data.datasets import load_dataset
from prunedyn.analysis.latency import speed_table
from prunedyn.atomic import atomic_write_text
from prunedyn.run.study import load_model, regularizer_comparison

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--reps", type=int, default=200)
parser.add_argument("--threads", type=int, default=torch.get_num_threads())
args = parser.parse_args()
torch.set_num_threads(args.threads)
torch.set_flush_denormal(True)

runs = regularizer_comparison("quick")
dense, pruned = load_model(runs["dense"]), load_model(runs["l2"])
x = load_dataset(runs["l2"].config.data).x_test[:256]
table = speed_table(dense, pruned, x, reps=args.reps)
print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), median of {args.reps}")
print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
out = Path(__file__).parent / "results" / "speed-mlp.csv"
atomic_write_text(out, table.to_csv(index=False, float_format="%.6g"))
