"""A module's train/eval mode, set for a block and restored after it.

Measurements (FLOPs, constants read off an example, saliency, predictions)
need eval mode -- BatchNorm on its running statistics, no dropout -- but must
not leave a model that was training in eval mode, or the other way round.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model.eval()`` inside the block, the previous mode (of the whole model) restored after."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)
