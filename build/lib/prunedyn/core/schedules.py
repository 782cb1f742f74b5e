"""Schedules for the pruning scale sigma over optimiser steps.

Each schedule returns a factor ``f(t)`` in ``[0, 1]`` that multiplies the
configured sigma at optimiser step ``t`` (0-based), with ramp length ``T``
steps (``T = 0`` means the full sigma from the first step):

- ``constant``: f(t) = 1
- ``linear``:   f(t) = min(1, t / T)                      (linear warm-up)
- ``cubic``:    f(t) = 1 - (1 - min(1, t / T))^3          (fast start, gentle
  finish: the shape of Zhu & Gupta's gradual-pruning schedule)
"""
from __future__ import annotations

from typing import Callable

from prunedyn.core.registry import Registry

Schedule = Callable[[int, int], float]

SCHEDULES: Registry[Schedule] = Registry("schedule")
register_schedule = SCHEDULES.register
get_schedule = SCHEDULES.get


def _progress(step: int, ramp_steps: int) -> float:
    if ramp_steps <= 0:
        return 1.0
    return min(1.0, max(0, step) / ramp_steps)


@register_schedule("constant")
def constant(step: int, ramp_steps: int) -> float:
    return 1.0


@register_schedule("linear")
def linear(step: int, ramp_steps: int) -> float:
    return _progress(step, ramp_steps)


@register_schedule("cubic")
def cubic(step: int, ramp_steps: int) -> float:
    return 1.0 - (1.0 - _progress(step, ramp_steps)) ** 3
