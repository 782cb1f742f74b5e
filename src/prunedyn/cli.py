"""The ``prunedyn`` command line: run experiments, compact finished runs, list presets.

Exit codes: 0 success; 1 training diverged (NaN/inf; the last good checkpoint
is kept), or some runs of a sweep failed (one line each; the others are in its
summary.csv); 2 bad input (config, data, run folder) or a file system that refuses
a write (read-only, full), with a one-line message.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

EPILOG_RUN = """\
examples:
  prunedyn run mlp-mnist                               the preset, into runs/mlp-mnist-<hash>
  prunedyn run mlp-mnist --set pruner.kind=none --set regularizer.kind=none
                                                       the dense baseline of the same run
  prunedyn run my.yaml --out runs/a --set epochs=5     a YAML config with an override
  prunedyn run mlp-mnist --out runs/a --resume         continue a killed run

config keys (--set KEY=VALUE, values parsed as YAML):
{keys}
"""


def _parser() -> argparse.ArgumentParser:
    from prunedyn import __version__
    from prunedyn.run.config import key_help

    p = argparse.ArgumentParser(
        prog="prunedyn",
        description="Stochastic weight pruning, L1/L2 regularization and node death: run and inspect experiments.",
    )
    p.add_argument("--version", action="version", version=f"prunedyn {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser(
        "run",
        help="train a preset or YAML config, recording the pruning dynamics",
        description="Train a model with the configured regularizer and pruner; write the resolved config, "
        "per-epoch tables (metrics, layers, nodes, histograms), a checkpoint and summary.json to the run folder.",
        epilog=EPILOG_RUN.format(keys="\n".join(f"  {line}" for line in key_help())),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("config", help="a preset name (see `prunedyn presets`) or a path to a .yaml config")
    r.add_argument("--out", type=Path, help="run folder (default: runs/<name>-<config hash>)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set pruner.sigma=0.002 (repeatable)")
    r.add_argument("--resume", action="store_true", help="continue from the folder's last checkpoint (a finished run is reported as is)")
    r.add_argument("--overwrite", action="store_true", help="delete what the run folder holds and start over")
    r.add_argument("--quiet", action="store_true", help="no progress bar")

    c = sub.add_parser(
        "compact",
        help="remove the dead nodes of a finished run's model",
        description="Load a run's checkpoint, remove dead nodes (folding the constant output of in-dead nodes "
        "into the next bias), check the outputs are unchanged, and write compact.pt (plain tensors: the state dict "
        "and widths, read back with prunedyn.load_compact) and compact.json to the run folder.",
    )
    c.add_argument("run_dir", type=Path, help="a run folder written by `prunedyn run`")

    sw = sub.add_parser(
        "sweep",
        help="run a grid of config overrides x seeds in parallel processes or on a Ray cluster",
        description="Run every point of a sweep spec (see prunedyn.run.sweeps) in parallel processes, or as one "
        "task per run on a Ray cluster (--backend ray), one folder per run named by its config hash. Finished runs "
        "are skipped and interrupted ones resume, so a killed sweep restarted completes without redoing work. "
        "Writes summary.csv (one row per run) to the sweep folder.",
        epilog="examples:\n"
        "  prunedyn sweep spec.yaml                                  local processes, one per core\n"
        "  prunedyn sweep spec.yaml --backend ray --address ray://head:10001 --out /shared/sweeps/a\n"
        "  RAY_ADDRESS=head:6379 prunedyn sweep spec.yaml --backend ray   from a cluster node\n"
        "on a multi-node cluster --out (and $PRUNEDYN_DATA) must be on storage every node sees at the same path,\n"
        "and every node needs prunedyn installed (pip install 'prunedyn[ray]').",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sw.add_argument("spec", type=Path, help="sweep spec YAML (keys: name, base, set, grid, runs, seeds, workers)")
    sw.add_argument("--out", type=Path, help="sweep folder (default: runs/sweeps/<name>)")
    sw.add_argument("--workers", type=int, help="parallel runs (process: default the spec's, else one per core; "
                    "ray: at most this many tasks at once, default as many as the cluster fits)")
    sw.add_argument("--backend", choices=("process", "ray"), default="process",
                    help="where the runs execute: local processes (default) or a Ray cluster, one task per run")
    sw.add_argument("--address", help="the Ray cluster (ray://host:10001, or host:6379 on a cluster node; "
                    "default $RAY_ADDRESS, else a local Ray instance); only with --backend ray")
    sw.add_argument("--recorded", type=Path, metavar="CSV", action="append", help="a table an earlier sitting "
                    "recorded (record_sweep's <name>.csv): its runs are taken from it, not run again (repeatable)")
    sw.add_argument("--quiet", action="store_true", help="no progress bar")

    from prunedyn.book.build import add_command

    add_command(sub)
    sub.add_parser("presets", help="list the presets shipped with the package")
    return p


def _fail(message: str, code: int = 2) -> int:
    print(f"prunedyn: error: {message}", file=sys.stderr)
    return code


def cmd_run(args) -> int:
    from prunedyn.run.config import config_hash, load_config
    from prunedyn.run.experiments import run

    cfg = load_config(args.config, args.overrides)
    out = args.out or Path("runs") / f"{cfg.name}-{config_hash(cfg)}"
    summary = run(cfg, out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    print(json.dumps(summary, indent=2))
    print(f"run folder: {out}", file=sys.stderr)
    return 0


def cmd_sweep(args) -> int:
    import pandas as pd

    from prunedyn.run.sweeps import load_spec, run_sweep

    if args.workers is not None and args.workers < 1:
        return _fail(f"--workers: {args.workers} must be >= 1")
    if args.address and args.backend != "ray":
        return _fail("--address is for --backend ray")
    spec = load_spec(args.spec)
    tables = []
    for path in args.recorded or []:
        try:
            tables.append(pd.read_csv(path))
        except (OSError, ValueError, UnicodeDecodeError) as e:
            return _fail(f"--recorded {path}: unreadable ({' '.join(str(e).split())[:200]})")
        if "run" not in tables[-1]:
            return _fail(f"--recorded {path}: has no 'run' column (a table record_sweep wrote)")
    out = args.out or Path("runs") / "sweeps" / spec.name
    table = run_sweep(spec, out, workers=args.workers, progress=not args.quiet, backend=args.backend,
                      address=args.address, recorded=pd.concat(tables) if tables else None)
    varied = sorted({k for point in spec.points() for k in point})
    cols = [*varied, "test_accuracy", "weight_sparsity", "dead_node_fraction", "params_compact", "run"]
    print(table[[c for c in cols if c in table]].to_string(index=False))
    print(f"summary: {out / 'summary.csv'}", file=sys.stderr)
    return 0


def cmd_compact(args) -> int:
    from prunedyn.atomic import atomic_write_json
    from prunedyn.data.datasets import load_dataset
    from prunedyn.run.experiments import RunError, load_run_model
    from prunedyn.structure.surgery import compact, save_compact

    try:
        model, cfg, ckpt = load_run_model(args.run_dir)
    except RunError as e:
        return _fail(str(e))
    example = load_dataset(cfg.data).x_test[:256]
    model, report = compact(model, example)
    info = {"epoch": ckpt["epoch"], **report.to_dict()}
    save_compact(model, args.run_dir / "compact.pt", report)  # plain tensors: prunedyn.load_compact reads it
    atomic_write_json(args.run_dir / "compact.json", info)
    print(json.dumps(info, indent=2))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    from prunedyn.data.datasets import DataError
    from prunedyn.run.config import ConfigError
    from prunedyn.run.experiments import RunError, TrainingDiverged
    from prunedyn.run.sweeps import SweepFailed
    from prunedyn.atomic import CheckpointError
    from prunedyn.structure.surgery import CompactionError

    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "compact":
            return cmd_compact(args)
        if args.command == "sweep":
            return cmd_sweep(args)
        if args.command == "book":
            from prunedyn.book.build import command

            return command(args, _fail)
        from prunedyn.run.config import preset_names

        print("\n".join(preset_names()))
        return 0
    except TrainingDiverged as e:
        return _fail(f"training diverged: {e}", 1)
    except SweepFailed as e:
        return _fail(str(e), 1)
    except (ConfigError, DataError, RunError, CompactionError, CheckpointError) as e:
        return _fail(str(e))
    except OSError as e:  # the file system refused: a read-only or full disk, a path that is not a folder
        return _fail(f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}")
    except KeyboardInterrupt:
        return _fail("interrupted; continue with --resume", 130)


if __name__ == "__main__":
    sys.exit(main())
