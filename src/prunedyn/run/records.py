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
from typing import Any, Dict, List, Optional

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
    def load(cls, folder: Path, upto_epoch: int, exact: Optional[Dict[str, List[dict]]] = None) -> "RunRecord":
        """The tables of ``folder`` restricted to epochs ``<= upto_epoch``; ``exact``: the rows of
        epoch ``upto_epoch`` as the run computed them (the checkpoint keeps them), which replace
        the CSV's 9-digit copies so that a resumed run's summary has the same bits.

        Raises :class:`RecordError` when a table lacks an epoch ``0..upto_epoch``, has fewer rows
        for one than for epoch 0, or ends in a cut-off row (a file truncated by hand or by a full
        disk: the run cannot continue from it)."""
        rec = cls()
        for table in TABLES:
            path = Path(folder) / f"{table}.csv"
            if not (path.exists() and path.stat().st_size > 1):
                if exact is not None and table in exact and not exact[table]:
                    continue  # a table this run never fills
                raise RecordError(f"{path}: missing or empty, but the checkpoint is at epoch {upto_epoch}")
            try:
                df = pd.read_csv(path)
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
                raise RecordError(f"{path}: unreadable ({' '.join(str(e).split())})") from None
            if "epoch" not in df:
                raise RecordError(f"{path}: has no epoch column")
            df = df[df["epoch"] <= upto_epoch]
            _check_complete(path, df, upto_epoch)
            rec.rows[table] = df.to_dict("records")
            if exact and table in exact:
                rec.rows[table] = [r for r in rec.rows[table] if r["epoch"] != upto_epoch] + list(exact[table])
        return rec


class RecordError(ValueError):
    """A run folder's table does not agree with its checkpoint."""


def _check_complete(path: Path, df: pd.DataFrame, upto_epoch: int) -> None:
    counts = df.groupby("epoch").size()
    missing = sorted(set(range(upto_epoch + 1)) - set(int(e) for e in counts.index))
    if missing:
        raise RecordError(f"{path}: no rows for epoch {missing[0]} (the checkpoint is at epoch {upto_epoch}): "
                          f"the table is truncated; start the run again with --overwrite")
    short = [int(e) for e, n in counts.items() if n < counts.iloc[0]]
    if short:
        raise RecordError(f"{path}: epoch {short[0]} has {counts.loc[short[0]]} rows, epoch 0 has {counts.iloc[0]}: "
                          f"the table is truncated; start the run again with --overwrite")
    first, last = df.iloc[0], df.iloc[-1]
    cut = [c for c in df.columns if pd.isna(last[c]) and not pd.isna(first[c])]
    if cut:
        raise RecordError(f"{path}: its last row has no value for {cut[0]!r}: the table is truncated; "
                          f"start the run again with --overwrite")


def load_tables(folder: Path) -> Dict[str, pd.DataFrame]:
    """All tables of a run folder as DataFrames (plus ``summary`` as a dict)."""
    folder = Path(folder)
    out: Dict[str, Any] = {t: pd.read_csv(folder / f"{t}.csv") for t in TABLES}
    out["summary"] = json.loads((folder / "summary.json").read_text())
    return out
