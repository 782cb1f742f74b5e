"""Regularizers: gradients equal autograd's, L2 equals SGD weight decay, decoupled decay, validation."""
import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from prunedyn.models import MLP
from prunedyn.core.pruning import prunable_weights
from prunedyn.core.regularization import REGULARIZERS, L1, L2, L2Decoupled, Regularizer, make_regularizer

SETTINGS = settings(max_examples=50, deadline=None)


def nonzero_weights(seed, shapes=((5, 4), (3, 5), (2, 3, 3, 3))):
    g = torch.Generator().manual_seed(seed)
    ws = []
    for shape in shapes:
        w = torch.randn(shape, generator=g, dtype=torch.float64)
        w = torch.where(w.abs() < 1e-3, torch.full_like(w, 0.5), w)  # no zeros (|w| subgradient)
        ws.append(w.requires_grad_(True))
    return ws


def autograd_grads(ws, term):
    loss = term(ws)
    grads = torch.autograd.grad(loss, ws)
    return loss, grads


TERMS = {
    "l1": lambda lam: (lambda ws: lam * sum(w.abs().sum() for w in ws)),
    "l2": lambda lam: (lambda ws: lam / 2 * sum(w.pow(2).sum() for w in ws)),
}


@pytest.mark.parametrize("kind", ["l1", "l2"])
@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), lam=st.floats(1e-6, 10.0, allow_subnormal=False))
def test_add_gradient_equals_autograd(kind, seed, lam):
    ws = nonzero_weights(seed)
    loss, expected = autograd_grads(ws, TERMS[kind](lam))
    # a data-loss gradient is already there: the term is added on top
    base = [torch.randn_like(w) for w in ws]
    for w, b in zip(ws, base):
        w.grad = b.clone()
    reg = make_regularizer(kind, lam)
    reg.add_gradient(ws)
    for w, b, e in zip(ws, base, expected):
        torch.testing.assert_close(w.grad, b + e, rtol=1e-12, atol=1e-12)
    # the penalty is the loss term's value
    assert reg.penalty(ws) == pytest.approx(float(loss.detach()), rel=1e-9)


def test_l1_sign_at_zero_is_zero():
    w = torch.tensor([0.0, 2.0, -3.0], requires_grad=True)
    w.grad = torch.zeros(3)
    L1(0.5).add_gradient([w])
    assert w.grad.tolist() == [0.0, 0.5, -0.5]


def test_add_gradient_skips_missing_grad_and_zero_lam():
    w = torch.ones(3, requires_grad=True)
    L2(0.1).add_gradient([w])  # no grad yet: nothing to add to, no error
    assert w.grad is None
    w.grad = torch.full((3,), 2.0)
    L2(0.0).add_gradient([w])
    L1(0.0).add_gradient([w])
    assert w.grad.tolist() == [2.0, 2.0, 2.0]
    # weights are not modified by add_gradient
    L2(0.1).add_gradient([w])
    assert w.tolist() == [1.0, 1.0, 1.0]
    torch.testing.assert_close(w.grad, torch.full((3,), 2.1))


def test_penalty_values():
    ws = [torch.tensor([[1.0, -2.0], [0.0, 3.0]]), torch.tensor([-4.0])]
    assert make_regularizer("l1", 0.1).penalty(ws) == pytest.approx(0.1 * 10)
    assert make_regularizer("l2", 0.1).penalty(ws) == pytest.approx(0.05 * (1 + 4 + 9 + 16))
    assert make_regularizer("l2_decoupled", 0.1).penalty(ws) == 0.0
    assert make_regularizer("none", 0.1).penalty(ws) == 0.0
    assert make_regularizer("l1", 0.0).penalty(ws) == 0.0
    assert isinstance(make_regularizer("l2", 0.1).penalty(ws), float)


def data_batches(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 12, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(n)]


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_l2_coupled_equals_sgd_weight_decay_on_weights_only(momentum):
    torch.manual_seed(0)
    model_a = MLP(12, [10, 8], 3)
    model_b = copy.deepcopy(model_a)
    lam, lr = 0.05, 0.1

    reg = make_regularizer("l2", lam)
    weights_a = list(prunable_weights(model_a).values())
    opt_a = torch.optim.SGD(model_a.parameters(), lr=lr, momentum=momentum)

    weights_b = list(prunable_weights(model_b).values())
    ids = {id(w) for w in weights_b}
    others_b = [p for p in model_b.parameters() if id(p) not in ids]
    assert len(others_b) == 3  # the biases
    opt_b = torch.optim.SGD(
        [{"params": weights_b, "weight_decay": lam}, {"params": others_b, "weight_decay": 0.0}],
        lr=lr,
        momentum=momentum,
    )
    loss_fn = nn.CrossEntropyLoss()
    for x, y in data_batches():
        opt_a.zero_grad()
        loss_fn(model_a(x), y).backward()
        reg.add_gradient(weights_a)
        opt_a.step()
        reg.after_step(weights_a, lr)  # a no-op for the coupled form

        opt_b.zero_grad()
        loss_fn(model_b(x), y).backward()
        opt_b.step()
    for (na, pa), (nb, pb) in zip(model_a.named_parameters(), model_b.named_parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7, msg=na)

    # and it differs from applying decay to everything (the biases were untouched by decay)
    torch.manual_seed(0)
    model_c = MLP(12, [10, 8], 3)
    opt_c = torch.optim.SGD(model_c.parameters(), lr=lr, momentum=momentum, weight_decay=lam)
    for x, y in data_batches():
        opt_c.zero_grad()
        loss_fn(model_c(x), y).backward()
        opt_c.step()
    assert not torch.allclose(model_c.net.fc1.bias, model_a.net.fc1.bias, rtol=0, atol=1e-7)


def test_l2_decoupled_after_step():
    torch.manual_seed(0)
    model = MLP(6, [5], 2)
    before = copy.deepcopy(model.state_dict())
    reg = make_regularizer("l2_decoupled", 0.2)
    weights = list(prunable_weights(model).values())
    for w in weights:
        w.grad = torch.ones_like(w)
    reg.add_gradient(weights)  # decoupled: no gradient term
    for w in weights:
        assert torch.all(w.grad == 1)
    reg.after_step(weights, lr=0.5)
    after = model.state_dict()
    for k, v in before.items():
        if k.endswith("weight"):
            torch.testing.assert_close(after[k], v * (1 - 0.5 * 0.2))
        else:
            assert torch.equal(after[k], v), k  # biases untouched
    # zero lam: identity
    make_regularizer("l2_decoupled", 0.0).after_step(weights, lr=0.5)
    torch.testing.assert_close(model.state_dict()["net.fc1.weight"], before["net.fc1.weight"] * 0.9)


def test_coupled_and_none_after_step_are_noops():
    w = torch.tensor([1.0, -2.0])
    for kind in ("none", "l1", "l2"):
        make_regularizer(kind, 0.3).after_step([w], lr=1.0)
    assert w.tolist() == [1.0, -2.0]
    w.grad = torch.zeros(2)
    make_regularizer("none", 0.3).add_gradient([w])
    assert w.grad.tolist() == [0.0, 0.0]


def test_make_regularizer_kinds():
    assert type(make_regularizer("none")) is Regularizer
    assert type(make_regularizer("l1", 0.1)) is L1
    assert type(make_regularizer("l2", 0.1)) is L2
    assert type(make_regularizer("l2_decoupled", 0.1)) is L2Decoupled
    assert make_regularizer("l2", 0.1).lam == 0.1
    assert make_regularizer("l2", 1).lam == 1.0
    assert set(REGULARIZERS) == {"none", "l1", "l2", "l2_decoupled"}


def test_make_regularizer_unknown_kind():
    with pytest.raises(KeyError) as info:
        make_regularizer("l3", 0.1)
    msg = str(info.value)
    assert "l3" in msg
    for kind in ("none", "l1", "l2", "l2_decoupled"):
        assert kind in msg


@pytest.mark.parametrize("kind", ["none", "l1", "l2", "l2_decoupled"])
@pytest.mark.parametrize("lam", [-1e-9, -1.0, float("nan"), float("inf"), -float("inf")])
def test_bad_lam(kind, lam):
    with pytest.raises(ValueError, match="lam"):
        make_regularizer(kind, lam)


def test_l1_shrinks_toward_zero_with_sgd():
    """lam * sign(w): a constant-size pull toward zero, independent of |w|."""
    w = nn.Parameter(torch.tensor([1.0, -0.5, 0.02]))
    opt = torch.optim.SGD([w], lr=0.1)
    reg = L1(0.1)
    w.grad = torch.zeros(3)
    reg.add_gradient([w])
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([0.99, -0.49, 0.01]))
    assert math.isclose(reg.penalty([w]), 0.1 * (0.99 + 0.49 + 0.01), rel_tol=1e-6)
