import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"

# A small, fast version of the mlp-mnist preset for end-to-end tests.
SMALL = [
    "epochs=3",
    "data.source=embedded",
    "data.train_size=1500",
    "data.test_size=500",
    "model.hidden=[48,24]",
    "pruner.sigma=0.01",
    "regularizer.lam=0.01",
]

torch.set_flush_denormal(True)


@pytest.fixture
def data_copy(tmp_path, monkeypatch):
    """A private copy of data/ that a test may corrupt; PRUNEDYN_DATA points at it."""
    dst = tmp_path / "data"
    shutil.copytree(DATA, dst, ignore=shutil.ignore_patterns("torchvision", "cache"))
    monkeypatch.setenv("PRUNEDYN_DATA", str(dst))
    return dst


def prunedyn_cmd(*args):
    return [sys.executable, "-m", "prunedyn.cli", *map(str, args)]


def run_cli(*args, env=None, timeout=600):
    return subprocess.run(prunedyn_cmd(*args), capture_output=True, text=True, env=env, timeout=timeout)
