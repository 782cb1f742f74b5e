"""prunedyn.book.saliency: occlusion sensitivity and input gradients on models whose answer is known."""
import math

import pytest
import torch
from torch import nn

from prunedyn.book import saliency as S
from prunedyn.models import CXRNet


class PatchModel(nn.Module):
    """Two-class toy: logit of class 0 = ``gain * mean(x[..., r:r+k, c:c+k])``, class 1 = 0.

    Its output depends on one patch of the image and on nothing else.
    """

    def __init__(self, r: int, c: int, k: int, gain: float = 4.0):
        super().__init__()
        self.r, self.c, self.k, self.gain = r, c, k, gain
        self.dummy = nn.Parameter(torch.zeros(1))  # a parameter, so the model has a device

    def forward(self, x):
        v = x[..., self.r : self.r + self.k, self.c : self.c + self.k].mean((1, 2, 3)) * self.gain
        return torch.stack([v, torch.zeros_like(v)], 1) + 0 * self.dummy


def region(h, w, r, c, k):
    m = torch.zeros(h, w, dtype=torch.bool)
    m[r : r + k, c : c + k] = True
    return m


def test_patch_positions_reach_the_border():
    assert S.patch_positions(10, 4, 4) == [0, 4, 6]
    assert S.patch_positions(16, 4, 4) == [0, 4, 8, 12]
    assert S.patch_positions(5, 5, 3) == [0]
    with pytest.raises(ValueError):
        S.patch_positions(8, 9, 1)
    with pytest.raises(ValueError):
        S.patch_positions(8, 2, 0)
    masks, grid = S.occlusion_masks(10, 7, 4, 3)
    assert grid == (3, 2) and masks.shape == (6, 10, 7)
    assert bool(masks.any(0).all()), "every pixel is covered by some patch"
    assert int(masks[0].sum()) == 16


def test_occlusion_of_the_informative_patch_gives_the_largest_drop():
    h = w = 32
    model = PatchModel(r=20, c=6, k=6)
    x = torch.ones(3, 1, h, w) + 0.1 * torch.randn(3, 1, h, w, generator=torch.Generator().manual_seed(0))
    drops, masks = S.occlusion_drops(model, x, target=0, patch=8, stride=4, baseline=0.0)
    assert drops.shape == (3, 7, 7)
    informative = region(h, w, 20, 6, 6)
    overlap = (masks & informative).flatten(1).sum(1).float()  # (P,) pixels of the region each patch hides
    flat = drops.flatten(1)
    # patches that hide nothing of the region change nothing; the largest drop hides the most of it
    assert torch.allclose(flat[:, overlap == 0], torch.zeros(1), atol=1e-7)
    assert bool((flat[:, overlap > 0] > 0).all())
    best = flat.argmax(1)
    assert bool((overlap[best] == overlap.max()).all())
    top = S.top_region(drops)
    r, c = S.patch_positions(h, 8, 4)[int(top[0, 0])], S.patch_positions(w, 8, 4)[int(top[0, 1])]
    assert informative[r : r + 8, c : c + 8].sum() == overlap.max()
    # the per-pixel map: zero wherever no covering patch touches the region, largest on the region
    amap = S.occlusion_map(model, x, target=0, patch=8, stride=4)
    touched = (masks[overlap > 0]).any(0)
    assert torch.allclose(amap[:, ~touched], torch.zeros(1), atol=1e-7)
    inside = amap[:, informative].mean(1)
    outside = amap[:, ~informative].mean(1)
    assert bool((inside > 5 * outside).all())
    share = S.region_share(amap, touched)
    assert torch.allclose(share, torch.ones(3))


def test_occlusion_map_is_the_mean_drop_of_the_covering_patches():
    """The vectorised map against a loop over pixels and patches, with a stride that leaves a remainder."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, 4))
    x = torch.randn(2, 2, 9, 11)
    patch, stride, base = 4, 3, 0.3
    amap = S.occlusion_map(model, x, target=[1, 3], patch=patch, stride=stride, baseline=base, score="logit", batch=5)
    rows, cols = S.patch_positions(9, patch, stride), S.patch_positions(11, patch, stride)
    with torch.no_grad():
        for n, t in enumerate([1, 3]):
            s0 = model(x[n : n + 1])[0, t]
            total = torch.zeros(9, 11)
            count = torch.zeros(9, 11)
            for r in rows:
                for c in cols:
                    xo = x[n : n + 1].clone()
                    xo[..., r : r + patch, c : c + patch] = base
                    total[r : r + patch, c : c + patch] += s0 - model(xo)[0, t]
                    count[r : r + patch, c : c + patch] += 1
            assert torch.allclose(amap[n], total / count, atol=1e-5)


def test_baseline_equal_to_the_image_changes_nothing():
    torch.manual_seed(0)
    model = CXRNet(width=0.125).eval()
    x = torch.full((2, 1, 32, 32), 0.7)
    amap = S.occlusion_map(model, x, patch=8, stride=8, baseline=0.7)
    assert torch.equal(amap, torch.zeros_like(amap))


def test_batching_does_not_change_the_maps_and_the_mode_is_restored():
    torch.manual_seed(0)
    model = CXRNet(width=0.125)
    with torch.no_grad():  # non-trivial running statistics, so eval and train mode differ
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    model.train()
    x = torch.randn(3, 1, 32, 32)
    a = S.occlusion_map(model, x, patch=8, stride=6, batch=1000)
    b = S.occlusion_map(model, x, patch=8, stride=6, batch=7)
    assert torch.allclose(a, b, atol=1e-6)
    g1 = S.input_gradient(model, x, batch=1)
    g2 = S.input_gradient(model, x, batch=64)
    assert torch.allclose(g1, g2, atol=1e-6)
    assert model.training, "the model is left in the mode it was in"
    assert all(p.grad is None for p in model.parameters()), "no parameter gradient is kept"
    # eval-mode scores: the base score of the occlusion equals predict_proba's
    pred = S.predict_proba(model, x)
    assert torch.allclose(pred.sum(1), torch.ones(3)) and model.training
    assert torch.equal(S.resolve_target(model, x), pred.argmax(1))


def test_input_gradient_of_a_linear_model_is_its_weight():
    torch.manual_seed(0)
    lin = nn.Linear(2 * 5 * 4, 3)
    model = nn.Sequential(nn.Flatten(), lin)
    x = torch.randn(4, 2, 5, 4)
    w = lin.weight.detach().view(3, 2, 5, 4)
    tgt = torch.tensor([0, 2, 1, 2])
    g = S.input_gradient(model, x, target=tgt, score="logit", reduce="sum")
    assert g.shape == (4, 5, 4)
    assert torch.allclose(g, w[tgt].sum(1), atol=1e-6)
    g_abs = S.input_gradient(model, x, target=tgt, reduce="absmax")
    assert torch.allclose(g_abs, w[tgt].abs().amax(1), atol=1e-6)
    gx = S.input_gradient(model, x, target=tgt, reduce="sum", times_input=True)
    assert torch.allclose(gx, (w[tgt] * x).sum(1), atol=1e-6)
    # SmoothGrad of a linear model: the noise averages out exactly, the gradient is the same
    sg = S.input_gradient(model, x, target=tgt, reduce="sum", samples=5, noise=0.3, seed=3)
    assert torch.allclose(sg, g, atol=1e-5)


def test_input_gradient_sees_only_the_informative_patch():
    model = PatchModel(r=3, c=9, k=4)
    x = torch.randn(2, 1, 16, 16)
    g = S.input_gradient(model, x, target=0, score="logit")
    inf = region(16, 16, 3, 9, 4)
    assert torch.allclose(g[:, inf], torch.full((2, 16), 4.0 / 16))
    assert torch.equal(g[:, ~inf], torch.zeros(2, int((~inf).sum())))
    # through the softmax the gradient is damped but keeps its support; SmoothGrad repeats with its seed
    s1 = S.input_gradient(model, x, target=0, score="prob", samples=4, seed=7)
    s2 = S.input_gradient(model, x, target=0, score="prob", samples=4, seed=7)
    assert torch.equal(s1, s2)
    assert torch.equal(s1[:, ~inf], torch.zeros(2, int((~inf).sum())))
    assert bool((s1[:, inf] > 0).all())


def test_targets_and_errors():
    model = PatchModel(r=0, c=0, k=2)
    x = torch.ones(3, 1, 8, 8)
    assert S.resolve_target(model, x).tolist() == [0, 0, 0]  # logit 4 > 0
    assert S.resolve_target(model, x, 1).tolist() == [1, 1, 1]
    with pytest.raises(ValueError):
        S.resolve_target(model, x, [0, 1])
    with pytest.raises(ValueError):
        S.occlusion_map(model, x, score="softmax")
    with pytest.raises(ValueError):
        S.input_gradient(model, x, reduce="max")
    # explaining the other class: occluding the region *raises* its probability (negative drops)
    d, _ = S.occlusion_drops(model, x, target=1, patch=2, stride=2)
    assert float(d[0, 0, 0]) < 0 and torch.allclose(d[:, 1:, :], torch.zeros(1), atol=1e-7)


def test_map_summaries():
    a = torch.randn(3, 6, 6)
    r = S.map_correlation(a, a)
    assert torch.allclose(r, torch.ones(3), atol=1e-6)
    assert torch.allclose(S.map_correlation(a, -2 * a + 1), -torch.ones(3), atol=1e-6)
    c = S.map_correlation(a, torch.ones(3, 6, 6))
    assert bool(torch.isnan(c).all())
    with pytest.raises(ValueError):
        S.map_correlation(a, a[:, :5])
    border = S.border_mask(8, 8, margin=0.25)
    assert int(border.sum()) == 64 - 16 and not bool(border[2:6, 2:6].any())
    m = torch.zeros(2, 8, 8)
    m[0, 0, :] = 1.0  # all mass on the border
    m[1, 3:5, 3:5] = 2.0  # all mass inside
    m[1, 0, 0] = -5.0  # negative values do not count
    share = S.region_share(m, border)
    assert share.tolist() == [1.0, 0.0]
    assert math.isnan(float(S.region_share(torch.zeros(1, 8, 8), border)[0]))
    n = S.normalise_maps(torch.stack([m[1], 10 * m[1]]), q=1.0)
    assert torch.allclose(n[0], n[1]) and float(n.max()) == 1.0 and float(n.min()) == 0.0
    ns = S.normalise_maps(m[1:], q=1.0, signed=True)
    assert float(ns.min()) == -1.0


# ---------------------------------------------------------------------------
# the chest X-ray chapter's tables and figures (prunedyn.book.xray)
# ---------------------------------------------------------------------------
class FakeRun:
    def __init__(self, summary):
        self.summary = summary


def fake_summary(auc, alive, widths, acc=0.9):
    return {
        "test_accuracy": acc, "test_balanced_accuracy": acc, "test_auc": auc, "test_auc_covid": 1.0,
        "weight_sparsity": 0.5, "nodes_total": 20, "nodes_alive": alive, "dead_node_fraction": 1 - alive / 20,
        "widths_compact": {"block1.conv": widths[0], "block2.conv": widths[1]}, "params_dense": 100,
        "params_compact": 50, "flops_dense": 10, "flops_compact": 5, "compact_max_abs_diff": 0.0,
    }


def test_summary_table_gaps_and_target():
    import matplotlib

    matplotlib.use("Agg")
    from prunedyn.book import xray as X

    runs = {
        ("dense", 0): FakeRun(fake_summary(0.99, 20, (10, 10))),
        ("dense", 1): FakeRun(fake_summary(0.98, 20, (10, 10))),
        ("l2", 0): FakeRun(fake_summary(0.975, 9, (5, 5))),  # 11 dead, one kept as a carrier: 50% removed
        ("l2", 1): FakeRun(fake_summary(0.97, 8, (4, 5))),  # 55% removed
        ("l2", 2): FakeRun(fake_summary(0.5, 2, (1, 1))),  # no dense partner: not paired
    }
    t = X.summary_table(runs)
    row = t[(t["run"] == "l2") & (t["seed"] == 0)].iloc[0]
    assert row["dead_fraction"] == pytest.approx(0.55) and row["removed_fraction"] == pytest.approx(0.5)
    assert row["widths_compact"] == "5-5"
    gaps = X.paired_gaps(t, "l2")
    assert list(gaps.index) == [0, 1]
    assert gaps["test_auc"].tolist() == pytest.approx([0.015, 0.01])
    ok = X.target_check(t, "l2", metric="test_auc", min_removed=0.5, tolerance=0.02)
    assert ok["met"] and ok["met_every_seed"] and ok["seeds"] == [0, 1]
    assert ok["removed_mean"] == pytest.approx(0.525) and ok["gap_mean"] == pytest.approx(0.0125)
    assert not X.target_check(t, "l2", metric="test_auc", tolerance=0.012)["met"]
    assert not X.target_check(t, "l2", metric="test_auc", min_removed=0.53)["met"]
    mixed = X.target_check(t, "l2", metric="test_auc", tolerance=0.013)
    assert mixed["met"] and not mixed["met_every_seed"]  # the mean gap within, seed 0's gap above it
    agg = X.seed_summary(t)
    assert agg.loc["l2", "seeds"] == 3 and agg.loc["dense", "test_auc_mean"] == pytest.approx(0.985)
    fig = X.plot_metrics_vs_removed(t, band=0.02, target=0.5)
    assert len(fig.axes) == 4


def test_xray_figures_and_helpers():
    import matplotlib
    import pandas as pd

    matplotlib.use("Agg")
    from prunedyn.book import xray as X

    labels = torch.tensor([2, 0, 1, 0, 2, 1, 0])
    assert X.examples_per_class(labels, per_class=2) == [1, 3, 2, 5, 0, 4]
    t = pd.DataFrame({"layer": ["block1.conv", "block12.conv", "head", "features.conv1_1"]})
    assert X.block_layers(t)["layer"].tolist() == ["block1", "block12", "head", "features.conv1_1"]
    imgs = torch.randn(3, 1, 16, 16)
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
    ex = X.Explained(probs, torch.rand(3, 16, 16))
    assert ex.pred.tolist() == [0, 1, 2]
    fig = X.plot_xray_saliency(imgs, [0, 2, 2], {"dense": ex, "compact": ex}, ["a", "b", "c"])
    assert len(fig.axes) == 9
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[1] == "a (0.70)" and titles[4] == "b (0.80)"
    assert fig.axes[4].title.get_color() == X.WRONG and fig.axes[1].title.get_color() == X.CORRECT
    rgba = X.overlay_rgba(torch.tensor([[0.0, 0.5], [1.0, 2.0]]), max_alpha=0.8)
    assert rgba.shape == (2, 2, 4) and rgba[..., 3].flatten().tolist() == pytest.approx([0.0, 0.4, 0.8, 0.8])
    fig = X.plot_xray_examples(imgs, [0, 1, 1], ["a", "b", "c"], per_class=2, notes={"a": "source A"})
    assert len(fig.axes) == 6 and "source A" in fig.axes[0].get_ylabel()


def _cxr_and_images():
    torch.manual_seed(0)
    model = CXRNet(in_channels=1, num_classes=3, width=0.25).eval()
    return model, torch.randn(3, 1, 40, 40)


def test_occlusion_map_equals_captums_where_their_patch_positions_agree():
    """Captum's ``Occlusion`` (per pixel: the mean score drop of the windows covering it) on a grid
    whose stride divides ``H - k``, where it and :func:`patch_positions` place the same windows (the
    book adds a last window flush with the border where the stride does not divide it; Captum
    leaves those border pixels uncovered). The same maps, target the predicted class."""
    from captum.attr import Occlusion

    model, x = _cxr_and_images()
    tgt = S.resolve_target(model, x)
    for score, fn in (("prob", lambda v: torch.softmax(model(v), 1)), ("logit", model)):
        ours = S.occlusion_map(model, x, patch=8, stride=4, score=score)
        theirs = Occlusion(fn).attribute(x, sliding_window_shapes=(1, 8, 8), strides=(1, 4, 4), baselines=0.0,
                                         target=tgt, perturbations_per_eval=16).squeeze(1)
        assert ours.abs().max() > 1e-4  # not vacuous
        assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-6 * float(ours.abs().max())), score


def test_input_gradient_equals_captums_saliency_and_input_x_gradient():
    """Without SmoothGrad's noise (drawn from the book's own seeded generator), the input gradient
    is Captum's ``Saliency`` (``abs=True``, the channel maximum) and, times the input and summed
    over the channels, its ``InputXGradient``."""
    from captum.attr import InputXGradient, Saliency

    model, x = _cxr_and_images()
    tgt = S.resolve_target(model, x)
    ours = S.input_gradient(model, x, score="logit", reduce="absmax")
    theirs = Saliency(model).attribute(x.clone().requires_grad_(True), target=tgt, abs=True).amax(1)
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-7)
    ours = S.input_gradient(model, x, score="logit", reduce="sum", times_input=True)
    theirs = InputXGradient(model).attribute(x.clone().requires_grad_(True), target=tgt).sum(1)
    assert ours.abs().max() > 0
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-7)
