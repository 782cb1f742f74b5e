"""A pytest plugin for the chapters under nbval: which numeric path each chapter's kernel takes.

Loaded by the test command (``make test``: ``pytest ... -p chapters._pytest_numerics``), not as a
conftest (``tests/conftest.py`` is imported by name by the tests; a second conftest module would
shadow it). ``PRUNEDYN_EMULATE_CHAPTERS`` (``make test NUMERICS=emulated``, what CI runs) names
chapters, by the number their file starts with, whose kernels (and the training processes they
spawn) compute on the emulated numeric path: MKL, ATen and oneDNN on their portable kernels, the
arithmetic of another CPU. The other chapters' kernels run on this CPU's own kernels.

Claim checks are strict under any pytest run (``_book.py``: they raise unless
``PRUNEDYN_STRICT=0``, which only the reader's ``make book`` sets).
"""

import os
from pathlib import Path

import pytest

#: The emulated numeric path (the same bits on every x86-64 CPU tried; README, "Two numeric paths").
EMULATED = {
    "MKL_CBWR": "COMPATIBLE",
    "ATEN_CPU_CAPABILITY": "default",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
}


def emulated(notebook: str, chapters: str) -> bool:
    """Whether ``notebook`` (a file name) is one of ``chapters`` ("01,02,...")."""
    return any(notebook.startswith(p.strip()) for p in chapters.split(",") if p.strip())


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before nbval starts a chapter's kernel (the setup of its first cell), choose
    its numeric path."""
    chapters = os.environ.get("PRUNEDYN_EMULATE_CHAPTERS")
    if chapters is None:
        return
    on = emulated(Path(str(item.fspath)).name, chapters)
    for key, value in EMULATED.items():
        if on:
            os.environ[key] = value
        else:
            os.environ.pop(key, None)
