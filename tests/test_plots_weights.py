"""prunedyn.plots.weights: the numbers behind chapters 1-2 and the figures' structure."""
import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from prunedyn.structure.nodes import HIST_EDGES, magnitude_histogram
from prunedyn.plots import static_slider
from prunedyn.plots import weights as W
from prunedyn.book import sampling as SMP


def hist_rows(run, epoch, layer, w):
    """Histogram rows exactly as prunedyn.run.experiments.snapshot writes them."""
    zeros, counts = magnitude_histogram(w)
    rows = [{"run": run, "epoch": epoch, "layer": layer, "bin": -1, "lo": 0.0, "hi": 0.0, "count": zeros}]
    for b, c in enumerate(counts):
        rows.append({"run": run, "epoch": epoch, "layer": layer, "bin": b, "lo": HIST_EDGES[b], "hi": HIST_EDGES[b + 1], "count": int(c)})
    return rows


@pytest.fixture(scope="module")
def hist():
    """Two runs x two epochs x two layers of real tensors; run 'l2' at epoch 1 is 75% zeros."""
    g = torch.Generator().manual_seed(0)
    rows = []
    for run in ("none", "l2"):
        for layer, n in (("net.fc1", 400), ("net.fc2", 100)):
            w0 = (torch.rand(n, generator=g) - 0.5) * 0.1
            rows += hist_rows(run, 0, layer, w0)
            w1 = w0.clone()
            if run == "l2":
                w1[: 3 * n // 4] = 0.0
            rows += hist_rows(run, 1, layer, w1 * 2)
    return pd.DataFrame(rows)


def n_lines(ax):
    return len([ln for ln in ax.get_lines() if not ln.get_label().startswith("_")])


# ---------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    "kernel, expected",
    [("gaussian", 0.003 * math.sqrt(2 * math.log(100))), ("laplace", 0.003 * math.log(100)), ("hard", 0.003)],
)
def test_kernel_reach_solves_kappa_equals_p(kernel, expected):
    assert W.kernel_reach(kernel, 0.003, 0.01) == pytest.approx(expected, rel=1e-6)


def test_pruning_rate_table_is_the_mean_of_kappa():
    w = torch.tensor([0.0, 0.001, 0.01, 0.1])
    t = SMP.pruning_rate_table({"w": w}, kernels=("hard", "gaussian"), sigmas=[0.005, 0.05])
    assert list(t.columns) == ["weights", "kernel", "sigma", "rate"]
    assert len(t) == 4
    hard = t[(t.kernel == "hard")].set_index("sigma")["rate"]
    assert hard[0.005] == pytest.approx(0.5)  # 0 and 0.001 are below 0.005
    assert hard[0.05] == pytest.approx(0.75)
    g = t[(t.kernel == "gaussian") & (t.sigma == 0.005)]["rate"].item()
    expected = np.mean(np.exp(-np.array([0.0, 0.001, 0.01, 0.1]) ** 2 / (2 * 0.005**2)))
    assert g == pytest.approx(expected, rel=1e-6)


def test_matched_sigma_hits_the_target_rate():
    w = torch.linspace(-0.05, 0.05, 10001)
    for kernel in ("gaussian", "laplace"):
        s = SMP.matched_sigma(w, kernel, 0.3)
        assert SMP.pruning_rate_table({"w": w}, [kernel], [s])["rate"].item() == pytest.approx(0.3, abs=1e-6)
    # for uniform weights the hard kernel with sigma=0.015 prunes 30%
    assert SMP.matched_sigma(w, "hard", 0.3) == pytest.approx(0.015, rel=1e-3)


def test_sample_prune_mask_is_seeded_and_follows_kappa():
    w = torch.linspace(-0.05, 0.05, 200_001)
    a = SMP.sample_prune_mask(w, "gaussian", 0.01, seed=3)
    b = SMP.sample_prune_mask(w, "gaussian", 0.01, seed=3)
    c = SMP.sample_prune_mask(w, "gaussian", 0.01, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    expected = SMP.pruning_rate_table({"w": w}, ["gaussian"], [0.01])["rate"].item()
    assert float(a.float().mean()) == pytest.approx(expected, abs=0.005)
    assert torch.equal(SMP.sample_prune_mask(w, "hard", 0.01), w.abs() < 0.01)


def test_compare_with_threshold_counts_sets():
    w = torch.tensor([0.001, 0.002, 0.003, 0.02, 0.03, 0.04])
    drop = torch.tensor([True, False, True, False, True, False])  # spares 0.002, prunes 0.03
    r = SMP.compare_with_threshold(w, 0.01, drop)
    assert r["threshold_rate"] == pytest.approx(0.5)
    assert r["rate"] == pytest.approx(0.5)
    assert r["jaccard"] == pytest.approx(2 / 4)
    assert r["spared_below"] == pytest.approx(1 / 3)
    assert r["pruned_above"] == pytest.approx(1 / 3)
    assert r["max_pruned"] == pytest.approx(0.03)


def test_prune_without_training_leaves_model_alone_and_prunes_copies():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 3))
    before = [p.clone() for p in model.parameters()]
    x, y = torch.randn(64, 20), torch.randint(0, 3, (64,))
    t = SMP.prune_without_training(model, x, y, "gaussian", sigmas=[0.05, 0.2], applications=[1, 4, 16])
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert list(t["applications"]) == [1, 4, 16, 1, 4, 16]
    for _, g in t.groupby("sigma"):
        assert g["weight_sparsity"].is_monotonic_increasing
    assert t[t.sigma == 0.2]["weight_sparsity"].iloc[0] > t[t.sigma == 0.05]["weight_sparsity"].iloc[0]
    hard = SMP.prune_without_training(model, x, y, "hard", sigmas=[0.1])
    n = sum(m.weight.numel() for m in (model[1], model[3]))
    below = sum(int((m.weight.abs() < 0.1).sum()) for m in (model[1], model[3]))
    assert hard["weight_sparsity"].item() == pytest.approx(below / n)
    assert 0.0 <= hard["test_accuracy"].item() <= 1.0


def test_fractions_and_zero_fractions(hist):
    f = W.magnitude_fractions(hist)
    sums = f.groupby(["run", "epoch", "layer"])["fraction"].sum()
    assert np.allclose(sums, 1.0)
    nz = f[f.bin >= 0].groupby(["run", "epoch", "layer"])["nonzero_fraction"].sum()
    assert np.allclose(nz, 1.0)
    z = W.zero_fractions(hist).set_index(["run", "epoch", "layer"])["zero_fraction"]
    assert z[("l2", 1, "net.fc1")] == pytest.approx(0.75)
    assert z[("l2", 1, "net.fc2")] == pytest.approx(0.75)
    assert z[("none", 1, "net.fc1")] == pytest.approx(0.0)


def test_magnitude_quantiles_within_one_bin():
    w = torch.cat([torch.full((90,), 0.01), torch.full((10,), 0.5), torch.zeros(50)])
    h = pd.DataFrame(hist_rows("r", 0, "L", w))
    q = W.magnitude_quantiles(h, qs=(0.5, 0.95)).set_index("q")["magnitude"]
    step = 10 ** (1 / 8)
    assert 0.01 / step <= q[0.5] <= 0.01 * step  # zeros are ignored: the median is 0.01, not 0
    assert 0.5 / step <= q[0.95] <= 0.5 * step


def test_final_numbers_takes_the_last_epoch(hist):
    m = pd.DataFrame(
        {
            "run": ["a", "a", "b", "b"],
            "epoch": [0, 2, 0, 2],
            "test_accuracy": [0.1, 0.9, 0.1, 0.8],
            "weight_sparsity": [0.0, 0.5, 0.0, 0.7],
            "dead_node_fraction": [0.0, 0.1, 0.0, 0.3],
            "nodes_alive": [10, 9, 10, 7],
        }
    )
    out = W.final_numbers(m)
    assert list(out.index) == ["a", "b"]
    assert out.loc["b", "test_accuracy"] == 0.8 and out.loc["a", "dead_node_fraction"] == 0.1
    m2 = m.assign(run=m["run"].map({"a": "none", "b": "l2"}), epoch=m["epoch"].map({0: 0, 2: 1}))
    out2 = W.final_numbers(m2, hist)
    assert out2.loc["l2", "zeros fc1"] == pytest.approx(0.75) and out2.loc["none", "zeros fc2"] == 0.0


def test_sparsity_drops_finds_revivals():
    m = pd.DataFrame({"run": ["a"] * 5 + ["b"] * 5, "epoch": list(range(5)) * 2,
                      "weight_sparsity": [0, 0.5, 0.9, 0.8, 0.85, 0, 0.5, 0.6, 0.59, 0.7],
                      "train_loss": np.arange(10.0), "test_accuracy": np.linspace(0.5, 1, 10)})
    d = W.sparsity_drops(m, min_drop=0.02)
    assert list(d["run"]) == ["a"] and list(d["epoch"]) == [3]
    assert d.loc[0, "weight_sparsity before"] == 0.9 and d.loc[0, "weight_sparsity after"] == 0.8
    assert d.loc[0, "train_loss before"] == 2.0 and d.loc[0, "train_loss after"] == 3.0
    assert len(W.sparsity_drops(m, min_drop=0.005)) == 2  # b's 0.6 -> 0.59 counts now
    assert W.sparsity_drops(m[m.run == "b"].drop(columns="run"), min_drop=0.2).empty


def test_shrinkage_paths_match_closed_forms():
    l2 = SMP.shrinkage_path(0.1, "l2", lam=5e-3, lr=0.05, steps=100)
    assert l2[-1] == pytest.approx(0.1 * (1 - 0.05 * 5e-3) ** 100, rel=1e-12)
    l1 = SMP.shrinkage_path(0.1, "l1", lam=1e-3, lr=0.05, steps=100)
    assert l1[100] == pytest.approx(0.1 - 100 * 0.05 * 1e-3, rel=1e-12)
    # L1 reaches zero in finite time: 0.1 / (lr lam) = 2000 steps, then chatters within lr*lam
    l1_long = SMP.shrinkage_path(0.1, "l1", lam=1e-3, lr=0.05, steps=3000)
    assert np.abs(l1_long[2001:]).max() <= 0.05 * 1e-3 + 1e-12
    assert SMP.steps_to_reach(0.1, "l1", 1e-3, 0.05, level=0.05) == 1001
    # momentum 0.9 speeds the steady drift up by 1/(1-0.9) = 10
    with_m = SMP.steps_to_reach(0.1, "l2", 5e-3, 0.05, level=0.01, momentum=0.9)
    assert with_m == pytest.approx(math.log(10) / (10 * 0.05 * 5e-3), rel=0.02)
    with pytest.raises(ValueError):
        SMP.shrinkage_path(0.1, "l3", 1e-3, 0.05, 10)


# ---------------------------------------------------------------- figures


def test_plot_kernels_draws_each_kernel_twice():
    fig = SMP.plot_kernels(0.003)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert [n_lines(ax) for ax in fig.axes] == [3, 3]


def test_plot_kernel_on_weights_reports_the_rate():
    w = torch.linspace(-0.05, 0.05, 1001)
    w[:10] = 0
    fig = SMP.plot_kernel_on_weights(w, "laplace", 0.01, xmax=0.06)
    assert len(fig.axes) == 4  # two panels, each with its kappa twin axis
    rate = SMP.pruning_rate_table({"w": w}, ["laplace"], [0.01])["rate"].item()
    title = fig._suptitle.get_text()
    assert f"{rate:.4f}" in title and "10 exact zeros" in title
    counts = fig.axes[0].patches[0].get_data().values  # first stairs: the weights
    assert counts.sum() == 991  # exact zeros are not drawn


def test_plot_pruning_rate_one_panel_per_weight_set():
    w = {"init": torch.rand(500) - 0.5, "trained": torch.randn(500)}
    rates = SMP.pruning_rate_table(w, ("gaussian", "hard"), np.logspace(-3, 0, 7))
    fig = SMP.plot_pruning_rate(rates, mark_sigma=0.01)
    assert len(fig.axes) == 2
    assert [n_lines(ax) for ax in fig.axes] == [2, 2]


def test_plot_prune_probability_markers_are_bin_shares():
    w = torch.logspace(-3, -1, 4001, dtype=torch.float64)
    drop = w < 0.01
    fig = SMP.plot_prune_probability(w, {"hard": drop}, {"hard": ("hard", 0.01)}, log_range=(1e-3, 1e-1), per_decade=4)
    ax = next(a for a in fig.axes if a.get_lines())
    pts = [ln for ln in ax.get_lines() if ln.get_label() == "hard: sampled"][0]
    y = pts.get_ydata()
    assert len(y) == 8 and set(np.round(y, 6)) == {0.0, 1.0}
    assert list(y[:4]) == [1.0] * 4 and list(y[4:]) == [0.0] * 4


def test_plot_accuracy_vs_sparsity_one_line_per_hue():
    t = pd.DataFrame({"kernel": ["gaussian"] * 3 + ["hard"] * 3, "sigma": [0.01, 0.02, 0.03] * 2,
                      "weight_sparsity": [0.1, 0.5, 0.9, 0.1, 0.5, 0.9], "test_accuracy": [0.9, 0.8, 0.2, 0.9, 0.85, 0.3]})
    fig = SMP.plot_accuracy_vs_sparsity(t, reference=0.95, annotate="sigma")
    ax = fig.axes[0]
    assert n_lines(ax) == 3  # two kernels + the reference
    assert len(ax.texts) == 6


def test_plot_magnitude_grid_layout(hist):
    fig = W.plot_magnitude_grid(hist, 1, sigma=0.003)
    assert len(fig.axes) == 2 * 2 * 2  # (zero bar + histogram) x runs x layers
    bars = [ax for ax in fig.axes if len(ax.patches) == 1 and ax.get_xlim()[1] < 1]
    heights = sorted(round(ax.patches[0].get_height(), 6) for ax in bars)
    assert heights == [0.0, 0.0, 0.75, 0.75]
    fig_one = W.plot_magnitude_grid(hist, 0, runs=["l2"], layers=["net.fc1"], reference_epoch=None)
    assert len(fig_one.axes) == 2
    assert len(fig_one.axes[1].patches) == 1  # the histogram only, no reference
    fig_ref = W.plot_magnitude_grid(hist, 1, runs=["l2"], layers=["net.fc1"], reference_run="none", reference_epoch="same")
    labels = [p.get_label() for p in fig_ref.axes[1].patches]
    assert labels == ["SWP, no regularizer, epoch 1", "epoch 1"]


def test_plot_magnitude_ridgeline_one_ridge_per_epoch(hist):
    fig = W.plot_magnitude_ridgeline(hist, "l2", "net.fc1", [0, 1], sigma=0.003)
    zax, hax = fig.axes
    widths = [p.get_width() for p in zax.patches]
    assert widths == pytest.approx([0.0, 0.75])
    assert len(hax.patches) >= 2 * 2  # a filled and an outlined ridge per epoch (plus the reach band)
    assert [t.get_text() for t in zax.get_yticklabels()] == ["epoch 0", "epoch 1"]


def test_metric_and_sparsity_curves(hist):
    m = pd.DataFrame({"run": ["a"] * 3 + ["b"] * 3, "epoch": [0, 1, 2] * 2, "test_accuracy": np.linspace(0, 1, 6),
                      "weight_sparsity": np.linspace(0, 1, 6), "dead_node_fraction": np.zeros(6)})
    fig = W.plot_metric_curves(m)
    assert len(fig.axes) == 3 and all(n_lines(ax) == 2 for ax in fig.axes)
    fig = W.plot_layer_sparsity(hist)
    assert len(fig.axes) == 2 and all(n_lines(ax) == 2 for ax in fig.axes)
    l2 = [ln for ln in fig.axes[0].get_lines() if "L2" in ln.get_label()][0]
    assert list(l2.get_ydata()) == pytest.approx([0.0, 0.75])


def test_plot_shrinkage_paths_and_slider():
    fig = SMP.plot_shrinkage_paths([0.03, 0.1], {"l1": 1e-4, "l2": 5e-3}, 0.05, 0.9, 2000, 157, sigma=0.003)
    assert n_lines(fig.axes[0]) == 4
    s = static_slider([("a", fig), ("b", SMP.plot_kernels(0.01))], name="t", dpi=40)
    assert s.html().count('class="pds-frame"') == 2
    assert "max-width:100%" in s.html() and "height:auto" in s.html()


def png_width(png):
    import struct

    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">I", png[16:20])[0]


def test_slider_frames_are_legible_whatever_dpi_is_asked():
    from prunedyn.plots.slider import DEFAULT_DPI, MIN_DPI, legible_dpi

    assert 110 <= DEFAULT_DPI <= 130 and MIN_DPI >= 100
    assert legible_dpi(40) == MIN_DPI and legible_dpi(None) == DEFAULT_DPI and legible_dpi(200) == 200

    def fig():
        return Figure(figsize=(4, 2))  # empty: bbox_inches="tight" keeps its size plus 0.1 in of padding a side

    default = static_slider([("a", fig())], name="t")
    low = static_slider([("a", fig())], name="t", dpi=40)  # too low: raised to the floor
    high = static_slider([("a", fig())], name="t", dpi=200)
    assert default.dpi == DEFAULT_DPI and low.dpi == MIN_DPI and high.dpi == 200
    assert png_width(default.pngs[0]) == pytest.approx(4.2 * DEFAULT_DPI, abs=1)
    assert png_width(low.pngs[0]) == pytest.approx(4.2 * MIN_DPI, abs=1)
    assert png_width(high.pngs[0]) == pytest.approx(4.2 * 200, abs=1)
    raw = static_slider([("a", b"not re-rendered")], name="t", dpi=40)
    assert raw.pngs == [b"not re-rendered"]
