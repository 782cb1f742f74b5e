"""Sweeps: expansion, validation, parallel runs, kill and restart without redoing work."""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from prunedyn.run.config import ConfigError
from prunedyn.run.sweeps import load_spec, run_sweep
from conftest import SMALL, prunedyn_cmd, run_cli

SPEC = """
base: mlp-mnist
set: {common}
grid:
  - {{regularizer.kind: [l2], regularizer.lam: [0.001, 0.01]}}
  - {{regularizer.kind: [l1], regularizer.lam: [0.0001]}}
runs:
  - [pruner.kind=none, regularizer.kind=none]
seeds: [0, 1]
"""


def write_spec(tmp_path, extra=(), text=SPEC):
    common = json.dumps([*SMALL, "epochs=2", "data.train_size=800", *extra])
    path = tmp_path / "spec.yaml"
    path.write_text(text.format(common=common))
    return path


def test_spec_expands_grid_union_and_runs_times_seeds(tmp_path):
    spec = load_spec(write_spec(tmp_path))
    assert len(spec.variants) == 4 and len(spec.points()) == 8
    assert {"regularizer.kind": "l1", "regularizer.lam": 0.0001, "seed": 1} in spec.points()
    assert {"pruner.kind": "none", "regularizer.kind": "none", "seed": 0} in spec.points()


# Bad specs: tests/test_bad_input.py (SWEEP_CASES), through the command line.


@pytest.mark.slow
def test_sweep_table_matches_each_runs_summary(tmp_path):
    spec = load_spec(write_spec(tmp_path))
    table = run_sweep(spec, tmp_path / "out", workers=2, progress=False)
    assert len(table) == 8 and table["run"].nunique() == 8
    for _, row in table.iterrows():
        s = json.loads((tmp_path / "out" / row["run"] / "summary.json").read_text())
        assert row["test_accuracy"] == pytest.approx(s["test_accuracy"])
        assert row["seed"] == s["seed"]
    dense = table[table["pruner.kind"] == "none"]
    assert (dense["weight_sparsity"] == 0).all()
    assert (table[table["pruner.kind"] != "none"]["weight_sparsity"] > 0).all()
    on_disk = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert list(on_disk["run"]) == list(table["run"])


@pytest.mark.slow
def test_killed_sweep_restarts_without_redoing_finished_runs(tmp_path):
    spec_path = write_spec(tmp_path, extra=["epochs=3", "data.train_size=2000"])
    out = tmp_path / "out"
    proc = subprocess.Popen(prunedyn_cmd("sweep", spec_path, "--out", out, "--workers", "1", "--quiet"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(out.glob("*/summary.json"))) < 2:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in out.glob("*/summary.json")}
    assert 2 <= len(finished) < 8
    res = run_cli("sweep", spec_path, "--out", out, "--workers", "2", "--quiet")
    assert res.returncode == 0, res.stderr
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # not redone
    table = pd.read_csv(out / "summary.csv")
    assert len(table) == 8 and (table["epochs_completed"] == 3).all()


@pytest.mark.parametrize("name, runs", [("paper-vgg16", 24), ("paper-unet", 15), ("paper-cxr", 15)])
def test_paper_scale_specs_resolve_to_valid_configs(name, runs):
    """The paper-scale sweeps (one command each, run on a GPU) expand to valid full-width configs."""
    from pathlib import Path

    from prunedyn.run.config import load_config
    from prunedyn.run.sweeps import overrides_of

    spec = load_spec(Path(__file__).parents[1] / "chapters" / "sweeps" / f"{name}.yaml")
    points = spec.points()
    assert len(points) == runs and sorted({p["seed"] for p in points}) == [0, 1, 2]
    cfgs = [load_config(spec.base, overrides_of(spec, p)) for p in points]
    assert all(c.model.width == 1.0 and c.epochs >= 100 and c.device == "auto" for c in cfgs)
    kinds = {(c.pruner.kind, c.regularizer.kind, c.regularizer.scope) for c in cfgs}
    assert ("slimming", "l1", "bn") in kinds  # network slimming
    assert ("stochastic", "group_lasso", "weights") in kinds
    assert ("none", "l2", "all") in kinds  # the dense recipe


STAGED = """
base: mlp-mnist
set: {common}
runs:
  - {{label: swp, pruner.kind: stochastic, pruner.sigma: 0.02, regularizer.kind: l2, regularizer.lam: 0.05}}
  - {{label: dense, pruner.kind: none, regularizer.kind: none}}
  - {{label: staged, init.run: "@swp", pruner.kind: magnitude, pruner.scope: global, pruner.sparsity: 0.9,
     regularizer.kind: none, epochs: 1}}
  - {{label: dense-more, init.run: "@dense", init.compact: false, pruner.kind: none, regularizer.kind: none, epochs: 1}}
seeds: [0, 1]
"""


def test_a_reference_to_an_unknown_label_is_rejected(tmp_path):
    path = write_spec(tmp_path, text=STAGED.replace('"@swp"', '"@nope"'))
    with pytest.raises(ConfigError, match="@nope.*allowed: @dense, @swp"):
        load_spec(path)


@pytest.mark.slow
def test_second_stage_points_start_from_their_sources_run_of_the_same_seed(tmp_path):
    """``init.run: "@label"``: the staged run of seed s starts from the (compacted) run labelled
    ``label`` of seed s, after it finished; the table keeps the reference, not the path."""
    import yaml

    spec = load_spec(write_spec(tmp_path, text=STAGED))
    table = run_sweep(spec, tmp_path / "out", workers=2, progress=False)
    assert len(table) == 8
    by = {(r["label"], r["seed"]): r for _, r in table.iterrows()}
    for seed in (0, 1):
        src, staged = by[("swp", seed)], by[("staged", seed)]
        cfg = yaml.safe_load((tmp_path / "out" / staged["run"] / "config.yaml").read_text())
        assert cfg["init"]["run"] == str(tmp_path / "out" / src["run"]) and staged["init.run"] == "@swp"
        # compacted first: the staged network has the source's alive nodes only
        assert staged["nodes_total"] == src["nodes_alive"] < src["nodes_total"]
        assert staged["weight_sparsity"] == pytest.approx(0.9, abs=1e-3)
        more = by[("dense-more", seed)]
        cfg = yaml.safe_load((tmp_path / "out" / more["run"] / "config.yaml").read_text())
        assert cfg["init"]["run"] == str(tmp_path / "out" / by[("dense", seed)]["run"]) and more["nodes_total"] == by[("dense", seed)]["nodes_total"]
    # restarted, nothing is redone and the table is the same
    again = run_sweep(load_spec(tmp_path / "spec.yaml"), tmp_path / "out", workers=2, progress=False)
    pd.testing.assert_frame_equal(again, table)
    # the loader that reads a sweep still running rebuilds the same rows from the run folders
    from prunedyn.book.tradeoffs import load_table

    (tmp_path / "out" / "summary.csv").unlink()
    rebuilt = load_table(tmp_path / "out", derived=False)
    assert list(rebuilt["run"]) == list(table["run"]) and list(rebuilt["init.run"].fillna("")) == list(table["init.run"].fillna(""))


@pytest.mark.parametrize("preset, name", [("vgg16-cifar10", "vgg16"), ("unet-dsb2018", "unet"), ("cxr-cnn", "cxr")])
def test_cpu_scale_specs_repeat_the_chapters_live_runs(preset, name):
    """The recorded CPU-scale comparison and schedule sweeps of chapters 6-8 contain the chapters'
    own SWP + L2 and dense runs (same config hash, seeds 0-2), so that the chapters can set
    their live runs beside the recorded methods; the schedule's first budget is the chapter's."""
    import sys
    from pathlib import Path

    from prunedyn.run.config import config_hash, load_config
    from prunedyn.book.study import resolve
    from prunedyn.run.sweeps import overrides_of

    root = Path(__file__).parents[1]
    sys.path.insert(0, str(root / "chapters"))
    try:
        import _ch06_08 as CH
    finally:
        sys.path.pop(0)
    live = {config_hash(resolve(src, ov, "quick")) for src, ov in CH.requests("quick", preset)}
    for kind in ("baselines", "schedule"):
        spec = load_spec(root / "chapters" / "sweeps" / f"cpu-{kind}-{name}.yaml")
        points = [p for p in spec.points() if p.get("label") in ("swp-l2", "dense")]
        cfgs = [load_config(spec.base, overrides_of(spec, p)) for p in points]
        first = min(c.epochs for c in cfgs)
        hashes = {config_hash(c) for c in cfgs if c.epochs == first}
        assert len(hashes) == 6 and hashes <= live, (kind, len(hashes & live))


def _children(pid):
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_killing_a_sweep_kills_its_pool_workers(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from conftest import SMALL

    spec = tmp_path / "s.yaml"
    spec.write_text("name: orphans\nbase: mlp-mnist\nset:\n" + "".join(f"  - '{s}'\n" for s in [*SMALL, "epochs=50"])
                    + "grid:\n  - {pruner.sigma: [0.01, 0.02]}\nseeds: [0]\nworkers: 2\n")
    proc = subprocess.Popen([sys.executable, "-m", "prunedyn.cli", "sweep", str(spec), "--out", str(tmp_path / "o"),
                             "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, workers = time.time() + 120, []
    while time.time() < deadline and len(workers) < 2:
        workers = [c for c in _children(proc.pid) if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
        time.sleep(0.2)
    assert len(workers) == 2, "the pool did not start"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 20
    while time.time() < deadline and any(Path(f"/proc/{w}").exists() for w in workers):
        time.sleep(0.2)
    alive = [w for w in workers if Path(f"/proc/{w}").exists()]
    for w in alive:
        os.kill(w, signal.SIGKILL)
    assert not alive, "pool workers outlived the sweep"


@pytest.mark.slow
def test_a_failing_point_stops_no_other_and_the_summary_keeps_the_finished(tmp_path, capsys):
    from prunedyn.cli import main

    spec = tmp_path / "s.yaml"
    spec.write_text("name: partial\nbase: mlp-mnist\nset:\n" + "".join(f"  - '{s}'\n" for s in [*SMALL, "epochs=1"])
                    + "grid:\n  - {label: [swp], pruner.kind: [stochastic]}\n"
                    + "  - {label: [slim], pruner.kind: [slimming]}\nseeds: [0]\nworkers: 2\n")
    code = main(["sweep", str(spec), "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert "1 of 2 runs failed" in err[0] and len(err) == 2 and err[1].strip().startswith("slim (seed 0):"), err
    assert "Traceback" not in "\n".join(err)
    table = pd.read_csv(tmp_path / "o" / "summary.csv")
    assert table["label"].tolist() == ["swp"]


def _end_sitting(out, runs):
    """A sitting that ended before ``runs`` finished: their folders and the summary are not there."""
    import shutil

    for run in runs:
        shutil.rmtree(out / run)
    (out / "summary.csv").unlink()


@pytest.mark.slow
def test_a_sweep_goes_on_over_sittings_from_its_recorded_table(tmp_path):
    """A sitting records the runs it finished (``record_sweep``); the next, from a fresh checkout,
    runs only the others (``--recorded``), and recording again gives the whole sweep's table in its
    order: the earlier sitting's rows as recorded, a row of a run no longer in the sweep dropped."""
    from prunedyn.book.tradeoffs import record_sweep

    spec_path = write_spec(tmp_path)
    first, second, rec = tmp_path / "sitting1", tmp_path / "sitting2", tmp_path / "results"
    whole = run_sweep(load_spec(spec_path), first, workers=2, progress=False)
    late = list(whole["run"].iloc[[1, 4, 6]])
    _end_sitting(first, late)
    record_sweep(first, rec, "tiny", parts=("metrics",))
    earlier = pd.read_csv(rec / "tiny.csv")
    assert len(earlier) == 5 and not set(late) & set(earlier["run"])
    stale = earlier.iloc[[0]].assign(run="mlp-mnist-000000000000")
    pd.concat([earlier, stale]).to_csv(rec / "tiny.csv", index=False)
    res = run_cli("sweep", spec_path, "--out", second, "--workers", "2", "--quiet", "--recorded", rec / "tiny.csv")
    assert res.returncode == 0, res.stderr
    assert sorted(p.parent.name for p in second.glob("*/summary.json")) == sorted(late)  # only those ran
    assert list(pd.read_csv(second / "summary.csv")["run"]) == list(whole["run"])
    record_sweep(second, rec, "tiny", parts=("metrics",))
    table = pd.read_csv(rec / "tiny.csv")
    assert list(table["run"]) == list(whole["run"])
    assert table["test_accuracy"].tolist() == pytest.approx(whole["test_accuracy"].tolist(), abs=1e-6)
    kept = table.set_index("run").loc[earlier["run"]]
    assert kept["train_seconds"].tolist() == earlier["train_seconds"].tolist()  # as the first sitting measured
    assert table["weights"].nunique() == 1 and table["weights"].dtype.kind == "i"  # as a full record writes them
    metrics = pd.read_csv(rec / "tiny-metrics.csv")
    assert list(metrics["run"].drop_duplicates()) == list(whole["run"]) and len(metrics) == 8 * 3


@pytest.mark.slow
def test_a_recorded_source_runs_again_when_its_second_stage_has_not(tmp_path):
    """A second stage starts from its source's folder: where the next sitting (a fresh checkout at
    the same path: a second stage's hash holds its source's path) lacks it, the source runs again."""
    import shutil

    from prunedyn.book.tradeoffs import record_sweep

    spec = load_spec(write_spec(tmp_path, text=STAGED))
    out = tmp_path / "runs"
    whole = run_sweep(spec, out, workers=2, progress=False)
    by = {(r["label"], r["seed"]): r["run"] for _, r in whole.iterrows()}
    _end_sitting(out, [by[("staged", 0)]])
    record_sweep(out, tmp_path / "results", "staged", parts=())
    shutil.rmtree(out)
    table = run_sweep(spec, out, workers=2, progress=False, recorded=pd.read_csv(tmp_path / "results" / "staged.csv"))
    assert list(table["run"]) == list(whole["run"])
    assert sorted(p.parent.name for p in out.glob("*/summary.json")) == sorted([by[("swp", 0)], by[("staged", 0)]])
    assert table["weight_sparsity"].tolist() == pytest.approx(whole["weight_sparsity"].tolist(), abs=1e-6)
