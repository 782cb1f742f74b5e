"""The README's lines over torchvision's zoo: exact compaction with fewer parameters, or a clear
one-line refusal naming the first layer prunedyn cannot handle (issue: any model, or a clear no; none
of the zoo below is refused today: tests/test_shuffle.py refuses a channel shuffle the trace cannot read)."""
import warnings

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from prunedyn import compact, model_nodes
from prunedyn.structure.traced import KeptChannelsWarning, WiringError

EXACT = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "squeezenet1_1",
         "googlenet", "mnasnet0_5", "convnext_tiny", "regnet_x_400mf", "resnext50_32x4d", "densenet121",
         "shufflenet_v2_x0_5"]


def _with_dead_nodes(name):
    """The architecture at random init with a third of every BatchNorm's scales and shifts zeroed
    (a third of every other producer's output rows where it has no BatchNorm)."""
    torch.manual_seed(0)
    kwargs = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    model = getattr(tvm, name)(num_classes=10, **kwargs).eval()
    with torch.no_grad():
        norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        for m in norms:
            m.weight[: m.num_features // 3] = 0
            m.bias[: m.num_features // 3] = 0
        if not norms:
            for i, m in enumerate([m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))][:-1]):
                if i % 2 == 0:
                    m.weight[: m.weight.shape[0] // 3] = 0
                    if m.bias is not None:
                        m.bias[: m.weight.shape[0] // 3] = 0
    return model


@pytest.mark.slow
@pytest.mark.parametrize("name", EXACT)
def test_supported_architectures_compact_exactly_with_fewer_parameters(name):
    model, x = _with_dead_nodes(name), torch.randn(2, 3, 64, 64)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Torch-Pruning.*")
        stats = model_nodes(model, x)
        small, report = compact(model, x)
    assert sum(int(s.dead.sum()) for s in stats) > 0
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    assert report.rel_diff <= 1e-5
    with torch.no_grad():
        assert torch.allclose(small(x), model(x), rtol=1e-4, atol=1e-5 * model(x).abs().max())


#: architecture -> (the BatchNorm before one grouped conv, the grouped conv, its BatchNorm, the node layers
#: of its inputs and outputs, the parameters compaction removes)
GROUPED = {
    "regnet_x_400mf": ("trunk_output.block1.block1-0.f.a.1", "trunk_output.block1.block1-0.f.b.0",
                       "trunk_output.block1.block1-0.f.b.1", "trunk_output.block1.block1-0.f.a.0",
                       "trunk_output.block1.block1-0.f.b.0", 694),
    "resnext50_32x4d": ("layer1.0.bn1", "layer1.0.conv2", "layer1.0.bn2", "layer1.0.conv1", "layer1.0.conv2", 12_384),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(GROUPED))
def test_grouped_convolutions_lose_the_same_number_of_channels_from_every_group(name):
    """One grouped conv (RegNet: 2 groups of 16 channels; ResNeXt: 32 groups of 4) with one dead input
    channel in every group and a second in group 0 (uneven: 1 goes from each group, 1 stays, said in
    one warning), and one dead output channel in every group (even: all go). Both sides are sliced
    consistently (producer, its BatchNorm, the grouped conv's rows and per-group columns, its
    BatchNorm, the next conv's inputs): the exact parameter count and the same outputs."""
    bn_in, conv, bn_out, layer_in, layer_out, removed = GROUPED[name]
    torch.manual_seed(0)
    model, x = getattr(tvm, name)(num_classes=10).eval(), torch.randn(2, 3, 64, 64)
    mods = dict(model.named_modules())
    g = mods[conv].groups
    per_in, per_out = mods[conv].in_channels // g, mods[conv].out_channels // g
    with torch.no_grad():
        for bn, dead in ((bn_in, [q * per_in for q in range(g)] + [1]), (bn_out, [q * per_out for q in range(g)])):
            mods[bn].weight[dead], mods[bn].bias[dead] = 0, 0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Torch-Pruning.*")
        stats = {s.name: int(s.dead.sum()) for s in model_nodes(model, x)}
        with pytest.warns(KeptChannelsWarning, match=rf"^1 dead channel\(s\) stay .*: {layer_in} \(1\)$"):
            small, report = compact(model, x)
    assert stats[layer_in] == g + 1 and stats[layer_out] == g
    assert {k: v for k, v in report.widths_after.items() if v != report.widths_before[k]} == {
        layer_in: g * (per_in - 1), layer_out: g * (per_out - 1)}
    assert {k: v for k, v in report.kept_for_groups.items() if v} == {layer_in: 1}
    grouped = dict(small.named_modules())[conv]
    assert (grouped.groups, grouped.in_channels, grouped.out_channels) == (g, g * (per_in - 1), g * (per_out - 1))
    assert report.params_after == report.params_before - removed
    assert report.rel_diff <= 1e-5
    with torch.no_grad():
        assert torch.allclose(small(x), model(x), rtol=1e-4, atol=1e-5 * model(x).abs().max())


def test_a_trace_that_runs_too_long_is_refused_in_time(monkeypatch):
    import time

    import torch_pruning as tp

    from prunedyn.structure import traced

    slow = tp.DependencyGraph.build_dependency

    def hang(self, *a, **k):
        time.sleep(30)
        return slow(self, *a, **k)

    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", hang)
    monkeypatch.setattr(traced, "TRACE_SECONDS", 1.0)
    model = tvm.resnet18(num_classes=10).eval()
    tic = time.perf_counter()
    with pytest.raises(WiringError, match="took over 1 s"):
        model_nodes(model, torch.randn(1, 3, 32, 32))
    assert time.perf_counter() - tic < 10


@pytest.mark.parametrize("norm, name", [(lambda: nn.GroupNorm(1, 16, affine=False), "GroupNorm"),
                                        (lambda: nn.GroupNorm(4, 16), "GroupNorm"),
                                        (lambda: nn.LayerNorm([16, 8, 8], elementwise_affine=False), "LayerNorm")],
                         ids=["GroupNorm(1, 16), no affine", "GroupNorm(4, 16)", "LayerNorm, no affine"])
def test_channels_a_norm_pools_are_kept_whole_and_the_rest_compacts_exactly(norm, name):
    """Zeroed filters before a norm that pools several channels' statistics are not dead after it
    (compact once changed outputs by 7% there): that group is kept whole, said in one warning naming
    it, and the other node layer (after the norm) still loses its dead channels, exactly."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), norm(), nn.ReLU(), nn.Conv2d(16, 8, 3, padding=1), nn.ReLU(),
                      nn.Conv2d(8, 4, 3))
    with torch.no_grad():
        m[0].weight[:4] = 0
        m[0].bias[:4] = 0
        m[3].weight[:2] = 0
        m[3].bias[:2] = 0
    x = torch.randn(2, 3, 8, 8)
    with pytest.warns(KeptChannelsWarning, match=rf"not nodes, .*: 0 \(through 1, a {name}: it pools"):
        stats = model_nodes(m, x)
    assert [(s.name, s.size, int(s.dead.sum())) for s in stats] == [("3", 8, 2)]
    with pytest.warns(KeptChannelsWarning):
        small, report = compact(m, x)
    assert small[0].out_channels == 16 and small[3].out_channels == 6
    assert report.rel_diff <= 1e-6


def _tiny_vit():
    torch.manual_seed(0)
    m = tvm.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                              num_classes=10).eval()
    with torch.no_grad():
        for block in m.encoder.layers:
            block.mlp[0].weight[:20] = 0
            block.mlp[0].bias[:20] = 0
    return m, torch.randn(2, 3, 32, 32)


def _tiny_encoder():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, batch_first=True)
    m = nn.Sequential(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), nn.Flatten(),
                      nn.Linear(16 * 5, 3)).eval()
    with torch.no_grad():
        for block in m[0].layers:
            block.linear1.weight[:10] = 0
            block.linear1.bias[:10] = 0
    return m, torch.randn(2, 5, 16)


@pytest.mark.parametrize("build, hidden, dead", [(_tiny_vit, 64, 20), (_tiny_encoder, 32, 10)],
                         ids=["VisionTransformer", "TransformerEncoder"])
def test_transformer_mlp_hidden_units_are_nodes_and_the_residual_stream_is_kept(build, hidden, dead):
    """The hidden units of each MLP block are the nodes (20 / 10 of them zeroed per block: GELU / ReLU of 0
    is 0); the residual stream goes through LayerNorms and is kept whole (one warning); the attention
    is left alone. Compaction removes the dead hidden units and nothing else, exactly. (torchvision
    zero-initialises the ViT head: the stream's channels once counted all dead for that reason.)"""
    model, x = build()
    with pytest.warns(KeptChannelsWarning, match="LayerNorm"):
        stats = model_nodes(model, x)
    assert [(s.size, int(s.dead.sum())) for s in stats] == [(hidden, dead)] * 2
    with pytest.warns(KeptChannelsWarning):
        small, report = compact(model, x)
    params = sum(p.numel() for p in model.parameters())
    width = 32 if hidden == 64 else 16
    assert report.params_after == params - 2 * dead * (2 * width + 1)  # a row, its bias, a column per unit
    assert report.rel_diff <= 1e-6
    with torch.no_grad():
        assert torch.allclose(small(x), model(x), rtol=1e-5, atol=1e-6)
