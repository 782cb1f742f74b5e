"""The faster SWP step: the exact stream's decisions bit for bit, the fast path's probabilities.

- :func:`prunedyn.core.kernels.fast_decision` takes the same draws ``u`` as the
  reference ``u < kappa(w)`` and must give the same booleans for every ``u``;
- the default (exact-stream) pruner must zero exactly the weights the
  previous implementation zeroed, step after step, whatever the options;
- the fast path (``fast=True``, another stream) must prune each weight with
  probability ``P = ceil(kappa 2**24) / 2**24`` (statistical tests, fixed
  seeds, tolerance from the binomial standard deviation), never where
  ``kappa == 0``, and keep sticky masks, relative sigma, schedules and resumes.
"""
import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from prunedyn.core import kernels
from prunedyn.core import pruning
from prunedyn.core.kernels import KERNELS, clamped_kappa, fast_decision, get_kernel, prune_decision, register_kernel
from prunedyn.core.pruning import StochasticWeightPruner, _bernoulli_positions, prunable_weights


@pytest.fixture(params=[True, False], ids=["flush", "denormals"])
def flush(request):
    """Both denormal modes: the book flushes denormals, a user may not."""
    torch.set_flush_denormal(request.param)
    yield request.param
    torch.set_flush_denormal(True)


@pytest.fixture
def cauchy():
    """A kernel the fast forms know nothing about."""
    register_kernel("cauchy_test")(lambda w, sigma: 1.0 / (1.0 + (w / sigma) ** 2))
    yield "cauchy_test"
    del KERNELS["cauchy_test"]


def awkward_weights(n=50_000, sigma=0.01, dtype=torch.float32, seed=0):
    """Weights from far below to far above sigma, with zeros, -0.0, infinities, NaN and denormals."""
    g = torch.Generator().manual_seed(seed)
    scale = sigma * torch.logspace(-6, 3, n, dtype=torch.float64)[torch.randperm(n, generator=g)]
    w = (torch.randn(n, generator=g, dtype=torch.float64) * scale).to(dtype)
    special = torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan, 1e-40, -1e-42, 13.2 * sigma, 14.4 * sigma], dtype=dtype)
    w[: special.numel()] = special
    # the underflow band of exp: arguments between -87 and -104
    w[100:1100] = sigma * torch.linspace(13.0, 14.5, 1000, dtype=dtype)
    return w


def lattice_draws(n, seed=1, dtype=torch.float32, zeros=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, generator=g, dtype=dtype)
    if zeros:
        u[torch.randperm(n, generator=g)[:zeros]] = 0.0
        u[100:1100:7] = 0.0  # exact zeros on the underflow band: kappa == 0 or not decides
    return u


# ---------------------------------------------------------------- the decision, same draws


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kernel", ["gaussian", "laplace", "hard", "cauchy"])
@pytest.mark.parametrize("zeros", [0, 50])
@pytest.mark.parametrize("sigma", [0.01, 0.003, 1e-5])
def test_fast_decision_equals_reference_on_the_same_draws(kernel, dtype, zeros, sigma, flush, request):
    if kernel == "cauchy":
        kernel = request.getfixturevalue("cauchy")
    w = awkward_weights(sigma=sigma, dtype=dtype)
    u = lattice_draws(w.numel(), dtype=dtype, zeros=zeros)
    ref = prune_decision(w, u, kernel, sigma)
    got = fast_decision(w, u, kernel, sigma)
    assert got.dtype == torch.bool and got.shape == w.shape
    assert torch.equal(got, ref)
    assert 0 < int(ref.sum()) < w.numel()  # not vacuous


def test_fast_decision_on_exact_zero_draws_follows_kappa_not_the_clamp():
    sigma = 0.01
    w = torch.tensor([20.0 * sigma, 13.0 * sigma, 0.0, 1.0 * sigma])  # kappa == 0, tiny > 0, 1, exp(-1/2)
    u = torch.zeros(4)
    kappa = get_kernel("gaussian")(w, sigma)
    assert kappa[0] == 0 and kappa[1] > 0
    assert fast_decision(w, u, "gaussian", sigma).tolist() == (kappa > 0).tolist() == [False, True, True, True]
    assert clamped_kappa(w, u, "gaussian", sigma) is None  # the clamp would prune w[0]: the reference decides


def test_clamp_only_touches_negligible_kappas(flush):
    w = awkward_weights()
    u = lattice_draws(w.numel())
    kappa = get_kernel("gaussian")(w, 0.01)
    clamped = clamped_kappa(w, u, "gaussian", 0.01)
    same = kappa >= math.exp(kernels.EXP_FLOOR)
    assert torch.equal(clamped[same], kappa[same])  # bit for bit where no clamp applies
    assert (clamped[~same & ~kappa.isnan()] < 2.0**-24).all()
    assert (clamped[~kappa.isnan()] >= torch.finfo(torch.float32).tiny).all()  # normal: kappa - u keeps its sign


def test_a_reregistered_builtin_name_loses_its_fast_form():
    w, u = awkward_weights(5000), lattice_draws(5000)
    original = KERNELS.pop("gaussian")
    try:
        register_kernel("gaussian")(lambda w, sigma: torch.full_like(w, 0.5))
        assert clamped_kappa(w, u, "gaussian", 0.01) is None
        assert torch.equal(fast_decision(w, u, "gaussian", 0.01), u < 0.5)
    finally:
        KERNELS["gaussian"] = original


def test_exp_gives_the_same_numbers_wherever_an_element_falls():
    """The premise of slicing the exact stream: vectorised body, tail and strided loops agree."""
    y = torch.rand(2 * 300_001, generator=torch.Generator().manual_seed(0)) * -90.0
    x = y[::2].contiguous()
    threads = torch.get_num_threads()
    try:
        for n in sorted({1, threads}):
            torch.set_num_threads(n)
            whole = torch.exp(x)
            assert torch.equal(torch.exp(y[::2]), whole)  # strided: the non-vectorised loop
            assert torch.equal(torch.cat([torch.exp(c) for c in x.split(7)]), whole)  # tails only
            assert torch.equal(torch.cat([torch.exp(c) for c in x.split(1 << 16)]), whole)
    finally:
        torch.set_num_threads(threads)


def test_draws_lie_on_the_2_to_minus_24_lattice():
    """The premise of P = ceil(kappa 2^24) / 2^24: both sources draw k * 2^-24."""
    u = torch.rand(1 << 20, generator=torch.Generator().manual_seed(0))
    assert torch.equal(u * 2.0**24, (u * 2.0**24).floor())
    v = np.random.Generator(np.random.PCG64(0)).random(1 << 20, dtype=np.float32)
    assert np.array_equal(v * 2.0**24, np.floor(v * 2.0**24))
    assert kernels.draw_digits(torch.float32) == 24 and kernels.draw_digits(torch.float64) == 53


# ---------------------------------------------------------------- the exact stream: as before, bit for bit


def previous_step(pruner):
    """The SWP step as implemented before: one draw for all tensors, ``masked_fill_``."""
    s = pruner.sigma_at(pruner.steps_done - pruner.start_step)
    with torch.no_grad():
        if pruner.sticky:
            for name, w in pruner.weights.items():
                w.mul_(pruner.masks[name])
        t = pruner.steps_done
        pruner.steps_done += 1
        if t < pruner.start_step or s <= 0:
            return
        todo = []
        for name, w in pruner.weights.items():
            scale = s
            if pruner.sigma_mode == "relative":
                scale = s * float(w.pow(2).mean().sqrt())
                if scale <= 0:
                    continue
            todo.append((name, w, scale))
        if not todo:
            return
        first = todo[0][1]
        u_all = torch.rand(sum(w.numel() for _, w, _ in todo), generator=pruner.generator, dtype=first.dtype)
        offset = 0
        for name, w, scale in todo:
            u = u_all[offset : offset + w.numel()].view_as(w)
            offset += w.numel()
            drop = u < pruner.kernel(w, scale)
            w.masked_fill_(drop, 0.0)
            if pruner.sticky:
                pruner.masks[name] &= ~drop


def conv_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(  # the first Linear spans several slices of the exact stream (SLICE = 65536)
        nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 32, 3), nn.Flatten(), nn.Linear(32 * 4, 1300), nn.Linear(1300, 10)
    )


OPTIONS = [
    dict(kernel="gaussian", sigma=0.01),
    dict(kernel="gaussian", sigma=0.002),  # most exp arguments far below -87: the clamp at work
    dict(kernel="laplace", sigma=0.002),
    dict(kernel="hard", sigma=0.02),
    dict(kernel="gaussian", sigma=0.3, sigma_mode="relative"),
    dict(kernel="gaussian", sigma=0.01, sticky=True),
    dict(kernel="laplace", sigma=0.004, sticky=True, schedule="linear", ramp_steps=3, start_step=1),
    dict(kernel="gaussian", sigma=0.01, schedule="cubic", ramp_steps=4),
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_exact_stream_zeroes_what_the_previous_implementation_zeroed(options, flush):
    a = conv_net()
    b = copy.deepcopy(a)
    new = StochasticWeightPruner(a, seed=5, **options)
    old = StochasticWeightPruner(b, seed=5, **options)
    g = torch.Generator().manual_seed(9)
    for _ in range(6):
        with torch.no_grad():  # an optimiser step moving every weight, zeros included
            for wa, wb in zip(prunable_weights(a).values(), prunable_weights(b).values()):
                step = 0.003 * torch.randn(wa.shape, generator=g)
                wa.add_(step)
                wb.add_(step)
        new.step()
        previous_step(old)
        for wa, wb in zip(prunable_weights(a).values(), prunable_weights(b).values()):
            assert torch.equal(wa, wb)
            assert torch.equal(torch.signbit(wa), torch.signbit(wb))  # pruned weights are +0.0, as masked_fill_ writes
        for name in new.masks:
            assert torch.equal(new.masks[name], old.masks[name])
    assert torch.equal(new.generator.get_state(), old.generator.get_state())
    zeros = sum(int((w == 0).sum()) for w in prunable_weights(a).values())
    assert zeros > 100  # the comparison is not vacuous


def test_exact_stream_with_a_zero_draw_takes_the_reference(monkeypatch):
    """Draws holding an exact 0 (rare: 2**-24 each) decide through the reference kernel."""
    layer = nn.Linear(100, 50)
    with torch.no_grad():
        layer.weight.copy_(0.01 * torch.linspace(0.0, 20.0, 5000).view(50, 100))
    pruner = StochasticWeightPruner(layer, sigma=0.01, seed=0)
    calls = []
    real = pruning.clamped_kappa

    def spy(w, u, kernel, sigma):
        u.view(50, 100)[0, ::3] = 0.0  # the layer's 5000 weights are one slice
        out = real(w, u, kernel, sigma)
        calls.append(out is None)
        return out

    monkeypatch.setattr(pruning, "clamped_kappa", spy)
    pruner.step()
    assert calls == [True]
    kappa = get_kernel("gaussian")(torch.linspace(0.0, 20.0, 5000)[:100] * 0.01, 0.01)
    # the first row drew u = 0 at every third weight: pruned exactly where kappa > 0
    assert torch.equal((layer.weight[0, ::3] == 0), kappa[::3] > 0)


def test_relu_net_trains_identically_with_the_new_exact_stream():
    """A few SGD steps with SWP after each: the same weights as with the previous step."""
    def train(step_fn):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        pruner = StochasticWeightPruner(model, sigma=0.05, seed=2)
        g = torch.Generator().manual_seed(1)
        for _ in range(10):
            x = torch.randn(16, 20, generator=g)
            y = torch.randint(0, 5, (16,), generator=g)
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step_fn(pruner)
        return [p.detach().clone() for p in model.parameters()]

    a = train(lambda p: p.step())
    b = train(previous_step)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


# ---------------------------------------------------------------- the fast path: probabilities


def grid_layer(values, repeat):
    """A bias-free Linear holding every value of ``values`` ``repeat`` times, in a shuffled order."""
    w = torch.tensor(values, dtype=torch.float32).repeat_interleave(repeat)
    w = w[torch.randperm(w.numel(), generator=torch.Generator().manual_seed(3))]
    layer = nn.Linear(repeat, len(values), bias=False)
    with torch.no_grad():
        layer.weight.copy_(w.view(len(values), repeat))
    return layer, w


def lattice_probability(kappa: float) -> float:
    """P(u < kappa) for u = k * 2**-24, k uniform on 0 .. 2**24 - 1."""
    return min(1.0, math.ceil(kappa * 2**24) / 2**24)


@pytest.mark.parametrize("kernel", ["gaussian", "laplace"])
@pytest.mark.parametrize("dense_above", [1.0, 0.0, 0.4], ids=["candidates", "every-weight", "default"])
def test_fast_path_prunes_with_probability_kappa(kernel, dense_above, monkeypatch):
    monkeypatch.setattr(StochasticWeightPruner, "DENSE_ABOVE", dense_above)
    sigma, repeat = 0.01, 20_000
    ratios = [0.0, 0.05, 0.3, 0.7, 1.0, 1.5, 2.0, 3.0, 4.0, 5.5, 8.0, 20.0, 40.0, 200.0]
    values = [r * sigma * (-1) ** i for i, r in enumerate(ratios)]
    layer, w0 = grid_layer(values, repeat)
    pruner = StochasticWeightPruner(layer, kernel=kernel, sigma=sigma, seed=7, fast=True)
    pruner.step()
    w = layer.weight.detach().flatten()
    for v in values:
        sel = w0 == v
        kappa = float(get_kernel(kernel)(torch.tensor(v, dtype=torch.float32), sigma))
        p = lattice_probability(kappa)
        rate = float((w[sel] == 0).float().mean())
        se = math.sqrt(max(p * (1 - p), 1e-12) / repeat)
        assert abs(rate - p) <= 5 * se + 1e-12, (v / sigma, rate, p)
        if kappa == 0:
            assert rate == 0.0
        assert torch.all((w[sel] == 0) | (w[sel] == v))  # survivors untouched


def test_fast_path_never_prunes_where_kappa_is_zero():
    sigma = 0.01
    layer, w0 = grid_layer([15 * sigma, -20 * sigma, 100 * sigma, 1e3], 50_000)
    assert (get_kernel("gaussian")(w0, sigma) == 0).all()
    pruner = StochasticWeightPruner(layer, sigma=sigma, seed=1, fast=True)
    for _ in range(30):
        pruner.step()
    assert torch.equal(layer.weight.detach().flatten().sort().values, w0.sort().values)


def test_fast_path_tail_rate_is_the_lattice_step(monkeypatch):
    """Beyond the cut-off, prunes at exactly 2**-d where kappa > 0: seen with d = 4 (rate 1/16)."""
    monkeypatch.setattr(pruning, "draw_digits", lambda dtype: 4)
    sigma, repeat = 0.01, 40_000
    # cut-off for d = 4: 1.01 sqrt(8 ln 2) sigma = 2.38 sigma
    values = [1.0 * sigma, 3.0 * sigma, -4.0 * sigma, 20.0 * sigma]  # candidate, tail, tail, kappa == 0
    layer, w0 = grid_layer(values, repeat)
    StochasticWeightPruner(layer, sigma=sigma, seed=2, fast=True).step()
    w = layer.weight.detach().flatten()
    expected = [lattice_probability(math.exp(-0.5)), 1 / 16, 1 / 16, 0.0]
    for v, p in zip(values, expected):
        rate = float((w[w0 == v] == 0).float().mean())
        se = math.sqrt(max(p * (1 - p), 1e-12) / repeat)
        assert abs(rate - p) <= 5 * se, (v / sigma, rate, p)


def test_bernoulli_positions():
    rng = np.random.Generator(np.random.PCG64(0))
    n, p = 1_000_000, 0.003
    counts = []
    for _ in range(5):
        pos = _bernoulli_positions(n, p, rng)
        assert pos.dtype == np.int64
        assert (np.diff(pos) > 0).all() and pos.min() >= 0 and pos.max() < n
        counts.append(pos.size)
    mean, se = n * p, math.sqrt(n * p * (1 - p))
    assert all(abs(c - mean) < 5 * se for c in counts)
    # spread evenly: halves hold about half each
    pos = _bernoulli_positions(n, 0.01, rng)
    assert abs((pos < n // 2).mean() - 0.5) < 0.02
    # a rate far below 1/n: almost always nothing, one geometric draw
    assert sum(_bernoulli_positions(1000, 2.0**-24, rng).size for _ in range(100)) <= 1
    a = _bernoulli_positions(n, p, np.random.Generator(np.random.PCG64(3)))
    b = _bernoulli_positions(n, p, np.random.Generator(np.random.PCG64(3)))
    assert np.array_equal(a, b)


# ---------------------------------------------------------------- the fast path: reproducible, options


def fast_masks(seed, steps=3, **kw):
    model = conv_net(0)
    pruner = StochasticWeightPruner(model, sigma=0.01, seed=seed, fast=True, **kw)
    for _ in range(steps):
        pruner.step()
    return [w == 0 for w in prunable_weights(model).values()]


def test_fast_path_same_seed_same_zeros_other_seed_other_zeros():
    a, b, c = fast_masks(7), fast_masks(7), fast_masks(8)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert sum(int(x.sum()) for x in a) > 100
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_fast_path_leaves_global_rngs_alone():
    def pruned(disturb):
        model = conv_net(0)
        pruner = StochasticWeightPruner(model, sigma=0.01, seed=7, fast=True)
        torch.manual_seed(1234)
        np.random.seed(5)
        state, np_state = torch.random.get_rng_state(), np.random.get_state()[1].copy()
        for _ in range(3):
            if disturb:
                torch.rand(100)
                np.random.rand(100)
            pruner.step()
        if not disturb:
            assert torch.equal(torch.random.get_rng_state(), state)
            assert np.array_equal(np.random.get_state()[1], np_state)
        return [w == 0 for w in prunable_weights(model).values()]

    a, b = pruned(False), pruned(True)
    assert sum(int(x.sum()) for x in a) > 100
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_fast_path_differs_from_the_exact_stream_but_not_in_rate():
    torch.manual_seed(0)
    base = nn.Linear(1000, 400)
    with torch.no_grad():
        base.weight.copy_(0.01 * torch.randn(400, 1000))
    rates, masks = {}, {}
    for fast in (False, True):
        layer = copy.deepcopy(base)
        StochasticWeightPruner(layer, sigma=0.01, seed=3, fast=fast).step()
        masks[fast] = layer.weight == 0
        rates[fast] = float(masks[fast].float().mean())
    p = float(get_kernel("gaussian")(base.weight.detach(), 0.01).mean())
    se = math.sqrt(p * (1 - p) / base.weight.numel())
    assert abs(rates[False] - p) < 5 * se and abs(rates[True] - p) < 5 * se
    assert not torch.equal(masks[False], masks[True])


@pytest.mark.parametrize("kernel", ["gaussian", "laplace", "hard"])
def test_fast_path_sticky_zeros_stay_zero(kernel):
    torch.manual_seed(0)
    model = conv_net(1)
    pruner = StochasticWeightPruner(model, kernel=kernel, sigma=0.02, sticky=True, seed=4, fast=True)
    pruner.step()
    zeroed = [(w == 0).clone() for w in prunable_weights(model).values()]
    assert sum(int(z.sum()) for z in zeroed) > 0
    g = torch.Generator().manual_seed(2)
    for _ in range(4):
        with torch.no_grad():
            for w in prunable_weights(model).values():
                w.add_(0.01 * torch.randn(w.shape, generator=g))
        pruner.step()
        now = [w == 0 for w in prunable_weights(model).values()]
        for before, after, mask in zip(zeroed, now, pruner.masks.values()):
            assert not (before & ~after).any()
            assert torch.equal(~mask, after)
        zeroed = [a.clone() for a in now]


def test_fast_path_relative_sigma_scale_invariant():
    torch.manual_seed(3)
    base = nn.Linear(400, 500)
    results = {}
    for c in (1.0, 4.0, 0.25):
        layer = copy.deepcopy(base)
        with torch.no_grad():
            layer.weight.mul_(c)
        StochasticWeightPruner(layer, sigma=0.3, sigma_mode="relative", seed=11, fast=True).step()
        results[c] = layer.weight == 0
    assert torch.equal(results[1.0], results[4.0]) and torch.equal(results[1.0], results[0.25])
    w = base.weight.detach()
    p = float(get_kernel("gaussian")(w, 0.3 * float(w.pow(2).mean().sqrt())).mean())
    rate = float(results[1.0].float().mean())
    assert abs(rate - p) <= 5 * math.sqrt(p * (1 - p) / w.numel())


def test_fast_path_schedules_and_start_step():
    layer = nn.Linear(100, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.linspace(0.005, 0.995, 100).unsqueeze(0))
    pruner = StochasticWeightPruner(layer, kernel="hard", sigma=1.0, schedule="linear", ramp_steps=10, fast=True,
                                    start_step=2)
    for _ in range(2):
        pruner.step()
        assert int((layer.weight == 0).sum()) == 0
    for t in range(11):
        pruner.step()
        assert int((layer.weight == 0).sum()) == 10 * t
    # a linear ramp of the gaussian: nothing at its first step
    layer = nn.Linear(50, 40)
    with torch.no_grad():
        layer.weight.fill_(1e-4)
    pruner = StochasticWeightPruner(layer, sigma=1.0, schedule="linear", ramp_steps=10, fast=True)
    pruner.step()
    assert torch.all(layer.weight == 1e-4)
    pruner.step()
    assert float((layer.weight == 0).float().mean()) > 0.99


@pytest.mark.parametrize("sticky", [False, True])
def test_fast_path_resumes_to_the_same_numbers(sticky):
    def run(steps, state=None):
        model = conv_net(0)
        pruner = StochasticWeightPruner(model, sigma=0.01, seed=3, sticky=sticky, fast=True)
        if state is not None:
            model.load_state_dict(state[0])
            pruner.load_state_dict(copy.deepcopy(state[1]))
        for _ in range(steps):
            g = torch.Generator().manual_seed(pruner.steps_done)  # the same optimiser moves either way
            with torch.no_grad():
                for w in prunable_weights(model).values():
                    w.add_(0.002 * torch.randn(w.shape, generator=g))
            pruner.step()
        return model, pruner

    full, _ = run(6)
    half, pruner = run(3)
    assert "numpy_generator" in pruner.state_dict()
    state = (copy.deepcopy(half.state_dict()), copy.deepcopy(pruner.state_dict()))
    resumed, _ = run(3, state)
    for a, b in zip(prunable_weights(full).values(), prunable_weights(resumed).values()):
        assert torch.equal(a, b)


def test_fast_state_survives_torch_save_and_weights_only_load(tmp_path):
    pruner = StochasticWeightPruner(conv_net(0), sigma=0.01, seed=3, fast=True)
    pruner.step()
    torch.save(pruner.state_dict(), tmp_path / "p.pt")
    state = torch.load(tmp_path / "p.pt", weights_only=True)
    other = StochasticWeightPruner(conv_net(0), sigma=0.01, seed=99, fast=True)
    other.load_state_dict(state)
    assert other._np_rng.bit_generator.state == pruner._np_rng.bit_generator.state


def test_fast_path_other_layouts_and_dtypes():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 32, 3).to(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    dbl = nn.Linear(300, 200).double()
    for layer in (conv, dbl):
        with torch.no_grad():
            layer.weight.copy_(0.01 * torch.randn(layer.weight.shape, dtype=layer.weight.dtype))
        before = layer.weight.detach().clone()
        StochasticWeightPruner(layer, sigma=0.01, seed=1, fast=True).step()
        p = float(get_kernel("gaussian")(before, 0.01).mean())
        rate = float((layer.weight == 0).double().mean())
        assert abs(rate - p) <= 5 * math.sqrt(p * (1 - p) / before.numel())
        assert torch.all((layer.weight == 0) | (layer.weight == before))


def test_fast_path_unknown_kernel_draws_per_weight(cauchy):
    layer, w0 = grid_layer([0.01, 0.02], 20_000)
    StochasticWeightPruner(layer, kernel=cauchy, sigma=0.01, seed=1, fast=True).step()
    w = layer.weight.detach().flatten()
    for v, p in ((0.01, 0.5), (0.02, 0.2)):
        rate = float((w[w0 == v] == 0).float().mean())
        assert abs(rate - p) <= 5 * math.sqrt(p * (1 - p) / 20_000)


# ---------------------------------------------------------------- the run config


def test_pruner_fast_in_the_config_keeps_cached_hashes():
    from prunedyn.models import MLP
    from prunedyn.run.config import LATER_FIELDS, config_hash, load_config
    from prunedyn.run.experiments import make_pruner

    assert "pruner.fast" in LATER_FIELDS
    cfg = load_config("mlp-mnist")
    assert cfg.pruner.fast is False
    assert config_hash(cfg) == "489afd58ef3c"  # the hash before the field existed
    fast = load_config("mlp-mnist", ["pruner.fast=true", "model.hidden=[8]"])
    assert config_hash(fast) != config_hash(load_config("mlp-mnist", ["model.hidden=[8]"]))
    pruner = make_pruner(fast, MLP(784, [8], 10), steps_per_epoch=10)
    assert isinstance(pruner, StochasticWeightPruner) and pruner.fast
    assert not make_pruner(load_config("mlp-mnist", ["model.hidden=[8]"]), MLP(784, [8], 10), steps_per_epoch=10).fast
