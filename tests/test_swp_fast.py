"""The faster SWP step: the exact stream's decisions bit for bit.

- :func:`prunedyn.core.kernels.fast_decision` (``u < clamped_kappa``) takes the
  same draws ``u`` as the reference ``u < kappa(w)`` and must give the same
  booleans for every ``u``;
- the default (exact-stream) pruner must zero exactly the weights the
  previous implementation zeroed, step after step, whatever the options.
"""
import copy
import math

import pytest
import torch
from torch import nn

from prunedyn.core import kernels
from prunedyn.core import pruning
from prunedyn.core.kernels import KERNELS, clamped_kappa, fast_decision, get_kernel, prune_decision, register_kernel
from prunedyn.core.pruning import StochasticWeightPruner, prunable_weights


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
        u_all = torch.rand(sum(w.numel() for _, w, _ in todo), generator=pruner.stream.generator, dtype=first.dtype)
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
    assert torch.equal(new.stream.generator.get_state(), old.stream.generator.get_state())
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


# ---------------------------------------------------------------- the run config


def test_the_removed_fast_path_keeps_cached_hashes_and_refuses_to_be_asked_for():
    """``pruner.fast`` (another random stream for the CPU) is gone: the counter stream serves that
    need faster. Configs written before keep their hashes; asking for it says what to use instead."""
    from prunedyn.run.config import ConfigError, config_hash, from_dict, load_config

    cfg = load_config("mlp-mnist", ["model.hidden=[8]"])
    old = cfg.to_dict()
    old["pruner"]["fast"] = False  # a config.yaml written while the field existed
    assert config_hash(from_dict(old)) == config_hash(cfg)
    old["pruner"]["fast"] = True
    with pytest.raises(ConfigError, match="pruner.stream=counter"):
        from_dict(old)
    with pytest.raises(ConfigError, match="pruner.fast"):
        load_config("mlp-mnist", ["pruner.fast=true"])
