"""prunedyn.book.architecture and prunedyn.book.conv_report: the VGG chapter's figures and numbers."""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from prunedyn.book import conv_report as C
from prunedyn.book import architecture as A
from prunedyn.structure.surgery import compact, count_params

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "chapters" / "results"
SWEEPS = ROOT / "chapters" / "sweeps"

CONV = [f"features.conv{b}_{i}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for i in range(1, n + 1)]
DENSE = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]


def layers_table(run="r", epochs=3, dead=None):
    """A layers table: every layer of a full VGG-16, ``dead[layer]`` nodes dead from epoch 1 on."""
    dead = dead or {}
    rows = []
    for e in range(epochs + 1):
        for name, n in [*zip(CONV, DENSE), ("classifier.fc1", 512)]:
            d = dead.get(name, 0) if e > 0 else 0
            rows.append({"epoch": e, "layer": name, "nodes": n, "alive": n - d, "in_dead": d, "out_dead": d // 2,
                         "both_dead": d // 2, "weight_sparsity": 0.0, "run": run})
    return pd.DataFrame(rows)


def test_filter_counts_keep_filters_apart_from_hidden_units():
    t = pd.concat([layers_table("a", dead={"features.conv1_1": 16, "classifier.fc1": 100}),
                   layers_table("b", dead={"features.conv5_3": 512})])
    fc = C.filter_counts(t).set_index("run")
    assert fc.loc["a", "filters"] == 4224 and fc.loc["a", "units"] == 512
    assert fc.loc["a", "filters_removed_count"] == 16
    assert fc.loc["a", "filters_removed"] == pytest.approx(16 / 4224)
    assert fc.loc["a", "units_removed_count"] == 100
    assert fc.loc["b", "filters_removed_count"] == 512 and fc.loc["b", "units_removed_count"] == 0


def test_filter_counts_read_the_last_epoch_only():
    t = layers_table(dead={"features.conv2_1": 8})
    t.loc[t["epoch"] == 2, "alive"] -= 1  # an earlier epoch with more dead nodes must not count
    assert C.filter_counts(t)["filters_removed_count"].iloc[0] == 8


def test_sci_and_setting_label():
    assert [C.sci(x) for x in (0.005, 2e-05, 0.01, 0.0005, 0)] == ["5e-3", "2e-5", "1e-2", "5e-4", "0"]
    from prunedyn.run.config import load_config

    cfg = load_config("vgg16-cifar10", ["regularizer.kind=l2", "regularizer.lam=0.005", "regularizer.scope=all", "pruner.sigma=0.004"])
    assert C.setting_label(cfg) == "SWP + L2 5e-3 (all), σ 0.004"
    cfg = load_config("vgg16-cifar10", ["pruner.kind=none", "regularizer.kind=l2", "regularizer.lam=0.0005"])
    assert C.setting_label(cfg) == "dense + wd 5e-4 (weights)"
    cfg = load_config("vgg16-cifar10", ["pruner.kind=none", "regularizer.kind=none", "regularizer.lam=0"])
    assert C.setting_label(cfg) == "dense"


def toy_runs():
    return pd.DataFrame({
        "setting": ["dense20", "dense20b", "a", "b", "dense30", "c", "d"],
        "pruned": [False, False, True, True, False, True, True],
        "epochs": [20, 20, 20, 20, 30, 30, 30],
        "test_accuracy": [0.87, 0.88, 0.875, 0.85, 0.89, 0.88, 0.80],
        "filters_removed": [0, 0, 0.1, 0.3, 0, 0.65, 0.9],
        "regularizer": ["none", "l2", "l2", "l1", "l2", "l2", "l2"],
        "scope": ["weights", "all", "all", "weights", "all", "all", "all"],
    })


def test_dense_gap_uses_the_best_dense_run_of_the_same_budget():
    t = C.add_dense_gap(toy_runs()).set_index("setting")
    assert t.loc["a", "dense_ref"] == 0.88 and t.loc["a", "dense_ref_setting"] == "dense20b"
    assert t.loc["a", "gap_points"] == pytest.approx(0.5)
    assert t.loc["c", "dense_ref"] == 0.89 and t.loc["c", "gap_points"] == pytest.approx(1.0)


def test_target_best_and_pareto():
    t = C.add_dense_gap(toy_runs())
    hit = C.meets_target(t, 0.6, 1.5)
    assert list(hit["setting"]) == ["c"]
    assert C.meets_target(t, 0.6, 0.5).empty  # c loses 1.0 point
    assert C.best_at(t, 0.6)["setting"] == "c"
    assert C.best_at(t, 0.95) is None
    front = C.pareto(t)
    assert list(front["setting"]) == ["a", "c", "d"]  # b (0.3, 3 points) is dominated by c (0.65, 1 point)


def test_layer_widths_are_the_alive_counts_at_the_last_epoch():
    t = layers_table(dead={"features.conv1_1": 64, "features.conv4_1": 100})
    before, after = C.layer_widths(t, "r")
    assert list(before) == [*CONV, "classifier.fc1"]
    assert before["features.conv4_1"] == 512 and after["features.conv4_1"] == 412
    assert after["features.conv1_1"] == 1  # a layer cannot have zero channels
    assert C.layer_widths(t, "r", epoch=0)[1] == before


def test_death_table_epochs():
    t = layers_table(epochs=4, dead={"features.conv3_1": 200})
    d = C.death_table(t).set_index("layer")
    assert d.loc["conv3_1", "first_death"] == 1 and d.loc["conv3_1", "epoch_50pct"] == 1
    assert np.isnan(d.loc["conv1_1", "first_death"])
    assert d.loc["conv3_1", "final_dead_fraction"] == pytest.approx(200 / 256)


def test_vgg_from_widths_matches_a_compacted_network():
    """A VGG built from the compact widths has exactly the compacted network's parameters (no carriers)."""
    torch.manual_seed(0)
    model = C.vgg_from_widths([8] * 13 + [16])
    with torch.no_grad():
        model.features.conv3_1.weight[:3] = 0  # three in-dead filters of conv3_1 ...
        model.features.bn3_1.bias[:3] = -1.0  # ... whose constant relu(beta) is 0: removed outright
        model.features.conv4_2.weight[:, 5] = 0  # one out-dead filter of conv4_1
    small, rep = compact(model, torch.randn(2, 3, 32, 32))
    assert rep.max_abs_diff <= 1e-5
    widths = rep.widths_after
    assert widths["features.conv3_1"] == 5 and widths["features.conv4_1"] == 7
    rebuilt = C.vgg_from_widths(widths)
    assert count_params(rebuilt) == count_params(small)
    assert rebuilt(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError):
        C.vgg_from_widths([8] * 13)


def test_bn_balance_separates_filter_and_batchnorm_norms():
    torch.manual_seed(0)
    model = C.vgg_from_widths([4] * 13 + [6])
    with torch.no_grad():
        model.features.bn1_1.weight.copy_(torch.tensor([3.0, 1.0, 1.0, 1.0]))
        model.features.bn1_1.bias.copy_(torch.tensor([4.0, 0.0, 0.0, 0.0]))
        model.features.conv1_1.weight[1] = 0  # filter 1 of conv1_1 is in-dead
    b = C.bn_balance(model)
    first = b[b["layer"] == "features.conv1_1"].set_index("node")
    assert first.loc[0, "affine_l2"] == pytest.approx(5.0)
    w0 = float(model.features.conv1_1.weight[0].detach().norm())
    assert first.loc[0, "filter_l2"] == pytest.approx(w0, rel=1e-5)
    assert first.loc[0, "in_l2"] == pytest.approx((w0**2 + 25) ** 0.5, rel=1e-5)
    assert first.loc[0, "out_l2"] == pytest.approx(float(model.features.conv1_2.weight[:, 0].detach().norm()), rel=1e-5)
    assert bool(first.loc[1, "in_dead"]) and first.loc[1, "filter_l2"] == 0 and first.loc[1, "nonzero_in"] == 0
    assert first.loc[0, "fan_in"] == 27 and first.loc[0, "nonzero_in"] == 27
    fc1 = b[b["layer"] == "classifier.fc1"]
    assert len(fc1) == 6 and not fc1["bn"].any()  # no BatchNorm: the bias is the affine part
    s = C.balance_summary(b).set_index("layer")
    assert s.loc["conv1_1", "alive"] == 3 and s.loc["conv1_1", "nodes"] == 4


def test_time_architectures_table():
    models = {"big": C.vgg_from_widths([8] * 13 + [16]), "small": C.vgg_from_widths([4] * 13 + [8])}
    t = C.time_architectures(models, torch.randn(2, 3, 32, 32), batches=(1, 2), reps=2)
    assert list(t["model"]) == ["big", "small", "big", "small"]
    big = t[(t["model"] == "big") & (t["batch"] == 1)].iloc[0]
    small = t[(t["model"] == "small") & (t["batch"] == 1)].iloc[0]
    assert big["speedup"] == 1.0 and big["flop_ratio"] == 1.0
    assert small["flop_ratio"] > 3  # about 4x fewer multiply-adds in the convs
    assert (t["ms"] > 0).all()


def test_recorded_sweeps_match_their_specs():
    runs, layers = C.load_recorded(RESULTS, SWEEPS)
    assert len(runs) == 19 and set(runs["sweep"]) == set(C.RECORDED)
    assert (runs["filters"] == 4224).all() and (runs["units"] == 512).all()
    assert runs["setting"].is_unique or runs.groupby("sweep")["setting"].apply(lambda s: s.is_unique).all()
    # every node removed is a filter or an fc1 unit
    removed = runs["filters_removed_count"] + runs["units_removed_count"]
    assert (removed == runs["nodes_total"] - runs["nodes_alive"]).all()
    assert (runs.loc[~runs["pruned"], "gap_points"] >= 0).all()
    assert set(runs["epochs"]) == {20, 30}


# --- figures ---------------------------------------------------------------------------------


def test_removed_text_counts_filters_apart():
    before = {"features.conv1_1": 64, "features.conv1_2": 64, "classifier.fc1": 512}
    after = {"features.conv1_1": 32, "features.conv1_2": 64, "classifier.fc1": 12}
    assert A.removed_text(before, after) == "32 of 128 filters removed (25.0%); fc1: 500 of 512"
    assert A.removed_text({"net.fc1": 300}, {"net.fc1": 100}) == "200 of 300 nodes removed (66.7%)"


def test_plot_widths_and_panels():
    t = layers_table(dead={"features.conv5_1": 256})
    before, after = C.layer_widths(t, "r")
    fig = A.plot_widths(before, after)
    assert isinstance(fig, Figure) and "256 of 4224 filters removed" in fig.axes[0].get_title()
    fig = A.plot_widths_panels(before, {"x": after, "y": before, "z": after}, ncols=2)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 3


def test_death_matrix_and_heatmap():
    t = layers_table(epochs=2, dead={"features.conv2_2": 64})
    m, names, epochs = A.death_matrix(t)
    assert m.shape == (14, 3) and epochs == [0, 1, 2]
    assert m[names.index("features.conv2_2"), 2] == pytest.approx(0.5) and m[:, 0].sum() == 0
    fig = A.plot_death_heatmap({"a": t, "b": t})
    assert isinstance(fig, Figure)


def test_plot_filters_vs_accuracy_and_latency():
    t = C.add_dense_gap(toy_runs())
    t["short"] = t["setting"]
    fig = A.plot_filters_vs_accuracy(t)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    lat = pd.DataFrame({"model": ["dense", "compact"] * 2, "batch": [1, 1, 8, 8], "ms": [2.0, 1.0, 9.0, 4.0],
                        "speedup": [1, 2, 1, 2.25], "flop_ratio": [1, 3, 1, 3]})
    assert isinstance(A.plot_latency(lat), Figure)


def test_plot_bn_balance():
    model = C.vgg_from_widths([4] * 13 + [6])
    with torch.no_grad():
        model.features.conv2_1.weight[0] = 0
    b = C.bn_balance(model)
    fig = A.plot_bn_balance({"one": b, "two": b})
    assert isinstance(fig, Figure)


def test_fan_in_and_nonzero_per_alive():
    widths = dict(zip([*CONV, "classifier.fc1"], [*DENSE, 512]))
    fan = C.vgg_fan_in(widths)
    assert fan["features.conv1_1"] == 27 and fan["features.conv1_2"] == 576
    assert fan["features.conv4_1"] == 9 * 256 and fan["classifier.fc1"] == 512
    t = layers_table(dead={"features.conv5_1": 256})
    t.loc[t["layer"] == "features.conv5_1", "weight_sparsity"] = 1 - 10 * 256 / (512 * 4608)  # 10 weights per alive filter
    nz = C.nonzero_per_alive(t, fan).set_index("layer")
    assert nz.loc["features.conv5_1", "nonzero_per_alive"] == pytest.approx(10.0)
    assert nz.loc["features.conv1_1", "nonzero_per_alive"] == pytest.approx(27.0)


def test_plot_bn_balance_on_a_recorded_nodes_table():
    nodes = pd.DataFrame({"layer": ["features.conv1_1"] * 3 + ["classifier.fc1"], "in_l2": [0.5, 0.0, 1.0, 1.0],
                          "out_l2": [0.4, 0.0, 0.0, 1.0], "in_dead": [False, True, False, False], "out_dead": [False, True, True, False]})
    fig = A.plot_bn_balance({"rec": nodes}, columns=("in_l2",))
    assert isinstance(fig, Figure) and "1 of 3 filters alive" in fig.axes[0].get_title()


def test_filters_dead_by_epoch():
    t = layers_table(epochs=2, dead={"features.conv1_1": 4, "features.conv5_3": 10, "classifier.fc1": 100})
    s = C.filters_dead_by_epoch(t)
    assert list(s.index) == [0, 1, 2] and list(s) == [0, 14, 14]  # fc1 units are not filters
