"""Nodes: wiring (chain / custom), death flags, per-node norms, magnitude histograms."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from prunedyn.models import MLP
from prunedyn.structure.nodes import (
    HIST_EDGES,
    Consumer,
    LayerNodes,
    NodeLayer,
    chain_node_layers,
    dead_fraction,
    incoming_rows,
    layer_nodes,
    magnitude_histogram,
    model_nodes,
    node_layers,
    outgoing_columns,
)

SETTINGS = settings(max_examples=50, deadline=None)


def hand_mlp():
    """MLP 4-3-2-2 with chosen zeros.

    layer net.fc1 (3 nodes): node 0 in-dead (fc1 row 0 zero), node 1 out-dead
    (fc2 column 1 zero), node 2 alive.
    layer net.fc2 (2 nodes): node 0 out-dead (fc3 column 0 zero), node 1 in-dead
    (fc2 row 1 zero).
    """
    model = MLP(4, [3, 2], 2)
    with torch.no_grad():
        model.net.fc1.weight.copy_(torch.tensor([[0.0, 0, 0, 0], [1, -2, 0, 2], [0.5, 0, 0, 0]]))
        model.net.fc1.bias.copy_(torch.tensor([3.0, -1.0, 0.0]))
        model.net.fc2.weight.copy_(torch.tensor([[1.0, 0, -4], [0, 0, 0]]))
        model.net.fc2.bias.copy_(torch.tensor([0.0, 2.0]))
        model.net.fc3.weight.copy_(torch.tensor([[0.0, 3], [0, -4]]))
        model.net.fc3.bias.copy_(torch.tensor([1.0, 1.0]))
    return model


def test_mlp_chain_wiring():
    model = hand_mlp()
    layers = node_layers(model)
    assert [l.name for l in layers] == ["net.fc1", "net.fc2"]
    assert [l.size for l in layers] == [3, 2]
    assert layers[0].producer is model.net.fc1
    assert layers[1].producer is model.net.fc2
    assert [c.module for c in layers[0].consumers] == [model.net.fc2]
    assert [c.module for c in layers[1].consumers] == [model.net.fc3]
    for l in layers:
        assert l.norm is None
        assert (l.consumers[0].offset, l.consumers[0].repeat) == (0, 1)


def test_mlp_dead_flags():
    stats = model_nodes(hand_mlp())
    s1, s2 = stats
    assert isinstance(s1, LayerNodes)
    assert s1.name == "net.fc1" and s1.size == 3
    assert s1.in_dead.tolist() == [True, False, False]
    assert s1.out_dead.tolist() == [False, True, False]
    assert s1.dead.tolist() == [True, True, False]
    assert s1.alive.tolist() == [False, False, True]
    assert s2.in_dead.tolist() == [False, True]
    assert s2.out_dead.tolist() == [True, False]
    assert s2.alive.tolist() == [False, False]
    assert dead_fraction(stats) == pytest.approx(4 / 5)
    assert dead_fraction([s1]) == pytest.approx(2 / 3)
    assert dead_fraction([]) == 0.0


def test_mlp_norms_include_bias():
    s1, s2 = model_nodes(hand_mlp())
    # in: row of fc1 plus bias
    torch.testing.assert_close(s1.in_l2, torch.tensor([3.0, math.sqrt(1 + 4 + 4 + 1), 0.5]))
    torch.testing.assert_close(s1.in_l1, torch.tensor([3.0, 1 + 2 + 2 + 1, 0.5]))
    # out: column of fc2 (no bias)
    torch.testing.assert_close(s1.out_l2, torch.tensor([1.0, 0.0, 4.0]))
    torch.testing.assert_close(s1.out_l1, torch.tensor([1.0, 0.0, 4.0]))
    torch.testing.assert_close(s2.in_l2, torch.tensor([math.sqrt(17.0), 2.0]))
    torch.testing.assert_close(s2.in_l1, torch.tensor([5.0, 2.0]))
    torch.testing.assert_close(s2.out_l2, torch.tensor([0.0, 5.0]))
    torch.testing.assert_close(s2.out_l1, torch.tensor([0.0, 7.0]))


def test_random_mlp_norms_match_rows_and_columns():
    torch.manual_seed(0)
    model = MLP(7, [6, 5], 3)
    s1, s2 = model_nodes(model)
    fc1, fc2, fc3 = model.net.fc1, model.net.fc2, model.net.fc3
    torch.testing.assert_close(s1.in_l2, torch.cat([fc1.weight, fc1.bias[:, None]], 1).norm(dim=1).detach())
    torch.testing.assert_close(s1.in_l1, torch.cat([fc1.weight, fc1.bias[:, None]], 1).abs().sum(1).detach())
    torch.testing.assert_close(s1.out_l2, fc2.weight.norm(dim=0).detach())
    torch.testing.assert_close(s2.out_l1, fc3.weight.abs().sum(0).detach())
    assert not s1.dead.any() and not s2.dead.any()


def test_bias_alone_does_not_keep_a_node_alive():
    model = MLP(3, [2], 2)
    with torch.no_grad():
        model.net.fc1.weight.zero_()
        model.net.fc1.bias.fill_(5.0)
    s = model_nodes(model)[0]
    assert s.in_dead.all()
    torch.testing.assert_close(s.in_l2, torch.tensor([5.0, 5.0]))


# ---------------------------------------------------------------- conv chain


def conv_chain(seed=0, h=8):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * (h - 4) ** 2, 5),
    )
    return model


def test_conv_chain_wiring():
    model = conv_chain()
    layers = chain_node_layers(model)
    assert [l.name for l in layers] == ["0", "3"]
    assert [l.size for l in layers] == [3, 4]
    assert layers[0].norm is model[1] and layers[1].norm is model[4]
    assert layers[0].consumers[0].module is model[3]
    assert layers[0].consumers[0].repeat == 1
    assert layers[1].consumers[0].module is model[7]
    assert layers[1].consumers[0].repeat == 16  # 4x4 map per channel
    assert layers[1].consumers[0].offset == 0
    # a bigger map, a bigger repeat
    assert chain_node_layers(conv_chain(h=10))[1].consumers[0].repeat == 36
    # node_layers falls back to the chain
    assert [l.producer for l in node_layers(model)] == [model[0], model[3]]


def test_conv_chain_norms_use_batchnorm_not_conv_bias():
    model = conv_chain()
    with torch.no_grad():
        model[0].bias.fill_(100.0)  # ignored: BN parameters are the incoming extras
        model[1].weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        model[1].bias.copy_(torch.tensor([0.0, -1.0, 3.0]))
    s = layer_nodes(chain_node_layers(model)[0])
    rows = model[0].weight.detach().reshape(3, -1)
    expected_l2 = (rows.pow(2).sum(1) + model[1].weight.detach() ** 2 + model[1].bias.detach() ** 2).sqrt()
    expected_l1 = rows.abs().sum(1) + model[1].weight.detach().abs() + model[1].bias.detach().abs()
    torch.testing.assert_close(s.in_l2, expected_l2)
    torch.testing.assert_close(s.in_l1, expected_l1)
    # outgoing: input slice j of the next conv
    w2 = model[3].weight.detach()
    torch.testing.assert_close(s.out_l2, w2.transpose(0, 1).reshape(3, -1).norm(dim=1))


def test_conv_chain_dead_flags():
    model = conv_chain()
    with torch.no_grad():
        model[0].weight[0].zero_()  # channel 0 of layer 0 in-dead
        model[1].weight[2] = 0.0  # BN scale 0: channel 2 in-dead too
        model[3].weight[:, 1].zero_()  # channel 1 out-dead
        model[7].weight[:, 16 * 3 : 16 * 4].zero_()  # layer 3 channel 3 out-dead
        model[7].weight[:, 16 * 2].zero_()  # only one of channel 2's 16 columns: still alive
    s0, s1 = model_nodes(model)
    assert s0.in_dead.tolist() == [True, False, True]
    assert s0.out_dead.tolist() == [False, True, False]
    assert s0.alive.tolist() == [False, False, False]
    assert s1.in_dead.tolist() == [False, False, False, False]
    assert s1.out_dead.tolist() == [False, False, False, True]
    assert s1.out_l2[3] == 0 and s1.out_l2[2] > 0


def test_outgoing_columns_linear_after_flatten():
    c, h, w, out = 3, 2, 2, 4
    lin = nn.Linear(c * h * w, out)
    with torch.no_grad():
        lin.weight.copy_(torch.arange(out * c * h * w, dtype=torch.float32).view(out, -1))
    cols = outgoing_columns(Consumer(lin, 0, h * w), c)
    assert cols.shape == (c, out * h * w)
    for j in range(c):
        expected = lin.weight[:, j * h * w : (j + 1) * h * w].reshape(-1)
        assert torch.equal(cols[j], expected)
    # consistency with what Flatten does: zeroing channel j of the input
    # removes exactly the contribution of those columns
    x = torch.randn(1, c, h, w)
    for j in range(c):
        x0 = x.clone()
        x0[:, j] = 0
        delta = lin(x.flatten(1)) - lin(x0.flatten(1))
        torch.testing.assert_close(
            delta[0], lin.weight[:, j * h * w : (j + 1) * h * w] @ x[0, j].flatten(), rtol=1e-5, atol=1e-4
        )


def test_outgoing_columns_with_offset_and_conv():
    conv = nn.Conv2d(5, 2, 3)
    cols = outgoing_columns(Consumer(conv, 3, 1), 2)
    assert cols.shape == (2, 2 * 9)
    for j in range(2):
        assert torch.equal(cols[j], conv.weight[:, 3 + j].reshape(-1))
    lin = nn.Linear(7, 3)
    cols = outgoing_columns(Consumer(lin, 4, 1), 3)
    assert torch.equal(cols, lin.weight[:, 4:7].t())


def test_conv_transpose_rows_and_columns():
    up = nn.ConvTranspose2d(4, 3, 2)  # weight (in=4, out=3, 2, 2)
    rows = incoming_rows(up)
    assert rows.shape == (3, 4 * 4)
    for j in range(3):
        assert torch.equal(rows[j], up.weight[:, j].reshape(-1))
    cols = outgoing_columns(Consumer(up, 1, 1), 2)
    assert cols.shape == (2, 3 * 4)
    for j in range(2):
        assert torch.equal(cols[j], up.weight[1 + j].reshape(-1))


def test_chain_mismatch_raises():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2), nn.Linear(5, 1))
    with pytest.raises(ValueError, match="node_layers"):
        chain_node_layers(model)


# ---------------------------------------------------------------- custom wiring


class SkipNet(nn.Module):
    """a -> relu -> b -> relu; head reads cat(relu(a), relu(b)): not a chain."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 3)
        self.b = nn.Linear(3, 2)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        h1 = torch.relu(self.a(x))
        h2 = torch.relu(self.b(h1))
        return self.head(torch.cat([h1, h2], 1))

    def node_layers(self):
        return [
            NodeLayer("a", self.a, [Consumer(self.b, 0), Consumer(self.head, 0)]),
            NodeLayer("b", self.b, [Consumer(self.head, 3)]),
        ]


def test_custom_node_layers_used():
    model = SkipNet()
    layers = node_layers(model)
    assert [l.name for l in layers] == ["a", "b"]
    assert len(layers[0].consumers) == 2
    # the chain reader would have got this wrong (head after b, repeat 5/2)
    with pytest.raises(ValueError):
        chain_node_layers(model)
    with torch.no_grad():
        model.b.weight[:, 0] = 0  # a's node 0: zero into b, but still read by head
        model.head.weight[:, 1] = 0
        model.b.weight[:, 1] = 0  # a's node 1: zero in both consumers -> out-dead
        model.head.weight[:, 4] = 0  # b's node 1 (offset 3 + 1) out-dead
    sa, sb = model_nodes(model)
    assert sa.out_dead.tolist() == [False, True, False]
    assert sb.out_dead.tolist() == [False, True]
    # outgoing norms sum over both consumers
    expected = (model.b.weight[:, 2].pow(2).sum() + model.head.weight[:, 2].pow(2).sum()).sqrt()
    torch.testing.assert_close(sa.out_l2[2], expected.detach())
    torch.testing.assert_close(sb.out_l1, model.head.weight[:, 3:5].abs().sum(0).detach())


# ---------------------------------------------------------------- histograms


def test_hist_edges_fixed_log_spaced():
    assert len(HIST_EDGES) == 73
    assert HIST_EDGES[0] == pytest.approx(1e-8)
    assert HIST_EDGES[-1] == pytest.approx(10.0)
    ratios = HIST_EDGES[1:] / HIST_EDGES[:-1]
    np.testing.assert_allclose(ratios, 10 ** (1 / 8), rtol=1e-10)
    np.testing.assert_allclose(HIST_EDGES[::8], 10.0 ** np.arange(-8, 2), rtol=1e-12)


def test_magnitude_histogram_bins():
    w = torch.tensor([0.0, 0.0, -0.0, 1e-12, 1e-8, -0.5, 0.5, 1.0, 100.0, -10.0])
    zeros, counts = magnitude_histogram(w)
    assert zeros == 3
    assert len(counts) == 72
    assert zeros + counts.sum() == w.numel()
    assert counts[0] == 2  # 1e-12 (clipped up) and 1e-8
    assert counts[-1] == 2  # 100 (clipped down) and 10
    i_half = int(np.floor((np.log10(0.5) + 8) * 8))  # 61
    assert counts[i_half] == 2
    assert counts[64] == 1  # 1.0 = 10**0 sits at the left edge of bin 8*8
    assert counts.sum() == 7


@SETTINGS
@given(
    values=st.lists(
        st.one_of(st.just(0.0), st.floats(-1e4, 1e4, allow_nan=False, allow_subnormal=False, width=32)),
        min_size=1,
        max_size=200,
    )
)
def test_magnitude_histogram_counts_sum_to_numel(values):
    w = torch.tensor(values, dtype=torch.float32).reshape(-1, 1)
    zeros, counts = magnitude_histogram(w)
    assert zeros == sum(1 for v in values if v == 0)
    assert zeros + int(counts.sum()) == len(values)
    assert (counts >= 0).all()


def test_magnitude_histogram_custom_edges():
    zeros, counts = magnitude_histogram(torch.tensor([0.0, 0.5, 1.5, 2.5]), edges=np.array([1.0, 2.0, 3.0]))
    assert zeros == 1
    assert counts.tolist() == [2, 1]
