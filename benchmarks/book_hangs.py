"""Repeated executions of the chapters with live widgets, from the run cache: does any hang?

    .venv/bin/python benchmarks/book_hangs.py [--repeat 20] [--chapters 01 03]

Executes each chosen chapter ``--repeat`` times in a row, as ``make book`` does
(papermill, headless kernels, the lost-reply watchdog of prunedyn.book.build),
on a copy of the notebook so the committed one is not touched, with the runs
the chapters need already cached (run ``make book`` first). Records each
execution's seconds and every lost reply the watchdog caught. Writes
benchmarks/results/book-hangs.json.
"""
import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from hardware import provenance

from prunedyn.book import build as book
from prunedyn.book.study import repo_root

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--repeat", type=int, default=20)
parser.add_argument("--chapters", nargs="+", default=["01", "03"])
args = parser.parse_args()

root = repo_root()
started, load_before = dt.datetime.now(dt.timezone.utc), os.getloadavg()
rows = []
for prefix in args.chapters:
    (nb,) = [p for p in book.chapter_notebooks(root) if p.name.startswith(prefix)]
    for i in range(args.repeat):
        with tempfile.NamedTemporaryFile(suffix=".ipynb", dir=nb.parent, prefix=".hang-") as tmp:
            shutil.copy(nb, tmp.name)
            lost = len(book.LOST_REPLIES)
            tic = time.perf_counter()
            book.execute_notebook(Path(tmp.name), {}, retries=0)
            rows.append({"chapter": nb.stem, "execution": i + 1, "seconds": round(time.perf_counter() - tic, 1),
                         "lost_replies": len(book.LOST_REPLIES) - lost})
        print(rows[-1], file=sys.stderr, flush=True)
report = provenance(started, 1, load_before, os.getloadavg(),
                    "executions of the widget chapters from a warm run cache; a hang would stop the script")
report.update(repeat=args.repeat, executions=rows, lost_replies=sum(r["lost_replies"] for r in rows))
out = Path(__file__).parent / "results" / "book-hangs.json"
out.write_text(json.dumps(report, indent=2) + "\n")
print(json.dumps({k: v for k, v in report.items() if k != "executions"}, indent=2))
