"""The book's access to runs: profiles per preset and the comparisons the chapters train."""
import pytest

from prunedyn.run.config import ConfigError, config_hash
from prunedyn.book.study import COMPARISON, COMPARISONS, QUICK_COMPARISONS, profile_overrides, resolve


def test_mlp_runs_keep_their_cache_keys():
    # chapters 1-5 and their cached runs are keyed by these hashes: new config
    # fields and profiles must not re-key them
    dense = resolve("mlp-mnist", [*COMPARISON["dense"], "seed=0"], "quick")
    assert config_hash(dense) == "cab7bbf1cb0f"
    assert profile_overrides("quick", "mlp-mnist") == ["data.source=embedded"]


def test_quick_profile_narrows_the_conv_nets_and_full_keeps_medical_data_embedded():
    vgg = resolve("vgg16-cifar10", [], "quick")
    assert vgg.model.width == 0.25 and vgg.data.source == "embedded" and vgg.epochs < 30
    assert resolve("vgg16-cifar10", [], "full").data.source == "torchvision"
    for preset in ("unet-dsb2018", "cxr-cnn"):
        full = resolve(preset, [], "full")
        assert full.data.source == "embedded" and full.device == "auto"
        assert resolve(preset, [], "quick").model.width < full.model.width
    with pytest.raises(ConfigError, match="profile"):
        profile_overrides("huge", "mlp-mnist")


@pytest.mark.parametrize("preset", ["vgg16-cifar10", "unet-dsb2018", "cxr-cnn"])
def test_conv_comparisons_decay_every_parameter_and_share_the_dense_recipe(preset):
    for table in (COMPARISONS[preset], QUICK_COMPARISONS[preset]):
        cfgs = {k: resolve(preset, v, "quick") for k, v in table.items()}
        assert set(cfgs) == {"none", "l1", "l2", "dense"}
        assert cfgs["dense"].pruner.kind == "none" and cfgs["dense"].regularizer.lam == 0.0005
        assert cfgs["l2"].regularizer.scope == cfgs["l1"].regularizer.scope == "all"
        assert cfgs["none"].regularizer.kind == "none" and cfgs["none"].pruner.kind == "stochastic"
        assert cfgs["l1"].pruner.sigma == cfgs["l2"].pruner.sigma == cfgs["none"].pruner.sigma
    # the quick settings are stronger, not weaker, than the preset-scale ones
    assert resolve(preset, QUICK_COMPARISONS[preset]["l2"]).regularizer.lam >= resolve(preset, COMPARISONS[preset]["l2"]).regularizer.lam


# --- threads, parallel runs and seeds ---------------------------------------------------------

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from prunedyn.analysis import seeds as S  # noqa: E402
from prunedyn.book import study  # noqa: E402
from prunedyn.run.config import load_config  # noqa: E402
from prunedyn.run.experiments import run  # noqa: E402

TINY = ["data.source=embedded", "data.train_size=600", "data.test_size=300", "epochs=2", "model.hidden=[32,16]"]


def test_threads_is_a_validated_config_field_outside_old_hashes():
    assert load_config("mlp-mnist").threads == 1
    assert load_config("mlp-mnist", ["threads=2"]).threads == 2
    with pytest.raises(ConfigError, match="threads"):
        load_config("mlp-mnist", ["threads=-1"])
    # the default is left out of the hash (cached runs keep their folders); another value is not
    assert config_hash(load_config("mlp-mnist", ["threads=1"])) != config_hash(load_config("mlp-mnist", ["threads=2"]))


@pytest.mark.slow
def test_run_pins_threads_and_records_them(tmp_path):
    before = torch.get_num_threads()
    summary = run(load_config("mlp-mnist", [*TINY, "threads=1"]), tmp_path / "a", progress=False)
    assert summary["threads"] == 1
    assert json.loads((tmp_path / "a" / "timing.json").read_text())["threads"] == 1
    assert torch.get_num_threads() == before  # restored after the run


@pytest.mark.slow
def test_same_config_same_numbers_whatever_the_callers_thread_count(tmp_path):
    """The run pins its threads: a caller with 1 or 2 torch threads gets identical metrics."""
    code = (
        "import sys, json, torch; torch.set_num_threads(int(sys.argv[1]));"
        "from prunedyn.run.config import load_config; from prunedyn.run.experiments import run;"
        f"s = run(load_config('mlp-mnist', {TINY!r}), __import__('pathlib').Path(sys.argv[2]), progress=False);"
        "print(json.dumps([s['test_accuracy'], s['test_loss'], s['weight_sparsity']]))"
    )
    out = [
        json.loads(subprocess.run([sys.executable, "-c", code, str(n), str(tmp_path / f"t{n}")], check=True,
                                  capture_output=True, text=True).stdout.strip().splitlines()[-1])
        for n in (1, 2)
    ]
    assert out[0] == out[1]


@pytest.mark.slow
def test_run_many_in_two_processes_equals_one_by_one(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEDYN_RUNS", str(tmp_path / "par"))
    requests = [("mlp-mnist", [*TINY, f"seed={s}"]) for s in (0, 1)]
    par = study.run_many(requests, "quick", workers=2, progress=False)
    monkeypatch.setenv("PRUNEDYN_RUNS", str(tmp_path / "seq"))
    seq = [study.run_cached(src, ov) for src, ov in requests]
    for a, b in zip(par, seq):
        assert a.folder.name == b.folder.name
        assert a.summary["test_accuracy"] == b.summary["test_accuracy"]
        assert a.summary["weight_sparsity"] == b.summary["weight_sparsity"]
    table = study.summary_table({"x": par})
    assert list(table["seed"]) == [0, 1] and (table["run"] == "x").all()


def test_seeded_comparison_rejects_unknown_runs():
    with pytest.raises(ConfigError, match="allowed"):
        study.seeded_comparison(runs=["l3"])


def test_paired_differences_and_the_verdict_rule():
    t = pd.DataFrame({"run": ["a"] * 3 + ["b"] * 3, "seed": [0, 1, 2] * 2, "acc": [0.95, 0.96, 0.94, 0.93, 0.95, 0.92]})
    d = S.paired(t, "acc", "a", "b")
    assert d.values == pytest.approx((0.02, 0.01, 0.02)) and d.n == 3
    assert d.mean == pytest.approx(0.05 / 3) and d.std == pytest.approx(pd.Series(d.values).std())
    assert d.verdict() == "higher" and d.verdict(margin=0.02) == "no clear difference"
    assert S.paired(t, "acc", "b", "a").verdict() == "lower"
    mixed = t.assign(acc=[0.95, 0.96, 0.94, 0.96, 0.95, 0.92])
    assert S.compare(mixed, "acc", "a", "b") == "no clear difference"  # one seed disagrees in sign
    assert S.mean_std_text([0.95, 0.96, 0.94]) == "0.9500 ± 0.0100"
    sp = S.spread(t, ["acc"])
    assert sp.loc["a", "acc_mean"] == pytest.approx(0.95) and sp.loc["b", "n"] == 3
    with pytest.raises(KeyError, match="'c'"):
        S.paired(t, "acc", "a", "c")


def test_a_run_paired_with_itself_has_zero_difference():
    t = pd.DataFrame({"run": ["a"] * 3, "seed": [0, 1, 2], "acc": [0.95, 0.96, 0.94]})
    d = S.paired(t, "acc", "a", "a")
    assert d.values == (0.0, 0.0, 0.0) and d.seeds == (0, 1, 2)


def test_a_paired_difference_reports_a_t_test_and_the_chance_of_agreeing_signs():
    import pandas as pd
    from scipy import stats

    from prunedyn.analysis.seeds import paired

    t = pd.DataFrame({"run": ["a"] * 3 + ["b"] * 3, "seed": [0, 1, 2] * 2, "acc": [0.91, 0.93, 0.92, 0.90, 0.90, 0.91]})
    d = paired(t, "acc", "a", "b")
    assert d.verdict() == "higher" and d.sign_p == 0.25  # three agreeing signs: one time in four by chance
    assert abs(d.p_value - stats.ttest_rel([0.91, 0.93, 0.92], [0.90, 0.90, 0.91]).pvalue) < 1e-12
    assert paired(t[t["seed"] == 0], "acc", "a", "b").p_value != paired(t[t["seed"] == 0], "acc", "a", "b").p_value  # NaN
