"""prunedyn.attach: SWP and the regularizers on a plain training loop through optimizer hooks."""
import copy
import io
import re
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import prunedyn
from prunedyn import attach
from prunedyn.core.hooks import PruningHooks
from prunedyn.core.pruning import StochasticWeightPruner, prunable_weights
from prunedyn.core.regularization import make_regularizer
from prunedyn.data.datasets import DatasetBundle
from prunedyn.models import MLP
from prunedyn.run.config import ExperimentConfig
from prunedyn.run.experiments import build, lr_at, make_optimizer, train_epoch

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]

N, BATCH, EPOCHS = 96, 32, 2
STEPS = N // BATCH  # per epoch


def toy_data(seed=0) -> DatasetBundle:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, 1, 4, 4, generator=g)
    y = (x.flatten(1)[:, :3].argmax(1) + (x.flatten(1)[:, 5] > 0).long()) % 3
    return DatasetBundle(name="toy", source="synthetic", x_train=x, y_train=y, x_test=x[:16], y_test=y[:16], description="toy")


def toy_mlp(seed=0) -> MLP:
    torch.manual_seed(seed)
    return MLP(16, [12, 8], 3)


def batches(seed=0, steps=6):
    data = toy_data(seed)
    g = torch.Generator().manual_seed(seed + 7)
    order = torch.randperm(N, generator=g)
    out = []
    for s in range(steps):
        idx = order[(s * BATCH) % N : (s * BATCH) % N + BATCH]
        out.append((data.x_train[idx], data.y_train[idx]))
    return out


# ---------------------------------------------------------------- (a) same calls as prunedyn's own loop

# (config overrides, attach arguments): the same pruner and regularizer described both ways
CASES = {
    "swp+l2": (
        dict(pruner=dict(kind="stochastic", sigma=0.05), regularizer=dict(kind="l2", lam=0.01)),
        dict(pruner="stochastic", kernel="gaussian", sigma=0.05, regularizer="l2", lam=0.01),
    ),
    "swp+l1": (
        dict(pruner=dict(kind="stochastic", kernel="laplace", sigma=0.02, sticky=True), regularizer=dict(kind="l1", lam=0.003)),
        dict(pruner="stochastic", kernel="laplace", sigma=0.02, sticky=True, regularizer="l1", lam=0.003),
    ),
    "swp+l2_decoupled+adamw+cosine": (
        dict(
            pruner=dict(kind="stochastic", sigma=0.05, schedule="linear", ramp_epochs=1.0),
            regularizer=dict(kind="l2_decoupled", lam=0.5),
            optimizer=dict(name="adamw", lr=0.01, lr_schedule="cosine"),
        ),
        dict(pruner="stochastic", sigma=0.05, schedule="linear", ramp_steps=STEPS, regularizer="l2_decoupled", lam=0.5),
    ),
    "l2_all_scope_no_pruner": (
        dict(regularizer=dict(kind="l2", lam=0.05, scope="all")),
        dict(pruner=None, regularizer="l2", lam=0.05, scope="all"),
    ),
    "targeted_dropout+l2": (
        dict(pruner=dict(kind="targeted_dropout", gamma=0.5, alpha=0.5), regularizer=dict(kind="l2", lam=0.01)),
        dict(pruner="targeted_dropout", gamma=0.5, alpha=0.5, end_step=EPOCHS * STEPS - 1, regularizer="l2", lam=0.01),
    ),
    "targeted_dropout_unit": (
        dict(pruner=dict(kind="targeted_dropout", gamma=0.25, alpha=1.0, unit=True)),
        dict(pruner="targeted_dropout", gamma=0.25, alpha=1.0, unit=True, end_step=EPOCHS * STEPS - 1),
    ),
    "magnitude_agp": (
        dict(pruner=dict(kind="magnitude", sparsity=0.6, schedule="cubic", ramp_epochs=1.0)),
        dict(pruner="magnitude", sparsity=0.6, schedule="cubic", ramp_steps=STEPS),
    ),
}


def experiment_config(over) -> ExperimentConfig:
    cfg = ExperimentConfig(epochs=EPOCHS, seed=3)
    cfg.model.hidden = [12, 8]
    cfg.data.batch_size = BATCH
    for section, values in over.items():
        for k, v in values.items():
            setattr(getattr(cfg, section), k, v)
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_plain_loop_with_attach_equals_prunedyn_loop(case):
    over, options = CASES[case]
    cfg = experiment_config(over)
    trainer = build(cfg, toy_data())
    start = copy.deepcopy(trainer.model)
    for epoch in range(1, EPOCHS + 1):
        train_epoch(trainer, epoch)

    model = start
    opt = make_optimizer(cfg.optimizer, model.parameters())
    hooks = attach(opt, model, seed=cfg.seed + 1, **options)
    data = trainer.data
    total = EPOCHS * STEPS
    step = 0
    for epoch in range(1, EPOCHS + 1):
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        order = torch.randperm(N, generator=g)
        for i in range(0, N, BATCH):
            idx = order[i : i + BATCH]
            for group in opt.param_groups:  # what a per-step LR scheduler would do
                group["lr"] = lr_at(cfg.optimizer, step, total)
            step += 1
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    assert hooks.steps == total
    ours, theirs = dict(model.named_parameters()), dict(trainer.model.named_parameters())
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), f"{case}: {name} differs"
    if hooks.pruner is not None:
        assert hooks.pruner.steps_done == trainer.pruner.steps_done == total
        zeros = sum(int((w == 0).sum()) for w in prunable_weights(model).values())
        assert zeros > 0, "the case prunes nothing: it would not test the pruner"


# ---------------------------------------------------------------- handle basics


def sgd(model, lr=0.1, **kw):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, **kw)


def train(model, opt, data, scaler=None):
    for x, y in data:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()


def params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_handle_exposes_pruner_and_regularizer():
    model = toy_mlp()
    opt = sgd(model)
    h = attach(opt, model, sigma=0.01, regularizer="l1", lam=1e-3)
    assert isinstance(h, PruningHooks) and prunedyn.attach is attach and "attach" in prunedyn.__all__
    assert isinstance(h.pruner, StochasticWeightPruner) and h.pruner.sigma == 0.01
    assert h.regularizer.kind == "l1" and h.regularizer.lam == 1e-3
    assert len(h.weights) == 3 and h.penalty() > 0
    assert "StochasticWeightPruner" in repr(h)
    with pytest.raises(RuntimeError, match="already has prunedyn hooks"):
        attach(opt, model)
    h.remove()
    h.remove()  # idempotent
    attach(opt, model, pruner=StochasticWeightPruner(model, sigma=0.02), regularizer=make_regularizer("l2", 0.1)).remove()


def test_bad_arguments():
    model = toy_mlp()
    opt = sgd(model)
    with pytest.raises(ValueError, match="end_step"):
        attach(opt, model, "targeted_dropout")
    with pytest.raises(TypeError, match="no option 'sigmaa'"):
        attach(opt, model, sigmaa=0.1)
    with pytest.raises(KeyError, match="unknown pruner"):
        attach(opt, model, "bogus")
    with pytest.raises(KeyError, match="unknown regularizer"):
        attach(opt, model, regularizer="l3")
    with pytest.raises(ValueError, match="another model"):
        attach(opt, model, StochasticWeightPruner(toy_mlp()))
    with pytest.raises(TypeError):
        attach(opt, model, StochasticWeightPruner(model), sigma=0.1)
    assert getattr(opt, "_prunedyn_hooks", None) is None
    with pytest.warns(UserWarning, match="decayed twice"):
        attach(torch.optim.AdamW(model.parameters()), model, regularizer="l2_decoupled", lam=1e-3).remove()


def test_closure_with_coupled_regularizer_is_refused():
    model = toy_mlp()
    opt = sgd(model)
    attach(opt, model, None, regularizer="l2", lam=0.1)
    x, y = batches()[0]

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    with pytest.raises(RuntimeError, match="closure"):
        opt.step(closure)


def test_forward_hook_draws_one_mask_per_step():
    """Gradient accumulation: two forwards before a step share the mask; eval forwards draw none."""
    model = toy_mlp()
    opt = sgd(model, lr=0.0)
    h = attach(opt, model, "targeted_dropout", gamma=0.5, alpha=1.0, end_step=100)
    x, y = batches()[0]
    before = params(model)
    with torch.no_grad():
        model(x)
    assert not h.pruner._stash
    F.cross_entropy(model(x[:16]), y[:16]).backward()
    masked = params(model)
    F.cross_entropy(model(x[16:]), y[16:]).backward()
    assert all(torch.equal(masked[n], p) for n, p in params(model).items())
    assert (masked["net.fc1.weight"] == 0).sum() > 0
    opt.step()  # lr 0: the weights come back exactly
    assert all(torch.equal(before[n], p) for n, p in params(model).items())


# ---------------------------------------------------------------- (b) remove


def test_remove_stops_pruning_and_regularizing():
    data = batches(steps=6)
    model = toy_mlp()
    opt = sgd(model)
    h = attach(opt, model, sigma=0.1, regularizer="l2", lam=0.1)
    train(model, opt, data[:2])
    assert h.pruner.steps_done == 2 and "prunedyn" in opt.state_dict()
    h.remove()
    reference = copy.deepcopy(model)
    ref_opt = sgd(reference)
    ref_opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # not sharing momentum buffers
    train(model, opt, data[2:])
    train(reference, ref_opt, data[2:])
    assert h.pruner.steps_done == 2 and h.steps == 2
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), reference.parameters()))
    assert "prunedyn" not in opt.state_dict()


def test_remove_undoes_a_pending_dropout_mask():
    model = toy_mlp()
    opt = sgd(model)
    before = params(model)
    with attach(opt, model, "targeted_dropout", alpha=1.0, end_step=10) as h:
        x, _ = batches()[0]
        model(x)
        assert h.pruner._stash
    assert all(torch.equal(before[n], p) for n, p in params(model).items())


# ---------------------------------------------------------------- (c) resume


@pytest.mark.parametrize(
    "kind,options",
    [
        ("stochastic", dict(sigma=0.05, sticky=True, schedule="linear", ramp_steps=4)),
        ("targeted_dropout", dict(gamma=0.5, alpha=0.5, end_step=4)),
        ("random", dict(sparsity=0.5, schedule="linear", ramp_steps=4, every=1)),
    ],
)
@pytest.mark.parametrize("via", ["optimizer", "handle"])
def test_resume_from_saved_state_repeats_the_run(kind, options, via):
    data = batches(steps=6)

    def fresh(seed):
        model = toy_mlp()
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        h = attach(opt, model, kind, seed=seed, regularizer="l1", lam=1e-3, state_dict_hooks=via == "optimizer", **options)
        return model, opt, h

    model, opt, _ = fresh(seed=5)
    train(model, opt, data)
    uninterrupted = params(model)

    model, opt, h = fresh(seed=5)
    train(model, opt, data[:3])
    buf = io.BytesIO()
    ckpt = {"model": model.state_dict(), "optimizer": opt.state_dict()}
    if via == "handle":
        assert "prunedyn" not in ckpt["optimizer"]
        ckpt["hooks"] = h.state_dict()
    torch.save(ckpt, buf)
    h.remove()
    del model, opt, h

    model, opt, h = fresh(seed=99)  # another seed: the RNG state must come from the checkpoint
    buf.seek(0)
    ckpt = torch.load(buf)  # weights_only: the state is plain tensors and numbers
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    if via == "handle":
        h.load_state_dict(ckpt["hooks"])
    assert h.pruner.steps_done == 3 and h.steps == 3
    train(model, opt, data[3:])
    for name, p in params(model).items():
        assert torch.equal(p, uninterrupted[name]), name


def test_loading_a_state_without_hooks_warns():
    model = toy_mlp()
    opt = sgd(model)
    state = opt.state_dict()
    attach(opt, model)
    with pytest.warns(UserWarning, match="no prunedyn hooks state"):
        opt.load_state_dict(state)
    other_model = toy_mlp()
    other = attach(sgd(other_model), other_model, "magnitude")
    with pytest.raises(ValueError, match="MagnitudePruner"):
        other.load_state_dict(opt._prunedyn_hooks.state_dict())


# ---------------------------------------------------------------- (d) AMP GradScaler


def scaler():
    return torch.amp.GradScaler("cpu", init_scale=2.0**12)


@pytest.mark.parametrize("make_opt", [lambda m: sgd(m), lambda m: torch.optim.Adam(m.parameters(), lr=0.01, fused=True)], ids=["sgd", "fused_adam"])
@pytest.mark.parametrize("reg", ["l1", "l2", "l2_decoupled"])
def test_grad_scaler_gives_the_unscaled_run(make_opt, reg):
    """Scaled gradients (a fused optimizer's pre-hook sees them) get a scaled regularizer gradient."""
    data = batches(steps=4)
    runs = []
    for use_scaler in (False, True):
        model = toy_mlp()
        opt = make_opt(model)
        attach(opt, model, sigma=0.03, regularizer=reg, lam=0.05)
        train(model, opt, data, scaler() if use_scaler else None)
        runs.append(params(model))
    for name in runs[0]:
        torch.testing.assert_close(runs[1][name], runs[0][name], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("fused", [False, True])
def test_grad_scaler_skipped_step_runs_no_hook(fused):
    model = toy_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=0.01, fused=fused)
    h = attach(opt, model, sigma=0.2, regularizer="l2_decoupled", lam=0.5)
    sc = scaler()
    (x, y), = batches(steps=1)
    train(model, opt, [(x, y)], sc)
    assert h.pruner.steps_done == 1
    before, rng = params(model), h.pruner.stream.generator.get_state()
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    sc.scale(loss).backward()
    model.net.fc1.weight.grad[0, 0] = float("inf")
    sc.step(opt)
    sc.update()
    assert h.pruner.steps_done == 1 and h.steps == 1
    assert torch.equal(h.pruner.stream.generator.get_state(), rng)
    assert all(torch.equal(before[n], p) for n, p in params(model).items())
    train(model, opt, [(x, y)], sc)  # the next finite step runs them again
    assert h.pruner.steps_done == 2 and h.steps == 2


def test_targeted_dropout_mask_survives_a_skipped_step():
    model = toy_mlp()
    opt = sgd(model, lr=1e-3)
    h = attach(opt, model, "targeted_dropout", gamma=0.5, alpha=1.0, end_step=100)
    sc = scaler()
    (x, y), = batches(steps=1)
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    sc.scale(loss).backward()
    model.net.fc1.weight.grad[0, 0] = float("nan")
    sc.step(opt)  # skipped: the masked weights stay stashed
    sc.update()
    assert h.pruner._stash and h.steps == 0
    train(model, opt, [(x, y)], sc)
    assert not h.pruner._stash and h.steps == 1
    assert all(int((w == 0).sum()) == 0 for w in prunable_weights(model).values())  # nothing lost


# ---------------------------------------------------------------- (e) the README snippet


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## The library in one minute", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no python block under 'The library in one minute'"
    return match.group(1)


def test_readme_library_snippet_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = toy_mlp()
    loader = batches(steps=6)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scope = {"model": model, "loader": loader, "opt": opt}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec(compile(readme_snippet(), "README.md", "exec"), scope)
    assert "attach(" in readme_snippet()
    assert opt._prunedyn_hooks.steps == len(loader)
    assert scope["report"].max_abs_diff < 1e-5
    assert len(scope["stats"]) == 2


def test_decoupled_decay_uses_each_param_groups_lr():
    model = toy_mlp()
    fc1 = [model.net.fc1.weight, model.net.fc1.bias]
    rest = [p for p in model.parameters() if all(p is not q for q in fc1)]
    opt = torch.optim.SGD([{"params": fc1, "lr": 0.1}, {"params": rest, "lr": 0.0}], lr=0.0)
    attach(opt, model, None, regularizer="l2_decoupled", lam=2.0)
    before = params(model)
    x, _ = batches()[0]
    (0.0 * model(x).sum()).backward()  # zero gradient: only the decay moves the weights
    opt.step()
    after = params(model)
    torch.testing.assert_close(after["net.fc1.weight"], before["net.fc1.weight"] * (1 - 0.1 * 2.0))
    assert torch.equal(after["net.fc1.bias"], before["net.fc1.bias"])  # scope: weights only
    assert torch.equal(after["net.fc2.weight"], before["net.fc2.weight"])  # lr 0 in its group


def test_attach_names_the_weight_matrices_it_never_prunes():
    import warnings

    import prunedyn

    from torch import nn

    model = nn.Sequential(nn.Embedding(10, 8), nn.LSTM(8, 8, batch_first=True))
    head = nn.Linear(8, 2)
    both = nn.ModuleDict({"body": model, "head": head})
    opt = torch.optim.SGD(both.parameters(), lr=0.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prunedyn.attach(opt, both, "stochastic", sigma=0.01)
    text = " ".join(str(c.message) for c in caught)
    assert "are never pruned" in text and "body.0.weight" in text and "body.1.weight_ih_l0" in text
    assert "head.weight" not in text
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a plain MLP: nothing to say
        prunedyn.attach(torch.optim.SGD(head.parameters(), lr=0.1), head, "stochastic", sigma=0.01)
