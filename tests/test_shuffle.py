"""ShuffleNet's channel shuffle (view / transpose / view through a 5-D tensor), on torchvision's own
InvertedResidual blocks: the channels inside a block's branches are nodes and compact exactly; the
block outputs, which the shuffle interleaves, are kept whole and named in one warning. A shuffle the
trace cannot read is refused by name (never guessed)."""
import warnings

import pytest
import torch
from torch import nn
from torchvision.models.shufflenetv2 import InvertedResidual

from prunedyn import compact, model_nodes
from prunedyn.structure.traced import KeptChannelsWarning, WiringError


class FlatShuffle(InvertedResidual):
    """A stride-1 block whose shuffle goes through a 4-D tensor (N, 2, C / 2, H * W): not recognised."""

    def forward(self, x):
        x1, x2 = x.chunk(2, dim=1)
        out = torch.cat((x1, self.branch2(x2)), dim=1)
        b, c, h, w = out.shape
        return out.reshape(b, 2, c // 2, h * w).transpose(1, 2).reshape(b, c, h, w)


def _tiny_shufflenet(blocks=((InvertedResidual, 8, 16, 2), (InvertedResidual, 16, 16, 1))):
    """Stem (8) -> the blocks (by default a stride-2 block to 16 and a stride-1 block) -> conv (12) ->
    head; a third of every BatchNorm's scales and shifts zeroed."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), *[b(*a) for b, *a in blocks],
                      nn.Conv2d(blocks[-1][2], 12, 1), nn.BatchNorm2d(12), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 3)).eval()
    with torch.no_grad():
        for bn in [m for m in m.modules() if isinstance(m, nn.BatchNorm2d)]:
            bn.weight[: bn.num_features // 3], bn.bias[: bn.num_features // 3] = 0, 0
    return m, torch.randn(2, 3, 16, 16)


def test_branch_channels_compact_exactly_and_the_shuffled_block_outputs_are_kept_whole():
    """Nodes: the stem (tied to the first block's depthwise branch1.0), each block's branch2.0 (tied
    to its depthwise conv, read by branch2.5) and the last conv; 2, 2, 2 and 4 of them dead. The
    block outputs (branch1.2, branch2.5: concatenated and shuffled) keep their 8 channels each."""
    model, x = _tiny_shufflenet()
    with pytest.warns(KeptChannelsWarning, match=r"not nodes, .*: 3\.branch1\.2 \(a view \(2, 16, 8, 8\) -> "
                                                 r"\(2, 2, 8, 8, 8\) moves them across dims \(as a channel shuffle does\)"):
        stats = model_nodes(model, x)
    assert [(s.name, s.size, int(s.dead.sum())) for s in stats] == [
        ("0", 8, 2), ("3.branch2.0", 8, 2), ("4.branch2.0", 8, 2), ("5", 12, 4)]
    with pytest.warns(KeptChannelsWarning):
        small, report = compact(model, x)
    mods = dict(small.named_modules())
    assert [mods[n].out_channels for n in ("3.branch1.0", "3.branch1.2", "3.branch2.3", "3.branch2.5",
                                           "4.branch2.3", "4.branch2.5", "5")] == [6, 8, 6, 8, 6, 8, 8]
    # stem 2 x (27 + 1 + 2); depthwise branch1.0 2 x (9 + 2); branch1.2's columns 2 x 8; block 3's branch2.0
    # 8 x 8 - 6 x 6 (the stem's nodes and its own) + 2 x (2 + 9 + 2 + 8) for its BatchNorm, depthwise conv,
    # its BatchNorm and branch2.5's columns; block 4's 2 x (8 + 2 + 9 + 2 + 8); the last conv 4 x (16 + 1 + 2)
    # and the head's 4 x 3 columns
    assert report.params_before - report.params_after == 60 + 22 + 16 + 70 + 58 + 88 == 314
    assert report.rel_diff <= 1e-6
    with torch.no_grad():
        assert torch.allclose(small(x), model(x), rtol=1e-5, atol=1e-6)


def test_a_shuffle_the_trace_cannot_read_is_refused_naming_the_layer():
    """A shuffle through (N, 2, C / 2, H * W) is not recognised and torch-pruning maps it wrongly (4 of
    the stem's 8 channels in one group): a one-line refusal naming the stem (it once crashed instead)."""
    model, x = _tiny_shufflenet([(FlatShuffle, 8, 8, 1)])
    with warnings.catch_warnings(), pytest.raises(WiringError) as err:
        warnings.simplefilter("ignore")
        compact(model, x)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("0: 4 of its 8 output channels traced into one group"), msg
