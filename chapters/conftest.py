"""The chapters under pytest (nbval, the test command): claim checks are strict and kernels headless.

A claim check that does not hold raises (``PRUNEDYN_STRICT=1``, see ``_book.py``), so the test
command fails on it where a reader's ``make book`` shows it on the page; widgets send no comm
messages (``PRUNEDYN_HEADLESS=1``). The kernels nbval starts inherit this environment.
"""
import os

os.environ.setdefault("PRUNEDYN_STRICT", "1")
os.environ.setdefault("PRUNEDYN_HEADLESS", "1")
