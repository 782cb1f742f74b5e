"""The book's access to experiments: profiles and cached runs.

A chapter asks for a run by preset (or YAML) and overrides; :func:`run_cached`
runs it once into ``runs/<name>-<config hash>`` and afterwards reads the
finished folder back, so chapters that share a run (the same config) share
its result, and re-executing the book recomputes nothing that is already
done. Interrupted runs are resumed from their last checkpoint.

Profiles (the ``profile`` parameter of every chapter notebook):

- ``quick``: the embedded data on CPU, and for the conv nets the smaller
  settings of :data:`QUICK` (narrower networks, fewer epochs); every chapter
  in minutes;
- ``full``: the presets as they are (paper-scale widths), on a GPU when there
  is one, with torchvision's full datasets (downloaded where the internet is
  reachable) for MNIST and CIFAR-10; the medical data sets exist only embedded.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import pandas as pd
from tqdm.auto import tqdm

from prunedyn.run.config import (
    ConfigError,
    ExperimentConfig,
    config_hash,
    from_dict,
    load_config,
)
from prunedyn.run.experiments import run
from prunedyn.run.records import load_tables

PROFILES: Dict[str, Sequence[str]] = {
    "quick": ("data.source=embedded",),
    "full": ("data.source=torchvision", "data.download=true", "device=auto"),
}


def repo_root() -> Path:
    """The checkout being worked in: the nearest folder at or above the working directory that holds
    ``_toc.yml`` (a chapter's kernel runs in ``chapters/``), else the working directory. Never the
    folder the package was installed from: a second checkout sharing the environment builds itself."""
    here = Path.cwd().resolve()
    for parent in (here, *here.parents):
        if (parent / "_toc.yml").exists():
            return parent
    return here


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


# What the quick profile changes, per preset, so that a chapter's runs take
# minutes on a 2-core CPU (the full profile runs the presets as they are).
QUICK: Dict[str, Sequence[str]] = {
    "vgg16-cifar10": ("model.width=0.25", "epochs=15"),
    "unet-dsb2018": ("model.width=0.0625", "epochs=12", "data.batch_size=8", "data.train_size=432"),
    "cxr-cnn": ("model.width=0.25", "epochs=30"),
}
# Data sets that torchvision does not have: the full profile keeps them embedded.
EMBEDDED_ONLY = ("unet-dsb2018", "cxr-cnn")


def profile_overrides(profile: str, source: str) -> list:
    """The overrides that ``profile`` applies to the preset (or YAML) ``source``."""
    check_profile(profile)
    if profile == "quick":
        return [*PROFILES["quick"], *QUICK.get(source, ())]
    if source in EMBEDDED_ONLY:
        return ["data.source=embedded", "device=auto"]
    return list(PROFILES["full"])


def resolve(source: str, overrides: Sequence[str] = (), profile: str = "quick") -> ExperimentConfig:
    return load_config(source, [*profile_overrides(profile, source), *overrides])


def run_folder(cfg: ExperimentConfig) -> Path:
    """Where the cached run of ``cfg`` lives: ``runs_dir()/<name>-<config hash>``."""
    return runs_dir() / f"{cfg.name}-{config_hash(cfg)}"


def run_cached(source: str, overrides: Sequence[str] = (), profile: str = "quick", progress: bool = False) -> RunResult:
    """Run (or reuse) ``source`` with ``overrides`` under ``profile``; see the module doc."""
    cfg = resolve(source, overrides, profile)
    folder = run_folder(cfg)
    summary = run(cfg, folder, resume=True, progress=progress)
    return RunResult(cfg, folder, summary)


#: The seeds over which the book compares runs: a claim that compares runs rests on all of them.
SEEDS: Tuple[int, ...] = (0, 1, 2)


def _run_in_worker(cfg_dict: dict, folder: str) -> dict:
    return run(from_dict(cfg_dict), Path(folder), resume=True, progress=False)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one: in a
    container that can be far fewer than ``os.cpu_count()``)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers(jobs: int) -> int:
    """Worker processes for ``jobs`` runs: one per core (``$PRUNEDYN_WORKERS`` overrides), at most ``jobs``.

    Each run pins its own thread count (``threads``, 1 by default), so the
    numbers do not depend on how many run at once.
    """
    env = os.environ.get("PRUNEDYN_WORKERS")
    n = int(env) if env else usable_cores()
    return max(1, min(n, jobs))


def run_many(
    requests: Sequence[Tuple[str, Sequence[str]]], profile: str = "quick", workers: Optional[int] = None, progress: bool = True
) -> List[RunResult]:
    """Run (or reuse) every ``(source, overrides)`` of ``requests``; the missing ones in parallel.

    Runs that are not finished yet go to ``workers`` processes (default:
    :func:`default_workers`); a tqdm bar counts finished runs. Results come back
    in the order of ``requests``, as :func:`run_cached` would return them one by one.
    """
    cfgs = [resolve(source, overrides, profile) for source, overrides in requests]
    folders = [run_folder(c) for c in cfgs]
    todo = sorted({str(f): c for c, f in zip(cfgs, folders) if not (f / "summary.json").exists()}.items())
    n = default_workers(len(todo)) if workers is None else max(1, int(workers))
    if todo and n == 1:
        for folder, cfg in tqdm(todo, desc="runs", unit="run", disable=not progress):
            run(cfg, Path(folder), resume=True, progress=False)
    elif todo:
        from contextlib import closing

        from prunedyn.run.backends import Job, execute

        jobs = [Job(i, (cfg.to_dict(), folder)) for i, (folder, cfg) in enumerate(todo)]
        with closing(execute(_run_in_worker, jobs, "process", n)) as finished:  # the sweeps' process pool
            for _ in tqdm(finished, total=len(jobs), desc="runs", unit="run", disable=not progress):
                pass
    return [RunResult(c, f, run(c, f, resume=True, progress=False)) for c, f in zip(cfgs, folders)]


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


# The conv nets: BatchNorm makes a filter's scale free, so a regularizer on the
# conv weights alone barely kills filters (chapter "VGG-16 on CIFAR-10"); these
# comparisons decay every parameter (regularizer.scope=all), as SGD's weight_decay
# does. L1 at a strength that prunes about as many weights as L2.
CONV_COMPARISON: Dict[str, Sequence[str]] = {
    "none": ("regularizer.kind=none", "regularizer.lam=0"),
    "l1": ("regularizer.kind=l1", "regularizer.lam=0.0001", "regularizer.scope=all"),
    "l2": ("regularizer.kind=l2", "regularizer.lam=0.005", "regularizer.scope=all"),
    "dense": ("regularizer.kind=l2", "regularizer.lam=0.0005", "regularizer.scope=all", "pruner.kind=none"),
}


def _conv_quick(lam_l2: float, lam_l1: float, sigma: float) -> Dict[str, Sequence[str]]:
    """CONV_COMPARISON with the quick profile's stronger settings (see QUICK_COMPARISONS)."""
    s = f"pruner.sigma={sigma}"
    return {
        "none": ("regularizer.kind=none", "regularizer.lam=0", s),
        "l1": ("regularizer.kind=l1", f"regularizer.lam={lam_l1}", "regularizer.scope=all", s),
        "l2": ("regularizer.kind=l2", f"regularizer.lam={lam_l2}", "regularizer.scope=all", s),
        "dense": CONV_COMPARISON["dense"],
    }


# The quick profile trains narrow conv nets for a few hundred to a thousand steps,
# ten times fewer than the presets: a narrow layer's weights are larger (smaller
# fan-in) and the regularizer has less time to shrink them into SWP's reach, so the
# quick comparisons raise lambda (and, for the narrowest nets, sigma) to let the same
# mechanism act within the budget. Chosen from short CPU trials; the chapters print them.
QUICK_COMPARISONS: Dict[str, Dict[str, Sequence[str]]] = {
    "vgg16-cifar10": _conv_quick(0.02, 0.0003, 0.002),
    "unet-dsb2018": _conv_quick(0.01, 0.001, 0.01),
    "cxr-cnn": _conv_quick(0.05, 0.001, 0.01),
}
COMPARISONS: Dict[str, Dict[str, Sequence[str]]] = {
    "mlp-mnist": COMPARISON,
    "vgg16-cifar10": CONV_COMPARISON,
    "unet-dsb2018": CONV_COMPARISON,
    "cxr-cnn": CONV_COMPARISON,
}


def comparison_table(profile: str = "quick", preset: str = "mlp-mnist") -> Dict[str, Sequence[str]]:
    """The comparison's overrides per run name for ``preset`` under ``profile``."""
    if preset not in COMPARISONS:
        raise ConfigError(f"preset {preset!r} has no comparison; allowed: {', '.join(COMPARISONS)}")
    check_profile(profile)
    return QUICK_COMPARISONS.get(preset, COMPARISONS[preset]) if profile == "quick" else COMPARISONS[preset]


def seeded_comparison(
    profile: str = "quick",
    preset: str = "mlp-mnist",
    seeds: Sequence[int] = SEEDS,
    overrides: Sequence[str] = (),
    runs: Optional[Sequence[str]] = None,
    workers: Optional[int] = None,
    progress: bool = True,
) -> Dict[str, List[RunResult]]:
    """``{"none"|"l1"|"l2"|"dense": [RunResult per seed]}``: :func:`regularizer_comparison` over ``seeds``.

    ``runs`` selects some of the comparison's runs (default: all). Missing runs
    are trained in parallel (:func:`run_many`).
    """
    table = comparison_table(profile, preset)
    keys = list(runs) if runs is not None else list(table)
    unknown = [k for k in keys if k not in table]
    if unknown:
        raise ConfigError(f"runs: {unknown} not in the comparison; allowed: {', '.join(table)}")
    requests = [(preset, [*table[k], f"seed={s}", *overrides]) for k in keys for s in seeds]
    results = run_many(requests, profile, workers=workers, progress=progress)
    return {k: results[i * len(seeds):(i + 1) * len(seeds)] for i, k in enumerate(keys)}


def summary_table(results: Mapping[str, Union[RunResult, Sequence[RunResult]]]) -> pd.DataFrame:
    """One row per run and seed: ``run``, ``seed`` and every scalar of the run's ``summary.json``."""
    rows = []
    for key, value in results.items():
        for r in [value] if isinstance(value, RunResult) else value:
            scalars = {k: v for k, v in r.summary.items() if isinstance(v, (int, float, str, bool)) and k != "seed"}
            rows.append({"run": key, "seed": r.config.seed, **scalars})
    return pd.DataFrame(rows)


def regularizer_comparison(
    profile: str = "quick", preset: str = "mlp-mnist", seed: int = 0, progress: bool = False, overrides: Sequence[str] = ()
) -> Dict[str, RunResult]:
    """``{"none"|"l1"|"l2"|"dense": RunResult}``: SWP under each regularizer, and the dense
    baseline, with the settings of :data:`COMPARISONS` for ``preset`` (:data:`QUICK_COMPARISONS`
    in the quick profile where the preset has them), plus ``overrides``."""
    table = comparison_table(profile, preset)
    return {
        key: run_cached(preset, [*settings, f"seed={seed}", *overrides], profile=profile, progress=progress)
        for key, settings in table.items()
    }


def load_model(result: RunResult, map_location: str = "cpu"):
    """The model of a finished run, with the weights of its last checkpoint, in eval mode."""
    from prunedyn.run.experiments import load_run_model

    model, _, _ = load_run_model(result.folder, map_location=map_location)
    return model.eval()
