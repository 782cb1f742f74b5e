"""Interoperability with ``torch.nn.utils.prune``: masks in, masks out, and its pruners as ours.

prunedyn keeps pruned weights as exact zeros in plain modules (so checkpoints,
node accounting and compaction need nothing special); ``torch.nn.utils.prune``
keeps ``weight_orig`` and a ``weight_mask`` buffer. These functions convert
between the two:

- :func:`export_masks`: ``{module name: (weight != 0)}`` of any model;
- :func:`import_masks`: apply such masks with ``prune.custom_from_mask`` and
  bake them in with ``prune.remove``;
- :func:`masks_from_torch_prune`: the ``weight_mask`` buffers of a model pruned
  by torch;
- :class:`TorchL1Unstructured`: ``prune.l1_unstructured`` as a prunedyn pruner
  (one-shot at ``start_step``, masks kept during fine-tuning);

The check of a model's node wiring against torch-pruning's traced graph is
:func:`prunedyn.structure.wiring.wiring_mismatches`.
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn
from torch.nn.utils import prune

from prunedyn.core.pruning import WeightPruner, register_pruner
from prunedyn.structure.layers import PRUNABLE_TYPES


def _prunable_modules(model: nn.Module) -> Dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)}


def export_masks(model: nn.Module) -> Dict[str, torch.Tensor]:
    """``{module name: bool mask}``, True where the weight is non-zero."""
    return {n: (m.weight.detach() != 0) for n, m in _prunable_modules(model).items()}


def masks_from_torch_prune(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The ``weight_mask`` buffers that ``torch.nn.utils.prune`` attached, as bool masks."""
    return {
        n: m.weight_mask.detach().bool()
        for n, m in _prunable_modules(model).items()
        if hasattr(m, "weight_mask")
    }


@torch.no_grad()
def import_masks(model: nn.Module, masks: Dict[str, torch.Tensor]) -> None:
    """Zero the weights outside ``masks`` through ``prune.custom_from_mask``, then bake them in."""
    modules = _prunable_modules(model)
    unknown = set(masks) - set(modules)
    if unknown:
        raise KeyError(f"no prunable module named {sorted(unknown)[0]!r}; modules: {', '.join(modules)}")
    for name, mask in masks.items():
        m = modules[name]
        if mask.shape != m.weight.shape:
            raise ValueError(f"mask for {name} has shape {tuple(mask.shape)}, weight has {tuple(m.weight.shape)}")
        prune.custom_from_mask(m, "weight", mask.to(m.weight.device))
        prune.remove(m, "weight")


@register_pruner("torch_l1")
class TorchL1Unstructured(WeightPruner):
    """``torch.nn.utils.prune.l1_unstructured`` per layer at ``start_step``, masks kept afterwards."""

    @classmethod
    def from_config(cls, p, model, *, ramp_steps, start_step, seed, last_step):
        return cls(model, sparsity=p.sparsity, start_step=start_step)

    def __init__(self, model: nn.Module, *, sparsity: float = 0.9, start_step: int = 0):
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
        super().__init__(model, sticky=True, start_step=start_step)
        self.modules = _prunable_modules(model)
        self.sparsity = float(sparsity)
        self.applied = False

    def _prune(self, t: int) -> None:
        if self.applied:
            return
        for name, m in self.modules.items():
            prune.l1_unstructured(m, "weight", amount=self.sparsity)
            self.masks[name] &= m.weight_mask.bool()
            prune.remove(m, "weight")
        self.applied = True

    def state_dict(self) -> dict:
        return {**super().state_dict(), "applied": self.applied}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.applied = bool(state["applied"])
