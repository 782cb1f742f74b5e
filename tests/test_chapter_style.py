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


def _cells(nb):
    return json.loads(nb.read_text(encoding="utf-8"))["cells"]


def test_setup_cells_are_collapsed_in_the_book():
    """The papermill parameter cell and the imports cell come first in every chapter and carry
    hide-input (or hide-cell): the HTML opens with the chapter, Jupyter still shows them."""
    bad = []
    for nb in sorted(CHAPTERS.glob("*.ipynb")):
        code = [c for c in _cells(nb) if c["cell_type"] == "code"]
        params = [c for c in code if "parameters" in c["metadata"].get("tags", [])]
        imports = next(
            (c for c in code if any(l.startswith(("import ", "from ")) for l in c["source"])), None
        )
        for what, cell in (("parameters", params[0] if params else None), ("imports", imports)):
            tags = set(cell["metadata"].get("tags", [])) if cell else set()
            if cell is None or not tags & {
                "hide-input",
                "hide-cell",
                "remove-input",
                "remove-cell",
            }:
                bad.append(f"{nb.name}: {what} cell")
    assert not bad, f"setup cells shown in full: {bad}"


def _shown_text(output):
    """The text an output shows in the HTML book: a stream, or plain text with nothing richer."""
    if output["output_type"] == "stream":
        return "".join(output["text"])
    data = output.get("data", {})
    rich = ("text/html", "text/markdown", "image/png", "application/vnd.jupyter.widget-view+json")
    if "text/plain" in data and not any(k in data for k in rich):
        return "".join(data["text/plain"])
    return ""


def test_no_printed_line_is_longer_than_the_page():
    """Results are tables, figures or glued prose; what a chapter still prints fits the page."""
    long = []
    for nb in sorted(CHAPTERS.glob("*.ipynb")):
        for i, cell in enumerate(_cells(nb)):
            tags = cell["metadata"].get("tags", [])
            if cell["cell_type"] != "code" or {"remove-output", "remove-cell"} & set(tags):
                continue
            for out in cell.get("outputs", []):
                long += [
                    f"{nb.name} cell {i}: {line[:80]}..."
                    for line in _shown_text(out).splitlines()
                    if len(line) > WIDTH
                ]
    assert not long, f"{len(long)} printed lines over {WIDTH} characters: {long[:5]}"
