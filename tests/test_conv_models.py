"""Conv nets: VGG-16 wiring, node accounting with BatchNorm, exact compaction; embedded CIFAR-10."""
import numpy as np
import pytest
import torch
from torch import nn

from prunedyn.run.config import DataConfig, load_config
from prunedyn.data.datasets import load_dataset
from prunedyn.tasks.scoring import augment_batch
from prunedyn.models import VGG, build_model
from prunedyn.structure.nodes import model_nodes, node_layers
from prunedyn.structure.surgery import compact


def narrow_vgg(seed=0):
    torch.manual_seed(seed)
    return VGG(width=0.125, hidden=64)


def test_vgg16_has_13_convs_and_a_hidden_linear_as_node_layers():
    model = narrow_vgg()
    layers = node_layers(model)
    assert len(layers) == 14
    assert sum(isinstance(l.producer, nn.Conv2d) for l in layers) == 13
    assert all(l.norm is not None for l in layers[:13]) and layers[13].norm is None
    assert [l.size for l in layers[:2]] == [8, 8] and layers[12].size == 64 and layers[13].size == 8
    # the last conv feeds the classifier through a 1x1 map: one input per channel
    assert layers[12].consumers[0].repeat == 1
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def _randomise_bn(model):
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5, generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.uniform_(-0.5, 0.5, generator=g)


@torch.no_grad()
def test_vgg_compaction_is_exact_and_removes_dead_filters():
    model = narrow_vgg()
    _randomise_bn(model)
    f = model.features
    # in-dead filters whose BN output is relu(negative) = 0: removable although consumers pad
    f.conv1_1.weight[2] = 0
    f.bn1_1.bias[2] = -5.0
    f.bn1_1.running_mean[2] = 0.0
    # in-dead filter with a positive constant: must be kept (padding makes folding inexact)
    f.conv2_1.weight[3] = 0
    f.bn2_1.bias[3] = 1.0
    f.bn2_1.running_mean[3] = 0.0
    # out-dead channel: its input slice in the next conv is zero
    f.conv3_2.weight[:, 5] = 0
    # BN scale zero: in-dead through the norm
    f.bn4_1.weight[1] = 0
    f.bn4_1.bias[1] = -1.0
    stats = {s.name: s for s in model_nodes(model)}
    assert bool(stats["features.conv1_1"].in_dead[2]) and bool(stats["features.conv4_1"].in_dead[1])
    assert bool(stats["features.conv3_1"].out_dead[5])
    x = torch.randn(4, 3, 32, 32)
    small, report = compact(model, x)
    assert report.max_abs_diff <= 1e-4
    assert report.widths_after["features.conv1_1"] == 7
    assert report.widths_after["features.conv2_1"] == 16 and report.kept_constant["features.conv2_1"] == 1
    assert report.widths_after["features.conv3_1"] == 31
    assert report.widths_after["features.conv4_1"] == 63
    assert report.params_after < report.params_before and report.flops_after < report.flops_before
    assert small.features.bn1_1.num_features == 7 and small.features.conv1_2.in_channels == 7


@pytest.fixture(scope="module")
def cifar():
    return load_dataset(DataConfig(name="cifar10", source="embedded"))


def test_embedded_cifar10_is_class_balanced_and_normalised(cifar):
    assert cifar.x_train.shape == (10000, 3, 32, 32) and cifar.x_test.shape == (2000, 3, 32, 32)
    assert np.bincount(cifar.y_train.numpy()).tolist() == [1000] * 10
    assert np.bincount(cifar.y_test.numpy()).tolist() == [200] * 10
    means = cifar.x_train.mean(dim=(0, 2, 3))
    assert means.abs().max() < 0.15
    assert "JPEG copy" in cifar.description and cifar.source == "embedded"


def test_augmentation_is_seeded_crop_and_flip(cifar):
    x = cifar.x_train[:16]
    a = augment_batch(x, torch.Generator().manual_seed(3))
    b = augment_batch(x, torch.Generator().manual_seed(3))
    c = augment_batch(x, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    # with no padding a flip is the only change: each image is itself or its mirror
    d = augment_batch(x, torch.Generator().manual_seed(5), pad=0)
    assert all(torch.equal(d[i], x[i]) or torch.equal(d[i], x[i].flip(-1)) for i in range(16))


def test_vgg_preset_builds_for_cifar(cifar):
    cfg = load_config("vgg16-cifar10", ["model.width=0.125"])
    model = build_model(cfg.model, cifar.in_shape, cifar.num_classes)
    assert model(cifar.x_test[:2]).shape == (2, 10)
    assert cfg.data.augment and cfg.regularizer.kind == "l2"
