"""The node wiring of every model agrees with torch-pruning's traced dependency graph."""
import pytest
import torch
from torch import nn

from prunedyn.structure.wiring import wiring_mismatches
from prunedyn.models import MLP, VGG, CXRNet, UNet
from prunedyn.structure.nodes import Consumer, NodeLayer

MODELS = {
    "mlp": (lambda: MLP(784, [30, 20], 10), (2, 1, 28, 28)),
    "vgg16": (lambda: VGG(width=0.125), (2, 3, 32, 32)),
    "unet": (lambda: UNet(in_channels=1, num_classes=3, width=0.125), (2, 1, 64, 64)),
    "cxr_cnn": (lambda: CXRNet(in_channels=1, num_classes=3, width=0.25), (2, 1, 64, 64)),
}


@pytest.mark.parametrize("name", MODELS)
def test_wiring_agrees_with_torch_pruning(name):
    build, shape = MODELS[name]
    torch.manual_seed(0)
    assert wiring_mismatches(build(), torch.randn(*shape)) == []


class _Swapped(nn.Module):
    """A U-Net-like concat whose hand-written wiring gets the offsets wrong."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 3, 3, padding=1)
        self.c = nn.Conv2d(7, 2, 1)

    def forward(self, x):
        a = torch.relu(self.a(x))
        b = torch.relu(self.b(a))
        return self.c(torch.cat([a, b], 1))

    def node_layers(self):
        return [
            NodeLayer("a", self.a, [Consumer(self.b), Consumer(self.c, offset=3)]),  # should be offset 0
            NodeLayer("b", self.b, [Consumer(self.c, offset=0)]),  # should be offset 4
        ]


def test_a_wrong_offset_is_reported():
    problems = wiring_mismatches(_Swapped(), torch.randn(1, 1, 8, 8))
    assert any(p.startswith("a[0]") for p in problems) and any(p.startswith("b[0]") for p in problems)
