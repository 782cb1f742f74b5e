"""The in/out balance laws, the decay fit, first-death bookkeeping and the node figures."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from prunedyn.analysis.dependency import (
    Dynamics,
    aligned_summary,
    aligned_to_death,
    death_side_counts,
    effective_time,
    first_death,
    fit_decay_rate,
    fit_imbalance_decay,
    imbalance,
    imbalance_decay,
    l1_drive,
    layer_death_order,
    layer_status,
    predicted_rate,
)
from prunedyn.book.balance import model_imbalance, track_imbalance
from prunedyn.models import MLP
from prunedyn.book import balance as BAL
from prunedyn.plots import nodes as pn


@pytest.fixture(autouse=True)
def _one_thread():
    """The tiny networks here run faster on one thread, above all on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _data(n=96, d=12, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = torch.randint(0, k, (n,), generator=g)
    return x, y


def _mlp(seed=1, bias=True):
    torch.manual_seed(seed)
    m = MLP(12, [10, 6], 3)
    if not bias:
        for layer in (m.net.fc1, m.net.fc2, m.net.fc3):
            layer.bias = None
    return m.double()


def _pivot(track):
    return track.pivot_table(index="t", columns=["layer", "node"], values="delta")


# ---------------------------------------------------------------------------
# the laws on a live network
# ---------------------------------------------------------------------------
def test_model_imbalance_matches_weights():
    m = _mlp()
    df = model_imbalance(m)
    assert len(df) == 16 and list(df["layer"].unique()) == ["net.fc1", "net.fc2"]
    w1, b1, w2 = m.net.fc1.weight.detach(), m.net.fc1.bias.detach(), m.net.fc2.weight.detach()
    j = 3
    row = df[(df["layer"] == "net.fc1") & (df["node"] == j)].iloc[0]
    expect = float(w1[j].pow(2).sum() + b1[j] ** 2 - w2[:, j].pow(2).sum())
    assert row["delta"] == pytest.approx(expect, rel=1e-12)
    assert row["delta_weights"] == pytest.approx(expect - float(b1[j] ** 2), rel=1e-12)


def test_gradient_descent_conserves_imbalance_up_to_second_order():
    """No regularizer: delta drifts by O(lr^2) per step, O(lr) over a fixed flow time."""
    x, y = _data()
    T = 3.0
    changes, moved = {}, {}
    for lr in (0.04, 0.02):
        tr = track_imbalance(_mlp(), x.double(), y, lr=lr, steps=int(round(T / lr)), every=int(round(T / lr)))
        p = _pivot(tr)
        changes[lr] = float((p.iloc[-1] - p.iloc[0]).abs().max())
        sq = tr.pivot_table(index="t", columns=["layer", "node"], values="in_sq")
        moved[lr] = float((sq.iloc[-1] - sq.iloc[0]).abs().max())
        assert tr["loss"].iloc[-1] < tr["loss"].iloc[0] - 0.02  # it did learn
    # the norms themselves move by far more than their difference does
    assert moved[0.02] > 20 * changes[0.02]
    # halving the step halves the total drift (second order per step)
    assert 1.6 < changes[0.04] / changes[0.02] < 2.4
    assert changes[0.02] < 1e-3


def test_l2_contracts_imbalance_at_twice_lambda():
    """With L2 on the weights (no biases), delta_j(t) = delta_j(0) exp(-2 lam t) for every node."""
    x, y = _data()
    lam, lr, steps = 0.4, 0.01, 200
    tr = track_imbalance(_mlp(bias=False), x.double(), y, lr=lr, steps=steps, regularizer="l2", lam=lam, every=50)
    p = _pivot(tr)
    t = p.index.to_numpy()
    ratio = p.div(p.iloc[0], axis=1)
    law = np.exp(-2 * lam * t)
    assert law[-1] < 0.4  # a real decay, not a flat line
    np.testing.assert_allclose(ratio.to_numpy(), np.repeat(law[:, None], ratio.shape[1], 1), rtol=0.03, atol=2e-3)
    # without the regularizer the same run keeps delta (the law is not a property of training alone)
    tr0 = track_imbalance(_mlp(bias=False), x.double(), y, lr=lr, steps=steps, every=steps)
    p0 = _pivot(tr0)
    assert float((p0.iloc[-1] / p0.iloc[0] - 1).abs().max()) < 0.02


def test_heavy_ball_momentum_rescales_time():
    """Momentum m makes the effective step lr / (1 - m): the decay follows effective_time."""
    x, y = _data()
    lam, lr, m, steps = 0.25, 0.002, 0.9, 200
    tr = track_imbalance(_mlp(bias=False), x.double(), y, lr=lr, momentum=m, steps=steps, regularizer="l2", lam=lam, every=steps)
    p = _pivot(tr)
    t_end = float(effective_time(steps, lr, m))
    assert p.index[-1] == pytest.approx(t_end)
    ratio = (p.iloc[-1] / p.iloc[0]).to_numpy()
    # the buffer needs ~1/(1-m) steps to build up: allow a few percent
    np.testing.assert_allclose(ratio, math.exp(-2 * lam * t_end), rtol=0.06)
    # and plainly not the rate without the momentum factor
    assert abs(np.median(ratio) - math.exp(-2 * lam * lr * steps)) > 0.3


# ---------------------------------------------------------------------------
# rates and fits
# ---------------------------------------------------------------------------
def test_effective_time_and_predicted_rate():
    assert float(effective_time(157, 0.05, 0.9)) == pytest.approx(78.5)
    assert predicted_rate(0.005, "l2") == 0.01 and predicted_rate(0.1, "none") == 0.0
    assert math.isnan(predicted_rate(1e-4, "l1"))
    dyn = Dynamics(lr=0.05, momentum=0.9, lam=0.005, kind="l2", steps_per_epoch=157)
    assert dyn.rate_per_epoch == pytest.approx(0.785)
    with pytest.raises(ValueError):
        effective_time(1, 0.1, 1.0)


def test_fit_decay_rate_recovers_known_rate():
    rng = np.random.default_rng(0)
    t = np.linspace(0, 5, 30)
    y = 0.3 * np.exp(-0.7 * t) * np.exp(rng.normal(0, 0.02, t.size))
    fit = fit_decay_rate(t, y)
    assert fit.rate == pytest.approx(0.7, abs=0.02)
    assert fit.amplitude == pytest.approx(0.3, rel=0.05)
    assert fit.r2 > 0.99
    # zeros and NaNs are skipped, not fitted
    y2 = y.copy()
    y2[[3, 7]] = [0.0, np.nan]
    assert fit_decay_rate(t, y2).rate == pytest.approx(0.7, abs=0.02)
    with pytest.raises(ValueError):
        fit_decay_rate([1.0, 1.0], [1.0, 2.0])


def _synthetic_nodes(delta0, rate_per_epoch, epochs=6, layer="net.fc1"):
    """Nodes whose delta decays exactly as delta0 * exp(-rate * epoch) (out norm fixed at 1)."""
    rows = []
    for e in range(epochs + 1):
        for j, d0 in enumerate(delta0):
            d = d0 * math.exp(-rate_per_epoch * e)
            rows.append(dict(epoch=e, layer=layer, node=j, in_l2=math.sqrt(1 + d), out_l2=1.0, in_l1=2.0, out_l1=1.0, in_dead=False, out_dead=False))
    return pd.DataFrame(rows)


def test_imbalance_decay_and_fit_on_synthetic_table():
    dyn = Dynamics(lr=0.05, momentum=0.9, lam=0.005, kind="l2", steps_per_epoch=157)
    nodes = _synthetic_nodes([0.2, -0.1, 0.3, 0.05], dyn.rate_per_epoch * 0.5)
    dec = imbalance_decay(nodes, dyn)
    assert list(dec.columns) == ["epoch", "layer", "t", "n", "rms", "mean_abs", "predicted"]
    assert dec["rms"].iloc[0] == pytest.approx(np.sqrt(np.mean(np.square([0.2, -0.1, 0.3, 0.05]))))
    assert dec["predicted"].iloc[-1] == pytest.approx(dec["rms"].iloc[0] * math.exp(-0.785 * 6))
    fit = fit_imbalance_decay(dec, dyn, epochs=(0, 6)).iloc[0]
    assert fit["fitted_per_epoch"] == pytest.approx(0.3925, rel=1e-6)
    assert fit["ratio"] == pytest.approx(0.5, rel=1e-6)
    imb = imbalance(nodes)
    assert imb["delta_l2"].iloc[0] == pytest.approx(0.2) and imb["delta_l1"].iloc[0] == 1.0
    assert set(imb["status"]) == {"alive"}
    drive = l1_drive(nodes, dyn)
    assert len(drive) == 4 * 6
    assert drive["l1_term"].iloc[0] == pytest.approx(-2 * 0.005 * 1.0 * 78.5)


# ---------------------------------------------------------------------------
# first deaths
# ---------------------------------------------------------------------------
def _death_table():
    # node: (in_dead by epoch, out_dead by epoch) for epochs 0..4
    spec = {
        0: ("00111", "00011"),  # in first (epoch 2), out at 3: gap 1
        1: ("00011", "01111"),  # out first (epoch 1), in at 3: gap -2
        2: ("00011", "00011"),  # same epoch 3
        3: ("00000", "00000"),  # never
        4: ("01100", "00000"),  # in-dead at 1, revived at 3, out never
    }
    rows = []
    for j, (i_s, o_s) in spec.items():
        for e in range(5):
            rows.append(dict(epoch=e, layer="net.fc1", node=j, in_l2=0.0 if i_s[e] == "1" else 1.0, out_l2=0.0 if o_s[e] == "1" else 1.0,
                             in_l1=0.0, out_l1=0.0, in_dead=i_s[e] == "1", out_dead=o_s[e] == "1"))
    for e in range(5):  # a second layer: one node dying at epoch 4
        rows.append(dict(epoch=e, layer="net.fc2", node=0, in_l2=1.0, out_l2=1.0, in_l1=1.0, out_l1=1.0, in_dead=e >= 4, out_dead=False))
    return pd.DataFrame(rows)


def test_first_death_per_node():
    f = first_death(_death_table()).set_index(["layer", "node"])
    fc1 = f.loc["net.fc1"]
    assert fc1["first_in"].tolist()[:3] == [2, 3, 3] and math.isnan(fc1.loc[3, "first_in"])
    assert fc1.loc[0, "first_out"] == 3 and fc1.loc[1, "first_out"] == 1
    assert fc1["first_side"].tolist() == ["in", "out", "same", "never", "in"]
    assert fc1.loc[0, "gap"] == 1 and fc1.loc[1, "gap"] == -2 and fc1.loc[2, "gap"] == 0
    assert fc1["first_dead"].tolist()[:3] == [2, 1, 3]
    assert fc1["dead_end"].tolist() == [True, True, True, False, False]
    assert fc1.loc[4, "status_end"] == "alive"
    c = death_side_counts(first_death(_death_table())).set_index("layer")
    assert c.loc["net.fc1", ["in", "out", "same", "never"]].tolist() == [2, 1, 1, 1]
    assert c.loc["net.fc1", "revived"] == 1
    assert c.loc["net.fc1", "median_gap"] == 0


def test_aligned_to_death():
    nodes = _death_table()
    a = aligned_to_death(nodes, first_death(nodes), side="in", window=(-1, 1))
    # nodes 0 (in at 2) and 4 (in at 1) of fc1, node 0 of fc2 (in at 4; no +1 epoch)
    assert sorted(a.groupby(["layer", "node"]).size().items()) == [(("net.fc1", 0), 3), (("net.fc1", 4), 3), (("net.fc2", 0), 2)]
    s = aligned_summary(a)
    assert s.loc[s["since"] == 0, "in_median"].iloc[0] == pytest.approx(0.0)


def _layers_table():
    rows = []
    for e in range(6):
        rows.append(dict(epoch=e, layer="net.fc1", nodes=10, alive=10 - min(e, 4), in_dead=min(e, 4), out_dead=max(0, e - 3), both_dead=max(0, e - 3), weight_sparsity=0.1 * e))
        rows.append(dict(epoch=e, layer="net.fc2", nodes=4, alive=4 - (e >= 5), in_dead=0, out_dead=int(e >= 5), both_dead=0, weight_sparsity=0.05 * e))
    return pd.DataFrame(rows)


def test_layer_status_and_death_order():
    ls = layer_status(_layers_table())
    assert (ls["alive"] + ls["in_only"] + ls["out_only"] + ls["both"] == ls["nodes"]).all()
    order = layer_death_order(_layers_table(), thresholds=(0.1, 0.25, 0.5))
    assert order["layer"].tolist() == ["net.fc1", "net.fc2"]
    fc1 = order.iloc[0]
    assert fc1["first_death"] == 1 and fc1["epoch_10pct"] == 1 and fc1["epoch_25pct"] == 3 and math.isnan(fc1["epoch_50pct"])
    assert order.iloc[1]["first_death"] == 5 and order.iloc[1]["final_dead_fraction"] == 0.25


# ---------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------
def test_node_figures_have_expected_axes():
    nodes, layers = _death_table(), _layers_table()
    runs_l = {"l1": layers, "l2": layers}
    runs_n = {"l1": nodes, "l2": nodes}
    fig = pn.plot_node_status(runs_l, epoch=2)
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    assert fig.axes[0].get_title() == "SWP + L1" and fig.axes[0].get_ylim() == (0.0, 10.0)

    fig = pn.plot_node_raster(nodes, "net.fc1")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "epoch" and ax.images[0].get_array().shape == (5, 5)
    # sorted by first death: node 1 (epoch 1) and node 4 (epoch 1) lead, node 3 (never) is last
    assert ax.images[0].get_array()[-1].tolist() == [0, 0, 0, 0, 0]

    assert len(pn.plot_node_rasters(runs_n, "net.fc1").axes) == 2
    fig = pn.plot_node_grid(runs_n, "net.fc1", epoch=4)
    assert len(fig.axes) == 2 and "3/5 dead" in fig.axes[0].get_title()

    fig = pn.plot_layer_death_order(runs_l)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) >= 2

    first = {"l1": first_death(nodes), "l2": first_death(nodes)}
    fig = pn.plot_death_side(first)
    assert [a.get_title() for a in fig.axes] == ["which side reached zero first", "how long the other side survives"]

    assert len(pn.plot_dead_fraction_bars(runs_l).axes) == 1

    fig = pn.plot_inout_scatter({"a": nodes, "b": nodes, "c": nodes}, epoch=3)
    assert len(fig.axes) == 3 and fig.axes[0].get_xscale() == "log" and fig.axes[0].get_yscale() == "log"

    dyn = Dynamics(0.05, 0.9, 0.005, "l2", 157)
    dec = imbalance_decay(_synthetic_nodes([0.2, 0.1], 0.5), dyn)
    fig = BAL.plot_imbalance_decay({"l2": dec}, predicted=["l2"])
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 2 and fig.axes[0].get_yscale() == "log"

    x, y = _data(n=32)
    tr = track_imbalance(_mlp(), x.double(), y, lr=0.01, steps=20, every=5)
    fig = BAL.plot_tracked_imbalance({"none": tr}, {"none": 0.0})
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 16 + 1

    s = aligned_summary(aligned_to_death(nodes, first_death(nodes), "in", (-1, 1)))
    assert len(pn.plot_aligned_norms({"l2": s}).axes) == 1
    drive = l1_drive(_synthetic_nodes([0.2, 0.1], 0.1), Dynamics(0.05, 0.9, 1e-4, "l1", 157))
    assert len(BAL.plot_l1_drive(drive, [0, 1]).axes) == 2
