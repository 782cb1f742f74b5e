"""The method: pruning kernels and their schedules, weight pruners, regularizers.

- :mod:`~prunedyn.core.kernels`: ``kappa(w; sigma)``, the probability that SWP zeroes ``w``;
- :mod:`~prunedyn.core.schedules`: how ``sigma`` (or a target sparsity) moves over training;
- :mod:`~prunedyn.core.pruning`: the pruners' registry and SWP, applied after an optimiser step;
- :mod:`~prunedyn.core.counter`, :mod:`~prunedyn.core.fused`: SWP's counter stream and its kernels;
- :mod:`~prunedyn.core.baseline_pruners`: magnitude, random, slimming, targeted dropout;
- :mod:`~prunedyn.core.regularization`: L1, coupled and decoupled L2, added to the gradient;
- :mod:`~prunedyn.core.interop`: masks to and from ``torch.nn.utils.prune``.
"""
# every pruner registers itself on import; the torch adapter lives apart from the core pruners
from prunedyn.core import baseline_pruners as _baselines  # noqa: E402,F401 (registers them)
from prunedyn.core import interop as _interop  # noqa: E402,F401
