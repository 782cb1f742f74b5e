"""Sigma schedules: constant, linear warm-up and cubic ramp."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prunedyn.core.schedules import SCHEDULES, get_schedule

SETTINGS = settings(max_examples=50, deadline=None)
NAMES = ("constant", "linear", "cubic")


def test_registered():
    for name in NAMES:
        assert get_schedule(name) is SCHEDULES[name]


def test_unknown_schedule_names_allowed():
    with pytest.raises(KeyError) as info:
        get_schedule("exponential")
    msg = str(info.value)
    assert "exponential" in msg
    for name in NAMES:
        assert name in msg


@pytest.mark.parametrize("t", [0, 1, 50, 100, 101, 10_000])
def test_constant(t):
    assert get_schedule("constant")(t, 100) == 1.0
    assert get_schedule("constant")(t, 0) == 1.0


def test_linear_values():
    f = get_schedule("linear")
    assert f(0, 100) == 0.0
    assert f(25, 100) == pytest.approx(0.25)
    assert f(50, 100) == pytest.approx(0.5)
    assert f(100, 100) == 1.0
    assert f(101, 100) == 1.0
    assert f(10_000, 100) == 1.0
    # odd T: T/2 is not a step, the value is still t/T
    assert f(3, 7) == pytest.approx(3 / 7)


def test_cubic_values():
    f = get_schedule("cubic")
    assert f(0, 100) == 0.0
    assert f(50, 100) == pytest.approx(1 - 0.5**3)  # 0.875: fast start
    assert f(25, 100) == pytest.approx(1 - 0.75**3)
    assert f(100, 100) == 1.0
    assert f(150, 100) == 1.0


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("t", [0, 1, 5, 1000])
def test_zero_ramp_is_full_sigma(name, t):
    assert get_schedule(name)(t, 0) == 1.0


@pytest.mark.parametrize("name", NAMES)
def test_negative_step_clamped(name):
    f = get_schedule(name)
    assert f(-5, 10) == f(0, 10)


def test_cubic_above_linear_during_ramp():
    lin, cub = get_schedule("linear"), get_schedule("cubic")
    for t in range(1, 100):
        assert cub(t, 100) > lin(t, 100)


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(t=st.integers(min_value=0, max_value=10**6), ramp=st.integers(min_value=0, max_value=10**5))
def test_in_unit_interval(name, t, ramp):
    v = get_schedule(name)(t, ramp)
    assert 0.0 <= v <= 1.0
    if t >= ramp:
        assert v == 1.0


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(
    t=st.integers(min_value=0, max_value=10**5),
    dt=st.integers(min_value=0, max_value=10**5),
    ramp=st.integers(min_value=0, max_value=10**4),
)
def test_non_decreasing(name, t, dt, ramp):
    f = get_schedule(name)
    assert f(t + dt, ramp) >= f(t, ramp)
