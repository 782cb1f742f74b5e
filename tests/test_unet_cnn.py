"""U-Net (segmentation) and CXRNet (chest X-ray classifier): shapes, node wiring, exact compaction."""
import pytest
import torch
from torch import nn

from prunedyn.run.config import ModelConfig
from prunedyn.models import CXRNet, UNet, build_model
from prunedyn.structure.nodes import model_nodes, node_layers
from prunedyn.structure.surgery import compact

# width 0.125: encoder 8, 16, 32, 64; bottleneck 128
ENC = [8, 16, 32, 64]
BOTTLENECK = 128


def narrow_unet(seed=0):
    torch.manual_seed(seed)
    return UNet(in_channels=1, num_classes=3, width=0.125)


def narrow_cxr(seed=0):
    torch.manual_seed(seed)
    return CXRNet(in_channels=1, num_classes=3, width=0.125)


def _randomise_bn(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.5, 0.5, generator=g)
            elif isinstance(m, nn.ConvTranspose2d):
                m.bias.uniform_(-0.5, 0.5, generator=g)


# ---------------------------------------------------------------- shapes and builders


@pytest.mark.parametrize("side", [64, 128])
def test_unet_output_is_per_pixel_logits(side):
    model = narrow_unet()
    assert model(torch.randn(2, 1, side, side)).shape == (2, 3, side, side)


def test_unet_rejects_sizes_not_divisible_by_16():
    model = narrow_unet()
    with pytest.raises(ValueError, match=r"72x64.*16"):
        model(torch.randn(1, 1, 72, 64))
    with pytest.raises(ValueError, match="16"):
        build_model(ModelConfig(name="unet", width=0.125), (1, 100, 96), 3)


@pytest.mark.parametrize("side", [128, 256])
def test_cxr_output_is_class_logits(side):
    model = narrow_cxr()
    assert model(torch.randn(2, 1, side, side)).shape == (2, 3)


def test_builders_by_name():
    unet = build_model(ModelConfig(name="unet", width=0.125), (1, 64, 64), 3)
    assert isinstance(unet, UNet) and unet.depth == 4
    assert unet.enc1.conv1.in_channels == 1 and unet.head.out_channels == 3
    assert unet.bottleneck.conv2.out_channels == BOTTLENECK
    cxr = build_model(ModelConfig(name="cxr_cnn", width=0.125), (1, 128, 128), 3)
    assert isinstance(cxr, CXRNet) and cxr.head.out_features == 3
    full = UNet(in_channels=1, num_classes=3)
    assert [full.layer_widths()[f"enc{i}.conv2"] for i in range(1, 5)] == [64, 128, 256, 512]
    assert full.layer_widths()["bottleneck.conv2"] == 1024
    assert sum(full.layer_widths().values()) == 6848
    assert sum(l.size for l in node_layers(CXRNet(width=1.0))) == 736


# ---------------------------------------------------------------- wiring


def test_unet_node_layers_are_wired_as_the_forward_pass():
    model = narrow_unet()
    layers = node_layers(model)
    by_name = {l.name: l for l in layers}
    assert len(layers) == 22  # 4 x 2 encoder + 2 bottleneck + 4 x (up + 2) decoder
    assert list(by_name) == [
        *[f"enc{i}.conv{k}" for i in range(1, 5) for k in (1, 2)],
        "bottleneck.conv1", "bottleneck.conv2",
        *[n for i in range(4, 0, -1) for n in (f"up{i}", f"dec{i}.conv1", f"dec{i}.conv2")],
    ]
    assert sum(l.size for l in layers) == 2 * sum(ENC) + 2 * BOTTLENECK + 3 * sum(ENC) == 856

    def wiring(name):
        return [(c.module, c.offset, c.repeat) for c in by_name[name].consumers]

    for i in range(1, 5):
        enc, dec, up = getattr(model, f"enc{i}"), getattr(model, f"dec{i}"), getattr(model, f"up{i}")
        nxt = getattr(model, f"enc{i + 1}") if i < 4 else model.bottleneck
        c = ENC[i - 1]
        assert by_name[f"enc{i}.conv1"].size == by_name[f"enc{i}.conv2"].size == c
        assert wiring(f"enc{i}.conv1") == [(enc.conv2, 0, 1)]
        # the skip: next encoder (after the pool) and the decoder, first in the concatenation
        assert wiring(f"enc{i}.conv2") == [(nxt.conv1, 0, 1), (dec.conv1, 0, 1)]
        assert by_name[f"enc{i}.conv2"].norm is enc.bn2
        # the up-convolution's channels follow the skip's c channels
        assert by_name[f"up{i}"].size == c and wiring(f"up{i}") == [(dec.conv1, c, 1)]
        assert by_name[f"up{i}"].norm is None
        assert dec.conv1.in_channels == 2 * c
        assert wiring(f"dec{i}.conv1") == [(dec.conv2, 0, 1)]
        after = getattr(model, f"up{i - 1}") if i > 1 else model.head
        assert wiring(f"dec{i}.conv2") == [(after, 0, 1)]
    assert wiring("bottleneck.conv1") == [(model.bottleneck.conv2, 0, 1)]
    assert wiring("bottleneck.conv2") == [(model.up4, 0, 1)]
    # up-convolutions have no activation: their constant is their bias
    b = torch.tensor([-1.0, 0.0, 2.0])
    assert torch.equal(by_name["up2"].activation(b), b)
    assert torch.equal(by_name["enc1.conv1"].activation(b.clone()), torch.relu(b))


def test_unet_levels_name_the_node_layers():
    model = narrow_unet()
    levels = model.levels()
    assert [lv["level"] for lv in levels] == [1, 2, 3, 4, 5]
    assert levels[0] == {"level": 1, "encoder": ["enc1.conv1", "enc1.conv2"], "decoder": ["up1", "dec1.conv1", "dec1.conv2"]}
    assert levels[-1]["encoder"] == ["bottleneck.conv1", "bottleneck.conv2"] and levels[-1]["decoder"] == []
    names = [n for lv in levels for n in lv["encoder"] + lv["decoder"]]
    assert sorted(names) == sorted(model.layer_widths())


def test_all_nodes_alive_at_init():
    for model in (narrow_unet(), narrow_cxr()):
        stats = model_nodes(model)
        assert all(not s.dead.any() for s in stats)
    layers = node_layers(narrow_cxr())
    assert len(layers) == 5 and [l.size for l in layers] == [4, 8, 16, 32, 32]


def test_cxr_chain_wiring():
    model = narrow_cxr()
    layers = node_layers(model)
    assert [l.name for l in layers] == [f"block{i}.conv" for i in range(1, 6)]
    assert all(l.norm is getattr(model, f"block{i}").bn for i, l in enumerate(layers, start=1))
    assert all(isinstance(l.activation, nn.ReLU) for l in layers)
    # the head reads one feature per channel after global average pooling
    assert layers[-1].consumers[0].module is model.head and layers[-1].consumers[0].repeat == 1
    assert layers[0].consumers[0].module is model.block2.conv


# ---------------------------------------------------------------- compaction of the U-Net


def _zero_outgoing(layer, j):
    """Zero node ``j``'s slice in every consumer of ``layer``: it becomes out-dead."""
    for c in layer.consumers:
        m = c.module
        if isinstance(m, nn.ConvTranspose2d):
            m.weight[c.offset + j] = 0
        else:
            m.weight[:, c.offset + j] = 0


def _in_dead_filter(model, block, conv, j, shift, via_scale=False):
    """Filter ``j`` of ``block.conv{conv}`` in-dead; its constant is relu(shift) (running mean 0)."""
    blk = model.get_submodule(block)
    c, bn = getattr(blk, f"conv{conv}"), getattr(blk, f"bn{conv}")
    if via_scale:
        bn.weight[j] = 0
    else:
        c.weight[j] = 0
    bn.running_mean[j] = 0.0
    bn.bias[j] = shift


# in-dead nodes: (layer, channel, constant is zero?)
UNET_IN_DEAD_ZERO = {"enc1.conv1": 1, "bottleneck.conv2": 1, "dec3.conv1": 1, "up3": 1}
# non-zero constants feeding padded convolutions: kept, or merged, but exact either way
UNET_IN_DEAD_POSITIVE_PADDED = {"enc2.conv2": 2, "bottleneck.conv1": 1, "up2": 2}
# a positive constant feeding the 1x1 head (no padding): folded into its bias and removed
UNET_IN_DEAD_POSITIVE_FOLDED = {"dec1.conv2": 1}


def dead_unet():
    """Narrow U-Net, BN statistics randomised, with

    - in-dead filters: enc1.conv1[2] (shift -5), dec3.conv1[1] (-2), bottleneck.conv2[5]
      (BN scale 0, shift -1) -- constant 0; enc2.conv2[3], [4] (skip producer, +1, +0.6),
      bottleneck.conv1[7] (+0.8), dec1.conv2[4] (+0.5, read by the 1x1 head) -- positive;
    - in-dead up-convolution channels: up3[0] (bias 0), up2[1], [2] (bias 0.7, -0.4);
    - one out-dead node in every node layer, its last channel (zero in every
      consumer: for enc{i}.conv2 a skip channel, zero both in the next encoder
      conv and in dec{i}.conv1);
    - enc1.conv2[0] zero in dec1.conv1 only (still read by enc2.conv1): alive.
    """
    model = narrow_unet(3)
    _randomise_bn(model)
    with torch.no_grad():
        _in_dead_filter(model, "enc1", 1, 2, -5.0)
        _in_dead_filter(model, "dec3", 1, 1, -2.0)
        _in_dead_filter(model, "bottleneck", 2, 5, -1.0, via_scale=True)
        _in_dead_filter(model, "enc2", 2, 3, 1.0)
        _in_dead_filter(model, "enc2", 2, 4, 0.6)
        _in_dead_filter(model, "bottleneck", 1, 7, 0.8)
        _in_dead_filter(model, "dec1", 2, 4, 0.5)
        model.up3.weight[:, 0] = 0
        model.up3.bias[0] = 0.0
        model.up2.weight[:, 1] = 0
        model.up2.bias[1] = 0.7
        model.up2.weight[:, 2] = 0
        model.up2.bias[2] = -0.4  # no ReLU after an up-convolution: a non-zero constant
        for layer in node_layers(model):
            _zero_outgoing(layer, layer.size - 1)
        model.dec1.conv1.weight[:, 0] = 0
    return model


def test_dead_unet_setup():
    model = dead_unet()
    stats = {s.name: s for s in model_nodes(model)}
    assert all(bool(s.out_dead[-1]) and int(s.out_dead.sum()) == 1 for s in stats.values())
    in_dead = {n: s.in_dead.nonzero().flatten().tolist() for n, s in stats.items() if s.in_dead.any()}
    assert in_dead == {
        "enc1.conv1": [2], "enc2.conv2": [3, 4], "bottleneck.conv1": [7], "bottleneck.conv2": [5],
        "up3": [0], "dec3.conv1": [1], "up2": [1, 2], "dec1.conv2": [4],
    }
    assert not bool(stats["enc1.conv2"].dead[0])  # zero into the decoder, still read by enc2


def test_unet_compaction_is_exact_and_removes_dead_channels():
    model = dead_unet()
    before = model.layer_widths()
    x = torch.randn(4, 1, 32, 32)
    small, report = compact(model, x)
    assert report.max_abs_diff <= 1e-4
    with torch.no_grad():
        assert float((model.eval()(x) - small.eval()(x)).abs().max()) <= 1e-4
    assert report.widths_before == before
    assert report.removed_out_dead == {name: 1 for name in before}
    for name, n in before.items():
        zero = UNET_IN_DEAD_ZERO.get(name, 0) + UNET_IN_DEAD_POSITIVE_FOLDED.get(name, 0)
        positive = UNET_IN_DEAD_POSITIVE_PADDED.get(name, 0)
        assert report.removed_in_dead[name] >= zero, name
        # the out-dead node and the foldable in-dead nodes always go; the padded
        # positive constants may be kept (or merged into a carrier channel)
        assert n - 1 - zero - positive <= report.widths_after[name] <= n - 1 - zero, name
        if not positive:
            assert report.widths_after[name] == n - 1 - zero, name
    assert report.widths_after["enc1.conv1"] == 6 and report.widths_after["dec1.conv2"] == 6
    assert report.widths_after["up3"] == 30 and report.widths_after["bottleneck.conv2"] == 126
    assert report.widths_after == small.layer_widths()
    # the concatenation shrank on both sides: skip and up-convolution
    for i in range(1, 5):
        dec, enc, up = getattr(small, f"dec{i}"), getattr(small, f"enc{i}"), getattr(small, f"up{i}")
        assert dec.conv1.in_channels == enc.conv2.out_channels + up.out_channels
        assert dec.bn1.num_features == dec.conv1.out_channels
    assert small.enc1.conv2.out_channels == 7 and small.dec1.conv1.in_channels == 7 + 7
    assert small.up4.in_channels == report.widths_after["bottleneck.conv2"]
    assert small.head.in_channels == report.widths_after["dec1.conv2"]
    assert report.params_after < report.params_before and report.flops_after < report.flops_before
    # the compact model's own wiring (offsets from the new widths) is consistent
    stats = model_nodes(small)
    assert not any(s.out_dead.any() for s in stats)


def test_compacted_unet_trains():
    small, _ = compact(dead_unet(), torch.randn(2, 1, 32, 32))
    small.train()
    x = torch.randn(2, 1, 32, 32)
    out = small(x)
    assert out.shape == (2, 3, 32, 32)
    nn.functional.cross_entropy(out, torch.randint(0, 3, (2, 32, 32))).backward()
    assert small.enc1.conv1.weight.grad is not None and small.up1.weight.grad is not None


def test_unet_all_alive_compaction_is_identity():
    model = narrow_unet(1)
    _randomise_bn(model)
    small, report = compact(model, torch.randn(2, 1, 16, 16))
    assert report.max_abs_diff <= 1e-5
    assert report.widths_after == report.widths_before
    assert report.params_after == report.params_before


# ---------------------------------------------------------------- compaction of CXRNet


def dead_cxr():
    """Narrow CXRNet (4, 8, 16, 32, 32), BN randomised, with in-dead filters
    block1[1] (shift -3: constant 0), block2[2] (+1, padded consumer),
    block4[0] (BN scale 0, shift -1), block5[3] (+0.6: read by the head after
    pooling, folded); out-dead block3[5] (zero in block4.conv) and block5[7]
    (a zero column of the head)."""
    model = narrow_cxr(2)
    _randomise_bn(model)
    with torch.no_grad():
        for blk, j, shift, scale0 in (("block1", 1, -3.0, False), ("block2", 2, 1.0, False), ("block4", 0, -1.0, True), ("block5", 3, 0.6, False)):
            b = getattr(model, blk)
            if scale0:
                b.bn.weight[j] = 0
            else:
                b.conv.weight[j] = 0
            b.bn.running_mean[j], b.bn.bias[j] = 0.0, shift
        model.block4.conv.weight[:, 5] = 0
        model.head.weight[:, 7] = 0
    return model


def test_cxr_compaction_is_exact():
    model = dead_cxr()
    stats = {s.name: s for s in model_nodes(model)}
    assert stats["block3.conv"].out_dead.nonzero().flatten().tolist() == [5]
    assert stats["block5.conv"].out_dead.nonzero().flatten().tolist() == [7]
    assert stats["block5.conv"].in_dead.nonzero().flatten().tolist() == [3]
    x = torch.randn(4, 1, 128, 128)
    small, report = compact(model, x)
    assert report.max_abs_diff <= 1e-4
    assert report.removed_out_dead == {"block1.conv": 0, "block2.conv": 0, "block3.conv": 1, "block4.conv": 0, "block5.conv": 1}
    w = report.widths_after
    assert w["block1.conv"] == 3 and w["block3.conv"] == 15 and w["block4.conv"] == 31
    assert w["block5.conv"] == 30  # out-dead 7 and in-dead 3 (its constant folded into the head)
    assert 7 <= w["block2.conv"] <= 8  # positive constant into a padded conv
    assert small.head.in_features == 30 and small.block5.bn.num_features == 30
    assert small.block2.conv.in_channels == 3 and small.block4.conv.in_channels == 15
    assert report.flops_after < report.flops_before
    small.train()
    assert small(torch.randn(2, 1, 128, 128)).shape == (2, 3)
