"""prunedyn: stochastic weight pruning, L1/L2 regularization and node death in PyTorch."""
__version__ = "0.1.0"

from .kernels import KERNELS, get_kernel, register_kernel  # noqa: E402
from .pruning import MagnitudePruner, StochasticWeightPruner, prunable_weights, weight_sparsity  # noqa: E402
from .regularization import make_regularizer  # noqa: E402
from .nodes import model_nodes, node_layers  # noqa: E402
from .surgery import compact  # noqa: E402

__all__ = [
    "KERNELS",
    "get_kernel",
    "register_kernel",
    "StochasticWeightPruner",
    "MagnitudePruner",
    "prunable_weights",
    "weight_sparsity",
    "make_regularizer",
    "model_nodes",
    "node_layers",
    "compact",
]
