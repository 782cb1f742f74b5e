"""Saving and loading a compact model as plain tensors.

A compact model (:func:`prunedyn.structure.surgery.compact`) has the architecture it was built
with, at smaller widths. :func:`save_compact` writes its ``state_dict`` (and the widths);
:func:`load_compact` resizes a freshly built network of that architecture to the saved shapes
(:func:`resized_like`) and loads it, reading the file with ``weights_only=True``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import torch
from torch import nn


class CompactionError(RuntimeError):
    """Compaction changed the model's outputs beyond float rounding (a structure it does not handle),
    or a compact state does not fit the architecture it is loaded into."""


def _sync_sizes(module: nn.Module) -> None:
    """Set a resized layer's size attributes from its parameters."""
    w = module._parameters.get("weight")
    if isinstance(module, nn.Linear):
        module.out_features, module.in_features = w.shape[0], w.shape[1]
    elif isinstance(module, nn.modules.conv._ConvTransposeNd):
        module.in_channels, module.out_channels = w.shape[0], w.shape[1] * module.groups
    elif isinstance(module, nn.modules.conv._ConvNd):
        if module.groups > 1 and module.groups == module.in_channels == module.out_channels:  # depthwise
            module.in_channels = module.out_channels = module.groups = w.shape[0]
        else:
            module.out_channels, module.in_channels = w.shape[0], w.shape[1] * module.groups
    elif isinstance(module, nn.modules.batchnorm._NormBase):
        ref = w if w is not None else module._buffers.get("running_mean")
        module.num_features = ref.shape[0]
    else:
        raise CompactionError(f"{type(module).__name__}: its parameter shapes changed and prunedyn does not "
                              "know how to resize this kind of layer")


@torch.no_grad()
def resized_like(model: nn.Module, state: Dict[str, torch.Tensor]) -> nn.Module:
    """``model`` (built afresh with the architecture the state came from) resized to the shapes of
    ``state`` (a compact model's ``state_dict()``) and loaded from it, in place; returns ``model``.

    Each Linear, convolution and BatchNorm takes the widths of its tensors in ``state`` (a bias that
    compaction added to a bias-free layer is added); any other layer whose shapes differ, and any
    key missing or left over, raises :class:`CompactionError` naming it."""
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        resized = False
        for n, p in list(module._parameters.items()):
            key = prefix + n
            if key in state and (p is None or p.shape != state[key].shape):
                resized |= p is not None  # a bias added by compaction changes no width
                requires_grad = True if p is None else p.requires_grad
                module._parameters[n] = nn.Parameter(torch.empty_like(state[key]), requires_grad=requires_grad)
        for n, b in list(module._buffers.items()):
            key = prefix + n
            if b is not None and key in state and b.shape != state[key].shape:
                resized = True
                module._buffers[n] = torch.empty_like(state[key])
        if resized:
            _sync_sizes(module)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = " ".join(str(e).split())[:200]
        raise CompactionError(f"the compact state does not fit this architecture ({first})") from None
    return model


#: What :func:`save_compact` writes (a version, so a later format can be told apart)
COMPACT_FORMAT = "prunedyn-compact-1"


def save_compact(model: nn.Module, path, report=None) -> None:
    """Write a compact model as plain tensors (``state_dict`` and, with ``report``, the widths), atomically,
    so that :func:`load_compact` reads it with ``torch.load(weights_only=True)``: no code in the file."""
    from prunedyn.atomic import atomic_torch_save

    blob = {"format": COMPACT_FORMAT, "state_dict": model.state_dict(),
            "widths": dict(report.widths_after) if report is not None else {}}
    atomic_torch_save(blob, Path(path))


def load_compact(path, model: nn.Module, map_location="cpu") -> nn.Module:
    """The compact model saved by :func:`save_compact` at ``path``: ``model`` (a fresh network of the
    architecture it was compacted from) resized to the saved widths and loaded, in eval mode.

    Raises :class:`prunedyn.atomic.CheckpointError` for a file that is not plain tensors (one that
    would run code included) and :class:`CompactionError` when it does not fit ``model``."""
    from prunedyn.atomic import CheckpointError, load_checkpoint

    blob = load_checkpoint(Path(path), map_location=map_location)
    if not isinstance(blob, dict) or blob.get("format") != COMPACT_FORMAT or not isinstance(blob.get("state_dict"), dict):
        raise CheckpointError(f"{path}: not a compact model written by prunedyn (format {COMPACT_FORMAT})")
    return resized_like(model, blob["state_dict"]).eval()
