"""What a run leaves behind, written so that no file is ever half-written.

Every file is written to a temporary sibling and moved into place with
``os.replace`` (atomic on POSIX), so a run killed at any instant leaves either
the previous complete version of a file or the new one.

A run folder holds:

===================  ==========================================================
``config.yaml``      the resolved config (and its hash in ``summary.json``)
``metrics.csv``      one row per epoch: loss, accuracy, sparsity, sigma, lambda
``layers.csv``       one row per epoch x node layer: nodes alive / in-dead /
                     out-dead, weight sparsity of the producer
``nodes.csv``        one row per epoch x layer x node: in/out L1 and L2 norms
                     and death flags
``histograms.csv``   one row per epoch x prunable weight x magnitude bin
``checkpoint.pt``    model, optimiser, pruner state of the last finished epoch
``summary.json``     written last: its presence marks a finished run
``timing.json``      wall-clock seconds (kept out of the summary so reruns
                     compare equal)
===================  ==========================================================

Epoch 0 is the state at initialisation, before any training step.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Dict, List

import pandas as pd

from prunedyn.atomic import (  # noqa: F401
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)

TABLES = ("metrics", "layers", "nodes", "histograms")


class RunRecord:
    """The per-epoch tables of one run, held in memory as lists of row dicts."""

    def __init__(self) -> None:
        self.rows: Dict[str, List[dict]] = {t: [] for t in TABLES}

    def add(self, table: str, rows: List[dict]) -> None:
        self.rows[table].extend(rows)

    def frame(self, table: str) -> pd.DataFrame:
        return pd.DataFrame(self.rows[table])

    def save(self, folder: Path) -> None:
        for table in TABLES:
            buf = io.StringIO()
            self.frame(table).to_csv(buf, index=False, float_format="%.9g")
            atomic_write_text(Path(folder) / f"{table}.csv", buf.getvalue())

    @classmethod
    def load(cls, folder: Path, upto_epoch: int) -> "RunRecord":
        """The tables of ``folder`` restricted to epochs ``<= upto_epoch``."""
        rec = cls()
        for table in TABLES:
            path = Path(folder) / f"{table}.csv"
            if path.exists() and path.stat().st_size > 1:
                df = pd.read_csv(path)
                df = df[df["epoch"] <= upto_epoch]
                rec.rows[table] = df.to_dict("records")
        return rec


def load_tables(folder: Path) -> Dict[str, pd.DataFrame]:
    """All tables of a run folder as DataFrames (plus ``summary`` as a dict)."""
    folder = Path(folder)
    out: Dict[str, Any] = {t: pd.read_csv(folder / f"{t}.csv") for t in TABLES}
    out["summary"] = json.loads((folder / "summary.json").read_text())
    return out
