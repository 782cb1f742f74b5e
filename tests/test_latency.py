"""Inference preparation and the compaction speed table: behaviour only, no timing assertions."""
import copy

import pytest
import torch
from torch import nn

from prunedyn.analysis.latency import (
    ChannelsLast,
    compaction_speed_table,
    fold_batchnorm,
    inference_ready,
    semi_structured_support,
)
from prunedyn.models import MLP, VGG
from prunedyn.models.unet import UNet
from prunedyn.structure.surgery import compact, count_flops


def _randomise_bn(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.3, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.3)
    return model.eval()


@pytest.fixture
def vgg():
    torch.manual_seed(0)
    return _randomise_bn(VGG(width=0.125, hidden=32)), torch.randn(4, 3, 32, 32)


def _out(model, x):
    with torch.no_grad():
        return model.eval()(x)


def test_fold_batchnorm_same_outputs_no_norm_left(vgg):
    model, x = vgg
    before = copy.deepcopy(model.state_dict())
    folded = fold_batchnorm(model)
    torch.testing.assert_close(_out(folded, x), _out(model, x), rtol=1e-4, atol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert all(m.bias is not None for m in folded.modules() if isinstance(m, nn.Conv2d))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the original is untouched
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 13


def test_fold_batchnorm_unet_with_skip_concatenations():
    torch.manual_seed(1)
    model = _randomise_bn(UNet(1, 3, width=0.0625))
    x = torch.randn(2, 1, 32, 32)
    folded = fold_batchnorm(model)
    torch.testing.assert_close(_out(folded, x), _out(model, x), rtol=1e-4, atol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())


@pytest.mark.parametrize("fold_bn, channels_last", [(True, True), (False, True), (True, False)])
def test_inference_ready_keeps_the_function(vgg, fold_bn, channels_last):
    model, x = vgg
    ready = inference_ready(model, x[:2], fold_bn=fold_bn, channels_last=channels_last)
    assert not ready.training
    assert isinstance(ready, ChannelsLast) == channels_last
    ref = _out(model, x)
    torch.testing.assert_close(_out(ready, x), ref, rtol=1e-4, atol=1e-5)  # an NCHW input is converted
    torch.testing.assert_close(_out(ready, x.contiguous(memory_format=torch.channels_last)), ref, rtol=1e-4, atol=1e-5)
    if channels_last:
        conv = next(m for m in ready.modules() if isinstance(m, nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_inference_ready_of_a_compact_model_and_an_mlp(vgg):
    model, x = vgg
    from prunedyn.structure.surgery import silence_nodes

    silence_nodes(model, {"features.conv4_1": 30, "features.conv5_2": 11}, x, torch.Generator().manual_seed(0))
    small, _ = compact(model, x, align=8)
    torch.testing.assert_close(_out(inference_ready(small, x), x), _out(model, x), rtol=1e-4, atol=1e-5)
    mlp = MLP(6, [8, 5], 3)
    ready = inference_ready(mlp)  # no conv: no wrapper, nothing to fold
    assert isinstance(ready, MLP) and ready is not mlp
    xm = torch.randn(5, 6)
    torch.testing.assert_close(_out(ready, xm), _out(mlp, xm))


def test_semi_structured_is_reported_unsupported_on_cpu():
    reason = semi_structured_support("cpu")
    assert isinstance(reason, str) and "not supported on this device" in reason


def _mlp_pair():
    torch.manual_seed(0)
    dense = MLP(6, [8, 5], 3).eval()
    pruned = copy.deepcopy(dense)
    with torch.no_grad():
        pruned.net.fc1.weight[:5] = 0  # 5 of 8 in-dead, constants folded
        pruned.net.fc2.weight[:, :5] = 0
        pruned.net.fc3.weight[:, :2] = 0  # 2 of 5 out-dead
    return dense, pruned


def test_speed_table_rows_columns_and_flop_ratio():
    dense, pruned = _mlp_pair()
    x = torch.randn(16, 6)
    small, report = compact(pruned, x)
    assert report.widths_after == {"net.fc1": 3, "net.fc2": 3}
    aligned, _ = compact(pruned, x, align=4)
    versions = {"dense": dense, "masked": pruned, "semi_structured_2:4": "not supported on this device",
                "compact": small, "compact_align4": aligned}
    flops = {name: count_flops(m, x) for name, m in versions.items() if not isinstance(m, str)}
    assert flops["dense"] == 2 * 16 * (6 * 8 + 8 * 5 + 5 * 3)
    assert flops["compact"] == 2 * 16 * (6 * 3 + 3 * 3 + 3 * 3)
    assert flops["compact_align4"] == 2 * 16 * (6 * 4 + 4 * 4 + 4 * 3)
    clocks = {"wall": __import__("time").perf_counter, "cpu": __import__("time").thread_time}
    table = compaction_speed_table(versions, x, flops, ideal_flops=flops["compact"], rounds=2, clocks=clocks,
                                   block_seconds=1e-4)
    assert table.version.tolist() == list(versions)
    for clock in clocks:
        for col in (f"ms_{clock}", f"speedup_{clock}", f"speedup_over_flop_ratio_{clock}", f"met_{clock}"):
            assert col in table.columns
    assert {"version", "batch", "flops", "flop_ratio", "executed_flop_ratio", "note"} <= set(table.columns)
    rows = table.set_index("version")
    ratio = (6 * 8 + 8 * 5 + 5 * 3) / (6 * 3 + 3 * 3 + 3 * 3)
    assert rows.loc["compact", "flop_ratio"] == pytest.approx(ratio)
    assert rows.loc["masked", "flop_ratio"] == pytest.approx(ratio)  # what pruning promises, for every version
    assert rows.loc["masked", "executed_flop_ratio"] == pytest.approx(1.0)
    assert rows.loc["compact_align4", "executed_flop_ratio"] == pytest.approx(
        (6 * 8 + 8 * 5 + 5 * 3) / (6 * 4 + 4 * 4 + 4 * 3))
    assert rows.loc["dense", "speedup_wall"] == 1.0 and rows.loc["dense", "speedup_cpu"] == 1.0
    assert (rows.drop(index="semi_structured_2:4")[["ms_wall", "ms_cpu"]] > 0).all().all()
    for clock in clocks:
        r = rows.drop(index="semi_structured_2:4")
        assert (r[f"speedup_over_flop_ratio_{clock}"] == r[f"speedup_{clock}"] / ratio).all()
        assert (r[f"met_{clock}"] == (r[f"speedup_over_flop_ratio_{clock}"] >= 0.9)).all()
    unsupported = rows.loc["semi_structured_2:4"]
    assert unsupported.note == "not supported on this device" and unsupported.isna()["ms_wall"]
    assert (table.batch == 16).all()


def test_speed_table_baseline_of_and_errors():
    dense, pruned = _mlp_pair()
    x = torch.randn(8, 6)
    small, _ = compact(pruned, x)
    versions = {"dense": dense, "compact": small, "dense_other": copy.deepcopy(dense), "compact_other": small}
    flops = {name: count_flops(m, x) for name, m in versions.items()}
    clocks = {"wall": __import__("time").perf_counter}
    table = compaction_speed_table(versions, x, flops, flops["compact"], rounds=1, clocks=clocks, block_seconds=1e-4,
                                   baseline_of={"compact_other": "dense_other"})
    assert list(table.columns).count("ms_wall") == 1 and "ms_cpu" not in table.columns
    assert table.set_index("version").loc["compact_other", "note"] == "against dense_other"
    with pytest.raises(ValueError, match="baseline"):
        compaction_speed_table({"dense": "n/a", "compact": small}, x, flops, 1, rounds=1, clocks=clocks)
    with pytest.raises(ValueError, match="FLOP count"):
        compaction_speed_table({"dense": dense, "compact": small}, x, {"dense": 1}, 1, rounds=1, clocks=clocks)
    with pytest.raises(ValueError, match="baseline_of"):
        compaction_speed_table(versions, x, flops, 1, rounds=1, clocks=clocks, baseline_of={"compact": "nope"})
