"""The command line as a user meets it: errors, help, determinism, kill and resume."""
import json
import signal
import subprocess
import time

import pandas as pd
import pytest
import torch

from prunedyn.cli import main
from conftest import SMALL, prunedyn_cmd, run_cli

# Bad input (a bad key or value, a file that does not parse, damaged data): tests/test_bad_input.py.


@pytest.mark.slow
def test_help_explains_every_option_and_config_key():
    res = run_cli("run", "--help")
    assert res.returncode == 0
    for text in ("--set", "--resume", "--out", "--overwrite", "pruner.kernel", "regularizer.lam", "data.source"):
        assert text in res.stdout
    assert "compact" in run_cli("--help").stdout


@pytest.mark.slow
def test_presets_lists_mlp_mnist():
    res = run_cli("presets")
    assert "mlp-mnist" in res.stdout.split()


def _tables(folder):
    return {t: (folder / f"{t}.csv").read_bytes() for t in ("metrics", "layers", "nodes", "histograms")}


@pytest.mark.slow
def test_same_seed_same_numbers_and_existing_folder_refused(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["run", "mlp-mnist", "--out", str(a), "--quiet", *sum((["--set", s] for s in SMALL), [])]) == 0
    assert main(["run", "mlp-mnist", "--out", str(b), "--quiet", *sum((["--set", s] for s in SMALL), [])]) == 0
    sa = json.loads((a / "summary.json").read_text())
    sb = json.loads((b / "summary.json").read_text())
    assert sa == sb
    assert _tables(a) == _tables(b)
    for key in ("test_accuracy", "weight_sparsity", "nodes_total", "nodes_alive", "dead_node_fraction",
                "params_dense", "params_compact", "config_hash", "seed", "epochs_completed"):
        assert key in sa
    assert sa["epochs_completed"] == 3 and sa["nodes_total"] == 72
    assert sa["data_source"] == "embedded"
    metrics = pd.read_csv(a / "metrics.csv")
    assert list(metrics.epoch) == [0, 1, 2, 3]
    # a different seed changes the numbers
    c = tmp_path / "c"
    main(["run", "mlp-mnist", "--out", str(c), "--quiet", *sum((["--set", s] for s in SMALL), []), "--set", "seed=1"])
    assert json.loads((c / "summary.json").read_text())["test_accuracy"] != sa["test_accuracy"] or _tables(a) != _tables(c)
    # running again into a used folder is refused with exit 2; --resume reports the finished run
    capsys.readouterr()
    assert main(["run", "mlp-mnist", "--out", str(a), "--quiet", *sum((["--set", s] for s in SMALL), [])]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["run", "mlp-mnist", "--out", str(a), "--quiet", "--resume", *sum((["--set", s] for s in SMALL), [])]) == 0
    # resuming with another config is refused
    assert main(["run", "mlp-mnist", "--out", str(a), "--quiet", "--resume", *sum((["--set", s] for s in SMALL), []), "--set", "seed=5"]) == 2


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_uninterrupted_numbers(tmp_path):
    sets = [*SMALL, "epochs=6", "data.train_size=3000"]
    args = sum((["--set", s] for s in sets), [])
    ref = tmp_path / "ref"
    assert run_cli("run", "mlp-mnist", "--out", ref, "--quiet", *args).returncode == 0

    out = tmp_path / "killed"
    proc = subprocess.Popen(prunedyn_cmd("run", "mlp-mnist", "--out", out, "--quiet", *args),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    # kill in the middle of training: after the checkpoint of epoch 2 exists
    while time.time() < deadline:
        ck = out / "checkpoint.pt"
        if ck.exists():
            try:
                if torch.load(ck, weights_only=True)["epoch"] >= 2:
                    break
            except Exception:
                pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists()
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    # every file left behind is complete and readable
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert 2 <= ck["epoch"] < 6
    assert pd.read_csv(out / "metrics.csv").epoch.max() >= ck["epoch"]

    res = run_cli("run", "mlp-mnist", "--out", out, "--quiet", "--resume", *args)
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "summary.json").read_text()) == json.loads((ref / "summary.json").read_text())
    assert _tables(out) == _tables(ref)


@pytest.mark.slow
def test_divergence_stops_with_message_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    out = tmp_path / "nan"
    code = main(["run", "mlp-mnist", "--out", str(out), "--quiet", *sum((["--set", s] for s in SMALL), []),
                 "--set", "optimizer.lr=1e12", "--set", "pruner.kind=none"])
    err = capsys.readouterr().err
    assert code == 1 and "diverged" in err
    assert not (out / "summary.json").exists()
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ck["model"].values())


@pytest.mark.slow
def test_compact_command_writes_an_exact_smaller_model(tmp_path, capsys):
    out = tmp_path / "r"
    sets = [*SMALL, "epochs=4", "pruner.sigma=0.02", "regularizer.lam=0.02"]
    assert main(["run", "mlp-mnist", "--out", str(out), "--quiet", *sum((["--set", s] for s in sets), [])]) == 0
    summary = json.loads((out / "summary.json").read_text())
    capsys.readouterr()
    assert main(["compact", str(out)]) == 0
    info = json.loads((out / "compact.json").read_text())
    assert info["max_abs_diff"] <= 1e-5
    assert info["params_after"] == summary["params_compact"] < summary["params_dense"]
    from prunedyn import load_compact
    from prunedyn.run.experiments import load_run_model
    from prunedyn.structure.surgery import compact

    dense, cfg, _ = load_run_model(out)
    expected, _ = compact(dense, torch.randn(8, 1, 28, 28))
    model = load_compact(out / "compact.pt", load_run_model(out)[0])  # weights_only: no code in the file
    assert sum(p.numel() for p in model.parameters()) == info["params_after"]
    x = torch.randn(16, 1, 28, 28)
    assert torch.equal(model(x), expected(x))
    assert main(["compact", str(tmp_path / "nothing")]) == 2


def test_a_checkpoint_that_carries_code_is_refused_without_running_it(tmp_path):
    """checkpoint.pt is read with weights_only=True: a pickle that would run code is an error, not a call."""
    from prunedyn.atomic import CheckpointError, load_checkpoint

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "checkpoint.pt"
    torch.save({"model": Payload()}, path)
    with pytest.raises(CheckpointError, match="checkpoint.pt: not a readable checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_the_run_lock_never_writes_through_a_link_and_is_removed_after_the_run(tmp_path):
    from prunedyn.run.folders import RunError, folder_lock

    out = tmp_path / "runs" / "a"
    with folder_lock(out):
        assert (tmp_path / "runs" / "a.lock").exists()
    assert not (tmp_path / "runs" / "a.lock").exists()  # nothing left behind
    victim = tmp_path / "thesis.tex"
    victim.write_text("years of work")
    (tmp_path / "runs" / "b.lock").symlink_to(victim)
    with pytest.raises(RunError, match="b.lock: is a symbolic link"):
        with folder_lock(tmp_path / "runs" / "b"):
            pass
    assert victim.read_text() == "years of work"


def test_overwrite_refuses_a_folder_that_is_not_a_run_folder(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    done = run_cli("run", "mlp-mnist", *sum((["--set", s] for s in SMALL), []), "--out", out, "--overwrite", "--quiet")
    assert done.returncode == 2, done.stderr
    assert "not a run folder (it holds 'thesis.tex')" in done.stderr and "Traceback" not in done.stderr
    assert (out / "thesis.tex").read_text() == "years of work" and sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


@pytest.mark.slow
def test_overwrite_validates_before_it_deletes_and_resume_checks_before_it_writes(tmp_path):
    out = tmp_path / "run"
    sets = sum((["--set", s] for s in SMALL), [])
    assert run_cli("run", "mlp-mnist", *sets, "--set", "epochs=1", "--out", out, "--quiet").returncode == 0
    (out / "summary.json").unlink()  # an unfinished run: resumable
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # a config that cannot be built (a segmentation data set under the MLP) deletes nothing
    bad = run_cli("run", "mlp-mnist", *sets, "--set", "data.name=dsb2018", "--out", out, "--overwrite", "--quiet")
    assert bad.returncode == 2 and {p.name: p.read_bytes() for p in out.iterdir()} == before, bad.stderr[-500:]
    # resuming with another config leaves config.yaml (and everything else) as it was
    other = run_cli("run", "mlp-mnist", *sets, "--set", "epochs=2", "--out", out, "--resume", "--quiet")
    assert other.returncode == 2 and "the config changed" in other.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_book_refuses_a_job_count_below_one_before_building_anything(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["book", "--jobs", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--jobs" in err[0]
    assert not (tmp_path / "_build").exists()


def _small(*extra):
    return sum((["--set", s] for s in [*SMALL, *extra]), [])


def test_a_run_killed_between_its_last_checkpoint_and_its_summary_resumes_to_the_same_bits(tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "cut"
    assert main(["run", "mlp-mnist", "--out", str(ref), "--quiet", *_small()]) == 0
    assert main(["run", "mlp-mnist", "--out", str(out), "--quiet", *_small()]) == 0
    (out / "summary.json").unlink()  # as if killed after the final checkpoint, before the summary
    assert main(["run", "mlp-mnist", "--out", str(out), "--quiet", "--resume", *_small()]) == 0
    assert (out / "summary.json").read_bytes() == (ref / "summary.json").read_bytes()
    for table in ("metrics", "layers", "nodes", "histograms"):
        assert (out / f"{table}.csv").read_bytes() == (ref / f"{table}.csv").read_bytes(), table


@pytest.mark.parametrize("table, cut", [("metrics", "last line"), ("nodes", "half a line"), ("layers", "all but the header")])
def test_resume_refuses_a_truncated_table_and_changes_nothing(tmp_path, capsys, table, cut):
    out = tmp_path / "run"
    assert main(["run", "mlp-mnist", "--out", str(out), "--quiet", *_small()]) == 0
    (out / "summary.json").unlink()
    lines = (out / f"{table}.csv").read_text().splitlines(keepends=True)
    kept = {"last line": lines[:-1], "half a line": lines[:-1] + [lines[-1][: len(lines[-1]) // 2]],
            "all but the header": lines[:1]}[cut]
    (out / f"{table}.csv").write_text("".join(kept))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main(["run", "mlp-mnist", "--out", str(out), "--quiet", "--resume", *_small()]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{table}.csv" in err[0] and "truncated" in err[0], err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_an_out_path_that_is_a_file_and_a_model_too_large_for_memory_are_one_line_errors(tmp_path, capsys):
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    assert main(["run", "mlp-mnist", "--out", str(afile), "--quiet", *_small()]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "notes.txt" in err[0] and "not a folder" in err[0]
    assert afile.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    big = tmp_path / "big"
    assert main(["run", "mlp-mnist", "--out", str(big), "--quiet", *_small("model.hidden=[1000000000]")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "memory" in err[0] and "model" in err[0]
    assert not big.exists()


class _Killed(BaseException):
    """Stands for a SIGKILL right after a file was written (every write is atomic)."""


@pytest.mark.slow
def test_a_run_killed_after_any_write_resumes_to_the_same_bytes(tmp_path, monkeypatch):
    from prunedyn.run import experiments, records
    from prunedyn.run.config import load_config
    from prunedyn.run.experiments import run

    cfg = load_config("mlp-mnist", [*SMALL, "epochs=2"])
    ref = tmp_path / "ref"
    run(cfg, ref, progress=False)
    names = sorted(p.name for p in ref.iterdir() if p.name != "timing.json")
    writes = {"n": 0, "limit": None}

    def counted(fn):
        def write(*a, **k):
            fn(*a, **k)
            writes["n"] += 1
            if writes["limit"] is not None and writes["n"] >= writes["limit"]:
                raise _Killed()
        return write

    for mod in (experiments, records):
        for attr in ("atomic_write_text", "atomic_write_json", "atomic_torch_save"):
            if hasattr(mod, attr):
                monkeypatch.setattr(mod, attr, counted(getattr(mod, attr)))
    writes["n"] = 0
    run(cfg, tmp_path / "count", progress=False)
    total = writes["n"]
    assert total >= 10
    for k in range(1, total):
        out = tmp_path / f"k{k}"
        writes.update(n=0, limit=k)
        with pytest.raises(_Killed):
            run(cfg, out, progress=False)
        writes.update(n=0, limit=None)
        run(cfg, out, resume=True, progress=False)
        for name in names:
            if name == "checkpoint.pt":  # holds the wall-clock seconds trained: equal but for those
                a, b = (torch.load(d / name, weights_only=True) for d in (out, ref))
                a.pop("elapsed"), b.pop("elapsed")
                assert _same(a, b), (k, name)
            else:
                assert (out / name).read_bytes() == (ref / name).read_bytes(), (k, name)


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    return a == b


def test_version_and_every_key_with_its_default_and_allowed_values_in_run_help(capsys):
    from prunedyn import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"prunedyn {__version__}"
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert (
        "pruner.kernel          SWP: kappa(w; sigma), the probability of zeroing a weight w; "
        "default 'gaussian'; one of gaussian, laplace, hard"
    ) in out
    assert "optimizer.lr           learning rate; default 0.05; > 0" in out


@pytest.mark.slow
def test_a_validation_split_is_scored_beside_the_test_set_and_trained_on_never(tmp_path):
    sets = sum((["--set", s] for s in [*SMALL, "data.val_size=300"]), [])
    out = tmp_path / "v"
    assert main(["run", "mlp-mnist", "--out", str(out), "--quiet", *sets]) == 0
    s = json.loads((out / "summary.json").read_text())
    metrics = pd.read_csv(out / "metrics.csv")
    assert {"val_loss", "val_accuracy", "test_loss", "test_accuracy"} <= set(metrics.columns)
    assert round(s["val_accuracy"], 9) == metrics.val_accuracy.iloc[-1] and 0.1 < s["val_accuracy"] <= 1
    assert "300 validation" in s["data"]
    # the split's images are not trained on: the same run without it sees other batches
    plain = tmp_path / "p"
    assert main(["run", "mlp-mnist", "--out", str(plain), "--quiet", *sum((["--set", x] for x in SMALL), [])]) == 0
    p = json.loads((plain / "summary.json").read_text())
    assert "val_accuracy" not in p and p["config_hash"] != s["config_hash"]
