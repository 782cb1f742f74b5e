"""Build the book: re-execute every chapter with papermill, then render HTML.

``prunedyn book`` (the README's book command, through ``make book``):

1. executes each notebook listed in ``_toc.yml`` in place with papermill
   (cwd = its folder; ``profile`` parameter), stopping at the first error;
   a cell that runs longer than :data:`CELL_TIMEOUT` seconds fails its
   execution, which is retried once with a fresh kernel. This is a safety
   net, not the fix: under ipykernel 7 papermill's client waited forever for
   the reply to widget cells its kernel had finished (requirements.txt pins
   ipykernel 6 for that); should such a hang recur, the build fails or
   recovers instead of stalling, and the retry is cheap because the runs a
   chapter trained before it are cached;
2. strips papermill's and nbclient's timing metadata so the committed
   notebooks change only when their results change;
3. runs ``jupyter-book build`` with execution turned off in ``_config.yml``
   and ``-W --keep-going``, so any notebook error or Sphinx warning fails
   the build;
4. writes the per-chapter execution times to ``_build/timings.json``.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import yaml

from prunedyn.atomic import atomic_write_json
from prunedyn.run.study import check_profile, repo_root

DEFAULT_PROFILE = "quick"
#: Seconds a cell may run in the book build (the longest, chapter 6's live VGG-16 runs, take about
#: 15 minutes on a 2-core CPU); beyond it the chapter's execution fails and is retried once.
CELL_TIMEOUT = 2700


def chapter_notebooks(root: Path) -> List[Path]:
    """The ``.ipynb`` files listed in ``_toc.yml``, in book order."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files: List[str] = []

    def walk(node):
        if isinstance(node, dict):
            for key in ("root", "file"):
                if key in node:
                    files.append(node[key])
            for value in node.values():
                if isinstance(value, (list, dict)):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return [root / f"{f}.ipynb" for f in files if (root / f"{f}.ipynb").exists()]


def strip_timing(path: Path) -> None:
    """Remove papermill / nbclient timing metadata and stale injected-parameter cells."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)


def _drop_injected(path: Path) -> None:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    if len(cells) != len(nb.cells):
        nb.cells = cells
        nbformat.write(nb, path)


def execute_notebook(nb: Path, params: dict, timeout: float = CELL_TIMEOUT, retries: int = 1) -> None:
    """Execute ``nb`` in place (cwd: its folder); a cell over ``timeout`` seconds fails the
    attempt, which is repeated up to ``retries`` times. Errors raised by a cell fail at once."""
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError

    for attempt in range(retries + 1):
        try:
            pm.execute_notebook(str(nb), str(nb), parameters=params, cwd=str(nb.parent), kernel_name="python3",
                                progress_bar=False, execution_timeout=timeout)
            return
        except CellTimeoutError:
            if attempt == retries:
                raise
            _drop_injected(nb)
            print(f"{nb.name}: a cell ran over {timeout:g} s; executing the chapter again (attempt {attempt + 2})",
                  file=sys.stderr, flush=True)


def execute_chapters(root: Path, profile: str = DEFAULT_PROFILE, only: Optional[List[str]] = None) -> Dict[str, float]:
    """Execute the chapters in place; returns seconds per chapter."""
    check_profile(profile)
    timings: Dict[str, float] = {}
    for nb in chapter_notebooks(root):
        if only and not any(s in nb.name for s in only):
            continue
        _drop_injected(nb)
        params = {} if profile == DEFAULT_PROFILE else {"profile": profile}
        print(f"executing {nb.relative_to(root)} (profile {profile})", file=sys.stderr, flush=True)
        tic = time.perf_counter()
        execute_notebook(nb, params)
        timings[str(nb.relative_to(root))] = round(time.perf_counter() - tic, 1)
        strip_timing(nb)
    return timings


def build_html(root: Path) -> None:
    """``jupyter-book build`` with warnings as errors; raises CalledProcessError on failure."""
    jb = Path(sys.executable).with_name("jupyter-book")
    subprocess.run([str(jb), "build", str(root), "--warningiserror", "--keep-going"], check=True)


def main(profile: str = DEFAULT_PROFILE, execute: bool = True, only: Optional[List[str]] = None) -> Dict[str, float]:
    root = repo_root()
    timings = execute_chapters(root, profile, only) if execute else {}
    tic = time.perf_counter()
    build_html(root)
    report = {"profile": profile, "chapters_seconds": timings, "html_seconds": round(time.perf_counter() - tic, 1)}
    report["total_seconds"] = round(sum(timings.values()) + report["html_seconds"], 1)
    atomic_write_json(root / "_build" / "timings.json", report)
    print(json.dumps(report, indent=2))
    return report
