"""The book's access to experiments: profiles and cached runs.

A chapter asks for a run by preset (or YAML) and overrides; :func:`run_cached`
runs it once into ``runs/<name>-<config hash>`` and afterwards reads the
finished folder back, so chapters that share a run (the same config) share
its result, and re-executing the book recomputes nothing that is already
done. Interrupted runs are resumed from their last checkpoint.

Profiles (the ``profile`` parameter of every chapter notebook):

- ``quick``: the embedded data on CPU; every chapter in minutes;
- ``full``: torchvision's full datasets (downloaded where the internet is
  reachable) and paper-scale settings where hardware allows.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Dict, Sequence

import pandas as pd

from .config import ConfigError, ExperimentConfig, config_hash, load_config
from .experiments import run
from .records import load_tables

PROFILES: Dict[str, Sequence[str]] = {
    "quick": ("data.source=embedded",),
    "full": ("data.source=torchvision", "data.download=true", "device=auto"),
}


def repo_root() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "_toc.yml").exists():
            return parent
    return Path.cwd()


def runs_dir() -> Path:
    """Where cached runs live: ``$PRUNEDYN_RUNS``, else ``runs/`` at the repository root."""
    env = os.environ.get("PRUNEDYN_RUNS")
    return Path(env) if env else repo_root() / "runs"


def check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ConfigError(f"profile: {profile!r} is not allowed; allowed: {', '.join(PROFILES)}")


@dataclass
class RunResult:
    """A finished run: its config, folder and tables (pandas DataFrames, loaded on first use)."""

    config: ExperimentConfig
    folder: Path
    summary: dict = field(repr=False)

    @cached_property
    def _tables(self) -> Dict[str, pd.DataFrame]:
        return load_tables(self.folder)

    @property
    def metrics(self) -> pd.DataFrame:
        return self._tables["metrics"]

    @property
    def layers(self) -> pd.DataFrame:
        return self._tables["layers"]

    @property
    def nodes(self) -> pd.DataFrame:
        return self._tables["nodes"]

    @property
    def histograms(self) -> pd.DataFrame:
        return self._tables["histograms"]


def resolve(source: str, overrides: Sequence[str] = (), profile: str = "quick") -> ExperimentConfig:
    check_profile(profile)
    return load_config(source, [*PROFILES[profile], *overrides])


def run_cached(source: str, overrides: Sequence[str] = (), profile: str = "quick", progress: bool = False) -> RunResult:
    """Run (or reuse) ``source`` with ``overrides`` under ``profile``; see the module doc."""
    cfg = resolve(source, overrides, profile)
    folder = runs_dir() / f"{cfg.name}-{config_hash(cfg)}"
    summary = run(cfg, folder, resume=True, progress=progress)
    return RunResult(cfg, folder, summary)


# The book's central comparison: the same MLP, data, seed and stochastic pruner,
# with each regularizer at a strength that prunes a comparable share of weights
# (l1 1e-4 and l2 5e-3 both reach about 95% weight sparsity on the quick
# profile), plus the dense baseline without pruning or regularization.
COMPARISON: Dict[str, Sequence[str]] = {
    "none": ("regularizer.kind=none", "regularizer.lam=0"),
    "l1": ("regularizer.kind=l1", "regularizer.lam=0.0001"),
    "l2": ("regularizer.kind=l2", "regularizer.lam=0.005"),
    "dense": ("regularizer.kind=none", "regularizer.lam=0", "pruner.kind=none"),
}


def regularizer_comparison(profile: str = "quick", preset: str = "mlp-mnist", seed: int = 0, progress: bool = False) -> Dict[str, RunResult]:
    """``{"none"|"l1"|"l2"|"dense": RunResult}``: SWP under each regularizer, and the dense baseline."""
    return {
        key: run_cached(preset, [*overrides, f"seed={seed}"], profile=profile, progress=progress)
        for key, overrides in COMPARISON.items()
    }


def load_model(result: RunResult, map_location: str = "cpu"):
    """The model of a finished run, with the weights of its last checkpoint."""
    import torch

    from .datasets import load_dataset
    from .models import build_model

    data = load_dataset(result.config.data)
    model = build_model(result.config.model, data.in_shape, data.num_classes)
    ckpt = torch.load(result.folder / "checkpoint.pt", map_location=map_location, weights_only=False)
    model.load_state_dict(ckpt["model"])
    return model.eval()
