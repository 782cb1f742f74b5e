"""The chapters' code fits the page: one formatter (ruff format, line length 100, configured in
pyproject.toml) over the notebooks and the chapters' helper modules, and no code line longer than
100 characters (ruff format leaves long strings and comments as they are)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
WIDTH = 100


def _code_lines():
    for nb in sorted(CHAPTERS.glob("*.ipynb")):
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        for i, cell in enumerate(cells):
            if cell["cell_type"] == "code":
                source = "".join(cell["source"])
                for k, line in enumerate(source.splitlines(), 1):
                    yield f"{nb.name} cell {i} line {k}", line
    for py in sorted(CHAPTERS.glob("_*.py")):
        for k, line in enumerate(py.read_text(encoding="utf-8").splitlines(), 1):
            yield f"{py.name}:{k}", line


def test_no_chapter_code_line_is_longer_than_the_page():
    long = [f"{where} ({len(line)} chars)" for where, line in _code_lines() if len(line) > WIDTH]
    assert not long, f"{len(long)} code lines over {WIDTH} characters: {long[:10]}"


def test_the_chapters_are_formatted_by_ruff():
    try:
        import ruff  # noqa: F401  (the pinned formatter, requirements.txt)
    except ImportError:
        pytest.fail("ruff is not installed (it is pinned in requirements.txt)")
    config = (ROOT / "pyproject.toml").read_text()
    assert "[tool.ruff]" in config and f"line-length = {WIDTH}" in config
    res = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "--diff", str(CHAPTERS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, (
        "ruff format would change the chapters (run `.venv/bin/ruff format chapters/`):\n"
        + (res.stdout + res.stderr)[-3000:]
    )
