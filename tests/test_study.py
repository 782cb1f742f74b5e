"""The book's access to runs: profiles per preset and the comparisons the chapters train."""
import pytest

from prunedyn.run.config import ConfigError, config_hash
from prunedyn.run.study import COMPARISON, COMPARISONS, QUICK_COMPARISONS, profile_overrides, resolve


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
