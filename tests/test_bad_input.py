"""Bad input, as a new user meets it, across run, resume, compact, sweep and data.

Every case goes through the command line (``prunedyn.cli.main``, in process) and must
end the same way: exit code 2, one line on stderr that starts ``prunedyn: error:`` and names
the problem, no traceback, and nothing written or deleted anywhere under the test's folder
(the working directory too: no ``runs/`` appears). Cases that need a run folder start from a
copy of one small finished run, damaged in one way.
"""
import os
import shutil
from pathlib import Path

import pytest

from conftest import SMALL
from prunedyn.cli import main


def sets(*extra):
    return sum((["--set", s] for s in [*SMALL, *extra]), [])


def snapshot(root: Path) -> dict:
    """Every path under ``root`` with its size and modification time (links not followed)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns, p.is_symlink())
    return out


def expect_refusal(tmp_path, capsys, argv, *words):
    """``main(argv)`` exits 2 with one error line holding every word of ``words``; nothing changes."""
    before = snapshot(tmp_path)
    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, (code, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("prunedyn: error:"), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert snapshot(tmp_path) == before, "the refused command changed files"
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One small finished run (the copies below are damaged one way each)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["run", "mlp-mnist", "--out", str(out), "--quiet", *sets()]) == 0
    return out


@pytest.fixture
def work(tmp_path, monkeypatch):
    """The test's folder, also the working directory (a stray runs/ would show in the snapshot)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --------------------------------------------------------------------------
# run: the config, key by key
# --------------------------------------------------------------------------
RUN_CASES = [
    # (overrides, words the error must hold)
    (["pruner.kernel=cauchyish"], ["pruner.kernel", "gaussian"]),
    (["pruner.kind=nope"], ["pruner.kind", "stochastic"]),
    (["pruner.schedule=nope"], ["pruner.schedule"]),
    (["pruner.sigma_mode=nope"], ["pruner.sigma_mode", "absolute"]),
    (["pruner.sigma=-0.1"], ["pruner.sigma", "> 0"]),
    (["pruner.sigma=.nan"], ["pruner.sigma", "finite"]),
    (["pruner.sigma=abc"], ["pruner.sigma", "not a number"]),
    (["pruner.sparsity=1.5"], ["pruner.sparsity"]),
    (["pruner.gamma=2"], ["pruner.gamma"]),
    (["pruner.ramp_epochs=-1"], ["pruner.ramp_epochs"]),
    (["regularizer.kind=l3"], ["regularizer.kind", "l2_decoupled"]),
    (["regularizer.lam=-1"], ["regularizer.lam", ">= 0"]),
    (["regularizer.lam=.inf"], ["regularizer.lam", "finite"]),
    (["regularizer.lam=.nan"], ["regularizer.lam", "finite"]),
    (["regularizer.scope=nope"], ["regularizer.scope"]),
    (["regularizer.scope=bn"], ["regularizer.scope", "no BatchNorm"]),
    (["regularizer.layers=[net.fc9]"], ["regularizer.layers", "net.fc1, net.fc2, net.fc3"]),
    (["regularizer.layers=[]"], ["regularizer.layers", "non-empty"]),
    (["optimizer.name=nope"], ["optimizer.name"]),
    (["optimizer.lr=0"], ["optimizer.lr", "> 0"]),
    (["optimizer.lr=-0.05"], ["optimizer.lr", "> 0"]),
    (["optimizer.momentum=1.5"], ["optimizer.momentum"]),
    (["optimizer.lr_schedule=nope"], ["optimizer.lr_schedule"]),
    (["epochs=0"], ["epochs", ">= 1"]),
    (["epochs=1.5"], ["epochs", "whole number"]),
    (["epochs=true"], ["epochs", "whole number"]),
    (["seed=1e23"], ["seed"]),
    (["seed=abc"], ["seed", "whole number"]),
    (["model.hidden=[]"], ["model.hidden", "non-empty"]),
    (["model.hidden=[0]"], ["model.hidden", ">= 1"]),
    (["model.hidden=[a]"], ["model.hidden"]),
    (["model.hidden=[1000000000]"], ["model", "memory"]),
    (["model.width=0"], ["model.width", "> 0"]),
    (["model.name=nope"], ["model.name"]),
    (["model.balance=0"], ["model.balance", "> 0"]),
    (["data.name=nope"], ["data.name"]),
    (["data.source=nope"], ["data.source"]),
    (["data.batch_size=0"], ["data.batch_size", ">= 1"]),
    (["data.train_size=0"], ["data.train_size", ">= 1"]),
    (["data.test_size=-5"], ["data.test_size", ">= 1"]),
    (["data.val_size=0"], ["data.val_size", ">= 1"]),
    (["data.val_size=10000"], ["data.val_size", "from 1 to 9999"]),
    (["data.image_size=64"], ["data.image_size", "dsb2018"]),
    (["data.name=dsb2018"], ["model.name", "segmentation"]),
    (["threads=100"], ["threads"]),
    (["device=tpu"], ["device", "cpu"]),
    (["train.precision=fp8"], ["train.precision"]),
    (["init.run=/nonexistent/run"], ["init.run"]),
    (["bogus=1"], ["bogus", "allowed"]),
    (["pruner.sigmaa=1"], ["pruner.sigmaa", "sigma_mode"]),
]


@pytest.mark.parametrize("overrides, words", RUN_CASES, ids=[c[0][0][:40] for c in RUN_CASES])
def test_a_bad_config_value_is_one_line_naming_it_and_writes_nothing(work, capsys, overrides, words):
    expect_refusal(work, capsys, ["run", "mlp-mnist", "--out", work / "run", "--quiet", *sets(*overrides)], *words)


def test_vgg_refuses_the_mlps_balance(work, capsys):
    expect_refusal(work, capsys, ["run", "vgg16-cifar10", "--out", work / "run", "--quiet", "--set", "data.source=embedded",
                                  "--set", "model.balance=2"], "model.balance", "mlp only")


def test_a_set_without_a_value(work, capsys):
    expect_refusal(work, capsys, ["run", "mlp-mnist", "--out", work / "run", "--set", "pruner.kind"], "key=value")


def test_an_unknown_preset_and_a_missing_config_file(work, capsys):
    expect_refusal(work, capsys, ["run", "nope-preset", "--out", work / "run"], "unknown preset 'nope-preset'", "mlp-mnist")
    expect_refusal(work, capsys, ["run", work / "missing.yaml", "--out", work / "run"], "missing.yaml")


@pytest.mark.parametrize("text, words", [
    ("pruner: {kind: stochastic\nepochs: [1,\n", ["not valid YAML"]),
    ("- just\n- a list\n", ["bad.yaml"]),
    ("pruner: 3\n", ["pruner"]),
    ("surprise: 1\n", ["surprise"]),
], ids=["unparsable", "a list", "a section that is a number", "an unknown section"])
def test_a_bad_config_file(work, capsys, text, words):
    bad = work / "bad.yaml"
    bad.write_text(text)
    expect_refusal(work, capsys, ["run", bad, "--out", work / "run", "--quiet"], *words)


def test_an_out_path_that_is_a_file(work, capsys):
    (work / "taken").write_text("mine")
    expect_refusal(work, capsys, ["run", "mlp-mnist", "--out", work / "taken", "--quiet", *sets()], "taken", "not a folder")


def test_init_from_a_run_that_has_not_finished(work, capsys, finished):
    src = work / "src"
    shutil.copytree(finished, src)
    (src / "summary.json").unlink()
    (src / "checkpoint.pt").unlink()
    expect_refusal(work, capsys, ["run", "mlp-mnist", "--out", work / "run", "--quiet", *sets(f"init.run={src}")], "init.run")


# --------------------------------------------------------------------------
# an existing run folder: refuse, resume, overwrite
# --------------------------------------------------------------------------
def test_a_used_folder_without_resume_or_overwrite(work, capsys, finished):
    shutil.copytree(finished, work / "run")
    expect_refusal(work, capsys, ["run", "mlp-mnist", "--out", work / "run", "--quiet", *sets()], "--resume", "--overwrite")


def test_resume_with_another_config(work, capsys, finished):
    shutil.copytree(finished, work / "run")
    expect_refusal(work, capsys, ["run", "mlp-mnist", "--out", work / "run", "--quiet", "--resume", *sets("seed=5")],
                   "another config")


def test_resume_of_an_unfinished_run_with_another_config(work, capsys, finished):
    shutil.copytree(finished, work / "run")
    (work / "run" / "summary.json").unlink()
    expect_refusal(work, capsys, ["run", "mlp-mnist", "--out", work / "run", "--quiet", "--resume", *sets("epochs=4")],
                   "the config changed")


@pytest.mark.parametrize("damage", ["empty", "truncated", "not a zip"])
def test_resume_from_a_damaged_checkpoint(work, capsys, finished, damage):
    shutil.copytree(finished, work / "run")
    (work / "run" / "summary.json").unlink()
    ckpt = work / "run" / "checkpoint.pt"
    raw = ckpt.read_bytes()
    ckpt.write_bytes({"empty": b"", "truncated": raw[: len(raw) // 2], "not a zip": b"hello"}[damage])
    expect_refusal(work, capsys, ["run", "mlp-mnist", "--out", work / "run", "--quiet", "--resume", *sets()], "checkpoint.pt")


@pytest.mark.parametrize("text", ["", "{\"config_hash\": ", "[1, 2]"], ids=["empty", "truncated", "not an object"])
def test_resume_with_a_damaged_summary(work, capsys, finished, text):
    shutil.copytree(finished, work / "run")
    (work / "run" / "summary.json").write_text(text)
    expect_refusal(work, capsys, ["run", "mlp-mnist", "--out", work / "run", "--quiet", "--resume", *sets()], "summary.json")


def test_overwrite_of_a_folder_that_is_not_a_run_folder(work, capsys):
    (work / "mine").mkdir()
    (work / "mine" / "thesis.tex").write_text("years of work")
    expect_refusal(work, capsys, ["run", "mlp-mnist", "--out", work / "mine", "--overwrite", "--quiet", *sets()],
                   "not a run folder", "thesis.tex")


# --------------------------------------------------------------------------
# compact
# --------------------------------------------------------------------------
def test_compact_of_nothing_of_a_file_and_of_a_folder_without_a_checkpoint(work, capsys, finished):
    expect_refusal(work, capsys, ["compact", work / "nothing"], "nothing")
    (work / "file").write_text("x")
    expect_refusal(work, capsys, ["compact", work / "file"], "file")
    (work / "empty").mkdir()
    expect_refusal(work, capsys, ["compact", work / "empty"], "empty")


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_compact_of_a_damaged_checkpoint(work, capsys, finished, damage):
    shutil.copytree(finished, work / "run")
    ckpt = work / "run" / "checkpoint.pt"
    raw = ckpt.read_bytes()
    ckpt.write_bytes(b"" if damage == "empty" else raw[: len(raw) // 3])
    expect_refusal(work, capsys, ["compact", work / "run"], "checkpoint.pt")


def test_compact_of_a_run_whose_config_is_damaged(work, capsys, finished):
    shutil.copytree(finished, work / "run")
    (work / "run" / "config.yaml").write_text("model: {name: [unclosed\n")
    expect_refusal(work, capsys, ["compact", work / "run"], "config.yaml")


# --------------------------------------------------------------------------
# sweep specs, through the command line
# --------------------------------------------------------------------------
SWEEP_CASES = [
    ("base: mlp-mnist\ngrid: {pruner.kernel: [gaussian, nope]}\n", "pruner.kernel"),
    ("base: mlp-mnist\ngrid: {pruner.sigmaa: [1]}\n", "pruner.sigmaa"),
    ("grid: {pruner.sigma: [1]}\n", "base"),
    ("base: mlp-mnist\nseeds: [a]\n", "seeds"),
    ("base: mlp-mnist\nfoo: 1\n", "foo"),
    ("base: [unclosed\n", "not valid YAML"),
    ("base: mlp-mnist\ngrid: {pruner.sigma: []}\n", "give no point"),
    ("base: mlp-mnist\nruns: []\n", "give no point"),
    ("base: mlp-mnist\nseeds: [0, 0]\n", "repeats a seed"),
    ("base: mlp-mnist\nname: ../../elsewhere\n", "plain folder name"),
    ("base: mlp-mnist\nname: /tmp/abs\n", "plain folder name"),
    ("base: mlp-mnist\nruns: [[label=a, epochs=1], [label=a, epochs=1]]\n", "listed twice"),
    ("base: mlp-mnist\nruns: [[\"epochs=[1\"]]\n", "not valid YAML"),
    ("base: mlp-mnist\nruns: [[label=a, epochs=1], [label=a, epochs=2], [label=b, init.run=@a]]\n", "ambiguous"),
    ("base: mlp-mnist\nruns: [[label=b, init.run=@nobody]]\n", "nobody"),
    ("base: nope-preset\n", "nope-preset"),
    ("base: mlp-mnist\nset: [epochs=0]\n", "epochs"),
    ("base: mlp-mnist\nworkers: -1\n", "workers"),
]


@pytest.mark.parametrize("text, word", SWEEP_CASES, ids=[c[0].split("\n")[-2][:40] or c[0][:30] for c in SWEEP_CASES])
def test_a_bad_sweep_spec_is_one_line_and_runs_nothing(work, capsys, text, word):
    spec = work / "spec.yaml"
    spec.write_text(text)
    expect_refusal(work, capsys, ["sweep", spec, "--out", work / "sweep", "--quiet"], word)


def test_a_missing_sweep_spec_and_a_bad_worker_count(work, capsys):
    expect_refusal(work, capsys, ["sweep", work / "missing.yaml", "--out", work / "sweep", "--quiet"], "missing.yaml")
    spec = work / "spec.yaml"
    spec.write_text("base: mlp-mnist\n")
    expect_refusal(work, capsys, ["sweep", spec, "--out", work / "sweep", "--workers", "0", "--quiet"], "--workers")


def test_a_recorded_table_that_is_not_there_or_not_a_record(work, capsys):
    spec = work / "spec.yaml"
    spec.write_text("base: mlp-mnist\n")
    argv = ["sweep", spec, "--out", work / "sweep", "--quiet", "--recorded"]
    expect_refusal(work, capsys, [*argv, work / "gone.csv"], "--recorded", "gone.csv", "unreadable")
    (work / "other.csv").write_text("label,seed\ndense,0\n")
    expect_refusal(work, capsys, [*argv, work / "other.csv"], "--recorded", "no 'run' column")


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------
def test_torchvision_data_that_is_not_there(work, capsys, data_copy):
    expect_refusal(work, capsys, ["run", "mlp-mnist", "--out", work / "run", "--quiet", *sets("data.source=torchvision")],
                   "mnist not found", "data.download=true")


def test_a_damaged_and_a_missing_data_file(work, capsys, data_copy):
    f = data_copy / "mnist" / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(f.read_bytes())
    raw[100] ^= 0xFF
    f.write_bytes(bytes(raw))
    expect_refusal(work, capsys, ["run", "mlp-mnist", "--out", work / "run", "--quiet", *sets()],
                   "checksum mismatch", "t10k-labels-idx1-ubyte.gz")
    (data_copy / "mnist" / "train-10k-images-idx3-ubyte.gz").unlink()
    expect_refusal(work, capsys, ["run", "mlp-mnist", "--out", work / "run", "--quiet", *sets()], "missing", "train-10k-images")

