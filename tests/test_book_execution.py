"""prunedyn.book.build: a chapter whose cell runs over the time limit is executed once more."""
import nbformat
import pytest

from prunedyn.book.build import execute_notebook


def notebook(path, source):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.mark.slow
def test_a_cell_over_the_limit_is_retried_once_with_a_fresh_kernel(tmp_path):
    from nbclient.exceptions import CellTimeoutError

    # the first attempt hangs (sleeps past the limit), the second finds the marker and finishes
    nb = tmp_path / "chapter.ipynb"
    notebook(nb, "import pathlib, time\nfirst = not pathlib.Path('tried').exists()\npathlib.Path('tried').touch()\n"
                 "time.sleep(30 if first else 0)\nprint('attempt', 1 if first else 2)")
    execute_notebook(nb, {}, timeout=4, retries=1)
    out = nbformat.read(nb, as_version=4).cells[-1].outputs
    assert (tmp_path / "tried").exists() and "attempt 2" in out[0]["text"]

    # always over the limit: the last attempt's timeout is raised
    (tmp_path / "tried").unlink()
    notebook(nb, "import time\ntime.sleep(30)")
    with pytest.raises(CellTimeoutError):
        execute_notebook(nb, {}, timeout=3, retries=1)


# --------------------------------------------------------------------------
# claim checks (chapters/_book.py), headless widgets, the lost-reply watchdog
# --------------------------------------------------------------------------
import asyncio  # noqa: E402
import os  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from prunedyn.book import build as B  # noqa: E402
from prunedyn.book.study import repo_root  # noqa: E402

CHAPTERS = Path(__file__).resolve().parents[1] / "chapters"

CHECKS = """import pandas as pd
x = pd.Series([1, 2, 3])
assert (x > 0).all()
assert x.sum() < 5, "the sum is small"
print("went on")
"""


def chapter_with(tmp_path, *sources):
    shutil.copy(CHAPTERS / "_book.py", tmp_path / "_book.py")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "chapter.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.mark.slow
def test_a_failed_claim_check_is_shown_logged_and_the_chapter_goes_on(tmp_path, monkeypatch):
    nb = chapter_with(tmp_path, "import _book", CHECKS)  # the transformer applies from the next cell on
    log = tmp_path / "checks.jsonl"
    monkeypatch.delenv("PRUNEDYN_STRICT", raising=False)  # the reader's build: shown, not raised
    monkeypatch.setenv("PRUNEDYN_CHECKS_LOG", str(log))
    execute_notebook(nb, {}, timeout=120)
    assert "PRUNEDYN_STRICT" not in os.environ  # the kernel's setting did not leak into this process
    outputs = nbformat.read(nb, as_version=4).cells[1].outputs
    html = [o["data"]["text/html"] for o in outputs if o["output_type"] == "display_data"]
    assert len(html) == 1 and 'class="admonition warning"' in html[0]
    assert "x.sum() &lt; 5" in html[0] and "np.int64(6)" in html[0] and "the sum is small" in html[0]
    assert any(o["output_type"] == "stream" and "went on" in o["text"] for o in outputs)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["ok"] for r in rows] == [True, False]
    assert rows[1]["expected"] == "x.sum() < 5" and rows[1]["measured"]["x.sum()"] == "np.int64(6)"


@pytest.mark.slow
def test_under_strict_a_failed_claim_check_fails_the_chapter(tmp_path, monkeypatch):
    from papermill.exceptions import PapermillExecutionError

    nb = chapter_with(tmp_path, "import _book", CHECKS)
    monkeypatch.setenv("PRUNEDYN_STRICT", "1")
    with pytest.raises(PapermillExecutionError, match="claim check did not hold: x.sum"):
        execute_notebook(nb, {}, timeout=120)


@pytest.mark.slow
def test_widgets_open_no_comm_in_a_headless_build(tmp_path):
    nb = chapter_with(tmp_path, "import _book\nimport ipywidgets as widgets\nimport comm",
                      "widgets.interact(lambda a=1: print('drawn', a), a=widgets.IntSlider(value=3));\n"
                      "print(comm.create_comm.__name__)")
    execute_notebook(nb, {}, timeout=120)
    done = nbformat.read(nb, as_version=4)
    text = "".join(o.get("text", "") for o in done.cells[1].outputs if o["output_type"] == "stream")
    assert "drawn 3" in text and "_headless_comm" in text  # the function ran once, through a silent comm
    assert not done.metadata.get("widgets")  # no widget state was sent to the client


class _ReplyLost:
    """Drops every execute reply: waits for the kernel's idle status, then forever."""

    async def _async_poll_for_reply(self, msg_id, cell, timeout, task_poll_output_msg, task_poll_kernel_alive):
        await task_poll_output_msg
        await asyncio.sleep(3600)


@pytest.mark.slow
def test_a_lost_execute_reply_is_detected_within_the_grace_period():
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    class Lossy(B.LostReplyWatchdog, _ReplyLost, NotebookClient):
        reply_grace = 2.0

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print('first')"), nbformat.v4.new_code_cell("print('second')")]
    tic = time.monotonic()
    Lossy(nb, timeout=600, kernel_name="python3").execute()
    assert time.monotonic() - tic < 300  # not the 600 s cell timeout (a wide margin: busy machines)
    assert [c.outputs[0]["text"] for c in nb.cells] == ["first\n", "second\n"]

    nb.cells = [nbformat.v4.new_code_cell("raise ValueError('boom')")]
    with pytest.raises(CellExecutionError, match="boom"):  # an error stays an error
        Lossy(nb, timeout=600, kernel_name="python3").execute()


def test_the_book_is_the_checkout_of_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\n")
    (tmp_path / "chapters").mkdir()
    monkeypatch.chdir(tmp_path / "chapters")  # a chapter's kernel runs in chapters/
    assert repo_root() == tmp_path.resolve()
    monkeypatch.chdir(tmp_path.parent)
    assert repo_root() == tmp_path.parent.resolve()  # outside any checkout: the working directory


def test_the_checks_summary_names_each_check_that_did_not_hold():
    checks = {"03-node-death": (3, [{"ok": False, "expected": "a < 1", "measured": {"a": "2"}}]),
              "04-dependency": (2, [])}
    text = B.checks_summary(checks)
    assert text.splitlines()[0] == "claim checks: 4 of 5 held; 1 did not (shown on their pages):"
    assert "03-node-death: expected a < 1; measured a = 2" in text
    assert B.checks_summary({"x": (2, [])}) == "claim checks: 2 of 2 held"
    rows = {"x": [{"ok": True, "expected": "a < 2", "margin": 0.5}, {"ok": True, "expected": "b > 1", "margin": 0.01}]}
    close = B.checks_summary(B.tally(rows), rows, closest=1).splitlines()
    assert close[1].startswith("the 1 closest calls") and close[2] == "  +0.010  x: b > 1"


def test_a_checks_margin_is_the_smallest_relative_slack_of_its_comparisons():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_book", CHAPTERS / "_book.py")
    bk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bk)  # outside IPython: installs nothing
    values = [("a", 0.9), ("b", 1.0), ("s", [3.0, 5.0]), ("t", 2.0)]
    assert bk.margin(values, [(0, "<", 1)]) == pytest.approx(0.1)
    assert bk.margin(values, [(0, "<", 1), (2, ">", 3)]) == pytest.approx(0.1)  # min over parts
    assert bk.margin(values, [(2, ">", 3)]) == pytest.approx(1 / 3)  # min over elements: (3 - 2) / 3
    assert bk.margin(values, [(1, "<", 0)]) == pytest.approx(-0.1)  # does not hold
    assert bk.margin(values, [(0, "==", 1)]) is None and bk.margin(None, [(0, "<", 1)]) is None

    import ast

    tree = bk.AssertToCheck().visit(ast.parse("assert (x > 0).all() and y < 2 <= z, 'm'"))
    call = tree.body[0].value
    assert call.func.id == "__book_check__" and ast.literal_eval(call.args[1]) == "(x > 0).all() and y < 2 <= z"
    assert ast.literal_eval(call.args[4]) == [(0, ">", 1), (2, "<", 3), (3, "<=", 4)]
    tree = bk.AssertToCheck().visit(ast.parse("assert a < 1 or b < 2"))
    assert ast.literal_eval(tree.body[0].value.args[4]) == []  # a disjunction has no margin


@pytest.mark.slow
def test_the_test_command_runs_the_chosen_chapters_on_the_emulated_path(tmp_path):
    """chapters/_pytest_numerics.py: PRUNEDYN_EMULATE_CHAPTERS picks, per notebook, the kernel's numeric path."""
    import subprocess
    import sys

    probes = {"01-first.ipynb": "os.environ['ATEN_CPU_CAPABILITY'] == 'default' and cap == 'DEFAULT'",
              "06-sixth.ipynb": "'ATEN_CPU_CAPABILITY' not in os.environ and cap != 'DEFAULT'"}
    for name, probe in probes.items():
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(f"import os, torch\ncap = torch.backends.cpu.get_cpu_capability()\n"
                                              f"assert {probe}, (os.environ.get('ATEN_CPU_CAPABILITY'), cap)")]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, tmp_path / name)
    outer = ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "PRUNEDYN_EMULATE_CHAPTERS")  # CI sets some
    env = {k: v for k, v in os.environ.items() if k not in outer}
    env["PYTHONPATH"] = os.pathsep.join([str(CHAPTERS.parent), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "pytest", "-p", "chapters._pytest_numerics", "--nbval", "--nbval-current-env", "-q",
           "-p", "no:cacheprovider", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**env, "PRUNEDYN_EMULATE_CHAPTERS": "01,02"},
                         cwd=tmp_path)
    assert out.returncode == 0 and "2 passed" in out.stdout, out.stdout[-3000:]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)  # no chapter emulated
    assert "1 failed, 1 passed" in out.stdout, out.stdout[-3000:]


@pytest.mark.slow
def test_chapters_run_in_parallel_and_a_failure_stops_the_others(tmp_path):
    # three chapters of a tiny book: two that sleep, executed two at a time, overlap (each writes when
    # its sleep began and ended: no wall-clock budget, which a busy machine would break)
    chapters = tmp_path / "chapters"
    chapters.mkdir()
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: chapters/a\nchapters:\n"
                                       "  - file: chapters/b\n  - file: chapters/c\n")
    stamp = "import time, pathlib\nt0 = time.time()\ntime.sleep(8)\npathlib.Path('{0}').write_text(f'{{t0}} {{time.time()}}')\n"
    notebook(chapters / "a.ipynb", stamp.format("a.span") + "import os\nprint(os.environ['OMP_NUM_THREADS'])")
    notebook(chapters / "b.ipynb", stamp.format("b.span") + "print('b done')")
    notebook(chapters / "c.ipynb", "print('c done')")
    seconds = B.execute_chapters(tmp_path, jobs=2)
    assert list(seconds) == ["chapters/a.ipynb", "chapters/b.ipynb", "chapters/c.ipynb"]
    (a0, a1), (b0, b1) = (map(float, (chapters / f"{x}.span").read_text().split()) for x in "ab")
    assert a0 < b1 and b0 < a1  # a and b overlapped
    outputs = {p.stem: nbformat.read(p, as_version=4).cells[-1].outputs for p in chapters.glob("*.ipynb")}
    assert outputs["c"][0]["text"].strip() == "c done"
    assert "injected-parameters" not in str(nbformat.read(chapters / "a.ipynb", as_version=4).cells)

    # a fails at once: b (started beside it) is stopped, c never starts
    notebook(chapters / "a.ipynb", "raise ValueError('broken chapter')")
    notebook(chapters / "b.ipynb", "import time, pathlib\ntime.sleep(600)\npathlib.Path('b-finished').touch()")
    notebook(chapters / "c.ipynb", "import pathlib\npathlib.Path('c-ran').touch()")
    (tmp_path / "_build").mkdir(exist_ok=True)
    (tmp_path / "_build" / "timings.json").unlink(missing_ok=True)
    tic = time.perf_counter()
    with pytest.raises(B.ChapterFailed, match="a.ipynb"):
        B.execute_chapters(tmp_path, jobs=2)
    assert time.perf_counter() - tic < 300  # b was stopped, not waited for (it sleeps 600 s)
    assert not (chapters / "b-finished").exists() and not (chapters / "c-ran").exists()


def test_parallel_order_puts_the_longest_chapters_of_the_last_build_first(tmp_path):
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: a\nchapters:\n  - file: b\n  - file: c\n")
    nbs = [tmp_path / f"{s}.ipynb" for s in "abc"]
    assert B._book_order(tmp_path, nbs) == nbs  # nothing recorded: book order
    recorded = tmp_path / B.RECORDED_TIMES
    recorded.parent.mkdir(parents=True)
    recorded.write_text(json.dumps({"chapters_seconds": {"a.ipynb": 5, "c.ipynb": 9}}))
    assert [p.stem for p in B._book_order(tmp_path, nbs)] == ["c", "a", "b"]  # the repository's record
    (tmp_path / "_build").mkdir()
    (tmp_path / "_build" / "timings.json").write_text(json.dumps({"chapters_seconds": {"b.ipynb": 50, "c.ipynb": 9}}))
    assert [p.stem for p in B._book_order(tmp_path, nbs)] == ["b", "c", "a"]  # this machine's last build


def test_default_jobs_is_one_per_usable_core_at_most_four():
    assert 1 <= B.default_jobs() <= min(B.MAX_JOBS, os.cpu_count() or 1)


@pytest.mark.slow
def test_a_kernel_that_dies_before_it_answers_is_started_again(tmp_path, monkeypatch, capfd):
    """A chapter's kernel can die at start (a ZMQ port taken by another kernel on a busy machine):
    the chapter is executed again with a fresh kernel; a kernel that never starts fails the chapter."""
    import sys

    # a "python3" kernelspec (found first on JUPYTER_PATH) whose first start exits at once
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    launcher = tmp_path / "launch.py"
    launcher.write_text(
        "import os, pathlib, runpy, sys\n"
        f"marker = pathlib.Path({str(tmp_path / 'started')!r})\n"
        "if os.environ.get('NEVER_START') or not marker.exists():\n"
        "    marker.touch(); sys.exit(1)\n"
        "sys.argv = ['ipykernel_launcher'] + sys.argv[1:]\n"
        "runpy.run_module('ipykernel_launcher', run_name='__main__')\n")
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, str(launcher), "-f", "{connection_file}"],
        "display_name": "Python 3", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    nb = tmp_path / "chapter.ipynb"
    notebook(nb, "print('ran')")
    execute_notebook(nb, {}, timeout=120, start_timeout=60)
    assert "ran" in nbformat.read(nb, as_version=4).cells[-1].outputs[0]["text"]
    assert "its kernel did not start (Kernel died before replying" in capfd.readouterr().err

    monkeypatch.setenv("NEVER_START", "1")
    with pytest.raises(RuntimeError, match="Kernel died before replying"):
        execute_notebook(nb, {}, timeout=120, start_timeout=60)
