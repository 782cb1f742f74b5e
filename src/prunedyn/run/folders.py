"""A run's folder: which files a run writes, the lock two processes share, the checks before a
run starts or resumes (:func:`prepare_folder`) and reading what a run left (config, summary,
checkpoint) with one-line errors (:class:`RunError`) naming the file."""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import yaml

from prunedyn.atomic import CheckpointError, load_checkpoint
from prunedyn.run.config import ConfigError, ExperimentConfig


class RunError(Exception):
    """The run cannot start or continue (bad folder state, config mismatch)."""


class TrainingDiverged(RunError):
    """The loss or the weights became NaN/inf; the last good checkpoint is kept."""


def read_run_config(path: Path) -> ExperimentConfig:
    """A run folder's ``config.yaml`` as a config; :class:`RunError` naming the file when it does not
    parse or is not a valid config."""
    from prunedyn.run.config import from_dict

    try:
        data = yaml.safe_load(path.read_text())
        if not isinstance(data, dict):
            raise ConfigError(f"expected a mapping of sections, got {type(data).__name__}")
        return from_dict(data)
    except (yaml.YAMLError, ConfigError, UnicodeDecodeError) as e:
        first = " ".join(str(e).split())[:160]
        raise RunError(f"{path}: not a readable run config ({first})") from None


def read_summary(path: Path) -> dict:
    """A run folder's ``summary.json``; :class:`RunError` naming the file when it is damaged."""
    try:
        done = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        done = e
    if not isinstance(done, dict):
        raise RunError(f"{path}: not a readable run summary ({str(done)[:120] or 'empty'}); remove it to resume "
                       "from the checkpoint, or pass --overwrite")
    return done


def _checkpoint(path: Path, map_location) -> dict:
    """A run's checkpoint, read without unpickling code (:func:`prunedyn.atomic.load_checkpoint`)."""
    try:
        return load_checkpoint(path, map_location)
    except CheckpointError as e:
        raise RunError(str(e)) from None


#: The files a run writes into its folder (prunedyn.run.records).
RUN_FILES = frozenset({"config.yaml", "metrics.csv", "layers.csv", "nodes.csv", "histograms.csv", "checkpoint.pt",
                       "summary.json", "timing.json"})


def is_run_file(name: str) -> bool:
    """Whether a file name is one a run folder holds (records, checkpoint, compact model, temporaries)."""
    return name in RUN_FILES or name.startswith("compact.") or (name.startswith(".") and name.endswith(".tmp"))


def prepare_folder(out: Path, cfg_hash: str, resume: bool, overwrite: bool) -> Optional[dict]:
    """Check the run folder's state. Returns the finished summary if there is nothing to do.

    With ``overwrite`` nothing is deleted here: the folder must be a run folder (only files a run
    writes), and :func:`run` clears it once the config has been built (data loaded, model made)."""
    if not out.exists():
        return None
    if overwrite:
        if not out.is_dir() or out.is_symlink():
            raise RunError(f"--overwrite: {out} is not a run folder")
        foreign = sorted(p.name for p in out.iterdir() if not (p.is_file() and is_run_file(p.name)))
        if foreign:
            raise RunError(f"--overwrite: {out} is not a run folder (it holds {foreign[0]!r}); refusing to delete it")
        return None
    summary = out / "summary.json"
    ckpt = out / "checkpoint.pt"
    cfg_file = out / "config.yaml"
    if not (summary.exists() or ckpt.exists() or cfg_file.exists()):
        return None
    if not resume:
        raise RunError(f"{out} already holds a run; pass --resume to continue it or --overwrite to start over")
    if summary.exists():
        done = read_summary(summary)
        if done.get("config_hash") != cfg_hash:
            raise RunError(f"{out} holds a finished run of another config (hash {done.get('config_hash')}, this one {cfg_hash})")
        return done
    return None


@contextmanager
def folder_lock(out: Path):
    """An exclusive lock on ``<out>.lock`` beside the run folder for the duration of the block
    (POSIX ``flock``; released by the OS if the process dies), removed when the block ends. The lock
    file is opened without following a symbolic link (a link there is refused, never written
    through) and without truncating anything. A no-op where ``fcntl`` is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / f"{out.name}.lock"
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    while True:
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as err:
            if path.is_symlink():
                raise RunError(f"{path}: is a symbolic link; refusing to lock through it") from None
            raise RunError(f"{path}: cannot create the run's lock file ({err.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:  # the holder before us may have removed the file: then lock the new one
                same = os.fstat(fd).st_ino == os.lstat(path).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
