"""Pruning kernels: probabilities in [0, 1], monotone in |w|, symmetric, exact formulas, registry."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prunedyn.core import kernels
from prunedyn.core.kernels import KERNELS, expected_pruning_rate, get_kernel, register_kernel

BUILTIN = ("gaussian", "laplace", "hard")
SETTINGS = settings(max_examples=50, deadline=None)

finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=32)
sigmas = st.floats(min_value=1e-4, max_value=10.0, allow_nan=False, allow_infinity=False, allow_subnormal=False)
weight_lists = st.lists(finite, min_size=1, max_size=64)


def test_builtin_kernels_are_registered():
    for name in BUILTIN:
        assert name in KERNELS
        assert get_kernel(name) is KERNELS[name]


@pytest.mark.parametrize("name", BUILTIN)
@SETTINGS
@given(values=weight_lists, sigma=sigmas)
def test_probabilities_in_unit_interval_and_same_shape(name, values, sigma):
    w = torch.tensor(values, dtype=torch.float32)
    for shaped in (w, w.reshape(1, -1, 1)):
        p = get_kernel(name)(shaped, sigma)
        assert p.shape == shaped.shape
        assert p.dtype == shaped.dtype
        assert torch.isfinite(p).all()
        assert (p >= 0).all() and (p <= 1).all()


@pytest.mark.parametrize("name", BUILTIN)
@SETTINGS
@given(values=weight_lists, sigma=sigmas)
def test_non_increasing_in_magnitude(name, values, sigma):
    w = torch.tensor(values, dtype=torch.float64)
    order = torch.argsort(w.abs())
    p = get_kernel(name)(w[order], sigma)
    assert (p[1:] <= p[:-1]).all(), p


@pytest.mark.parametrize("name", BUILTIN)
@SETTINGS
@given(values=weight_lists, sigma=sigmas)
def test_symmetric_in_sign(name, values, sigma):
    w = torch.tensor(values, dtype=torch.float32)
    k = get_kernel(name)
    assert torch.equal(k(w, sigma), k(-w, sigma))


@pytest.mark.parametrize("name", ["gaussian", "laplace"])
@SETTINGS
@given(sigma=sigmas)
def test_one_at_zero(name, sigma):
    p = get_kernel(name)(torch.zeros(5), sigma)
    assert torch.equal(p, torch.ones(5))


def test_hard_is_one_at_zero_and_zero_far_away():
    p = get_kernel("hard")(torch.tensor([0.0, 0.5, 2.0]), 1.0)
    assert p.tolist() == [1.0, 1.0, 0.0]


@SETTINGS
@given(values=weight_lists, sigma=sigmas)
def test_gaussian_formula(values, sigma):
    w = torch.tensor(values, dtype=torch.float64)
    expected = torch.tensor([math.exp(-(v * v) / (2 * sigma * sigma)) for v in values], dtype=torch.float64)
    torch.testing.assert_close(get_kernel("gaussian")(w, sigma), expected, rtol=1e-9, atol=1e-300)


@SETTINGS
@given(values=weight_lists, sigma=sigmas)
def test_laplace_formula(values, sigma):
    w = torch.tensor(values, dtype=torch.float64)
    expected = torch.tensor([math.exp(-abs(v) / sigma) for v in values], dtype=torch.float64)
    torch.testing.assert_close(get_kernel("laplace")(w, sigma), expected, rtol=1e-9, atol=1e-300)


@SETTINGS
@given(values=weight_lists, sigma=sigmas)
def test_hard_formula(values, sigma):
    w = torch.tensor(values, dtype=torch.float64)
    expected = [1.0 if abs(v) < sigma else 0.0 for v in values]
    assert get_kernel("hard")(w, sigma).tolist() == expected


def test_specific_values():
    w = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64)
    g = get_kernel("gaussian")(w, 2.0)
    torch.testing.assert_close(g, torch.tensor([1.0, math.exp(-1 / 8), math.exp(-4 / 8)], dtype=torch.float64))
    lp = get_kernel("laplace")(w, 2.0)
    torch.testing.assert_close(lp, torch.tensor([1.0, math.exp(-0.5), math.exp(-1.0)], dtype=torch.float64))
    # the hard threshold is strict: |w| == sigma is kept
    h = get_kernel("hard")(torch.tensor([0.999, 1.0, 1.001, -1.0]), 1.0)
    assert h.tolist() == [1.0, 0.0, 0.0, 0.0]


def test_unknown_kernel_raises_key_error_naming_allowed():
    with pytest.raises(KeyError) as info:
        get_kernel("cauchyish")
    msg = str(info.value)
    assert "cauchyish" in msg
    for name in BUILTIN:
        assert name in msg


@pytest.fixture
def cleanup_kernels():
    before = dict(KERNELS)
    yield
    for name in list(KERNELS):
        if name not in before:
            del KERNELS[name]
    assert KERNELS == before


def test_register_kernel_adds_usable_kernel(cleanup_kernels):
    @register_kernel("test_cauchy")
    def cauchy(w, sigma):
        return 1.0 / (1.0 + (w / sigma) ** 2)

    assert cauchy(torch.tensor([1.0]), 1.0).item() == 0.5  # decorator returns the function
    assert get_kernel("test_cauchy") is cauchy
    w = torch.tensor([0.0, 1.0, 3.0])
    torch.testing.assert_close(get_kernel("test_cauchy")(w, 1.0), torch.tensor([1.0, 0.5, 0.1]))
    assert expected_pruning_rate(w, "test_cauchy", 1.0) == pytest.approx((1.0 + 0.5 + 0.1) / 3)
    # the new kernel is named among the allowed ones
    with pytest.raises(KeyError, match="test_cauchy"):
        get_kernel("nope")
    # and a pruner accepts it by name
    from prunedyn.core.pruning import StochasticWeightPruner

    model = torch.nn.Linear(3, 2)
    pruner = StochasticWeightPruner(model, kernel="test_cauchy", sigma=1.0)
    assert pruner.kernel is cauchy


def test_register_kernel_refuses_duplicate(cleanup_kernels):
    original = KERNELS["gaussian"]
    with pytest.raises(ValueError, match="gaussian"):

        @register_kernel("gaussian")
        def other(w, sigma):  # pragma: no cover - never registered
            return torch.zeros_like(w)

    assert KERNELS["gaussian"] is original

    @register_kernel("test_dup")
    def first(w, sigma):
        return torch.ones_like(w)

    with pytest.raises(ValueError, match="test_dup"):

        @register_kernel("test_dup")
        def second(w, sigma):  # pragma: no cover
            return torch.zeros_like(w)

    assert KERNELS["test_dup"] is first


def test_expected_pruning_rate():
    w = torch.tensor([0.0, 1.0, 2.0, -3.0])
    assert expected_pruning_rate(w, "hard", 1.5) == pytest.approx(0.5)
    assert expected_pruning_rate(w, "hard", 10.0) == pytest.approx(1.0)
    assert expected_pruning_rate(w, "laplace", 1.0) == pytest.approx(
        (1 + math.exp(-1) + math.exp(-2) + math.exp(-3)) / 4, rel=1e-6
    )
    assert expected_pruning_rate(w, "gaussian", 1.0) == pytest.approx(
        (1 + math.exp(-0.5) + math.exp(-2) + math.exp(-4.5)) / 4, rel=1e-6
    )
    assert isinstance(expected_pruning_rate(w, "gaussian", 1.0), float)
    with pytest.raises(KeyError):
        expected_pruning_rate(w, "nope", 1.0)


@SETTINGS
@given(values=weight_lists, sigma=sigmas)
def test_expected_pruning_rate_is_mean_of_kernel(values, sigma):
    w = torch.tensor(values, dtype=torch.float64)
    for name in BUILTIN:
        rate = expected_pruning_rate(w, name, sigma)
        assert 0.0 <= rate <= 1.0
        assert rate == pytest.approx(float(get_kernel(name)(w, sigma).mean()))


def test_module_kernels_are_the_registry_entries():
    assert KERNELS["gaussian"] is kernels.gaussian
    assert KERNELS["laplace"] is kernels.laplace
    assert KERNELS["hard"] is kernels.hard
