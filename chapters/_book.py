"""What every chapter shares: its claim checks and its live widgets.

``import _book`` in a chapter's setup cell does two things to the running
IPython kernel.

**Claim checks.** Every later ``assert TEST, MSG`` of a cell is compiled as
``_book.check(TEST, "TEST", MSG, operands)``, where ``operands`` is a lambda
that re-evaluates the operands of the comparisons in ``TEST`` (only when the
check fails). A check that holds prints nothing. One that does not hold

- raises ``AssertionError`` (naming what was expected and what was measured)
  when ``PRUNEDYN_STRICT=1``: the test command (``make test``, nbval in CI)
  fails on it;
- otherwise shows a warning admonition on the page with the same two things
  and lets the chapter go on: a reader's build never aborts on a claim.

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
"""
from __future__ import annotations

import ast
import html
import json
import os
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

#: Characters of a measured value shown (longer reprs are cut in the middle).
SHOWN = 400


def strict() -> bool:
    """True where a failed check must raise (``PRUNEDYN_STRICT=1``: the test command)."""
    return os.environ.get("PRUNEDYN_STRICT", "") not in ("", "0")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN else text[: SHOWN // 2] + " ... " + text[-SHOWN // 2 :]


def _measured(msg: Any, operands: Optional[Callable[[], List[Tuple[str, Any]]]]) -> List[Tuple[str, str]]:
    shown: List[Tuple[str, str]] = []
    if msg is not None:
        shown.append(("message", msg if isinstance(msg, str) else _short(msg)))
    if operands is not None:
        try:
            pairs = operands()
        except Exception as exc:  # an operand that cannot be evaluated on its own: say so, go on
            pairs = [("(operands)", f"not evaluated: {type(exc).__name__}: {exc}")]
        shown.extend((name, value if name == "(operands)" else _short(value)) for name, value in pairs)
    return shown


def check(ok: Any, expected: str, msg: Any = None, operands: Optional[Callable[[], list]] = None) -> None:
    """One claim check: ``ok`` is the asserted condition, ``expected`` its source text."""
    held = bool(ok)
    measured = [] if held else _measured(msg, operands)
    log = os.environ.get("PRUNEDYN_CHECKS_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps({"ok": held, "expected": expected, "measured": dict(measured)}) + "\n")
    if held:
        return
    lines = "\n".join(f"  {name} = {value}" for name, value in measured)
    if strict():
        raise AssertionError(f"claim check did not hold: {expected}\n{lines}".rstrip())
    from IPython.display import display

    rows = "".join(f"<li><code>{html.escape(n)}</code> = <code>{html.escape(v)}</code></li>" for n, v in measured)
    body = (f'<div class="admonition warning"><p class="admonition-title">A claim check did not hold in this run</p>'
            f"<p>Expected: <code>{html.escape(expected)}</code></p>"
            + (f"<p>Measured:</p><ul>{rows}</ul>" if rows else "")
            + "<p>The text around this check may not describe this run. The test command "
              "(<code>PRUNEDYN_STRICT=1</code>) fails on it.</p></div>")
    display({"text/html": body, "text/plain": f"CLAIM CHECK DID NOT HOLD: {expected}\n{lines}".rstrip()}, raw=True)


# --------------------------------------------------------------------------
# assert -> check, as an IPython AST transformer
# --------------------------------------------------------------------------
def _operands(test: ast.expr) -> List[ast.expr]:
    """The sub-expressions worth showing when ``test`` is false: the sides of its comparisons."""
    if isinstance(test, ast.BoolOp):
        return [o for v in test.values for o in _operands(v)]
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return _operands(test.operand)
    if isinstance(test, ast.Compare):
        return [e for e in [test.left, *test.comparators] if not isinstance(e, ast.Constant)]
    if isinstance(test, ast.Call) and isinstance(test.func, ast.Attribute):  # (a > b).all()
        return _operands(test.func.value)
    if isinstance(test, ast.Constant):
        return []
    return [test]


class AssertToCheck(ast.NodeTransformer):
    """Rewrites ``assert TEST, MSG`` into ``__book_check__(TEST, "TEST", MSG, lambda: [...])``."""

    def visit_Assert(self, node: ast.Assert) -> ast.stmt:
        shown = ast.List(elts=[ast.Tuple(elts=[ast.Constant(ast.unparse(e)), e], ctx=ast.Load())
                               for e in _operands(node.test)], ctx=ast.Load())
        lam = ast.Lambda(args=ast.arguments(posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[], defaults=[]),
                         body=shown)
        call = ast.Call(func=ast.Name("__book_check__", ast.Load()),
                        args=[node.test, ast.Constant(ast.unparse(node.test)), node.msg or ast.Constant(None), lam],
                        keywords=[])
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


setup()
