"""The README's lines over torchvision's zoo: exact compaction with fewer parameters, or a clear
one-line refusal naming the first layer prunedyn cannot handle (issue: any model, or a clear no)."""
import warnings

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from prunedyn import compact, model_nodes
from prunedyn.structure.traced import KeptChannelsWarning, WiringError

EXACT = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "squeezenet1_1",
         "googlenet", "mnasnet0_5", "convnext_tiny", "regnet_x_400mf", "resnext50_32x4d", "densenet121"]
#: architecture -> how the one-line refusal starts (the first layer it names, or the trace that failed), and why
REFUSED = {
    "shufflenet_v2_x0_5": ("Torch-pruning cannot trace ShuffleNetV2 on this example", "ZeroDivisionError"),
}


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


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REFUSED))
def test_unsupported_architectures_are_refused_naming_the_first_layer(name):
    model, x = _with_dead_nodes(name), torch.randn(2, 3, 64, 64)
    layer, why = REFUSED[name]
    with warnings.catch_warnings(), pytest.raises(WiringError) as err:
        warnings.filterwarnings("ignore", message=".*Torch-Pruning.*")
        model_nodes(model, x)
        compact(model, x)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(layer) and why in msg, msg


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
