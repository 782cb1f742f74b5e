"""How long the quick-profile book takes from a cold start, measured in one run.

    .venv/bin/python benchmarks/book_time.py [--warm]

Re-executes every chapter with papermill (in place, as `make book` does) with
an empty run cache (a temporary PRUNEDYN_RUNS) so every experiment is
trained, then builds the HTML, with the chapters executed as ``prunedyn book``
does (one per core at once, the longest first). Prints seconds per chapter, the
wall-clock total, and its ratio to the 30-minute budget of a cold two-core build
(the install, which `make book` adds, is not counted). ``--warm`` keeps the
repository's runs/ cache. Writes benchmarks/results/book-time.json, whose
``chapters_seconds`` also order a fresh clone's chapters (prunedyn.book.build).
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
    from prunedyn.book.build import main

    report = main("quick", execute=True)
budget = 30 * 60
report.update(
    cache="warm" if args.warm else "cold",
    budget_seconds=budget,
    fraction_of_budget=round(report["wall_seconds"] / budget, 3),
    machine=f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
)
print(f"wall clock {report['wall_seconds']:.0f} s = {report['fraction_of_budget']:.2f} of the 30-minute budget ({report['cache']} cache)")
out = Path(__file__).parent / "results" / "book-time.json"
out.parent.mkdir(exist_ok=True)
out.write_text(json.dumps(report, indent=2) + "\n")
