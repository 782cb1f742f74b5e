"""How long the quick-profile book takes from a cold start, measured in one run.

    .venv/bin/python benchmarks/book_time.py [--warm]

Re-executes every chapter with papermill (in place, as `make book` does) with
an empty run cache (a temporary PRUNEDYN_RUNS) so every experiment is
trained, then builds the HTML. Prints seconds per chapter, the total, and its
ratio to the 15-minute budget. ``--warm`` keeps the repository's runs/ cache.
Writes benchmarks/results/book-time.json.
"""
import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import torch

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--warm", action="store_true", help="reuse runs/ instead of a cold cache")
args = parser.parse_args()

with tempfile.TemporaryDirectory(prefix="prunedyn-runs-") as cache:
    if not args.warm:
        os.environ["PRUNEDYN_RUNS"] = cache  # inherited by the papermill kernels
    from prunedyn.run.book import main

    report = main("quick", execute=True)
budget = 15 * 60
report.update(
    cache="warm" if args.warm else "cold",
    budget_seconds=budget,
    fraction_of_budget=round(report["total_seconds"] / budget, 3),
    machine=f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
)
print(f"total {report['total_seconds']:.0f} s = {report['fraction_of_budget']:.2f} of the 15-minute budget ({report['cache']} cache)")
out = Path(__file__).parent / "results" / "book-time.json"
out.parent.mkdir(exist_ok=True)
out.write_text(json.dumps(report, indent=2) + "\n")
