"""Node wiring read off a traced graph: residual sums, depthwise convolutions, exact compaction of ResNet / MobileNetV2."""
import pytest
import torch
import torchvision
from torch import nn

from prunedyn.models import MLP, VGG, UNet
from prunedyn.structure.nodes import (
    WiringError,
    chain_node_layers,
    chain_wiring_problems,
    check_chain_wiring,
    model_nodes,
    node_layers,
    traced_node_layers,
)
from prunedyn.structure.surgery import compact, count_params

torch.set_num_threads(1)
TOL = 1e-4


def randomize_norms(model, seed=0):
    """Non-trivial eval statistics, so that dead nodes emit non-zero constants."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
    return model


def diff(a, b, x):
    a.eval(), b.eval()
    with torch.no_grad():
        return float((a(x) - b(x)).abs().max())


# ---------------------------------------------------------------- a residual block


class ResBlockNet(nn.Module):
    """conv1 feeds conv2 and a 1x1 shortcut whose outputs are summed.

    Registration order looks like a chain whose shapes fit (conv1 -> conv2 -> shortcut -> fc): the
    chain reading wired it silently wrong, and compaction then failed with a shape error.
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.shortcut = nn.Conv2d(8, 8, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        h = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(h)) + self.shortcut(h))
        return self.fc(self.flatten(self.pool(y)))


def dead_resblock():
    """conv1: 0 in-dead (padded consumer conv2: merged into a carrier), 1 out-dead (in conv2 and shortcut).

    Residual group {conv2, shortcut}: 0 in-dead in both (constant, folded into fc), 1 out-dead (fc column),
    2 in-dead in conv2 only (alive: the shortcut still varies), 3 and 4 in-dead in both via conv2's
    BatchNorm scale (constants folded).
    """
    torch.manual_seed(0)
    model = randomize_norms(ResBlockNet())
    with torch.no_grad():
        model.conv1.weight[0] = 0
        model.bn1.bias[0] = 0.7
        model.conv2.weight[:, 1] = 0
        model.shortcut.weight[:, 1] = 0
        for j in (0, 2):
            model.conv2.weight[j] = 0
        model.shortcut.weight[0] = 0
        model.shortcut.bias[0] = 0.4
        model.bn2.bias[0] = 0.3
        model.fc.weight[:, 1] = 0
        model.bn2.weight[[3, 4]] = 0
        model.shortcut.weight[[3, 4]] = 0
        model.shortcut.bias[[3, 4]] = torch.tensor([0.5, -0.2])
    return model


def test_resblock_chain_guess_is_reported_with_the_layer_named():
    model = ResBlockNet()
    x = torch.randn(2, 3, 16, 16)
    chain = chain_node_layers(model)  # what module order suggests: conv2 -> shortcut, a wrong wiring
    assert [layer.name for layer in chain] == ["conv1", "conv2", "shortcut"]
    with pytest.raises(WiringError, match=r"conv1: module order says it feeds \[conv2\]"):
        check_chain_wiring(model, x)
    with pytest.raises(WiringError, match="conv2"):
        node_layers(model, x, use_trace=False)


def test_resblock_traced_wiring():
    model = ResBlockNet()
    layers = node_layers(model, torch.randn(2, 3, 16, 16))
    assert [layer.name for layer in layers] == ["conv1", "conv2"]
    l1, l2 = layers
    assert l1.producer is model.conv1 and l1.norm is model.bn1 and not l1.tied
    assert [c.module for c in l1.consumers] == [model.conv2, model.shortcut]
    assert l2.producer is model.conv2 and l2.norm is model.bn2
    assert [(t.producer, t.norm) for t in l2.tied] == [(model.shortcut, None)]
    assert [(c.module, c.offset, c.repeat, c.sources) for c in l2.consumers] == [(model.fc, 0, 1, (0, 1))]


def test_resblock_dead_flags_need_the_whole_residual_group():
    model = dead_resblock()
    s1, s2 = model_nodes(model, torch.randn(2, 3, 16, 16))
    assert s1.in_dead.tolist() == [True] + [False] * 7
    assert s1.out_dead.tolist() == [False, True] + [False] * 6
    assert s2.in_dead.tolist() == [True, False, False, True, True, False, False, False]  # 2: conv2 only
    assert s2.out_dead.tolist() == [False, True] + [False] * 6


def test_resblock_compacts_exactly_with_traced_wiring():
    """Module order wires it wrong (compact used to fail with a shape error): the traced wiring is exact."""
    model = dead_resblock()
    x = torch.randn(8, 3, 16, 16)
    small, report = compact(model, x)
    assert report.max_abs_diff <= TOL and diff(model, small, x) <= TOL
    assert report.widths_before == {"conv1": 8, "conv2": 8}
    # conv1: 1 out-dead removed, 0 kept as the carrier; group: 0, 3, 4 folded, 1 removed, 2 kept
    assert report.widths_after == {"conv1": 7, "conv2": 4}
    assert report.kept_constant == {"conv1": 1, "conv2": 0}
    assert small.shortcut.out_channels == small.conv2.out_channels == small.bn2.num_features == 4
    assert small.fc.in_features == 4 and small.shortcut.in_channels == 7
    assert report.params_after < report.params_before
    # the folded constants matter
    assert float(model.fc.weight.detach()[:, [0, 3, 4]].abs().sum()) > 0
    assert not torch.equal(small.fc.bias, model.fc.bias)


# ---------------------------------------------------------------- chains are unchanged


@pytest.mark.parametrize(
    "build,shape",
    [(lambda: MLP(784, [30, 20], 10), (2, 1, 28, 28)), (lambda: VGG(width=0.125), (2, 3, 32, 32))],
)
def test_chain_models_keep_their_chain_wiring(build, shape):
    torch.manual_seed(0)
    model = build()
    x = torch.randn(*shape)
    chain = chain_node_layers(model)
    got = node_layers(model, x)
    assert [(l.name, l.producer, l.norm, type(l.activation), l.measured) for l in got] == [
        (l.name, l.producer, l.norm, type(l.activation), False) for l in chain
    ]
    assert check_chain_wiring(model, x)
    assert chain_wiring_problems(chain, traced_node_layers(model, x), model) == []


def test_traced_wiring_of_a_unet_matches_its_own_node_layers():
    torch.manual_seed(0)
    model = UNet(in_channels=1, num_classes=3, width=0.125, depth=2)
    traced = traced_node_layers(model, torch.randn(1, 1, 32, 32))
    assert chain_wiring_problems(model.node_layers(), traced, model) == []


def test_the_channels_around_a_grouped_convolution_are_nodes_in_equal_blocks():
    """The channels a grouped convolution reads and writes are node layers whose nodes fall into
    ``groups`` equal blocks (NodeLayer.blocks: each block must lose as many as the others); no warning."""
    import warnings

    model = nn.Sequential(nn.Conv2d(4, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=2), nn.ReLU(), nn.Conv2d(8, 6, 1),
                          nn.ReLU(), nn.Conv2d(6, 2, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layers = traced_node_layers(model, torch.randn(1, 4, 12, 12))
    assert [(layer.name, layer.size, layer.blocks) for layer in layers] == [("0", 8, 2), ("2", 8, 2), ("4", 6, 1)]


class _CatIntoGrouped(nn.Module):
    """Two convs concatenated into a grouped conv: its groups read channels of both."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)
        self.g, self.out = nn.Conv2d(8, 8, 3, groups=2), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.out(torch.relu(self.g(torch.relu(torch.cat([self.a(x), self.b(x)], 1)))))


def test_a_grouped_convolution_reading_several_groups_keeps_them_whole_and_names_them():
    from prunedyn.structure.traced import KeptChannelsWarning

    with pytest.warns(KeptChannelsWarning, match=r"2 channel group\(s\).*: a \(through g, a Conv2d: it reads them "
                                                 r"with other channels, its groups stay equal in size\); b \(through g"):
        layers = traced_node_layers(_CatIntoGrouped(), torch.randn(1, 3, 8, 8))
    assert [(layer.name, layer.blocks) for layer in layers] == [("g", 2)]


# ---------------------------------------------------------------- torchvision ResNet-18


def _resnet18_dead():
    torch.manual_seed(0)
    model = randomize_norms(torchvision.models.resnet18(num_classes=10))
    m = model
    with torch.no_grad():
        # inside blocks: in-dead nodes (consumer conv2 padded: merged into one carrier) and out-dead nodes
        m.layer1[0].conv1.weight[:6] = 0
        m.layer1[0].bn1.bias[:6] = 0.5
        m.layer2[1].conv2.weight[:, 10:20] = 0
        # layer2's residual group {layer2.0.conv2, layer2.0.downsample.0, layer2.1.conv2}: channels 0-4
        # in-dead in every producer (constants that differ per consumer along the residual chain)
        for conv, bn in ((m.layer2[0].conv2, m.layer2[0].bn2), (m.layer2[0].downsample[0], m.layer2[0].downsample[1]),
                         (m.layer2[1].conv2, m.layer2[1].bn2)):
            conv.weight[:5] = 0
            bn.bias[:5] = 0.3 + 0.1 * torch.arange(5)
        # channel 5 of that group in-dead in one producer only: alive
        m.layer2[0].conv2.weight[5] = 0
        # layer3's group: channels 0-5 read by no consumer (out-dead)
        for conv in (m.layer3[1].conv1, m.layer4[0].conv1, m.layer4[0].downsample[0]):
            conv.weight[:, :6] = 0
        # layer4's group: channels 0-3 in-dead through a zero BatchNorm scale in every producer
        for bn in (m.layer4[0].bn2, m.layer4[0].downsample[1], m.layer4[1].bn2):
            bn.weight[:4] = 0
            bn.bias[:4] = 0.25
        # the stem's group (conv1 + the identity shortcuts of layer1): channel 7 in-dead everywhere
        for conv, bn in ((m.conv1, m.bn1), (m.layer1[0].conv2, m.layer1[0].bn2), (m.layer1[1].conv2, m.layer1[1].bn2)):
            conv.weight[7] = 0
            bn.bias[7] = 0.2
    return model


def test_resnet18_groups_and_dead_flags():
    model = _resnet18_dead()
    x = torch.randn(1, 3, 32, 32)
    layers = {l.name: l for l in node_layers(model, x)}
    assert len(layers) == 12
    stem = layers["conv1"]
    assert [t.producer for t in stem.tied] == [model.layer1[0].conv2, model.layer1[1].conv2]
    g2 = layers["layer2.0.conv2"]
    assert {id(t.producer) for t in g2.tied} == {id(model.layer2[0].downsample[0]), id(model.layer2[1].conv2)}
    stats = {s.name: s for s in model_nodes(model, x)}
    assert stats["layer2.0.conv2"].in_dead[:6].tolist() == [True] * 5 + [False]
    assert stats["layer3.0.conv2"].out_dead[:7].tolist() == [True] * 6 + [False]
    assert stats["layer4.0.conv2"].in_dead[:5].tolist() == [True] * 4 + [False]
    assert stats["conv1"].in_dead[7] and not stats["conv1"].in_dead[6]
    assert stats["layer1.0.conv1"].in_dead[:7].tolist() == [True] * 6 + [False]


def test_resnet18_compacts_exactly():
    model = _resnet18_dead()
    x = torch.randn(2, 3, 32, 32)
    small, report = compact(model, x)
    assert report.max_abs_diff <= TOL and diff(model, small, x) <= TOL
    assert report.params_after < report.params_before == count_params(model)
    w0, w1 = report.widths_before, report.widths_after
    assert w0["layer1.0.conv1"] - w1["layer1.0.conv1"] == 5  # 6 constants, one carrier
    assert w0["layer2.1.conv1"] - w1["layer2.1.conv1"] == 10
    assert w0["layer2.0.conv2"] - w1["layer2.0.conv2"] == 4  # 5 constants, one carrier; 5 stays
    assert w0["layer3.0.conv2"] - w1["layer3.0.conv2"] == 6
    assert w0["layer4.0.conv2"] - w1["layer4.0.conv2"] == 3
    assert w0["conv1"] == w1["conv1"]  # a single constant node is its own carrier
    # every member of a residual group shrank together
    assert small.layer2[0].downsample[0].out_channels == small.layer2[1].conv2.out_channels == 124
    assert small.layer2[0].downsample[1].num_features == 124 and small.layer3[0].conv1.in_channels == 124
    assert small.fc.in_features == 509


# ---------------------------------------------------------------- torchvision MobileNetV2


def _mobilenet_dead():
    torch.manual_seed(0)
    model = randomize_norms(torchvision.models.mobilenet_v2(num_classes=10))
    f = model.features
    with torch.no_grad():
        # depthwise filters zero: the expansion channel and the depthwise channel go together (folded)
        f[3].conv[1][0].weight[:10] = 0
        # expansion rows zero but depthwise alive: a padded depthwise conv of a constant is not constant, kept
        f[5].conv[0][0].weight[:7] = 0
        # projection inputs zero: out-dead
        f[4].conv[2].weight[:, 20:30] = 0
        # residual group {features.2, features.3 projections}: channels 0-3 in-dead in both
        for blk in (f[2], f[3]):
            blk.conv[2].weight[:4] = 0
            blk.conv[3].bias[:4] = 0.3
        # residual group {features.4, .5, .6 projections}: channels 0-2 read by no consumer
        for blk in (f[5], f[6], f[7]):
            blk.conv[0][0].weight[:, :3] = 0
        # the stem and the first depthwise conv are one group: depthwise filters zero
        f[1].conv[0][0].weight[:4] = 0
        # the last conv: in-dead rows, folded into the classifier
        f[18][0].weight[:50] = 0
    return model


def test_mobilenet_v2_depthwise_ties_and_dead_flags():
    model = _mobilenet_dead()
    x = torch.randn(1, 3, 32, 32)
    layers = {l.name: l for l in node_layers(model, x)}
    stem = layers["features.0.0"]
    assert [t.producer for t in stem.tied] == [model.features[1].conv[0][0]]
    assert [c.module for c in stem.consumers] == [model.features[1].conv[1]]
    stats = {s.name: s for s in model_nodes(model, x)}
    assert stats["features.3.conv.0.0"].in_dead[:11].tolist() == [True] * 10 + [False]
    assert not stats["features.5.conv.0.0"].in_dead.any()
    assert stats["features.2.conv.2"].in_dead[:5].tolist() == [True] * 4 + [False]
    assert stats["features.4.conv.2"].out_dead[:4].tolist() == [True] * 3 + [False]


def test_mobilenet_v2_compacts_exactly():
    model = _mobilenet_dead()
    x = torch.randn(2, 3, 32, 32)
    small, report = compact(model, x)
    assert report.max_abs_diff <= TOL and diff(model, small, x) <= TOL
    assert report.params_after < report.params_before
    w0, w1 = report.widths_before, report.widths_after
    assert w0["features.3.conv.0.0"] - w1["features.3.conv.0.0"] == 10
    assert w0["features.5.conv.0.0"] == w1["features.5.conv.0.0"]
    assert w0["features.4.conv.0.0"] - w1["features.4.conv.0.0"] == 10
    assert w0["features.2.conv.2"] - w1["features.2.conv.2"] == 4
    assert w0["features.4.conv.2"] - w1["features.4.conv.2"] == 3
    assert w0["features.0.0"] - w1["features.0.0"] == 4
    assert w0["features.18.0"] - w1["features.18.0"] == 50
    dw = small.features[3].conv[1][0]
    assert dw.in_channels == dw.out_channels == dw.groups == 134 == small.features[3].conv[0][0].out_channels
    assert small.classifier[1].in_features == 1230


def test_resblock_chain_guess_used_to_break_compaction(monkeypatch):
    """What the chain reading did: a shape error (conv2 and the shortcut shrank apart)."""
    from prunedyn.structure import surgery

    torch.manual_seed(0)
    model = randomize_norms(ResBlockNet())
    with torch.no_grad():
        model.conv2.weight[:, 3] = 0
        model.shortcut.weight[:, 3] = 0
    x = torch.randn(2, 3, 16, 16)
    small, report = compact(model, x)  # traced wiring: exact
    assert report.max_abs_diff <= TOL and small.shortcut.in_channels == 7
    monkeypatch.setattr(surgery, "node_layers", lambda m, example=None: chain_node_layers(m))
    with pytest.raises(RuntimeError, match="size of tensor|channels"):
        compact(model, x)


@pytest.mark.parametrize(
    "build", [lambda: torchvision.models.resnet18(num_classes=10), lambda: torchvision.models.mobilenet_v2(num_classes=10)]
)
def test_traced_wiring_agrees_with_torch_pruning_per_node(build):
    """The independent per-index check of wiring.py, tied norms included."""
    from prunedyn.structure.wiring import wiring_mismatches

    torch.manual_seed(0)
    model = build()
    x = torch.randn(1, 3, 32, 32)
    assert wiring_mismatches(model, x, nodes_per_layer=2, layers=traced_node_layers(model, x)) == []
    try:  # the chain guess is wrong: refused by shapes or reported
        assert wiring_mismatches(model, x, nodes_per_layer=1)
    except ValueError as err:
        assert "node_layers()" in str(err)


class _BareUNet(UNet):
    node_layers = None  # no wiring of its own: traced


def test_a_unet_without_its_node_layers_compacts_like_one_with_them():
    torch.manual_seed(0)
    own = randomize_norms(UNet(in_channels=1, num_classes=3, width=0.125, depth=2))
    with torch.no_grad():
        own.enc1.conv2.weight[:3] = 0  # in-dead, read by enc2.conv1 (after the pool) and dec1.conv1 (the skip)
        own.enc1.bn2.bias[:3] = 0.4
        own.dec1.conv1.weight[:, 8 + 1] = 0  # up1's node 1 is out-dead (up1 sits at offset 8 of the concat)
        own.enc2.conv1.weight[:, 5] = 0
        own.dec1.conv1.weight[:, 5] = 0  # enc1.conv2's node 5 is out-dead in both consumers
    bare = _BareUNet(in_channels=1, num_classes=3, width=0.125, depth=2)
    bare.load_state_dict(own.state_dict())
    x = torch.randn(2, 1, 32, 32)
    small_own, r_own = compact(own, x)
    small_bare, r_bare = compact(bare, x)
    assert r_bare.max_abs_diff <= TOL and r_own.max_abs_diff <= TOL
    assert r_bare.widths_after == r_own.widths_after
    assert r_bare.widths_after["enc1.conv2"] == 8 - 3 and r_bare.widths_after["up1"] == 7
    assert r_bare.params_after == r_own.params_after < r_bare.params_before


class _InputResidual(nn.Module):
    """c1's channels are summed with the model input: they cannot go."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.c3(torch.relu(self.c2(torch.relu(self.c1(x)) + x)))


class _InputDepthwise(nn.Module):
    """A depthwise conv reading the model input: its channels cannot go."""

    def __init__(self):
        super().__init__()
        self.dw, self.c2, self.c3 = nn.Conv2d(3, 3, 3, padding=1, groups=3), nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.c3(torch.relu(self.c2(torch.relu(self.dw(x)))))


@pytest.mark.parametrize("build", [_InputResidual, _InputDepthwise])
def test_channels_tied_to_the_input_have_no_nodes(build):
    torch.manual_seed(0)
    model = build()
    with torch.no_grad():
        model.c2.weight[:, 0] = 0  # out-dead if it were a node
        model.c2.weight[1] = 0
    x = torch.randn(2, 3, 8, 8)
    assert [l.name for l in node_layers(model, x)] == ["c2"]
    small, report = compact(model, x)
    assert report.max_abs_diff <= TOL and report.widths_after == {"c2": 3}


def test_tracing_leaves_a_training_model_untouched():
    model = dead_resblock().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, 3, 16, 16)
    model_nodes(model, x)
    small, report = compact(model, x)
    assert model.training and not small.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert report.max_abs_diff <= TOL


# ---------------------------------------------------------------- DenseNet: norms on the reading side


def test_a_densenet_loses_dead_growth_channels_from_every_later_reader_and_its_norm():
    """DenseNet concatenates each layer's new channels into the input of every later layer, each of
    which normalises the concatenation with its own BatchNorm (norm1, a transition's norm, norm5).
    Node j of a layer's conv2 is then channel offset + j of every later reader and of the BatchNorm
    in front of it: compaction removes it from all of them, and the outputs stay the same."""
    from prunedyn.structure.surgery import compact

    torch.manual_seed(0)
    model = torchvision.models.DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16, bn_size=2,
                                        num_classes=10)
    randomize_norms(model).eval()
    block = model.features.denseblock1
    with torch.no_grad():
        block.denselayer1.conv2.weight[:3] = 0  # 3 of its 8 new channels in-dead (0 whatever they read)
    x = torch.randn(2, 3, 32, 32)
    layers = {layer.name: layer for layer in traced_node_layers(model, x)}
    grown = layers["features.denseblock1.denselayer1.conv2"]
    readers = {c.module: (c.offset, c.norm, c.norm_offset) for c in grown.consumers}
    assert readers[block.denselayer2.conv1] == (16, block.denselayer2.norm1, 16)
    assert readers[model.features.transition1.conv] == (16, model.features.transition1.norm, 16)
    small, report = compact(model, x)
    assert report.removed_in_dead["features.denseblock1.denselayer1.conv2"] == 3
    assert small.features.denseblock1.denselayer2.norm1.num_features == 24 - 3
    assert small.features.transition1.norm.num_features == 32 - 3
    assert report.rel_diff <= 1e-6
    with torch.no_grad():
        assert torch.allclose(small(x), model(x), rtol=1e-5, atol=1e-6)


def test_a_model_torch_pruning_cannot_trace_is_refused_not_guessed(monkeypatch):
    """With an example, a chain reading is never returned unchecked: a failed trace is one line."""
    from prunedyn.structure import traced
    from prunedyn.structure.nodes import model_nodes

    def broken(model, example):
        raise ZeroDivisionError("integer division or modulo by zero")

    monkeypatch.setattr(traced, "build_graph", broken)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(WiringError, match=r"^Torch-pruning cannot trace Sequential on this example \(ZeroDivisionError"):
        model_nodes(model, torch.randn(2, 4))
    assert [s.size for s in model_nodes(model)] == [8]  # without an example: the chain reading, as documented
