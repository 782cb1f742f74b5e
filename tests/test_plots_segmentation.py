"""prunedyn.book.segmentation: the U drawing, the overlays and the skip-channel bookkeeping."""
import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from prunedyn.models import UNet
from prunedyn.book import segmentation as S
from prunedyn.tasks.segmentation import instances_from_classes
from prunedyn.structure.surgery import compact


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return UNet(width=0.0625).eval()  # widths 4, 8, 16, 32, 64


def test_layer_order_is_the_forward_order_of_the_node_layers(unet):
    assert S.unet_layer_order(unet.levels()) == [layer.name for layer in unet.node_layers()]


def test_positions_one_slot_per_layer_and_decoder_on_its_encoders_level(unet):
    pos = S.unet_positions(unet.levels())
    assert sorted(s for s, _ in pos.values()) == list(range(len(unet.layer_widths())))
    for i in range(1, 5):
        assert pos[f"enc{i}.conv2"][1] == pos[f"up{i}"][1] == pos[f"dec{i}.conv2"][1] == i
        assert pos[f"enc{i}.conv2"][0] < pos["bottleneck.conv1"][0] < pos[f"up{i}"][0]
    assert pos["bottleneck.conv2"][1] == 5


def test_unet_widths_boxes_show_the_kept_share(unet):
    before = unet.layer_widths()
    after = {name: w // 4 for name, w in before.items()}
    after["enc1.conv1"] = 0
    fig = S.plot_unet_widths(unet.levels(), before, after, scale="linear")
    assert isinstance(fig, Figure)
    rects = [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]
    assert len(rects) == 2 * len(before)
    grey, kept = rects[0::2], rects[1::2]  # drawn as (dense, kept) pairs in slot order
    for g, k, name in zip(grey, kept, S.unet_layer_order(unet.levels())):
        assert k.get_height() == pytest.approx(g.get_height() * after[name] / before[name])
    # linear scale: box heights proportional to the dense widths
    assert grey[-1].get_height() / grey[0].get_height() == pytest.approx(before["dec1.conv2"] / before["enc1.conv1"])
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert f"{after['bottleneck.conv1']}/{before['bottleneck.conv1']}" in texts and "0/4" in texts
    total_b, total_a = sum(before.values()), sum(after.values())
    assert f"{total_b - total_a} of {total_b} channels removed" in fig.axes[0].get_title()


def test_unet_widths_rejects_missing_widths_and_unknown_scale(unet):
    before = unet.layer_widths()
    with pytest.raises(ValueError):
        S.plot_unet_widths(unet.levels(), before, scale="log")
    del before["up2"]
    with pytest.raises(KeyError, match="up2"):
        S.plot_unet_widths(unet.levels(), before)


def test_dead_fraction_matrix_and_death_heatmap(unet):
    order = S.unet_layer_order(unet.levels())
    rows = []
    for epoch in (0, 1, 2):
        for k, name in enumerate(order):
            n = unet.layer_widths()[name]
            alive = n if epoch == 0 or k % 2 else n // 2
            rows.append({"epoch": epoch, "layer": name, "nodes": n, "alive": alive})
    layers = pd.DataFrame(rows)
    m = S.dead_fraction_matrix(layers, order)
    assert list(m.index) == order and list(m.columns) == [0, 1, 2]
    assert m.loc["enc1.conv1", 0] == 0.0 and m.loc["enc1.conv1", 2] == 0.5 and m.loc["enc1.conv2", 2] == 0.0
    assert S.alive_widths(layers)["enc1.conv1"] == 2 and S.alive_widths(layers, 0)["enc1.conv1"] == 4
    fig = S.plot_unet_death({"l1": layers, "l2": layers}, unet.levels(), epoch=1)
    assert len(fig.axes) == 3  # two heatmaps and the colour bar


def test_instance_overlay_colours_each_instance_and_keeps_the_background():
    img = np.linspace(0, 1, 100).reshape(10, 10)
    lab = np.zeros((10, 10), dtype=int)
    lab[1:4, 1:4] = 7
    lab[6:9, 6:9] = 3
    rgb = S.instance_overlay(img, lab, alpha=0.5, outline=False)
    assert rgb.shape == (10, 10, 3)
    grey = S.display_grey(img)
    bg = lab == 0
    np.testing.assert_allclose(rgb[bg], np.repeat(grey[bg][:, None], 3, axis=1))
    tint = rgb - 0.5 * grey[..., None]  # = 0.5 * colour of the pixel's instance
    for v in (3, 7):
        c = tint[lab == v]
        np.testing.assert_allclose(c, np.broadcast_to(c[0], c.shape), atol=1e-12)
    assert not np.allclose(tint[lab == 3][0], tint[lab == 7][0])
    with_outline = S.instance_overlay(img, lab, alpha=0.5)
    assert not np.allclose(with_outline[1, 1], rgb[1, 1]) and np.allclose(with_outline[2, 2], rgb[2, 2])
    with pytest.raises(ValueError):
        S.instance_overlay(img, lab[:5])


def test_display_grey_clips_at_the_percentiles():
    img = np.zeros((20, 20))
    img[0, 0] = 30.0  # one hot pixel: 0.25% of the image, above the 99.5th percentile
    img[5:10, 5:10] = 10.0
    g = S.display_grey(img)
    assert g.min() == 0.0 and g.max() == 1.0
    assert g[7, 7] == 1.0 and g[0, 0] == 1.0  # the nucleus is not dimmed by the hot pixel
    noise = np.random.default_rng(0).uniform(0, 1, (20, 20))
    noise[0, 0] = 100.0  # a nearly empty tile: its noise must stay dark
    assert S.display_grey(noise)[1:, 1:].max() <= 1 / 20 + 1e-9
    assert not S.display_grey(np.full((4, 4), 3.0)).any()


def test_pick_examples_goes_from_sparse_to_crowded_and_skips_empty_tiles():
    inst = np.zeros((5, 8, 8), dtype=int)
    for t, k in enumerate([0, 3, 1, 5, 2]):  # tile t holds k one-pixel nuclei
        for j in range(k):
            inst[t, j, j] = j + 1
    assert S.pick_examples(inst, k=3) == [2, 1, 3]
    assert S.pick_examples(inst, k=10) == [2, 4, 1, 3]
    with pytest.raises(ValueError):
        S.pick_examples(np.zeros((2, 4, 4), dtype=int))


def test_predict_post_processes_the_argmax(unet):
    x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    classes, inst = S.predict(unet, x, batch=2, min_size=2, grow=1)
    assert classes.shape == inst.shape == (3, 16, 16)
    with torch.no_grad():
        np.testing.assert_array_equal(classes, unet(x).argmax(1).numpy())
    for c, i in zip(classes, inst):
        np.testing.assert_array_equal(i, instances_from_classes(c, min_size=2, grow=1))
    assert len(S.plot_postprocessing(x[0, 0].numpy(), classes[0], inst[0]).axes) == 5


def test_skip_channel_dies_only_when_both_consumers_drop_it(unet):
    model = UNet(width=0.0625)
    model.load_state_dict(unet.state_dict())
    model.eval()
    with torch.no_grad():
        model.enc2.conv1.weight[:, 0] = 0  # enc1.conv2 channel 0: silent into the next encoder only
        model.enc2.conv1.weight[:, 1] = 0  # channel 1: silent into both consumers
        model.dec1.conv1.weight[:, 1] = 0
        model.dec1.conv1.weight[:, 2] = 0  # channel 2: silent into the skip only
    t = S.skip_channel_table(model).set_index("level")
    r = t.loc[1]
    assert (r["channels"], r["zero_into_next"], r["zero_into_skip"], r["zero_into_both"], r["out_dead"]) == (4, 2, 2, 1, 1)
    assert r["dec_inputs"] == 8 and r["dec_inputs_silent"] == 2
    assert t.loc[2, "out_dead"] == 0 and len(t) == 4
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    small, rep = compact(model, x)
    assert rep.widths_after["enc1.conv2"] == 3  # only channel 1 goes; 0 and 2 are still read
    assert small.dec1.conv1.in_channels == 3 + rep.widths_after["up1"]
    assert rep.max_abs_diff <= 1e-5


def test_weights_within_counts_per_layer(unet):
    t = S.weights_within(unet, 0.05).set_index("layer")
    assert list(t.index) == S.unet_layer_order(unet.levels())
    assert t.loc["enc1.conv1", "fan_in"] == 9 and t.loc["bottleneck.conv1", "fan_in"] == 32 * 9
    w = unet.bottleneck.conv1.weight.detach()
    assert t.loc["bottleneck.conv1", "share_below"] == pytest.approx(float((w.abs() < 0.05).float().mean()))
    assert t.loc["bottleneck.conv1", "rms"] == pytest.approx(float(w.pow(2).mean().sqrt()), rel=1e-5)
    assert (S.weights_within(unet, 10.0)["share_below"] == 1).all() and (S.weights_within(unet, 0.0)["share_below"] == 0).all()
