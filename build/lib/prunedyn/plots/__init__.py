"""Figures of the study. Each function takes tidy tables (pandas) or tensors and
returns a matplotlib Figure; :mod:`prunedyn.plots.slider` turns a series of
figures into a slider that works in the static HTML book without a kernel.
"""
from prunedyn.plots.slider import StaticSlider, figure_png, static_slider  # noqa: F401
