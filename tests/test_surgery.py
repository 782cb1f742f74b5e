"""Compaction: dead nodes removed, constants folded, outputs unchanged, sizes as expected."""
import copy

import pytest
import torch
from torch import nn

from prunedyn.models import MLP
from prunedyn.structure.nodes import Consumer, NodeLayer, model_nodes
from prunedyn.structure.surgery import compact, count_flops, count_params, max_abs_diff


def outputs_equal(a, b, x, tol):
    a.eval(), b.eval()
    with torch.no_grad():
        d = float((a(x) - b(x)).abs().max())
    assert d <= tol, d
    return d


def state_copy(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model, state):
    now = model.state_dict()
    assert set(now) == set(state)
    for k, v in state.items():
        assert now[k].shape == v.shape, k
        assert torch.equal(now[k], v), k


# ---------------------------------------------------------------- MLP


def dead_mlp():
    """MLP 6-8-5-3.

    fc1 nodes: 0, 1 in-dead with positive bias (constant relu(b) > 0, folded),
    2 in-dead with negative bias (constant 0), 3 out-dead, 4 in- and out-dead
    (positive bias), 5-7 alive.
    fc2 nodes: 0 in-dead with positive bias, 1 out-dead, 2-4 alive.
    """
    torch.manual_seed(0)
    model = MLP(6, [8, 5], 3)
    with torch.no_grad():
        fc1, fc2, fc3 = model.net.fc1, model.net.fc2, model.net.fc3
        fc1.weight[[0, 1, 2, 4]] = 0
        fc1.bias[0], fc1.bias[1], fc1.bias[2], fc1.bias[4] = 0.7, 1.3, -0.5, 0.9
        fc2.weight[:, [3, 4]] = 0
        fc2.weight[0] = 0
        fc2.bias[0] = 0.8
        fc3.weight[:, 1] = 0
    return model


def test_mlp_dead_setup_is_as_described():
    s1, s2 = model_nodes(dead_mlp())
    assert s1.in_dead.tolist() == [True, True, True, False, True, False, False, False]
    assert s1.out_dead.tolist() == [False, False, False, True, True, False, False, False]
    assert s2.in_dead.tolist() == [True, False, False, False, False]
    assert s2.out_dead.tolist() == [False, True, False, False, False]


def test_compact_mlp_exact():
    model = dead_mlp()
    x = torch.randn(64, 6)
    small, report = compact(model, x)
    outputs_equal(model, small, x, 1e-5)
    assert report.max_abs_diff <= 1e-5
    # folding is needed: without it, the outputs would differ
    assert report.widths_before == {"net.fc1": 8, "net.fc2": 5}
    assert report.widths_after == {"net.fc1": 3, "net.fc2": 3}
    assert small.widths == [3, 3]
    s1, s2 = model_nodes(model)
    assert report.widths_after["net.fc1"] == int(s1.alive.sum())
    assert report.widths_after["net.fc2"] == int(s2.alive.sum())
    assert report.removed_in_dead == {"net.fc1": 3, "net.fc2": 1}
    assert report.removed_out_dead == {"net.fc1": 2, "net.fc2": 1}
    assert report.kept_constant == {"net.fc1": 0, "net.fc2": 0}
    assert report.params_before == count_params(model) == (6 * 8 + 8) + (8 * 5 + 5) + (5 * 3 + 3)
    assert report.params_after == count_params(small) == (6 * 3 + 3) + (3 * 3 + 3) + (3 * 3 + 3)
    assert report.flops_after < report.flops_before
    assert report.flops_before == count_flops(model, x) == 2 * 64 * (6 * 8 + 8 * 5 + 5 * 3)
    assert report.flops_after == 2 * 64 * (6 * 3 + 3 * 3 + 3 * 3)
    d = report.to_dict()
    assert d["params_after"] == report.params_after and d["widths_after"] == report.widths_after
    # the compacted model has consistent attributes and no dead nodes left
    assert small.net.fc1.out_features == 3 and small.net.fc2.in_features == 3
    assert small.net.fc3.in_features == 3
    assert all(not s.dead.any() for s in model_nodes(small))


def test_folding_is_what_makes_it_exact():
    """Removing in-dead nodes without folding relu(b) into the next bias would change the outputs."""
    model = dead_mlp()
    x = torch.randn(64, 6)
    small, _ = compact(model, x)
    fc1, fc2, fc3 = model.net.fc1, model.net.fc2, model.net.fc3
    with torch.no_grad():
        # fc2 bias of the kept nodes 2-4 gained W[:, 0] * 0.7 + W[:, 1] * 1.3 (node 2's constant is 0)
        expected_b2 = fc2.bias[[2, 3, 4]] + 0.7 * fc2.weight[[2, 3, 4], 0] + 1.3 * fc2.weight[[2, 3, 4], 1]
        torch.testing.assert_close(small.net.fc2.bias, expected_b2)
        # fc3 bias gained W3[:, 0] * relu(0.8)
        torch.testing.assert_close(small.net.fc3.bias, fc3.bias + 0.8 * fc3.weight[:, 0])
        torch.testing.assert_close(small.net.fc1.weight, fc1.weight[[5, 6, 7]])
        unfolded = copy.deepcopy(small)
        unfolded.net.fc2.bias.copy_(fc2.bias[[2, 3, 4]])
        unfolded.net.fc3.bias.copy_(fc3.bias)
        assert float((model(x) - unfolded(x)).abs().max()) > 1e-3


def test_compact_does_not_modify_original():
    model = dead_mlp()
    model.train()
    state = state_copy(model)
    compact(model, torch.randn(8, 6))
    assert_unchanged(model, state)
    assert model.training
    assert model.widths == [8, 5]


def test_compact_all_alive_is_identity():
    torch.manual_seed(1)
    model = MLP(6, [8, 5], 3)
    x = torch.randn(16, 6)
    small, report = compact(model, x)
    assert report.max_abs_diff == 0.0
    assert report.params_after == report.params_before
    assert report.flops_after == report.flops_before
    assert report.widths_after == report.widths_before
    assert sum(report.removed_in_dead.values()) == 0
    assert sum(report.removed_out_dead.values()) == 0
    assert sum(report.kept_constant.values()) == 0
    assert small is not model
    assert_unchanged(small, state_copy(model))


def test_compact_conv_all_alive_is_identity():
    model = conv_chain(0)
    x = torch.randn(4, 2, 8, 8)
    small, report = compact(model, x)
    assert report.max_abs_diff <= 1e-6
    assert report.params_after == report.params_before
    assert report.widths_after == report.widths_before
    assert_unchanged(small, state_copy(model))


def test_compact_keeps_bias_free_consumers_bias_free():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 3, 3, bias=False),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3 * 16, 2),
    )
    small, report = compact(model, torch.randn(2, 2, 8, 8))
    assert small[3].bias is None
    assert report.params_after == report.params_before


def test_compact_conv_transpose_consumer_without_bias():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.ReLU(),
        nn.ConvTranspose2d(4, 2, 2, bias=False),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(2 * 7 * 7, 3),
    )
    with torch.no_grad():
        model[0].weight[1] = 0  # in-dead, constant relu(b) folded nowhere: kept or removed when 0
        model[0].bias[1] = -1.0  # constant 0: removable
    x = torch.randn(2, 1, 8, 8)
    small, report = compact(model, x)
    assert report.max_abs_diff <= 1e-5
    assert report.widths_after == {"0": 3, "2": 2}


@pytest.mark.parametrize(
    "act",
    [
        nn.ReLU(),
        nn.Tanh(),
        nn.LeakyReLU(0.1),
        nn.Identity(),
    ],
    ids=["relu", "tanh", "leaky_relu", "identity"],
)
def test_compact_chain_with_other_activations(act):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), act, nn.Linear(5, 3))
    with torch.no_grad():
        model[0].weight[1] = 0  # in-dead with a negative bias: relu gives 0, the others do not
        model[0].bias[1] = -0.7
    x = torch.randn(16, 4)
    small, report = compact(model, x)
    assert report.max_abs_diff <= 1e-5
    outputs_equal(model, small, x, 1e-5)


# ---------------------------------------------------------------- conv chain with BatchNorm


def conv_chain(seed, pad=0):
    torch.manual_seed(seed)
    side = 4 if pad == 0 else 6  # 8x8 input -> 6x6 -> (4x4 | 6x6)
    model = nn.Sequential(
        nn.Conv2d(2, 6, 3),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 5, 3, padding=pad),
        nn.BatchNorm2d(5),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(5 * side * side, 4),
    )
    with torch.no_grad():
        for bn in (model[1], model[4]):
            n = bn.num_features
            bn.running_mean.copy_(torch.randn(n) * 0.5)
            bn.running_var.copy_(torch.rand(n) + 0.5)
            bn.weight.copy_(torch.rand(n) + 0.5)
            bn.bias.copy_(torch.randn(n) * 0.3)
    return model.eval()


def dead_conv_chain(pad):
    """Layer "0" (6 channels): 0, 1 in-dead (zero filter) with positive constant;
    2 in-dead via BN scale 0 with constant relu(0.3) = 0.3; 3 out-dead; 4 alive;
    5 in-dead with constant 0. Layer "3" (5 channels): 0 in-dead with positive
    constant (folded into the Linear), 4 out-dead, 1-3 alive."""
    model = conv_chain(3, pad)
    side = 4 if pad == 0 else 6
    conv1, bn1, conv2, bn2, lin = model[0], model[1], model[3], model[4], model[7]
    with torch.no_grad():
        conv1.weight[[0, 1, 5]] = 0
        conv1.bias[0], conv1.bias[1], conv1.bias[5] = 1.0, 0.5, 0.2
        bn1.running_mean[0], bn1.running_mean[1] = -0.4, 0.1
        bn1.bias[0], bn1.bias[1] = 0.5, 0.7
        bn1.running_mean[5], bn1.bias[5] = 2.0, -0.2  # (0.2 - 2) / sd * g - 0.2 < 0
        bn1.weight[2], bn1.bias[2] = 0.0, 0.3
        conv2.weight[:, 3] = 0
        conv2.weight[0] = 0
        conv2.bias[0], bn2.running_mean[0], bn2.bias[0] = 0.9, 0.2, 0.4
        lin.weight[:, 4 * side * side : 5 * side * side] = 0
    return model


@torch.no_grad()
def constant_of(model, ch):
    conv, bn = model[0], model[1]
    z = (conv.bias[ch] - bn.running_mean[ch]) / torch.sqrt(bn.running_var[ch] + bn.eps)
    return float(torch.relu(z * bn.weight[ch] + bn.bias[ch]))


def test_dead_conv_setup():
    model = dead_conv_chain(0)
    s0, s1 = model_nodes(model)
    assert s0.in_dead.tolist() == [True, True, True, False, False, True]
    assert s0.out_dead.tolist() == [False, False, False, True, False, False]
    assert s1.in_dead.tolist() == [True, False, False, False, False]
    assert s1.out_dead.tolist() == [False, False, False, False, True]
    assert constant_of(model, 0) > 0.1 and constant_of(model, 1) > 0.1
    assert constant_of(model, 5) == 0.0


def test_compact_conv_chain_unpadded_folds_exactly():
    model = dead_conv_chain(0)
    state = state_copy(model)
    x = torch.randn(8, 2, 8, 8)
    small, report = compact(model, x)
    outputs_equal(model, small, x, 1e-4)
    assert report.max_abs_diff <= 1e-4
    assert report.removed_in_dead == {"0": 4, "3": 1}
    assert report.removed_out_dead == {"0": 1, "3": 1}
    assert report.kept_constant == {"0": 0, "3": 0}
    assert report.widths_after == {"0": 1, "3": 3}
    assert small[0].out_channels == 1 and small[1].num_features == 1
    assert small[1].running_mean.shape == (1,) and small[1].running_var.shape == (1,)
    assert small[3].in_channels == 1 and small[3].out_channels == 3 and small[4].num_features == 3
    assert small[7].in_features == 3 * 16
    expected_params = (2 * 9 * 1 + 1) + 2 + (1 * 9 * 3 + 3) + 6 + (3 * 16 * 4 + 4)
    assert report.params_after == count_params(small) == expected_params
    assert report.flops_after < report.flops_before
    assert_unchanged(model, state)


def test_compact_conv_chain_padded_merges_constants_into_one_carrier():
    model = dead_conv_chain(1)
    x = torch.randn(8, 2, 8, 8)
    small, report = compact(model, x)
    outputs_equal(model, small, x, 1e-4)
    # the padded consumer sees the constants only away from the border, so no bias
    # can replace them; channels 0, 1, 2 (non-zero constants) merge into one
    # carrier, 5 (constant 0) and 3 (out-dead) go
    assert report.kept_constant == {"0": 1, "3": 0}
    assert report.removed_in_dead == {"0": 3, "3": 1}
    assert report.removed_out_dead == {"0": 1, "3": 1}
    assert report.widths_after == {"0": 2, "3": 3}
    assert small[7].in_features == 3 * 36
    assert report.params_after < report.params_before
    # the carrier is the constant channel with the largest output: here a zero filter
    consts = [constant_of(model, ch) for ch in (0, 1, 2)]
    assert consts.index(max(consts)) in (0, 1)
    kept_filters = small[0].weight.reshape(2, -1)
    assert int((kept_filters == 0).all(1).sum()) == 1


def test_carrier_merge_is_what_makes_padded_compaction_exact():
    """Removing the constant channels without merging changes the output at the border."""
    model = dead_conv_chain(1)
    x = torch.randn(8, 2, 8, 8)
    naive = copy.deepcopy(model).eval()
    with torch.no_grad():
        for ch in (0, 1, 2):
            naive[3].weight[:, ch] = 0  # what dropping the channel without a carrier amounts to
    assert max_abs_diff(model, naive, x) > 1e-3
    _, report = compact(model, x)
    assert report.max_abs_diff <= 1e-5


def test_compact_train_mode_model_uses_eval_statistics():
    model = dead_conv_chain(0).train()
    x = torch.randn(8, 2, 8, 8)
    small, report = compact(model, x)
    assert model.training  # restored
    assert report.max_abs_diff <= 1e-4


# ---------------------------------------------------------------- skip concatenation


class SkipConv(nn.Module):
    """p1 -> relu -> p2 -> relu; mix reads cat(relu(p1), relu(p2)) (offsets 0 and 3)."""

    def __init__(self):
        super().__init__()
        self.p1 = nn.Conv2d(2, 3, 3)
        self.p2 = nn.Conv2d(3, 2, 1)
        self.mix = nn.Conv2d(5, 4, 3)
        self.head = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        h1 = torch.relu(self.p1(x))  # 8x8 -> 6x6
        h2 = torch.relu(self.p2(h1))
        h = torch.relu(self.mix(torch.cat([h1, h2], 1)))  # -> 4x4
        return self.head(h.flatten(1))

    def node_layers(self):
        return [
            NodeLayer("p1", self.p1, [Consumer(self.p2, 0), Consumer(self.mix, 0)]),
            NodeLayer("p2", self.p2, [Consumer(self.mix, self.p1.out_channels)]),  # after p1 in the concat
            NodeLayer("mix", self.mix, [Consumer(self.head, 0, 16)]),
        ]


def dead_skip():
    torch.manual_seed(5)
    m = SkipConv()
    with torch.no_grad():
        m.p1.weight[0] = 0  # in-dead, constant relu(0.6): folded into p2 and mix
        m.p1.bias[0] = 0.6
        m.p2.weight[:, 1] = 0  # p1 node 1: zero into p2 but read by mix: alive
        m.mix.weight[:, 2] = 0  # p1 node 2: zero into mix ...
        m.p2.weight[:, 2] = 0  # ... and into p2: out-dead
        m.p2.weight[1] = 0  # p2 node 1 in-dead, constant relu(0.4), folded into mix at offset 3 + 1
        m.p2.bias[1] = 0.4
        m.head.weight[:, 16 * 3 : 16 * 4] = 0  # mix node 3 out-dead
    return m


def test_skip_concat_compacts_exactly():
    model = dead_skip()
    s_p1, s_p2, s_mix = model_nodes(model)
    assert s_p1.in_dead.tolist() == [True, False, False]
    assert s_p1.out_dead.tolist() == [False, False, True]
    assert s_p2.in_dead.tolist() == [False, True]
    assert s_mix.out_dead.tolist() == [False, False, False, True]
    state = state_copy(model)
    x = torch.randn(8, 2, 8, 8)
    small, report = compact(model, x)
    outputs_equal(model, small, x, 1e-5)
    assert report.max_abs_diff <= 1e-5
    assert report.widths_after == {"p1": 1, "p2": 1, "mix": 3}
    assert report.removed_in_dead == {"p1": 1, "p2": 1, "mix": 0}
    assert report.removed_out_dead == {"p1": 1, "p2": 0, "mix": 1}
    assert small.p2.in_channels == 1
    assert small.mix.in_channels == 2  # one channel from each producer
    assert small.mix.out_channels == 3
    assert small.head.in_features == 3 * 16
    expected = (2 * 9 * 1 + 1) + (1 * 1 * 1 + 1) + (2 * 9 * 3 + 3) + (3 * 16 * 3 + 3)
    assert report.params_after == count_params(small) == expected
    assert_unchanged(model, state)


def test_max_abs_diff_and_count_helpers():
    torch.manual_seed(0)
    a = MLP(4, [3], 2)
    b = copy.deepcopy(a)
    x = torch.randn(5, 4)
    assert max_abs_diff(a, b, x) == 0.0
    with torch.no_grad():
        b.net.fc2.bias += 0.25
    assert max_abs_diff(a, b, x) == pytest.approx(0.25)
    assert count_params(a) == 4 * 3 + 3 + 3 * 2 + 2
    assert count_flops(a, x) == 2 * 5 * (4 * 3 + 3 * 2)


class _FunctionalReLU(nn.Module):
    """ReLU applied with F.relu in forward: no activation module for the chain reader to see."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(5, 4)
        self.b = nn.Linear(4, 3)

    def forward(self, x):
        return self.b(torch.nn.functional.relu(self.a(x)))


def test_unknown_activation_keeps_in_dead_nodes_instead_of_guessing():
    torch.manual_seed(0)
    model = _FunctionalReLU()
    with torch.no_grad():
        model.a.weight[1] = 0
        model.a.bias[1] = 0.7  # in-dead, emits relu(0.7) -- but the chain reader cannot know it is relu
        model.b.weight[:, 2] = 0  # out-dead: removable whatever the activation
    small, report = compact(model, torch.randn(16, 5))
    assert report.max_abs_diff <= 1e-6
    assert report.kept_constant == {"a": 1}
    assert report.widths_after == {"a": 3}


def test_a_layer_whose_every_channel_is_dead_keeps_one_silent_channel():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3)).eval()
    with torch.no_grad():
        model[2].weight.zero_()  # every channel of the first conv is out-dead
    x = torch.randn(2, 1, 8, 8)
    small, report = compact(model, x)
    assert small[0].out_channels == 1 and small[2].in_channels == 1
    assert report.kept_constant == {"0": 1}
    assert report.max_abs_diff == 0.0


def test_a_layer_whose_every_channel_is_constant_folds_them_and_stays_exact():
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 2, 3)).eval()
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
    x = torch.randn(2, 1, 8, 8)
    small, report = compact(model, x)
    assert small[0].out_channels == 1
    assert report.max_abs_diff <= 1e-6


def test_compaction_iterates_to_a_fixed_point():
    """A fc1 node whose outgoing weights reach only out-dead fc2 nodes dies once those go:
    one pass cannot see it, the fixed point removes it (and nothing alive)."""
    torch.manual_seed(0)
    model = MLP(12, [6, 5], 3).eval()
    fc1, fc2, fc3 = model.net.fc1, model.net.fc2, model.net.fc3
    with torch.no_grad():
        fc3.weight[:, 0] = 0  # fc2 node 0: out-dead
        fc2.weight[1:, 2] = 0  # fc1 node 2 feeds only fc2 node 0
    x = torch.randn(16, 12)
    small, report = compact(model, x)
    assert report.passes == 3  # two that removed nodes, one that found nothing more
    assert report.widths_after == {"net.fc1": 5, "net.fc2": 4}
    assert report.removed_out_dead == {"net.fc1": 1, "net.fc2": 1}
    assert report.max_abs_diff <= 1e-6
    one, first = compact(model, x, max_passes=1)
    assert first.widths_after == {"net.fc1": 6, "net.fc2": 4} and first.passes == 1
    with pytest.raises(ValueError, match="max_passes"):
        compact(model, x, max_passes=0)


# ---------------------------------------------------------------- alignment (align > 1)


def _random_batchnorm(model):
    """Running statistics and affine parameters away from their defaults, so that folding them matters."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)


def _bn_vgg():
    """VGG width 1/8 (8..64 channels, 64 hidden units) with BatchNorm statistics that are not the identity."""
    from prunedyn.models import VGG

    torch.manual_seed(0)
    model = VGG(width=0.125, hidden=512)  # hidden 64
    _random_batchnorm(model)
    return model.eval()


def _dead_vgg():
    """Dead channels of every kind: silenced (constant 0), in-dead with a positive constant
    (BN shift 0.4, merged into a carrier: padded consumers), out-dead."""
    from prunedyn.structure.surgery import silence_nodes

    model = _bn_vgg()
    x = torch.randn(4, 3, 32, 32)
    silence_nodes(model, {"features.conv2_1": 5, "features.conv3_2": 9, "features.conv5_3": 19, "classifier.fc1": 27},
                  x, torch.Generator().manual_seed(1))
    f = model.features
    with torch.no_grad():
        f.conv3_1.weight[[0, 1, 2]] = 0  # in-dead, emitting relu(0.4 ...) > 0
        f.bn3_1.bias[[0, 1, 2]] = 0.4
        f.conv4_2.weight[:, [3, 7, 11]] = 0  # conv4_1 channels 3, 7, 11: out-dead
    return model, x


def _dead_unet():
    from prunedyn.models.unet import UNet
    from prunedyn.structure.surgery import silence_nodes

    torch.manual_seed(0)
    model = UNet(1, 3, width=0.125)  # 8-16-32-64, bottleneck 128
    _random_batchnorm(model)
    model.eval()
    x = torch.randn(2, 1, 32, 32)
    silence_nodes(model, {"enc2.conv2": 3, "enc3.conv2": 5, "bottleneck.conv1": 100, "up4": 37, "dec3.conv1": 9,
                          "up2": 2}, x, torch.Generator().manual_seed(2))
    with torch.no_grad():
        model.enc4.conv1.weight[[1, 4]] = 0  # in-dead with a positive constant
        model.enc4.bn1.bias[[1, 4]] = 0.5
    return model, x


@pytest.mark.parametrize("align", [8, 16])
@pytest.mark.parametrize("build", [_dead_vgg, _dead_unet], ids=["vgg_bn", "unet"])
def test_aligned_compaction_is_exact_and_aligned(build, align):
    from prunedyn.structure.surgery import aligned_width

    model, x = build()
    state = state_copy(model)
    plain, base = compact(model, x)
    small, report = compact(model, x, align=align)
    outputs_equal(model, small, x, 1e-4)
    assert report.max_abs_diff <= 1e-4 and report.align == align
    assert_unchanged(model, state)
    assert report.widths_before == base.widths_before
    assert report.removed_in_dead == base.removed_in_dead and report.removed_out_dead == base.removed_out_dead
    for name, w in report.widths_after.items():
        w0 = report.widths_before[name]
        assert w % align == 0 or w == w0, (name, w, w0)
        assert w == aligned_width(base.widths_after[name], w0, align)
        assert w == base.widths_after[name] + report.kept_for_alignment[name]
        assert w == w0 - report.removed_in_dead[name] - report.removed_out_dead[name] + report.kept_for_alignment[name]
    assert sum(report.kept_for_alignment.values()) > 0
    assert base.flops_after <= report.flops_after < report.flops_before
    assert report.params_after == count_params(small)
    # the model's own accounting agrees: every kept-for-alignment node is dead (in and out)
    from prunedyn.structure.nodes import node_layers

    widths = {layer.name: layer.size for layer in node_layers(small, x)}
    assert widths == report.widths_after
    dead = {s.name: int((s.in_dead & s.out_dead).sum()) for s in model_nodes(small, x)}
    for name, kept in report.kept_for_alignment.items():
        assert dead[name] >= kept, name


def test_aligned_mlp_exact_and_consistent():
    model = dead_mlp()  # widths 8, 5 -> 3, 3
    x = torch.randn(32, 6)
    small, report = compact(model, x, align=4)
    outputs_equal(model, small, x, 1e-5)
    assert report.widths_after == {"net.fc1": 4, "net.fc2": 4}
    assert report.kept_for_alignment == {"net.fc1": 1, "net.fc2": 1}
    assert small.net.fc1.out_features == 4 and small.net.fc2.in_features == 4 and small.net.fc3.in_features == 4
    # never above the original width: fc2 had 5, rounding 3 up to 8 stops at 5
    _, capped = compact(model, x, align=8)
    assert capped.widths_after == {"net.fc1": 8, "net.fc2": 5}
    assert capped.max_abs_diff <= 1e-5


def test_align_one_is_the_default_behaviour():
    model = dead_mlp()
    x = torch.randn(16, 6)
    a, ra = compact(model, x)
    b, rb = compact(model, x, align=1)
    assert ra == rb and ra.kept_for_alignment == {"net.fc1": 0, "net.fc2": 0} and ra.align == 1
    assert_unchanged(b, state_copy(a))
    for bad in (0, -8, 2.5, True):
        with pytest.raises(ValueError, match="align"):
            compact(model, x, align=bad)


def test_silence_nodes_makes_exactly_that_many_removable_nodes():
    from prunedyn.structure.surgery import silence_nodes

    model, x = _bn_vgg(), torch.randn(2, 3, 32, 32)
    chosen = silence_nodes(model, {"features.conv4_1": 20, "classifier.fc1": 60}, x, torch.Generator().manual_seed(0))
    assert len(chosen["features.conv4_1"]) == 20 and len(set(chosen["classifier.fc1"].tolist())) == 60
    small, report = compact(model, x)
    assert report.widths_after["features.conv4_1"] == 64 - 20 and report.widths_after["classifier.fc1"] == 64 - 60
    assert sum(report.kept_constant.values()) == 0  # constant 0: nothing to fold or merge
    assert report.max_abs_diff <= 1e-5
    with pytest.raises(KeyError, match="not node layers"):
        silence_nodes(model, {"nope": 1}, x)
    with pytest.raises(ValueError, match="cannot silence"):
        silence_nodes(model, {"features.conv1_1": 99}, x)


def test_compact_refuses_to_return_a_model_that_computes_something_else(monkeypatch):
    """Conv -> GroupNorm(1 group, no affine) -> ReLU -> Conv with filters zeroed: removing the dead
    channels changes the group's statistics. The wiring refuses such a norm by name
    (tests/test_zoo.py); with that refusal switched off, compact's own check of its outputs is the
    safety net: it raises instead of returning that model."""
    from prunedyn.structure import traced
    from prunedyn.structure.surgery import CompactionError, compact

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(1, 16, affine=False), nn.ReLU(),
                          nn.Conv2d(16, 4, 3, padding=1))
    with torch.no_grad():
        model[0].weight[:4] = 0
        model[0].bias[:4] = 0
    monkeypatch.setattr(traced, "mixes_channels", lambda module: False)
    with pytest.raises(CompactionError, match="changed the outputs by"):
        compact(model, torch.randn(4, 3, 8, 8))


# ---------------------------------------------------------------- grouped convolutions


def _grouped_chain(shift=0.0, pad=1):
    """Conv(3->16) -> BN -> ReLU -> Conv(16->12, groups=4) -> BN -> ReLU -> Conv(12->4): the grouped
    conv reads 4 channels per group and writes 3; random BatchNorm statistics."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                      nn.Conv2d(16, 12, 3, padding=pad, groups=4), nn.BatchNorm2d(12), nn.ReLU(), nn.Conv2d(12, 4, 3))
    with torch.no_grad():
        for bn in (m[1], m[4]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    return m.eval()


def test_grouped_convolution_loses_the_same_number_of_channels_in_every_group():
    """Dead inputs per group of 4: 2, 1, 3, 1 -> 1 goes from each group (16 -> 12), 3 stay; dead
    outputs per group of 3: 1, 1, 2, 1 -> 1 from each (12 -> 8), 1 stays. Both sides sliced
    consistently (grouped weight 8 x 3 x 3 x 3), one warning says how many dead channels stay."""
    from prunedyn.structure.traced import KeptChannelsWarning

    model = _grouped_chain()
    with torch.no_grad():
        dead_in, dead_out = [0, 1, 5, 8, 9, 10, 12], [1, 3, 6, 7, 11]
        model[1].weight[dead_in], model[1].bias[dead_in] = 0, 0
        model[4].weight[dead_out], model[4].bias[dead_out] = 0, 0
    x = torch.randn(4, 3, 10, 10)
    assert [(s.name, s.size, int(s.dead.sum())) for s in model_nodes(model, x)] == [("0", 16, 7), ("3", 12, 5)]
    with pytest.warns(KeptChannelsWarning, match=r"4 dead channel\(s\) stay .* in 2 layer\(s\) next to grouped "
                                                 r"convolutions.*: 0 \(3\), 3 \(1\)"):
        small, report = compact(model, x)
    assert report.widths_after == {"0": 12, "3": 8} and report.kept_for_groups == {"0": 3, "3": 1}
    assert report.removed_in_dead == {"0": 4, "3": 4} and report.removed_out_dead == {"0": 0, "3": 0}
    g = small[3]
    assert (g.in_channels, g.out_channels, g.groups, tuple(g.weight.shape)) == (12, 8, 4, (8, 3, 3, 3))
    assert small[0].out_channels == small[1].num_features == 12 and small[4].num_features == 8
    assert small[6].in_channels == 8
    # per group, the first dead channel (quiet ones first, then by index) went: inputs 0, 5, 8, 12; outputs 1, 3, 6, 11
    keep_in = [i for i in range(16) if i not in (0, 5, 8, 12)]
    keep_out = [o for o in range(12) if o not in (1, 3, 6, 11)]
    assert torch.equal(small[0].weight, model[0].weight[keep_in])
    assert torch.equal(small[4].running_mean, model[4].running_mean[keep_out])
    w = model[3].weight[keep_out]  # group q's rows keep the columns of group q's kept inputs
    cols = [[c for c in range(4) if 4 * q + c in keep_in] for q in range(4)]
    assert torch.equal(small[3].weight, torch.cat([w[2 * q : 2 * q + 2][:, cols[q]] for q in range(4)]))
    assert report.params_after == report.params_before - 4 * (27 + 1 + 2) - 4 * 2 * 9 - 4 * (36 + 1 + 2) - 4 * 4 * 9
    assert report.rel_diff <= 1e-6
    outputs_equal(model, small, x, 1e-6 * report.output_scale)


def test_grouped_convolution_padded_merges_constants_into_one_carrier_per_group():
    """Three dead inputs per group emit relu(0.5) into a padded grouped conv: in each group one carrier
    stands for them (kept_constant 4), two go (16 -> 8), and the outputs are unchanged."""
    model = _grouped_chain()
    with torch.no_grad():
        dead = [0, 1, 2, 4, 5, 7, 8, 9, 11, 13, 14, 15]
        model[0].weight[dead], model[0].bias[dead] = 0, 0
        model[1].weight[dead], model[1].bias[dead] = 0, 0.5
    x = torch.randn(4, 3, 10, 10)
    small, report = compact(model, x)
    assert report.widths_after == {"0": 8, "3": 12} and report.kept_constant == {"0": 4, "3": 0}
    assert report.kept_for_groups == {"0": 0, "3": 0} and small[3].weight.shape == (12, 2, 3, 3)
    assert report.rel_diff <= 1e-6


def test_a_grouped_convolution_keeps_two_outputs_per_group_and_unpadded_folds_its_constants():
    """All 12 outputs of the grouped conv dead (3 per group): one goes from each, each group keeps two (torch-pruning would
    trace one output per group as depthwise); an unpadded grouped conv folds constant inputs into the
    rows of their group's bias."""
    model = _grouped_chain(pad=0)
    with torch.no_grad():
        dead = [0, 4, 8, 12]  # one per group, constant relu(BN(0.3)) != 0: folded into the group's rows
        model[0].weight[dead], model[0].bias[dead] = 0, 0.3
        model[4].weight[:], model[4].bias[:] = 0, 0
    x = torch.randn(4, 3, 10, 10)
    small, report = compact(model, x)
    assert report.widths_after == {"0": 12, "3": 8} and report.kept_for_groups == {"0": 0, "3": 8}
    assert small[3].bias is not None and tuple(small[3].weight.shape) == (8, 3, 3, 3)
    assert report.rel_diff <= 1e-6


def _dead_grouped_chain():
    model = _grouped_chain()
    with torch.no_grad():
        model[1].weight[[0, 5, 8, 13]], model[1].bias[[0, 5, 8, 13]] = 0, 0
    return model


def test_compact_checks_its_grouped_slicing(monkeypatch):
    """The self-check covers grouped convolutions: with the wrong columns kept in each group, compact
    raises instead of returning the model."""
    from prunedyn.structure import grouped, surgery
    from prunedyn.structure.surgery import CompactionError

    monkeypatch.setattr(surgery, "shrink_grouped_inputs", lambda m, mask: _shifted(grouped, m, mask))
    with pytest.raises(CompactionError, match="changed the outputs by"):
        compact(_dead_grouped_chain(), torch.randn(4, 3, 10, 10))


def _shifted(grouped, module, keep_mask):
    """Keep the first channels of each group (as many as ``keep_mask`` keeps), whichever died."""
    per, k = keep_mask.numel() // module.groups, int(keep_mask.sum()) // module.groups
    shifted = torch.zeros(module.groups, per, dtype=torch.bool)
    shifted[:, :k] = True
    grouped.shrink_grouped_inputs(module, shifted.flatten())


# ---------------------------------------------------------------- saving and loading a compact model


def _fresh_mlp():
    return MLP(6, [8, 5], 3)


def _depthwise_chain():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight[[1, 5]] = 0
        model[0].bias[[1, 5]] = 0
        model[1].bias[[1, 5]] = -1.0
        model[3].weight[[1, 5]] = 0  # the tied depthwise channels go dead too
        model[3].bias[[1, 5]] = 0
        model[4].bias[[1, 5]] = -1.0
    return model.eval()


@pytest.mark.parametrize("build, fresh, shape", [
    (dead_mlp, _fresh_mlp, (8, 6)),
    (lambda: dead_conv_chain(0), lambda: conv_chain(3, 0), (8, 2, 8, 8)),
    (lambda: dead_conv_chain(1), lambda: conv_chain(3, 1), (8, 2, 8, 8)),
    (_depthwise_chain, lambda: nn.Sequential(*[copy.deepcopy(m) for m in _depthwise_chain()]), (4, 3, 8, 8)),
    (_dead_grouped_chain, _grouped_chain, (4, 3, 10, 10)),
], ids=["mlp", "conv-folded", "conv-carrier", "depthwise", "grouped"])
def test_a_compact_model_saved_as_plain_tensors_loads_back_exactly(tmp_path, build, fresh, shape):
    """compact.pt holds a state dict and the widths, read with weights_only=True; loading resizes a freshly
    built network of the same architecture (a bias that folding added to a bias-free layer included)."""
    from prunedyn import load_compact, save_compact

    x = torch.randn(*shape)
    small, report = compact(build(), x)
    assert report.params_after < report.params_before
    save_compact(small, tmp_path / "compact.pt", report)
    blob = torch.load(tmp_path / "compact.pt", weights_only=True)
    assert blob["widths"] == report.widths_after
    loaded = load_compact(tmp_path / "compact.pt", fresh())
    assert count_params(loaded) == report.params_after
    assert torch.equal(loaded(x), small(x))
    assert str(loaded) == str(small)  # the size attributes follow the tensors


def test_load_compact_refuses_code_and_a_state_of_another_architecture(tmp_path):
    from prunedyn import load_compact, save_compact
    from prunedyn.atomic import CheckpointError
    from prunedyn.structure.surgery import CompactionError

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (marker.write_text, ("x",))

    torch.save({"format": "prunedyn-compact-1", "state_dict": {}, "x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_compact(tmp_path / "evil.pt", _fresh_mlp())
    assert not marker.exists()
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a compact model"):
        load_compact(tmp_path / "other.pt", _fresh_mlp())
    small, report = compact(dead_mlp(), torch.randn(8, 6))
    save_compact(small, tmp_path / "compact.pt", report)
    with pytest.raises(CompactionError, match="does not fit"):
        load_compact(tmp_path / "compact.pt", MLP(6, [8, 5, 4], 3))
    with pytest.raises(CompactionError, match="GroupNorm"):
        load_compact_gn = nn.Sequential(nn.Linear(6, 8), nn.GroupNorm(2, 8))
        from prunedyn.structure.surgery import resized_like

        resized_like(load_compact_gn, {"0.weight": torch.zeros(4, 6), "0.bias": torch.zeros(4),
                                       "1.weight": torch.zeros(4), "1.bias": torch.zeros(4)})
