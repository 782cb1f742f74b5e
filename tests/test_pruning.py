"""Weight pruners: stochastic weight pruning (SWP) and magnitude pruning."""
import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from prunedyn.core.kernels import get_kernel
from prunedyn.models import MLP
from prunedyn.core.baseline_pruners import MagnitudePruner
from prunedyn.core.pruning import (
    NoPruner,
    StochasticWeightPruner,
    prunable_weights,
    weight_sparsity,
)

SETTINGS = settings(max_examples=50, deadline=None)


def filled_linear(value: float, n_in=500, n_out=400) -> nn.Linear:
    """A Linear whose 200k weights all equal ``value``."""
    layer = nn.Linear(n_in, n_out)
    with torch.no_grad():
        layer.weight.fill_(value)
        layer.bias.fill_(value)
    return layer


def small_mlp(seed=0) -> MLP:
    torch.manual_seed(seed)
    return MLP(12, [10, 8], 3)


class Mixed(nn.Module):
    """Every layer kind the pruner must (and must not) touch."""

    def __init__(self):
        super().__init__()
        self.conv1d = nn.Conv1d(2, 3, 3)
        self.bn1 = nn.BatchNorm1d(3)
        self.conv2d = nn.Conv2d(2, 3, 3)
        self.bn2 = nn.BatchNorm2d(3)
        self.conv3d = nn.Conv3d(1, 2, 2)
        self.deconv = nn.ConvTranspose2d(3, 2, 2)
        self.ln = nn.LayerNorm(5)
        self.emb = nn.Embedding(4, 5)
        self.fc = nn.Linear(5, 4)
        self.fc_nobias = nn.Linear(4, 3, bias=False)

    def forward(self, x):  # pragma: no cover - not needed
        raise NotImplementedError


# ---------------------------------------------------------------- prunable_weights


def test_prunable_weights_only_linear_and_conv_weights():
    m = Mixed()
    pw = prunable_weights(m)
    assert list(pw) == ["conv1d", "conv2d", "conv3d", "deconv", "fc", "fc_nobias"]
    for name, w in pw.items():
        assert w is getattr(m, name).weight
    ids = {id(w) for w in pw.values()}
    for name, p in m.named_parameters():
        if id(p) in ids:
            assert name.endswith(".weight")
    # nothing else: biases, norms, embeddings are not prunable
    for mod in (m.bn1, m.bn2, m.ln, m.emb):
        for p in mod.parameters():
            assert id(p) not in ids
    for mod in (m.conv1d, m.conv2d, m.fc):
        assert id(mod.bias) not in ids


def test_pruner_needs_weights():
    with pytest.raises(ValueError):
        StochasticWeightPruner(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)))
    with pytest.raises(ValueError):
        MagnitudePruner(nn.Sequential(nn.ReLU()))


# ---------------------------------------------------------------- weight_sparsity


def test_weight_sparsity():
    model = MLP(4, [3], 2)  # weights 12 + 6 = 18, biases not counted
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
        model.net.fc1.weight[0, :3] = 0
        model.net.fc2.weight[1, 1] = 0
        model.net.fc1.bias.zero_()  # biases never count
    assert weight_sparsity(model) == pytest.approx(4 / 18)
    with torch.no_grad():
        for w in prunable_weights(model).values():
            w.zero_()
    assert weight_sparsity(model) == 1.0
    assert weight_sparsity(nn.Sequential(nn.ReLU())) == 0.0


# ---------------------------------------------------------------- SWP: rates


CASES = [
    ("gaussian", 0.01, 0.01),  # kappa = exp(-1/2)
    ("gaussian", 0.015, 0.01),  # exp(-1.125)
    ("laplace", 0.01, 0.01),  # exp(-1)
    ("laplace", -0.005, 0.01),  # exp(-1/2)
    ("hard", 0.009, 0.01),  # 1
    ("hard", 0.011, 0.01),  # 0
]


@pytest.mark.parametrize("kernel,value,sigma", CASES)
def test_empirical_rate_matches_kernel(kernel, value, sigma):
    layer = filled_linear(value)
    n = layer.weight.numel()
    p = float(get_kernel(kernel)(torch.tensor(value), sigma))
    pruner = StochasticWeightPruner(layer, kernel=kernel, sigma=sigma, seed=123)
    pruner.step()
    rate = float((layer.weight == 0).float().mean())
    se = math.sqrt(max(p * (1 - p), 1e-12) / n)
    assert abs(rate - p) <= 5 * se, (rate, p, se)
    # survivors are untouched, biases never pruned
    survivors = layer.weight[layer.weight != 0]
    assert torch.all(survivors == value)
    assert torch.all(layer.bias == value)


def test_rate_over_two_layers_and_conv():
    model = nn.Sequential(nn.Conv2d(10, 100, 10), nn.Flatten(), nn.Linear(1000, 100))  # 100k + 100k
    with torch.no_grad():
        model[0].weight.fill_(0.02)
        model[2].weight.fill_(-0.01)
    StochasticWeightPruner(model, kernel="gaussian", sigma=0.02, seed=1).step()
    for layer, v in ((model[0], 0.02), (model[2], -0.01)):
        p = math.exp(-(v * v) / (2 * 0.02**2))
        n = layer.weight.numel()
        rate = float((layer.weight == 0).float().mean())
        assert abs(rate - p) <= 5 * math.sqrt(p * (1 - p) / n)


def test_biases_and_batchnorm_never_touched():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8, 4))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1e-6)  # every weight would be zeroed with probability ~1
        model[1].running_mean.fill_(1e-6)
        model[1].running_var.fill_(1e-6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruner = StochasticWeightPruner(model, kernel="gaussian", sigma=1.0, seed=0)
    for _ in range(3):
        pruner.step()
    after = model.state_dict()
    for k, v in before.items():
        if k in ("0.weight", "4.weight"):
            assert torch.all(after[k] == 0), k
        else:
            assert torch.equal(after[k], v), k


def test_swp_covers_every_prunable_type():
    m = Mixed()
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(1e-6)
    StochasticWeightPruner(m, kernel="hard", sigma=1.0).step()
    for name in ("conv1d", "conv2d", "conv3d", "deconv", "fc", "fc_nobias"):
        assert torch.all(getattr(m, name).weight == 0), name
    for p in (m.conv1d.bias, m.bn1.weight, m.bn2.bias, m.deconv.bias, m.ln.weight, m.emb.weight, m.fc.bias):
        assert torch.all(p == 1e-6)


# ---------------------------------------------------------------- SWP: randomness


def masks_after(seed, steps=1, **kw):
    model = small_mlp(0)
    with torch.no_grad():
        for w in prunable_weights(model).values():
            w.mul_(0.1)
    pruner = StochasticWeightPruner(model, sigma=0.02, seed=seed, **kw)
    for _ in range(steps):
        pruner.step()
    return [w == 0 for w in prunable_weights(model).values()]


def test_same_seed_same_masks_different_seed_different():
    a, b, c = masks_after(7, steps=3), masks_after(7, steps=3), masks_after(8, steps=3)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert any(x.any() for x in a)  # something was pruned
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_global_rng_untouched_and_irrelevant():
    def setup():
        model = small_mlp(0)
        with torch.no_grad():
            for w in prunable_weights(model).values():
                w.mul_(0.1)
        return model, StochasticWeightPruner(model, sigma=0.02, seed=5)

    model1, pruner1 = setup()
    torch.manual_seed(1234)
    state = torch.random.get_rng_state()
    for _ in range(3):
        pruner1.step()
    assert torch.equal(torch.random.get_rng_state(), state)  # global stream not consumed
    m1 = [w == 0 for w in prunable_weights(model1).values()]
    assert any(m.any() for m in m1)

    # consuming the global RNG in between does not change the pruning
    model2, pruner2 = setup()
    for seed in (999, 1, 2):
        torch.manual_seed(seed)
        torch.rand(1000)
        pruner2.step()
    m2 = [w == 0 for w in prunable_weights(model2).values()]
    assert all(torch.equal(x, y) for x, y in zip(m1, m2))


# ---------------------------------------------------------------- SWP: sticky / non-sticky


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    perturb_seeds=st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=5),
    kernel=st.sampled_from(["gaussian", "laplace", "hard"]),
)
def test_sticky_zeros_stay_zero(seed, perturb_seeds, kernel):
    torch.manual_seed(seed)
    model = MLP(6, [5], 3)
    pruner = StochasticWeightPruner(model, kernel=kernel, sigma=0.2, sticky=True, seed=seed)
    pruner.step()
    zeroed = [(w == 0).clone() for w in prunable_weights(model).values()]
    for ps in perturb_seeds:
        g = torch.Generator().manual_seed(ps)
        with torch.no_grad():
            for w in prunable_weights(model).values():
                # an optimiser step: moves everything, including the zeros
                w.add_(torch.randn(w.shape, generator=g))
        pruner.step()
        now = [w == 0 for w in prunable_weights(model).values()]
        for before, after in zip(zeroed, now):
            assert not (before & ~after).any(), "a sticky zero was revived"
        # the mask is exactly the set of zeros the pruner made
        for mask, after in zip(pruner.masks.values(), now):
            assert torch.equal(~mask, after)
        zeroed = [a.clone() for a in now]


def test_non_sticky_zeros_can_revive():
    torch.manual_seed(0)
    model = MLP(6, [5], 3)
    with torch.no_grad():
        model.net.fc1.weight.fill_(0.01)
    pruner = StochasticWeightPruner(model, kernel="hard", sigma=0.1, sticky=False)
    pruner.step()
    assert torch.all(model.net.fc1.weight == 0)
    assert pruner.masks == {}
    with torch.no_grad():
        model.net.fc1.weight.add_(1.0)  # the optimiser moves them back up
    pruner.step()
    assert torch.all(model.net.fc1.weight == 1.0)


def test_sticky_rezeroes_before_pruning_even_when_kernel_would_keep():
    torch.manual_seed(0)
    model = MLP(6, [5], 3)
    with torch.no_grad():
        model.net.fc1.weight.fill_(0.01)
    pruner = StochasticWeightPruner(model, kernel="hard", sigma=0.1, sticky=True)
    pruner.step()
    with torch.no_grad():
        model.net.fc1.weight.add_(1.0)
    pruner.step()
    assert torch.all(model.net.fc1.weight == 0)


# ---------------------------------------------------------------- SWP: relative sigma


def test_relative_sigma_scale_invariant():
    torch.manual_seed(3)
    base = nn.Linear(400, 500)
    results = {}
    for c in (1.0, 4.0, 0.25, 3.0):
        layer = copy.deepcopy(base)
        with torch.no_grad():
            layer.weight.mul_(c)
        StochasticWeightPruner(layer, sigma=0.3, sigma_mode="relative", seed=11).step()
        results[c] = layer.weight == 0
    w = base.weight.detach()
    rms = float(w.pow(2).mean().sqrt())
    p = float(get_kernel("gaussian")(w, 0.3 * rms).mean())
    n = w.numel()
    for c, mask in results.items():
        rate = float(mask.float().mean())
        assert abs(rate - p) <= 5 * math.sqrt(p * (1 - p) / n), (c, rate, p)
    # power-of-two scalings are exact in floating point: identical masks
    assert torch.equal(results[1.0], results[4.0])
    assert torch.equal(results[1.0], results[0.25])
    # c = 3 may differ only on rounding-borderline entries
    assert (results[1.0] != results[3.0]).float().mean() < 1e-3


def test_absolute_sigma_not_scale_invariant():
    torch.manual_seed(3)
    base = nn.Linear(400, 500)
    rates = []
    for c in (1.0, 4.0):
        layer = copy.deepcopy(base)
        with torch.no_grad():
            layer.weight.mul_(c)
        StochasticWeightPruner(layer, sigma=0.01, seed=11).step()
        rates.append(float((layer.weight == 0).float().mean()))
    assert rates[0] > 1.5 * rates[1]


def test_relative_sigma_skips_all_zero_layer():
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.zero_()
    StochasticWeightPruner(layer, sigma=0.3, sigma_mode="relative").step()
    assert torch.all(layer.weight == 0)
    assert torch.isfinite(layer.weight).all()


# ---------------------------------------------------------------- SWP: schedule, start


def test_linear_ramp_prunes_nothing_at_step_zero():
    layer = filled_linear(1e-4, 50, 40)
    pruner = StochasticWeightPruner(layer, kernel="gaussian", sigma=1.0, schedule="linear", ramp_steps=10)
    assert pruner.sigma_at(0) == 0.0
    assert pruner.sigma_at() == 0.0
    pruner.step()
    assert torch.all(layer.weight == 1e-4)
    assert pruner.sigma_at() == pytest.approx(0.1)
    assert pruner.sigma_at(5) == pytest.approx(0.5)
    assert pruner.sigma_at(20) == pytest.approx(1.0)
    pruner.step()  # sigma 0.1 >> 1e-4: (almost) everything goes
    assert weight_sparsity(layer) > 0.99


def test_hard_kernel_follows_ramp_exactly():
    layer = nn.Linear(100, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.linspace(0.005, 0.995, 100).unsqueeze(0))  # 0.005, 0.015, ...
    pruner = StochasticWeightPruner(layer, kernel="hard", sigma=1.0, schedule="linear", ramp_steps=10)
    for t in range(11):
        pruner.step()
        assert int((layer.weight == 0).sum()) == 10 * t  # threshold t/10 zeroes 10 t weights


def test_start_step_respected():
    layer = filled_linear(1e-4, 50, 40)
    pruner = StochasticWeightPruner(layer, kernel="hard", sigma=1.0, start_step=3, schedule="linear", ramp_steps=2)
    for _ in range(3):
        pruner.step()
        assert torch.all(layer.weight == 1e-4)
    assert pruner.steps_done == 3
    pruner.step()  # first pruning step: ramp position 0 -> sigma 0
    assert torch.all(layer.weight == 1e-4)
    assert pruner.sigma_at() == pytest.approx(0.5)
    pruner.step()
    assert torch.all(layer.weight == 0)


def test_start_step_with_constant_schedule():
    layer = filled_linear(1e-4, 50, 40)
    pruner = StochasticWeightPruner(layer, kernel="hard", sigma=1.0, start_step=2)
    pruner.step()
    pruner.step()
    assert torch.all(layer.weight == 1e-4)
    pruner.step()
    assert torch.all(layer.weight == 0)


# ---------------------------------------------------------------- SWP: state


@pytest.mark.parametrize("sticky", [False, True])
def test_state_dict_round_trip(sticky):
    def make():
        model = small_mlp(0)
        with torch.no_grad():
            for w in prunable_weights(model).values():
                w.mul_(0.1)
        return model

    model = make()
    pruner = StochasticWeightPruner(model, sigma=0.02, seed=3, sticky=sticky, schedule="linear", ramp_steps=4)
    for _ in range(3):
        pruner.step()
    state = copy.deepcopy(pruner.state_dict())
    weights = copy.deepcopy(model.state_dict())
    assert state["steps_done"] == 3

    def continue_run(model, pruner):
        out = []
        for k in range(4):
            with torch.no_grad():
                for w in prunable_weights(model).values():
                    w.add_(0.005 * (k + 1))
            pruner.step()
            out.append([w.clone() for w in prunable_weights(model).values()])
        return out

    ref = continue_run(model, pruner)

    model2 = make()
    model2.load_state_dict(weights)
    pruner2 = StochasticWeightPruner(model2, sigma=0.02, seed=999, sticky=sticky, schedule="linear", ramp_steps=4)
    pruner2.load_state_dict(state)
    assert pruner2.steps_done == 3
    got = continue_run(model2, pruner2)
    for a, b in zip(ref, got):
        for x, y in zip(a, b):
            assert torch.equal(x, y)
    # the saved state is a copy: later steps do not change it
    assert state["steps_done"] == 3


# ---------------------------------------------------------------- SWP: validation


@pytest.mark.parametrize("sigma", [0.0, -0.1, float("nan"), float("inf"), -float("inf")])
def test_invalid_sigma(sigma):
    with pytest.raises(ValueError, match="sigma"):
        StochasticWeightPruner(nn.Linear(2, 2), sigma=sigma)


@pytest.mark.parametrize("mode", ["rel", "", "Absolute", None])
def test_invalid_sigma_mode(mode):
    with pytest.raises(ValueError, match="sigma_mode"):
        StochasticWeightPruner(nn.Linear(2, 2), sigma_mode=mode)


def test_unknown_kernel_and_schedule():
    with pytest.raises(KeyError, match="gaussian"):
        StochasticWeightPruner(nn.Linear(2, 2), kernel="nope")
    with pytest.raises(KeyError, match="cubic"):
        StochasticWeightPruner(nn.Linear(2, 2), schedule="nope")


def test_no_pruner_leaves_weights():
    model = small_mlp(0)
    before = copy.deepcopy(model.state_dict())
    p = NoPruner(model)
    for _ in range(3):
        p.step()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert p.state_dict()["steps_done"] == 3


# ---------------------------------------------------------------- magnitude pruning


def distinct_mlp(seed=0) -> MLP:
    """Small MLP with distinct weight magnitudes (no ties)."""
    model = MLP(10, [20, 7], 3)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ws = list(prunable_weights(model).values())
        total = sum(w.numel() for w in ws)
        mags = (torch.randperm(total, generator=g).double() + 1) / total
        signs = torch.where(torch.rand(total, generator=g) < 0.5, -1.0, 1.0)
        vals = (mags * signs).float()
        i = 0
        for w in ws:
            w.copy_(vals[i : i + w.numel()].view_as(w))
            i += w.numel()
    return model


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.3, 0.5, 0.77, 0.9, 0.99])
def test_magnitude_layer_scope(sparsity):
    model = distinct_mlp()
    before = {n: w.detach().clone() for n, w in prunable_weights(model).items()}
    pruner = MagnitudePruner(model, sparsity=sparsity, scope="layer")
    pruner.step()
    for name, w in prunable_weights(model).items():
        k = math.floor(sparsity * w.numel())
        assert int((w == 0).sum()) == k, name
        orig = before[name].abs().flatten()
        smallest = torch.argsort(orig)[:k]
        dropped = (w == 0).flatten()
        assert dropped[smallest].all()
        # survivors unchanged
        assert torch.equal(w.flatten()[~dropped], before[name].flatten()[~dropped])


@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.9])
def test_magnitude_global_scope(sparsity):
    model = distinct_mlp(1)
    before = torch.cat([w.detach().flatten().clone() for w in prunable_weights(model).values()])
    pruner = MagnitudePruner(model, sparsity=sparsity, scope="global")
    pruner.step()
    after = torch.cat([w.detach().flatten() for w in prunable_weights(model).values()])
    k = math.floor(sparsity * before.numel())
    assert int((after == 0).sum()) == k
    assert (after == 0)[torch.argsort(before.abs())[:k]].all()
    assert weight_sparsity(model) == pytest.approx(k / before.numel())
    # per-layer sparsities differ: one threshold, not a per-layer target
    per_layer = [float((w == 0).float().mean()) for w in prunable_weights(model).values()]
    assert max(per_layer) - min(per_layer) > 0.01


def test_magnitude_masks_persist_after_perturbation():
    model = distinct_mlp(2)
    pruner = MagnitudePruner(model, sparsity=0.6)
    pruner.step()
    zeros = [(w == 0).clone() for w in prunable_weights(model).values()]
    for step in range(5):
        with torch.no_grad():
            for w in prunable_weights(model).values():
                w.add_(0.5 + step)  # the optimiser moves everything, zeros included
        pruner.step()
        for z, w in zip(zeros, prunable_weights(model).values()):
            assert torch.equal(w == 0, z)
    assert pruner.applied == pytest.approx(0.6)


def test_magnitude_cubic_ramp_gradual():
    model = distinct_mlp(3)
    pruner = MagnitudePruner(model, sparsity=0.8, schedule="cubic", ramp_steps=100, every=10)
    history = []
    for t in range(130):
        pruner.step()
        history.append(weight_sparsity(model))
    assert history[0] == 0.0
    assert all(b >= a for a, b in zip(history, history[1:]))  # monotone
    # changes only at multiples of `every` during the ramp
    for t in range(1, 100):
        if t % 10:
            assert history[t] == history[t - 1], t
    # intermediate targets follow the cubic schedule (layer scope, floor per tensor)
    n = [w.numel() for w in prunable_weights(model).values()]
    for t in (10, 50, 90):
        target = 0.8 * (1 - (1 - t / 100) ** 3)
        expected = sum(math.floor(target * k) for k in n) / sum(n)
        assert history[t] == pytest.approx(expected), t
    assert 0 < history[10] < history[50] < history[90] < history[100]
    assert history[-1] == pytest.approx(sum(math.floor(0.8 * k) for k in n) / sum(n))
    distinct_levels = sorted(set(history))
    assert len(distinct_levels) >= 8


def test_magnitude_start_step_and_state():
    model = distinct_mlp(4)
    pruner = MagnitudePruner(model, sparsity=0.5, start_step=2)
    pruner.step()
    pruner.step()
    assert weight_sparsity(model) == 0.0
    pruner.step()
    assert weight_sparsity(model) > 0.49
    state = pruner.state_dict()
    assert state["applied"] == pytest.approx(0.5)
    assert state["steps_done"] == 3
    model2 = distinct_mlp(4)
    p2 = MagnitudePruner(model2, sparsity=0.5, start_step=2)
    p2.load_state_dict(state)
    p2.step()  # masks restored: applied to the dense copy right away
    for a, b in zip(prunable_weights(model).values(), prunable_weights(model2).values()):
        assert torch.equal(a == 0, b == 0)


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5, float("nan")])
def test_magnitude_bad_sparsity(sparsity):
    with pytest.raises(ValueError, match="sparsity"):
        MagnitudePruner(nn.Linear(3, 3), sparsity=sparsity)


@pytest.mark.parametrize("scope", ["layers", "", "Global", None])
def test_magnitude_bad_scope(scope):
    with pytest.raises(ValueError, match="scope"):
        MagnitudePruner(nn.Linear(3, 3), scope=scope)


@pytest.mark.parametrize(
    "scope",
    [
        "layer",
        "global",
    ],
)
def test_magnitude_ties_do_not_overshoot(scope):
    """Equal magnitudes (e.g. a sign-initialised or quantised net): the target is still exact."""
    model = MLP(10, [20, 7], 3)
    with torch.no_grad():
        for w in prunable_weights(model).values():
            w.copy_(torch.where(torch.arange(w.numel()) % 2 == 0, 0.5, -0.5).view_as(w))
    MagnitudePruner(model, sparsity=0.5, scope=scope).step()
    n = [w.numel() for w in prunable_weights(model).values()]
    if scope == "layer":
        expected = sum(math.floor(0.5 * k) for k in n)
    else:
        expected = math.floor(0.5 * sum(n))
    assert sum(int((w == 0).sum()) for w in prunable_weights(model).values()) == expected


def _per_tensor_reference(weights, kernel, sigma, generator):
    """The SWP step written the plain way: one draw per tensor, in order."""
    from prunedyn.core.kernels import get_kernel

    for w in weights:
        u = torch.rand(w.shape, generator=generator, dtype=w.dtype)
        w.masked_fill_(u < get_kernel(kernel)(w, sigma), 0.0)


@pytest.mark.parametrize("kernel", ["gaussian", "laplace"])
def test_one_draw_for_all_tensors_matches_per_tensor_draws_on_cpu(kernel):
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(50, 40), nn.ReLU(), nn.Conv1d(4, 6, 3), nn.Linear(7, 3))
    b = copy.deepcopy(a)
    pruner = StochasticWeightPruner(a, kernel=kernel, sigma=0.05, seed=11)
    g = torch.Generator().manual_seed(11)
    ws = list(prunable_weights(b).values())
    for _ in range(3):
        pruner.step()
        with torch.no_grad():
            _per_tensor_reference(ws, kernel, 0.05, g)
    for wa, wb in zip(prunable_weights(a).values(), ws):
        assert torch.equal(wa, wb)
    assert weight_sparsity(a) > 0.2  # the comparison is not vacuous


def test_one_class_in_one_file_adds_a_pruner_everywhere(tmp_path):
    """A pruner registered with ``register_pruner`` is a valid ``pruner.kind``, runs, and attaches."""
    import torch

    from prunedyn import attach
    from prunedyn.core.pruning import PRUNERS, WeightPruner, register_pruner
    from prunedyn.run.config import ConfigError, load_config
    from prunedyn.run.experiments import make_pruner

    with pytest.raises(ConfigError, match="pruner.kind.*allowed"):
        load_config("mlp-mnist", ["pruner.kind=halve_test"])

    @register_pruner("halve_test")
    class Halve(WeightPruner):
        """Zeroes every weight whose magnitude is below ``threshold`` (a test pruner)."""

        def __init__(self, model, *, threshold: float = 0.01):
            super().__init__(model)
            self.threshold = threshold

        @classmethod
        def from_config(cls, p, model, *, ramp_steps, start_step, seed, last_step):
            return cls(model, threshold=p.sigma)

        def _prune(self, t):
            for w in self.weights.values():
                w.mul_(w.abs() >= self.threshold)

    try:
        cfg = load_config("mlp-mnist", ["pruner.kind=halve_test", "pruner.sigma=0.02", "model.hidden=[8]"])
        model = MLP(784, [8], 10)
        pruner = make_pruner(cfg, model, steps_per_epoch=10)
        assert isinstance(pruner, Halve) and pruner.threshold == 0.02
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        handle = attach(opt, model, "halve_test", threshold=0.02)
        model(torch.randn(2, 784)).sum().backward()
        opt.step()
        assert all(((w == 0) | (w.abs() >= 0.02)).all() for w in prunable_weights(model).values())
        handle.remove()
    finally:
        del PRUNERS["halve_test"]
