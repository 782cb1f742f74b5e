"""Reading finished runs: dynamics, trade-offs, speed and saliency (records in, tables out).

- :mod:`~prunedyn.analysis.dependency`: node death dynamics and in/out weight dependency;
- :mod:`~prunedyn.analysis.tradeoffs`: sparsity-accuracy trade-offs, Pareto fronts, seed aggregation;
- :mod:`~prunedyn.analysis.latency`: dense, masked, sparse and compact inference times;
- :mod:`~prunedyn.analysis.saliency`: occlusion and gradient saliency maps;
- :mod:`~prunedyn.analysis.conv_report`: per-layer filter death and BatchNorm balance of conv nets.
"""
