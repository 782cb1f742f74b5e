"""Build the book: re-execute every chapter with papermill, then render HTML.

``prunedyn book`` (the README's book command, through ``make book``) builds the
checkout it is run from (see :func:`prunedyn.book.study.repo_root`):

1. executes each notebook listed in ``_toc.yml`` in place with papermill
   (cwd = its folder; ``profile`` parameter), one chapter per CPU core at once
   (``--jobs``, :func:`execute_chapters`), stopping at the first error.
   The kernels run headless (``PRUNEDYN_HEADLESS=1``: widgets get a comm that
   sends nothing, see ``chapters/_book.py``) and log their claim checks to
   ``_build/checks/<chapter>.jsonl`` (``PRUNEDYN_CHECKS_LOG``). A failed claim
   check is shown on its page and summarised at the end; it aborts nothing
   (``PRUNEDYN_STRICT=0``, set unless the caller set it: ``PRUNEDYN_STRICT=1``
   makes the build fail on it, as the test command does).
   Two guards against a stalled kernel conversation: the kernel went idle
   but its execute reply did not come within :data:`REPLY_GRACE` seconds (a
   lost reply, jupyter/nbclient#312): the cell is finished from its IOPub
   outputs, with a warning; a cell that runs longer than
   :data:`CELL_TIMEOUT` seconds fails its execution, which is retried once
   with a fresh kernel (the runs a chapter trained before are cached);
2. strips papermill's and nbclient's timing metadata so the committed
   notebooks change only when their results change;
3. runs ``jupyter-book build`` with execution turned off in ``_config.yml``
   and ``-W --keep-going``, so any notebook error or Sphinx warning fails
   the build;
4. writes the per-chapter execution times and the claim checks' tally to
   ``_build/timings.json`` and prints the checks that did not hold.
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import yaml

from prunedyn.atomic import atomic_write_json
from prunedyn.book.study import check_profile, repo_root, usable_cores

DEFAULT_PROFILE = "quick"
#: Seconds a cell may run in the book build (the longest, chapter 6's live VGG-16 runs, take about
#: 15 minutes on a 2-core CPU); beyond it the chapter's execution fails and is retried once.
CELL_TIMEOUT = 2700
#: Seconds to wait for a cell's execute reply once the kernel has reported idle for it (it normally
#: follows within milliseconds); after that the reply is taken as lost.
REPLY_GRACE = 60.0
#: Most chapters executed at once by default (each kernel holds its data and models in memory).
MAX_JOBS = 4
#: Every lost reply the watchdog detected in this process: (cell id, seconds waited).
LOST_REPLIES: List[Tuple[str, float]] = []


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
    """Remove papermill / nbclient timing metadata, stale widget state and injected-parameter cells."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("papermill", None)
    nb.metadata.pop("widgets", None)  # headless kernels send no widget state: any left is stale
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


class LostReplyWatchdog:
    """Mixin for an nbclient ``NotebookClient``: a cell whose kernel went idle (IOPub) but whose execute
    reply (shell) has not come :attr:`reply_grace` seconds later is finished from its outputs.

    The reply normally follows the idle status within milliseconds; a lost one left papermill's
    client waiting for the whole cell timeout (jupyter/nbclient#312)."""

    reply_grace: float = REPLY_GRACE

    async def _async_poll_for_reply(self, msg_id, cell, timeout, task_poll_output_msg, task_poll_kernel_alive):
        reply = asyncio.ensure_future(super()._async_poll_for_reply(
            msg_id, cell, timeout, task_poll_output_msg, task_poll_kernel_alive))
        # the reply, or the kernel's idle status (all outputs are in) and then a grace period
        await asyncio.wait({reply, task_poll_output_msg}, return_when=asyncio.FIRST_COMPLETED)
        if reply.done() or task_poll_output_msg.cancelled() or task_poll_output_msg.exception():
            return await reply
        done, _ = await asyncio.wait({reply}, timeout=self.reply_grace)
        if done:
            return await reply
        reply.cancel()
        task_poll_kernel_alive.cancel()
        LOST_REPLIES.append((str(cell.get("id", "?")), self.reply_grace))
        print(f"the kernel went idle but its execute reply did not come within {self.reply_grace:g} s "
              f"(a lost reply); the cell is finished from its outputs", file=sys.stderr, flush=True)
        return lost_reply(msg_id, cell)


def _client_class():
    from papermill.clientwrap import PapermillNotebookClient

    class Client(LostReplyWatchdog, PapermillNotebookClient):
        """papermill's notebook client with the lost-reply watchdog."""

    return Client


def lost_reply(msg_id: str, cell) -> dict:
    """An execute reply rebuilt from a finished cell's outputs: its error output, if any, else ok."""
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    content = {"status": "ok", "execution_count": cell.get("execution_count")}
    if errors:
        e = errors[-1]
        content.update(status="error", ename=e.get("ename", ""), evalue=e.get("evalue", ""),
                       traceback=e.get("traceback", []))
    return {"parent_header": {"msg_id": msg_id}, "content": content, "header": {"msg_type": "execute_reply"},
            "metadata": {}}


def _register_engine() -> str:
    from papermill.engines import NBClientEngine, papermill_engines
    from papermill.log import logger
    from papermill.utils import remove_args

    client = _client_class()

    class Engine(NBClientEngine):
        """papermill's nbclient engine (``NBClientEngine``) with the watchdog client."""

        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None,
                                     stderr_file=None, start_timeout=60, execution_timeout=None, **kwargs):
            kwargs = remove_args(["input_path", "timeout", "startup_timeout"], **kwargs)
            return client(nb_man, timeout=execution_timeout, startup_timeout=start_timeout, kernel_name=kernel_name,
                          log=logger, log_output=log_output, stdout_file=stdout_file, stderr_file=stderr_file,
                          **kwargs).execute()

    papermill_engines.register("prunedyn", Engine)
    return "prunedyn"


@contextmanager
def environment(values: Dict[str, str]):
    """``os.environ`` with ``values`` set inside the block (a kernel started there inherits them),
    as it was after."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


#: Seconds a chapter's kernel may take to start (papermill's 60 were too few on a busy machine).
KERNEL_START_TIMEOUT = 180


def execute_notebook(nb: Path, params: dict, timeout: float = CELL_TIMEOUT, retries: int = 1,
                     start_timeout: float = KERNEL_START_TIMEOUT) -> None:
    """Execute ``nb`` in place (cwd: its folder), headless; a cell over ``timeout`` seconds, or a
    kernel that does not start within ``start_timeout``, fails the attempt, which is repeated up to
    ``retries`` times. Errors raised by a cell fail at once."""
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError

    engine = _register_engine()
    # inherited by the kernel: widgets send no comm messages; a failed claim check is shown, not
    # raised (unless the caller set PRUNEDYN_STRICT)
    kernel_env = {"PRUNEDYN_HEADLESS": "1", "PRUNEDYN_STRICT": os.environ.get("PRUNEDYN_STRICT", "0")}
    for attempt in range(retries + 1):
        try:
            with environment(kernel_env):
                pm.execute_notebook(str(nb), str(nb), parameters=params, cwd=str(nb.parent), kernel_name="python3",
                                    progress_bar=False, execution_timeout=timeout, start_timeout=start_timeout,
                                    engine_name=engine)
            return
        except (CellTimeoutError, RuntimeError) as e:
            # a kernel that failed to start, in jupyter_client's words (it died first, e.g. on a ZMQ
            # port another kernel took between the pick and the bind, or it did not answer in time)
            unstarted = str(e).startswith(("Kernel didn't respond", "Kernel died before"))
            if attempt == retries or not (isinstance(e, CellTimeoutError) or unstarted):
                raise
            _drop_injected(nb)
            why = f"a cell ran over {timeout:g} s" if isinstance(e, CellTimeoutError) else f"its kernel did not start ({e})"
            print(f"{nb.name}: {why}; executing the chapter again (attempt {attempt + 2})", file=sys.stderr, flush=True)


def default_jobs() -> int:
    """Chapters executed at once by default: one per CPU core this process may use, at most
    :data:`MAX_JOBS` (each chapter's kernel holds its data and models in memory)."""
    return max(1, min(usable_cores(), MAX_JOBS))


def execute_chapter(root: Path, nb: Path, profile: str = DEFAULT_PROFILE) -> None:
    """Execute one chapter in place (its checks logged to :func:`checks_log`), then strip its timing
    metadata."""
    _drop_injected(nb)
    params = {} if profile == DEFAULT_PROFILE else {"profile": profile}
    log = checks_log(root, nb)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    with environment({"PRUNEDYN_CHECKS_LOG": str(log)}):
        execute_notebook(nb, params)
    strip_timing(nb)


#: Where the repository records a build's seconds per chapter (the README's build-time table).
RECORDED_TIMES = Path("benchmarks") / "results" / "book-time.json"


def _book_order(root: Path, nbs: List[Path]) -> List[Path]:
    """The longest chapters first, so that parallel execution ends sooner: by the seconds of the
    last build here (``_build/timings.json``), else by the recorded ones (:data:`RECORDED_TIMES`);
    book order where neither has them."""
    for source in (root / "_build" / "timings.json", root / RECORDED_TIMES):
        try:
            last = json.loads(source.read_text())["chapters_seconds"]
            break
        except (OSError, ValueError, KeyError, TypeError):
            continue
    else:
        return list(nbs)
    return sorted(nbs, key=lambda nb: -float(last.get(str(nb.relative_to(root)), 0) or 0))


class ChapterFailed(RuntimeError):
    """A chapter's execution failed (its error was printed by the process that executed it)."""


def execute_chapters(root: Path, profile: str = DEFAULT_PROFILE, only: Optional[List[str]] = None,
                     jobs: Optional[int] = None) -> Dict[str, float]:
    """Execute the chapters in place, ``jobs`` at a time (default :func:`default_jobs`); returns
    seconds per chapter, in book order.

    With ``jobs`` > 1 each chapter runs in its own process (its own kernel), with
    ``OMP_NUM_THREADS`` = cores // jobs unless the caller set it; the chapters train their live runs
    at one thread either way, so the numbers are the same as a one-at-a-time build on this CPU. Runs
    two chapters share are trained once (the second waits on the run folder's lock, then reads the
    cache). On the first failure the chapters still running are stopped and no other is started."""
    check_profile(profile)
    nbs = [nb for nb in chapter_notebooks(root) if not only or any(s in nb.name for s in only)]
    jobs = default_jobs() if jobs is None else max(1, int(jobs))
    timings: Dict[str, float] = {}
    if jobs == 1 or len(nbs) <= 1:
        for nb in nbs:
            print(f"executing {nb.relative_to(root)} (profile {profile})", file=sys.stderr, flush=True)
            tic = time.perf_counter()
            execute_chapter(root, nb, profile)
            timings[str(nb.relative_to(root))] = round(time.perf_counter() - tic, 1)
        return timings
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, usable_cores() // jobs))  # the cores jobs was counted from
    queue = _book_order(root, nbs)
    running: Dict[subprocess.Popen, Tuple[Path, float]] = {}
    try:
        while queue or running:
            while queue and len(running) < jobs:
                nb = queue.pop(0)
                print(f"executing {nb.relative_to(root)} (profile {profile}; {len(running) + 1} of {jobs} at once)",
                      file=sys.stderr, flush=True)
                proc = subprocess.Popen([sys.executable, "-m", "prunedyn.book.build", str(root), str(nb), profile],
                                        cwd=str(root), env=env)
                running[proc] = (nb, time.perf_counter())
            time.sleep(0.5)
            for proc in [p for p in running if p.poll() is not None]:
                nb, tic = running.pop(proc)
                if proc.returncode != 0:
                    raise ChapterFailed(f"{nb.relative_to(root)}: execution failed (exit {proc.returncode}; "
                                        f"its error is printed above)")
                timings[str(nb.relative_to(root))] = round(time.perf_counter() - tic, 1)
                print(f"executed {nb.relative_to(root)} in {timings[str(nb.relative_to(root))]:.0f} s "
                      f"({len(timings)} of {len(nbs)})", file=sys.stderr, flush=True)
    finally:
        for proc in running:  # a failure, or an interrupt: stop the others (their kernels follow them)
            proc.terminate()
        for proc in running:
            proc.wait()
    return {str(nb.relative_to(root)): timings[str(nb.relative_to(root))] for nb in nbs}


def checks_log(root: Path, nb: Path) -> Path:
    """Where a chapter's kernel logs its claim checks (one JSON line each, see chapters/_book.py)."""
    return Path(root).resolve() / "_build" / "checks" / f"{nb.stem}.jsonl"  # the kernel runs in chapters/


def read_checks(root: Path) -> Dict[str, List[dict]]:
    """Per chapter (book order) with a checks log: its checks, one dict each (see chapters/_book.py)."""
    out: Dict[str, List[dict]] = {}
    for nb in chapter_notebooks(root):
        log = checks_log(root, nb)
        if log.exists():
            out[nb.stem] = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return out


def tally(rows: Dict[str, List[dict]]) -> Dict[str, Tuple[int, List[dict]]]:
    """Per chapter: (checks run, the ones that did not hold)."""
    return {ch: (len(r), [x for x in r if not x.get("ok")]) for ch, r in rows.items()}


def checks_summary(checks: Dict[str, Tuple[int, List[dict]]], all_rows: Optional[Dict[str, List[dict]]] = None,
                   closest: int = 8) -> str:
    """The lines ``make book`` ends with: how many claim checks ran, each that did not hold, and the
    ``closest`` held checks with the smallest margins (from ``all_rows``, each chapter's log)."""
    all_rows = all_rows or {}
    total = sum(n for n, _ in checks.values())
    failed = [(ch, r) for ch, (_, rows) in checks.items() for r in rows]
    lines = [f"claim checks: {total - len(failed)} of {total} held"
             + ("" if not failed else f"; {len(failed)} did not (shown on their pages):")]
    for ch, r in failed:
        measured = "; ".join(f"{k} = {' '.join(str(v).split())}" for k, v in r.get("measured", {}).items())
        lines.append(f"  {ch}: expected {r['expected']}" + (f"; measured {measured}" if measured else ""))
    close = sorted(((r["margin"], ch, r["expected"]) for ch, rows in all_rows.items() for r in rows
                    if r.get("ok") and r.get("margin") is not None), key=lambda t: t[0])[:closest]
    if close:
        lines.append(f"the {len(close)} closest calls that held (margin: the smallest relative slack of a comparison):")
        lines += [f"  {m:+.3f}  {ch}: {expected[:120]}" for m, ch, expected in close]
    return "\n".join(lines)


def build_html(root: Path) -> None:
    """``jupyter-book build`` with warnings as errors; raises CalledProcessError on failure."""
    jb = Path(sys.executable).with_name("jupyter-book")
    subprocess.run([str(jb), "build", str(root), "--warningiserror", "--keep-going"], check=True)


def main(profile: str = DEFAULT_PROFILE, execute: bool = True, only: Optional[List[str]] = None,
         jobs: Optional[int] = None) -> Dict[str, float]:
    root = repo_root()
    started = time.perf_counter()
    timings = execute_chapters(root, profile, only, jobs) if execute else {}
    tic = time.perf_counter()
    build_html(root)
    report = {"profile": profile, "jobs": (default_jobs() if jobs is None else jobs) if execute else 0,
              "chapters_seconds": timings, "html_seconds": round(time.perf_counter() - tic, 1)}
    report["chapters_seconds_sum"] = round(sum(timings.values()), 1)
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    rows = read_checks(root) if execute else {}
    checks = tally(rows)
    report["checks"] = {ch: {"run": n, "failed": len(bad),
                             "smallest_margin": min((r["margin"] for r in rows[ch] if r.get("ok")
                                                     and r.get("margin") is not None), default=None)}
                        for ch, (n, bad) in checks.items()}
    atomic_write_json(root / "_build" / "timings.json", report)
    print(json.dumps(report, indent=2))
    if checks:
        print(checks_summary(checks, rows), flush=True)
    return report



def add_command(sub) -> None:
    """The ``prunedyn book`` subcommand's arguments, on the command line's subparsers ``sub``."""
    b = sub.add_parser(
        "book",
        help="re-execute every chapter (papermill) and build the HTML book",
        description="Execute each chapter notebook of _toc.yml in place with papermill, strip timing metadata, "
        "then run `jupyter-book build --warningiserror --keep-going`. Writes _build/timings.json.",
    )
    b.add_argument("--profile", default="quick", help="quick (default: embedded data, CPU, minutes) or full (paper scale)")
    b.add_argument("--no-execute", action="store_true", help="build HTML from the committed notebooks without executing them")
    b.add_argument("--only", action="append", help="execute only chapters whose file name contains this (repeatable)")
    b.add_argument("--jobs", type=int, default=None,
                   help="chapters executed at once, each its own kernel (default: one per CPU core, at most 4)")


def command(args, fail) -> int:
    """Run ``prunedyn book``: execute the chapters and build the HTML; ``fail(message, code)``
    reports a refusal (exit 2) or a failed chapter (exit 1) in one line."""
    check_profile(args.profile)
    if args.jobs is not None and args.jobs < 1:
        return fail(f"--jobs: {args.jobs} must be >= 1")
    try:
        main(args.profile, not args.no_execute, args.only, args.jobs)
    except subprocess.CalledProcessError as e:
        return fail(f"book build failed: {e}", 1)
    except Exception as e:  # papermill's execution errors name the cell
        if type(e).__name__ not in ("PapermillExecutionError", "ChapterFailed"):
            raise
        return fail(f"chapter execution failed: {e}", 1)
    return 0


if __name__ == "__main__":  # one chapter, for execute_chapters' parallel build: ROOT NOTEBOOK PROFILE
    _root, _nb, _profile = sys.argv[1:4]
    try:
        execute_chapter(Path(_root), Path(_nb), _profile)
    except Exception as e:  # papermill's error names the cell; the traceback is in the notebook
        print(f"{Path(_nb).name}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
