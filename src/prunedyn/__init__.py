"""prunedyn: stochastic weight pruning, L1/L2 regularization and node death in PyTorch."""
__version__ = "0.1.0"

from prunedyn.core.hooks import attach  # noqa: E402
from prunedyn.core.kernels import KERNELS, get_kernel, register_kernel  # noqa: E402
from prunedyn.core.baseline_pruners import MagnitudePruner  # noqa: E402
from prunedyn.core.pruning import (  # noqa: E402
    StochasticWeightPruner,
    prunable_weights,
    weight_sparsity,
)
from prunedyn.core.regularization import make_regularizer  # noqa: E402
from prunedyn.structure.nodes import model_nodes, node_layers  # noqa: E402
from prunedyn.structure.surgery import compact, load_compact, save_compact  # noqa: E402

__all__ = ["attach", "KERNELS", "get_kernel", "register_kernel", "StochasticWeightPruner", "MagnitudePruner",
           "prunable_weights", "weight_sparsity", "make_regularizer", "model_nodes", "node_layers", "compact",
           "save_compact", "load_compact"]
