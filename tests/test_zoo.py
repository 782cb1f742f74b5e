"""The README's lines over torchvision's zoo: exact compaction with fewer parameters, or a clear
one-line refusal naming the first layer prunedyn cannot handle (issue: any model, or a clear no)."""
import warnings

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from prunedyn import compact, model_nodes
from prunedyn.structure.traced import WiringError

EXACT = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "squeezenet1_1",
         "googlenet", "mnasnet0_5"]
#: architecture -> the layer the refusal names and why
REFUSED = {
    "regnet_x_400mf": ("trunk_output.block1.block1-0.f.b.0", "grouped convolution"),
    "resnext50_32x4d": ("layer1.0.conv2", "grouped convolution"),
    "shufflenet_v2_x0_5": ("stage2.0.branch1.0", "grouped convolution"),
    "convnext_tiny": ("features.0.1", "LayerNorm"),
    "densenet121": ("features.denseblock1.denselayer1.norm1", "norm"),
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
    assert "\n" not in msg and msg.startswith(layer + ":") and why in msg, msg


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
def test_a_norm_that_pools_channels_is_refused_not_compacted_wrong(norm, name):
    """Zeroed filters before a norm that pools several channels' statistics are not dead after it: the
    wiring says so, naming the layer, instead of calling them dead (compact once changed outputs by 7%)."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), norm(), nn.ReLU(), nn.Conv2d(16, 8, 3, padding=1))
    with torch.no_grad():
        m[0].weight[:4] = 0
        m[0].bias[:4] = 0
    x = torch.randn(2, 3, 8, 8)
    for f in (model_nodes, compact):
        with pytest.raises(WiringError, match=rf"^1: a {name} normalises several channels of a node group together"):
            f(m, x)
