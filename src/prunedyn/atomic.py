"""Atomic file writes (a file is either its old version or its complete new one) and safe reads.

Every result file of the study (run tables, checkpoints, sweep summaries,
decoded data caches) goes through these: the bytes are written to a temporary
file in the same folder, flushed to disk, then renamed over the target, so a
run killed at any moment leaves no partial or corrupt file behind.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_torch_save(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read as plain tensors and containers."""


def load_checkpoint(path: Path, map_location: Any = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``: tensors, numbers, strings and containers only, so a
    crafted ``checkpoint.pt`` cannot run code. Raises :class:`CheckpointError` (one line naming the
    file) for a truncated, corrupt or code-carrying file."""
    import pickle
    import zipfile

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, zipfile.BadZipFile, AttributeError, ValueError, KeyError,
            IndexError, TypeError) as e:  # torch's legacy reader fails on garbage with KeyError and the like
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint of plain tensors ({first[:160]})") from None
