"""Baseline pruners (random, targeted dropout, torch.nn.utils.prune) and starting from a compacted run."""
import json

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from prunedyn.core.interop import TorchL1Unstructured, export_masks, import_masks, masks_from_torch_prune
from prunedyn.models import MLP
from prunedyn.structure.nodes import model_nodes
from prunedyn.core.baseline_pruners import RandomPruner, TargetedDropout
from prunedyn.core.pruning import prunable_weights
from prunedyn.cli import main
from conftest import SMALL


def mlp(seed=0):
    torch.manual_seed(seed)
    return MLP(20, [16, 8], 4)


def test_random_pruner_hits_sparsity_without_preferring_small_weights():
    torch.manual_seed(0)
    lin = nn.Linear(400, 500)
    model = nn.Sequential(lin, nn.ReLU(), nn.Linear(500, 10))
    before = lin.weight.detach().clone()
    pr = RandomPruner(model, sparsity=0.5, seed=3)
    pr.step()
    zero = lin.weight == 0
    assert zero.float().mean().item() == pytest.approx(0.5, abs=1e-4)
    # magnitudes of pruned and kept weights have the same distribution (a magnitude pruner would split them)
    mean_pruned, mean_kept = before[zero].abs().mean(), before[~zero].abs().mean()
    assert abs(mean_pruned - mean_kept) / mean_kept < 0.02
    # masks persist and a ramp only prunes further along the same order
    with torch.no_grad():
        lin.weight.add_(1.0)
    pr.step()
    assert (lin.weight[zero] == 0).all()


def test_random_pruner_ramp_is_monotone_and_state_round_trips():
    model = mlp()
    pr = RandomPruner(model, sparsity=0.8, schedule="linear", ramp_steps=10, every=1, seed=1)
    fractions = []
    for _ in range(12):
        pr.step()
        fractions.append(float((model.net.fc1.weight == 0).float().mean()))
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(0.8, abs=0.01)
    clone = mlp()
    pr2 = RandomPruner(clone, sparsity=0.8, schedule="linear", ramp_steps=10, every=1, seed=99)
    pr2.load_state_dict(pr.state_dict())
    assert torch.equal(pr2.priority["net.fc1"], pr.priority["net.fc1"])


def _train_step(model, pruner, x, y, opt):
    pruner.before_forward()
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    pruner.before_step()
    opt.step()
    pruner.step()


def test_targeted_dropout_weight_variant_masks_forward_and_gradient_but_restores_weights():
    model = mlp()
    w = model.net.fc1.weight
    before = w.detach().clone()
    td = TargetedDropout(model, gamma=0.5, alpha=1.0, end_step=100, seed=0)
    td.before_forward()
    # alpha = 1: exactly the smallest half of each tensor is dropped for this pass
    dropped = w == 0
    assert dropped.float().mean().item() == pytest.approx(0.5, abs=0.01)
    assert before[dropped].abs().max() <= before[~dropped].abs().min()
    model(torch.randn(5, 20)).sum().backward()
    td.before_step()
    assert torch.equal(w.detach(), before)  # weights restored
    assert (w.grad[dropped] == 0).all() and (w.grad[~dropped] != 0).any()


def test_targeted_dropout_prunes_the_targeted_fraction_at_the_end():
    model = mlp()
    x, y = torch.randn(32, 20), torch.randint(0, 4, (32,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    td = TargetedDropout(model, gamma=0.75, alpha=0.5, end_step=4, seed=0)
    for _ in range(4):
        _train_step(model, td, x, y, opt)
    assert (model.net.fc1.weight == 0).float().mean() < 0.05
    _train_step(model, td, x, y, opt)
    for w in prunable_weights(model).values():
        assert (w == 0).float().mean().item() == pytest.approx(0.75, abs=0.01)


def test_targeted_dropout_unit_variant_removes_whole_nodes_never_outputs():
    model = mlp()
    x, y = torch.randn(32, 20), torch.randint(0, 4, (32,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    td = TargetedDropout(model, gamma=0.5, alpha=0.5, unit=True, end_step=2, seed=0)
    assert set(td.weights) == {"net.fc1", "net.fc2"}
    for _ in range(3):
        _train_step(model, td, x, y, opt)
    stats = model_nodes(model)
    assert [int(s.in_dead.sum()) for s in stats] == [8, 4]
    assert (model.net.fc3.weight != 0).all()


def test_torch_prune_adapter_and_mask_round_trip():
    model = mlp()
    adapter = TorchL1Unstructured(model, sparsity=0.6, start_step=1)
    adapter.step()
    assert (model.net.fc1.weight != 0).all()  # not before start_step
    adapter.step()
    masks = export_masks(model)
    for name, m in masks.items():
        assert (~m).float().mean().item() == pytest.approx(0.6, abs=0.01)
        assert not hasattr(dict(model.named_modules())[name], "weight_mask")  # baked in, plain module
    # torch's own l1_unstructured gives the same masks
    ref = mlp()
    for name, mod in ref.named_modules():
        if isinstance(mod, nn.Linear):
            prune.l1_unstructured(mod, "weight", amount=0.6)
    theirs = masks_from_torch_prune(ref)
    assert all(torch.equal(theirs[n], masks[n]) for n in masks)
    # import into a fresh model
    fresh = mlp(1)
    import_masks(fresh, masks)
    assert all(torch.equal(export_masks(fresh)[n] & masks[n], export_masks(fresh)[n]) for n in masks)
    with pytest.raises(KeyError, match="no prunable module"):
        import_masks(fresh, {"nope": masks["net.fc1"]})
    with pytest.raises(ValueError, match="shape"):
        import_masks(fresh, {"net.fc1": masks["net.fc2"]})


@pytest.mark.slow
def test_weight_pruning_continues_on_the_compacted_network(tmp_path):
    sets = sum((["--set", s] for s in [*SMALL, "pruner.sigma=0.02", "regularizer.lam=0.02", "epochs=4"]), [])
    src = tmp_path / "src"
    assert main(["run", "mlp-mnist", "--out", str(src), "--quiet", *sets]) == 0
    first = json.loads((src / "summary.json").read_text())
    assert first["params_compact"] < first["params_dense"]
    ft = tmp_path / "ft"
    assert main(["run", "mlp-mnist", "--out", str(ft), "--quiet", *sets, "--set", f"init.run={src}",
                 "--set", "pruner.kind=magnitude", "--set", "pruner.sparsity=0.5", "--set", "regularizer.kind=none",
                 "--set", "epochs=2"]) == 0
    second = json.loads((ft / "summary.json").read_text())
    assert second["params_dense"] == first["params_compact"]
    assert second["nodes_total"] == first["nodes_alive"]
    assert second["weight_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert main(["run", "mlp-mnist", "--out", str(tmp_path / "x"), "--quiet", *sets,
                 "--set", f"init.run={tmp_path / 'missing'}"]) == 2
