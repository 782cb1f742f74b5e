"""What every chapter shares: its claim checks, its live widgets and how it shows results.

``import _book`` in a chapter's setup cell does two things to the running
IPython kernel; its two helpers show results.

**Claim checks.** Every ``assert TEST, MSG`` of the cells that follow is compiled as
``_book.check(TEST, "TEST", MSG, operands)``, where ``operands`` is a lambda
that re-evaluates the operands of the comparisons in ``TEST`` (only when the
check fails). A check that holds prints nothing. One that does not hold

- raises ``AssertionError`` (naming what was expected and what was measured):
  the test command (``make test``, nbval in CI) fails on it, and so does a
  chapter run by hand;
- in the reader's build (``prunedyn book`` sets ``PRUNEDYN_STRICT=0``) shows
  a warning admonition on the page with the same two things and lets the
  chapter go on: a reader's build never aborts on a claim.

When ``PRUNEDYN_CHECKS_LOG`` names a file (``prunedyn book`` sets one per
chapter), each check appends one JSON line ``{"ok", "expected", "measured"}``
to it; the build ends with a summary of those that did not hold.

**Widgets.** ``PRUNEDYN_HEADLESS=1`` (the book build and the test command
set it) gives widgets a comm that sends nothing: an ``ipywidgets.interact``
cell still runs its function once with the controls' initial values, so its
code is exercised, but no comm message crosses the kernel's channels. Live
widgets are for a reader's Jupyter; headless executions (papermill, nbval)
have no front end to talk to, and their comm traffic is where nbclient lost
execute replies (jupyter/nbclient#312).

**Results on the page.** :func:`show` displays a table as HTML (with a caption saying what it
holds), :func:`say` prints a sentence wrapped at 100 characters: nothing a chapter shows scrolls
sideways in the book.
"""

from __future__ import annotations

import ast
import html
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

#: Characters of a measured value shown (longer reprs are cut in the middle).
SHOWN = 400


def strict() -> bool:
    """True where a failed check must raise: everywhere (nbval, the test command, a notebook
    opened in
    Jupyter) except where ``PRUNEDYN_STRICT=0``, which the reader's ``make book`` sets."""
    return os.environ.get("PRUNEDYN_STRICT", "1") != "0"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN else text[: SHOWN // 2] + " ... " + text[-SHOWN // 2 :]


def _evaluate(operands: Optional[Callable[[], list]]) -> Optional[list]:
    """The operands' values, with every global random state as it was before (an
    operand may draw)."""
    if operands is None:
        return None
    import random

    import numpy as np
    import torch

    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    try:
        return operands()
    except Exception:  # an operand that cannot be evaluated on its own
        return None
    finally:
        random.setstate(states[0]), np.random.set_state(states[1]), torch.set_rng_state(states[2])


def _slack(a: Any, op: str, b: Any) -> Optional[float]:
    """How far ``a op b`` holds, relative to the larger magnitude, smallest over
    elements (< 0: fails)."""
    import numpy as np

    try:
        a, b = (np.asarray(v, dtype=float) for v in (a, b))
        d = (b - a) if op in ("<", "<=") else (a - b)
        scale = np.maximum(np.maximum(np.abs(a), np.abs(b)), 1e-12)
        value = float(np.min(d / scale))
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def margin(values: Optional[list], comparisons: Sequence[Tuple[int, str, int]]) -> Optional[float]:
    """The check's margin: the smallest relative slack of its ordering comparisons
    (None: none to measure)."""
    if values is None:
        return None
    slacks = [
        _slack(values[i][1], op, values[j][1])
        for i, op, j in comparisons
        if op in ("<", "<=", ">", ">=")
    ]
    slacks = [x for x in slacks if x is not None]
    return min(slacks) if slacks else None


def check(
    ok: Any,
    expected: str,
    msg: Any = None,
    operands: Optional[Callable[[], list]] = None,
    comparisons: Sequence[Tuple[int, str, int]] = (),
) -> None:
    """One claim check: ``ok`` is the asserted condition, ``expected`` its source text; ``operands``
    gives ``[(source, value), ...]`` of its comparisons' sides, ``comparisons`` which of them are
    compared how (only for a conjunction of comparisons, the case where a margin means
    something)."""
    held = bool(ok)
    log = os.environ.get("PRUNEDYN_CHECKS_LOG")
    values = _evaluate(operands) if (log or not held) else None
    measured: List[Tuple[str, str]] = []
    if not held:
        if msg is not None:
            measured.append(("message", msg if isinstance(msg, str) else _short(msg)))
        if values is None and operands is not None:
            measured.append(("(operands)", "could not be evaluated on their own"))
        seen = set()
        for source, value in values or []:
            if source not in seen and not _is_literal(source):
                seen.add(source)
                measured.append((source, _short(value)))
    if log:
        row = {
            "ok": held,
            "expected": expected,
            "measured": dict(measured),
            "margin": margin(values, comparisons),
        }
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
    if held:
        return
    lines = "\n".join(f"  {name} = {value}" for name, value in measured)
    if strict():
        raise AssertionError(f"claim check did not hold: {expected}\n{lines}".rstrip())
    from IPython.display import display

    rows = "".join(
        f"<li><code>{html.escape(n)}</code> = "
        + (f"<pre>{html.escape(v)}</pre>" if "\n" in v else f"<code>{html.escape(v)}</code>")
        + "</li>"
        for n, v in measured
    )
    body = (
        f'<div class="admonition warning"><p class="admonition-title">A claim check did '
        f"not hold in this run</p>"
        f"<p>Expected: <code>{html.escape(expected)}</code></p>"
        + (f"<p>Measured:</p><ul>{rows}</ul>" if rows else "")
        + "<p>The text around this check may not describe this run. The test command fails "
        "on it.</p></div>"
    )
    display(
        {
            "text/html": body,
            "text/plain": f"CLAIM CHECK DID NOT HOLD: {expected}\n{lines}".rstrip(),
        },
        raw=True,
    )


def _is_literal(source: str) -> bool:
    try:
        ast.literal_eval(source)
        return True
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False


# --------------------------------------------------------------------------
# assert -> check, as an IPython AST transformer
# --------------------------------------------------------------------------
_OPS = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.In: "in",
    ast.NotIn: "not in",
}


def _parts(test: ast.expr, conjunction: bool = True):
    """Yield ``(expression, comparisons)`` pieces of ``test``: the sides of its comparisons,
    with the
    comparisons that link them when they sit in a conjunction (``and``, ``(a < b).all()``)."""
    if isinstance(test, ast.BoolOp):
        for v in test.values:
            yield from _parts(v, conjunction and isinstance(test.op, ast.And))
    elif isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        yield from _parts(test.operand, False)
    elif isinstance(test, ast.Compare):
        yield (
            [test.left, *test.comparators],
            [_OPS[type(op)] for op in test.ops] if conjunction else [],
        )
    elif (
        isinstance(test, ast.Call)
        and isinstance(test.func, ast.Attribute)
        and test.func.attr in ("all", "any")
    ):
        yield from _parts(test.func.value, conjunction and test.func.attr == "all")
    elif not isinstance(test, ast.Constant):
        yield [test], []


class AssertToCheck(ast.NodeTransformer):
    """Rewrites ``assert TEST, MSG`` into
    ``__book_check__(TEST, "TEST", MSG, lambda: [(source, value), ...], [(i, op, j), ...])``."""

    def visit_Assert(self, node: ast.Assert) -> ast.stmt:
        exprs: List[ast.expr] = []
        comparisons = []
        for sides, ops in _parts(node.test):
            first = len(exprs)
            exprs.extend(sides)
            comparisons += [
                ast.Tuple(
                    elts=[ast.Constant(first + k), ast.Constant(op), ast.Constant(first + k + 1)],
                    ctx=ast.Load(),
                )
                for k, op in enumerate(ops)
            ]
        shown = ast.List(
            elts=[ast.Tuple(elts=[ast.Constant(ast.unparse(e)), e], ctx=ast.Load()) for e in exprs],
            ctx=ast.Load(),
        )
        lam = ast.Lambda(
            args=ast.arguments(posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[], defaults=[]),
            body=shown,
        )
        call = ast.Call(
            func=ast.Name("__book_check__", ast.Load()),
            args=[
                node.test,
                ast.Constant(ast.unparse(node.test)),
                node.msg or ast.Constant(None),
                lam,
                ast.List(elts=comparisons, ctx=ast.Load()),
            ],
            keywords=[],
        )
        return ast.copy_location(ast.Expr(call), node)

    def visit_Module(self, node: ast.Module) -> ast.Module:
        self.generic_visit(node)
        return ast.fix_missing_locations(node)


def _headless_comm(*args: Any, **kwargs: Any):
    import comm

    return comm.DummyComm(*args, **kwargs)


def setup(shell=None) -> None:
    """Install the check transformer (and, headless, the silent widget comm) in ``shell``."""
    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:  # pragma: no cover - IPython comes with every kernel
            return
        shell = get_ipython()
    if shell is None:
        return
    shell.user_ns["__book_check__"] = check
    if not any(isinstance(t, AssertToCheck) for t in shell.ast_transformers):
        shell.ast_transformers.append(AssertToCheck())
    if os.environ.get("PRUNEDYN_HEADLESS", "") not in ("", "0"):
        import comm

        comm.create_comm = _headless_comm


# ---------------------------------------------------------------- results on the page

#: The widest text line a chapter prints (the code is formatted to the same width).
WIDTH = 100


def show(
    df,
    caption: Optional[str] = None,
    index: bool = True,
    digits: Optional[int] = None,
    float_format: Optional[Callable[[float], str]] = None,
):
    """Display ``df`` as an HTML table (the book renders it as one; a printed ``to_string()``
    scrolls sideways), floats rounded to ``digits`` if given, with ``caption`` above it (what
    the numbers are, from which data and seeds)."""
    from IPython.display import HTML, display

    if digits is not None:
        df = df.round(digits)
    table = df.to_html(
        index=index, border=0, na_rep="", classes="prunedyn-table", float_format=float_format
    )
    # long column names may break after an underscore or a slash (the table then fits the page)
    table = re.sub(
        r"<th([^>]*)>([^<]*)</th>",
        lambda m: "<th" + m.group(1) + ">" + re.sub(r"([_/])", r"\1<wbr>", m.group(2)) + "</th>",
        table,
    )
    if caption:
        head, rest = table.split(">", 1)
        table = f"{head}>\n<caption>{html.escape(caption.strip())}</caption>{rest}"
    display(HTML(table))


def say(*paragraphs: str) -> None:
    """Print each paragraph wrapped at :data:`WIDTH` characters (continuation lines indented), so
    that no printed line runs off the page."""
    import textwrap

    for text in paragraphs:
        for line in str(text).splitlines() or [""]:
            lead = line[: len(line) - len(line.lstrip())]
            print(
                textwrap.fill(
                    line,
                    WIDTH,
                    subsequent_indent=lead + "  ",
                    break_long_words=False,
                    break_on_hyphens=False,
                )
                if line.strip()
                else line
            )


setup()
