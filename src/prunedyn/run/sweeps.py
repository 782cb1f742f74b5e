"""Sweeps: a grid (or list) of config overrides x seeds, run in parallel processes or on a Ray cluster.

A sweep spec is YAML::

    name: l2-vs-l1                 # default: the file's stem
    base: mlp-mnist                # a preset or a config YAML
    set: [data.source=embedded]    # overrides common to every run
    grid:                          # a mapping, or a list of mappings (their union):
      - {regularizer.kind: [l2], regularizer.lam: [1e-3, 5e-3], pruner.sigma: [0.002, 0.003]}
      - {regularizer.kind: [l1], regularizer.lam: [3e-5, 1e-4]}
    runs:                          # and/or an explicit list of override lists
      - [pruner.kind=none, regularizer.kind=none]
    seeds: [0, 1, 2]
    workers: 2                     # default: one per core

A point may carry ``label: <text>`` (e.g. the name of a baseline method): it
becomes a column of the summary table and is not passed to the config.

A point may start from another point's finished run: ``init.run: "@<label>"``
names the run of the point labelled ``<label>`` with the same seed (a second
stage: e.g. compact a node-pruned network, then prune its weights further).
Such points run after every point without a reference has finished; the
reference becomes that run's folder (an absolute path, so such a run's hash
depends on where the sweep's folder is).

Every run goes to ``<out>/<config name>-<config hash>``: a finished run is
skipped, an interrupted one resumes from its checkpoint, so a sweep killed
halfway and started again completes without redoing finished runs. At the
end ``summary.csv`` holds one row per run: the varied keys, the seed, the
run folder, and every scalar of the run's ``summary.json``.

A sweep longer than one sitting, where run folders do not outlive it: record its finished runs
(:func:`prunedyn.book.tradeoffs.record_sweep`, a small table kept with the code); the next sitting,
from a fresh checkout, takes them from that table (``recorded=``, ``prunedyn sweep --recorded``).

The runs execute in local processes (``backend="process"``, the default) or as
one Ray task each on a cluster (``backend="ray"``); the backend only decides
where :func:`_run_one` executes (:mod:`prunedyn.run.backends`): folders,
skipping, resuming and the table are the same code for both.
"""
from __future__ import annotations

import itertools
import json
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pandas as pd
import yaml
from tqdm.auto import tqdm

from prunedyn.atomic import atomic_write_text
from prunedyn.run.config import ConfigError, _read_yaml, config_hash, load_config


@dataclass
class SweepSpec:
    name: str
    base: str
    common: List[str] = field(default_factory=list)
    variants: List[Dict[str, Any]] = field(default_factory=list)
    seeds: List[int] = field(default_factory=lambda: [0])
    workers: int = 0

    def points(self) -> List[Dict[str, Any]]:
        """Every run: ``{"key": value, ..., "seed": s}``."""
        return [{**v, "seed": s} for v in self.variants for s in self.seeds]


def format_value(value: Any) -> str:
    if isinstance(value, (list, dict, bool)) or value is None:
        return json.dumps(value)
    if isinstance(value, str):
        try:
            yaml.safe_load(value)
        except yaml.YAMLError:  # e.g. "@label": quoted, it reads back as the same string
            return json.dumps(value)
    return str(value)


def _expand_grid(grid: Any) -> List[Dict[str, Any]]:
    grids = grid if isinstance(grid, list) else [grid]
    out = []
    for g in grids:
        if not isinstance(g, dict) or not g:
            raise ConfigError(f"sweep grid: expected a mapping of key -> list of values, got {g!r}")
        keys = list(g)
        values = [v if isinstance(v, list) else [v] for v in g.values()]
        out += [dict(zip(keys, combo)) for combo in itertools.product(*values)]
    return out


def _parse_run(item: Any) -> Dict[str, Any]:
    if isinstance(item, dict):
        return dict(item)
    if isinstance(item, list):
        out = {}
        for s in item:
            if not isinstance(s, str) or "=" not in s:
                raise ConfigError(f"sweep runs: {s!r} is not key=value")
            k, v = s.split("=", 1)
            if v.strip().startswith("@"):  # init.run=@label: a reference, not YAML
                out[k.strip()] = v.strip()
                continue
            try:
                out[k.strip()] = yaml.safe_load(v) if v.strip() else None
            except yaml.YAMLError:
                raise ConfigError(f"sweep runs: {k.strip()}={v!r}: the value is not valid YAML") from None
        return out
    raise ConfigError(f"sweep runs: expected a list of key=value strings or a mapping, got {item!r}")


def load_spec(path: Path | str) -> SweepSpec:
    """Read and validate a sweep spec; every run's config is validated before anything runs."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep spec not found: {path}")
    data = _read_yaml(path.read_text(), str(path))
    allowed = {"name", "base", "set", "grid", "runs", "seeds", "workers"}
    unknown = set(data) - allowed
    if unknown:
        raise ConfigError(f"unknown sweep key {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(allowed))}")
    if "base" not in data:
        raise ConfigError(f"{path}: a sweep needs 'base' (a preset name or config YAML)")
    base = str(data["base"])
    if base.endswith((".yaml", ".yml")) and not Path(base).is_absolute():
        base = str((path.parent / base).resolve())
    variants: List[Dict[str, Any]] = []
    if "grid" in data:
        variants += _expand_grid(data["grid"])
    for item in data.get("runs") or []:
        variants.append(_parse_run(item))
    if not variants:
        if "grid" in data or "runs" in data:  # an empty grid would silently run the base config
            raise ConfigError(f"{path}: 'grid' and 'runs' give no point; leave both out to run the base config")
        variants = [{}]
    keys = [tuple(sorted((k, repr(v)) for k, v in point.items())) for point in variants]
    for point, key in zip(variants, keys):
        if keys.count(key) > 1:
            raise ConfigError(f"sweep runs: the point {point!r} is listed twice")
    referenced = {reference_label(v) for v in variants} - {None}
    labels_given = [v.get(LABEL) for v in variants if reference_label(v) is None]
    twice = sorted(str(x) for x in referenced if labels_given.count(x) > 1)
    if twice:
        raise ConfigError(f"sweep init.run: '@{twice[0]}' is ambiguous: more than one point is labelled {twice[0]!r}")
    seeds = data.get("seeds", [0])
    seeds = seeds if isinstance(seeds, list) else [seeds]
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"sweep seeds: {seeds!r} must be a list of whole numbers")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"sweep seeds: {seeds!r} repeats a seed")
    name = str(data.get("name", path.stem))
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("~"):
        raise ConfigError(f"sweep name: {name!r} must be a plain folder name (no '/', '..' or '~')")
    workers = data.get("workers", 0)
    if not isinstance(workers, int) or workers < 0:
        raise ConfigError(f"sweep workers: {workers!r} must be a whole number >= 0 (0: one per core)")
    common = data.get("set") or []
    if not isinstance(common, list):
        raise ConfigError("sweep set: expected a list of key=value strings")
    spec = SweepSpec(name, base, [str(s) for s in common], variants, seeds, workers)
    labels = {v.get(LABEL) for v in variants if reference_label(v) is None}
    for point in spec.points():
        ref = reference_label(point)
        if ref is not None and ref not in labels:
            raise ConfigError(f"sweep init.run: {'@' + ref!r} names no label of a point without a reference; "
                              f"allowed: {', '.join('@' + str(x) for x in sorted(labels, key=str) if x is not None) or 'none'}")
        load_config(spec.base, overrides_of(spec, point))  # raises ConfigError naming the field
    return spec


def in_run_order(points: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The points without a reference first (in spec order), then those starting from another's run."""
    return [p for p in points if reference_label(p) is None] + [p for p in points if reference_label(p) is not None]


def reference_label(point: Dict[str, Any]) -> Optional[str]:
    """The label a point's ``init.run: "@label"`` refers to, or None."""
    v = point.get("init.run")
    return v[1:] if isinstance(v, str) and v.startswith("@") else None


LABEL = "label"  # a point's free-text label: a column of the table, not a config key


def overrides_of(spec: SweepSpec, point: Dict[str, Any]) -> List[str]:
    return [*spec.common, *(f"{k}={format_value(v)}" for k, v in point.items() if k != LABEL)]


def _run_one(base: str, overrides: List[str], folder: str) -> dict:
    import torch

    from prunedyn.run.experiments import run

    torch.set_num_threads(1)  # one process per core: more threads only contend
    try:
        return run(load_config(base, overrides), Path(folder), resume=True, progress=False)
    except Exception as e:  # one point failing stops no other: the sweep reports it (KeyboardInterrupt stops all)
        return {FAILED: f"{type(e).__name__}: {' '.join(str(e).split())}"}


#: The key of the result a failed run returns instead of its summary (the error, one line).
FAILED = "__failed__"


class SweepFailed(RuntimeError):
    """Some points of a sweep failed; the others finished and are in ``summary.csv``. The message
    has one line per failed run."""


def plan(spec: SweepSpec, out: Path) -> List[Tuple[Dict[str, Any], List[str], Path, Any]]:
    """Every run of ``spec`` in run order (:func:`in_run_order`): its point, its overrides, its
    folder ``<out>/<config name>-<config hash>`` (a second-stage point's hash depends on ``out``) and
    its config."""
    out = Path(out).resolve()
    jobs, folders = [], {}
    for point in in_run_order(spec.points()):
        ref = reference_label(point)
        resolved = point if ref is None else {**point, "init.run": str(folders[(ref, point["seed"])])}
        overrides = overrides_of(spec, resolved)
        cfg = load_config(spec.base, overrides)
        folder = out / f"{cfg.name}-{config_hash(cfg)}"
        folders.setdefault((point.get(LABEL), point["seed"]), folder)
        jobs.append((point, overrides, folder, cfg))  # the table keeps "@label", not this machine's path
    return jobs


def run_sweep(
    spec: SweepSpec,
    out: Path,
    workers: Optional[int] = None,
    progress: bool = True,
    backend: str = "process",
    address: Optional[str] = None,
    recorded: Optional[pd.DataFrame] = None,
) -> pd.DataFrame:
    """Run every point of ``spec`` into ``out`` (skipping finished runs); returns the summary table.

    ``backend``: where the runs execute, ``process`` (local processes, the default) or ``ray``
    (one task per run on the Ray cluster at ``address``, default ``$RAY_ADDRESS``); see
    :mod:`prunedyn.run.backends`. The folders, the skipping and the table are the same for both.

    ``recorded``: a table an earlier sitting recorded of this sweep (``record_sweep``'s, its ``run``
    column the folder's name): its runs are taken from it, not run again, but for one whose folder an
    unfinished second-stage point needs (``init.run``)."""
    from prunedyn.run.backends import Job, execute

    out = Path(out).resolve()  # absolute: a Ray task does not run in this process's directory
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "sweep.yaml", yaml.safe_dump({"name": spec.name, "base": spec.base, "set": spec.common,
                                                         "variants": spec.variants, "seeds": spec.seeds}, sort_keys=False))
    jobs = plan(spec, out)
    rows_of = {} if recorded is None else {str(r["run"]): r for r in recorded.to_dict("records")}
    sources = {(p.get(LABEL), p["seed"]): f for p, _, f, _ in reversed(jobs)}  # the first of a label, as plan()
    needed = {sources[(reference_label(p), p["seed"])] for p, _, f, _ in jobs
              if reference_label(p) is not None and not (f / "summary.json").exists() and f.name not in rows_of}
    waves: List[List[Job]] = [[], []]  # the points without a reference first, then those with one
    from_record: Dict[int, dict] = {}
    for i, (point, overrides, folder, cfg) in enumerate(jobs):
        if (folder / "summary.json").exists():
            continue
        if folder.name in rows_of and folder not in needed:
            from_record[i] = {k: v for k, v in rows_of[folder.name].items() if k not in {*point, "run"} and not pd.isna(v)}
            continue
        job = Job(i, (spec.base, overrides, str(folder)), cfg.device, getattr(cfg, "threads", 0) or 1)
        waves[reference_label(point) is not None].append(job)
    todo = [job for wave in waves for job in wave]
    results: Dict[int, dict] = {}
    bar = tqdm(total=len(jobs), desc=f"sweep {spec.name}", unit="run", disable=not progress)
    skipped = set(range(len(jobs))) - {job.index for job in todo}
    for i in sorted(skipped):
        results[i] = from_record.get(i) or json.loads((jobs[i][2] / "summary.json").read_text())
        bar.update(1)
    # the spec's `workers` sizes a local process pool; on a cluster only --workers caps the runs in flight
    n_workers = workers or (spec.workers if backend == "process" else 0) or None
    try:
        for wave in waves:  # a second-stage run needs its source's last checkpoint
            with closing(execute(_run_one, wave, backend, n_workers, address)) as finished:
                for i, summary in finished:
                    results[i] = summary
                    bar.update(1)
    finally:
        bar.close()
    failed = {i: results.pop(i)[FAILED] for i in list(results) if FAILED in results[i]}
    rows = []
    for i, (point, _, folder, _) in enumerate(jobs):
        if i not in results:
            continue
        s = results[i]
        row = {**{k: format_value(v) if isinstance(v, (list, dict)) else v for k, v in point.items()}, "run": folder.name}
        # sorted as in summary.json: the same columns whether a run was read back or just returned
        row.update({k: s[k] for k in sorted(s) if not isinstance(s[k], (dict, list))})
        rows.append(row)
    table = pd.DataFrame(rows)
    atomic_write_text(out / "summary.csv", table.to_csv(index=False, float_format="%.9g"))
    if failed:
        def name(i):
            point = jobs[i][0]
            return f"{point.get(LABEL) or ', '.join(f'{k}={v}' for k, v in point.items() if k != 'seed')} (seed {point['seed']})"
        raise SweepFailed("\n".join([f"{len(failed)} of {len(jobs)} runs failed; the {len(rows)} that finished are in "
                                      f"{out / 'summary.csv'}:"] + [f"  {name(i)}: {failed[i]}" for i in sorted(failed)]))
    return table
