"""The fused SWP step on the counter stream (prunedyn.core.fused).

- the stream is SplitMix64: its published first outputs, and draws on the odd
  multiples of 2**-24;
- the C kernel (CPU) and the Triton kernel (run in Triton's CPU interpreter)
  make exactly the reference's decisions, masks included, for every size
  (the n % 4 tail), both kernels and awkward values;
- the decisions depend on (seed, step, tensor, element) only: not on the
  thread count, and a resumed run repeats an uninterrupted one;
- each weight is pruned with probability kappa rounded to 2**-23 (binomial
  tolerance), never where kappa < 2**-24.
"""
import _ctypes
import copy
import math
import os
import shutil
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from prunedyn.core import fused
from prunedyn.core.kernels import KERNELS, get_kernel, register_kernel
from prunedyn.core.pruning import StochasticWeightPruner, prunable_weights
from prunedyn.run.config import ConfigError, config_hash, load_config

pytestmark = pytest.mark.skipif(fused.cpu_library() is None, reason="no C compiler: the CPU kernel cannot be built")


def awkward(n=40_003, sigma=0.004, seed=0):
    """Weights around sigma on a log scale, with zeros, -0.0, infinities, NaN and denormals."""
    g = torch.Generator().manual_seed(seed)
    scale = sigma * torch.logspace(-4, 2, n, dtype=torch.float64)[torch.randperm(n, generator=g)]
    w = (torch.randn(n, generator=g, dtype=torch.float64) * scale).float()
    special = torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan, 1e-40, -1e-42, 5.7 * sigma, -5.8 * sigma])
    w[: special.numel()] = special
    return w


def same(a, b):
    """Equal bit for bit, NaN included."""
    return torch.equal(a.view(torch.int32), b.view(torch.int32))


def test_splitmix64_published_outputs():
    # SplitMix64 from state 0: mix64(k * GAMMA) for k = 1, 2, 3
    assert [fused.mix64(k * fused.GAMMA) for k in (1, 2, 3)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


def test_draws_lie_on_odd_multiples_and_look_uniform():
    u = fused.reference_draws(200_001, fused.stream_key(3, 5, 1))
    k = u.astype(np.float64) * 2**24
    assert np.all(k == np.round(k)) and np.all(k % 2 == 1)
    assert 0 < u.min() and u.max() < 1
    # mean and a 16-bin histogram within 5 standard deviations of uniform
    assert abs(u.mean() - 0.5) < 5 * math.sqrt(1 / 12 / u.size)
    counts = np.histogram(u, bins=16, range=(0, 1))[0]
    assert np.all(np.abs(counts - u.size / 16) < 5 * math.sqrt(u.size / 16))


def test_keys_differ_by_seed_step_and_tensor():
    keys = {fused.stream_key(s, t, j) for s in range(3) for t in range(50) for j in range(8)}
    assert len(keys) == 3 * 50 * 8
    with pytest.raises(ValueError, match="tensor index"):
        fused.stream_key(0, 0, 2**24)


def test_exp_poly_is_close_to_exp():
    a = np.linspace(-20, 0, 100_001, dtype=np.float32)
    rel = np.abs(fused.exp_poly(a).astype(np.float64) / np.exp(a.astype(np.float64)) - 1)
    assert rel.max() < 2e-7


@pytest.mark.parametrize("kernel", ["gaussian", "laplace"])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 4099, 40_003])
@pytest.mark.parametrize("with_mask", [False, True])
def test_c_kernel_matches_reference(kernel, n, with_mask):
    w = awkward()[:n].clone()
    key = fused.stream_key(11, 7, 3)
    drop = fused.reference_decisions(w, key, kernel, 0.004)
    mask = torch.ones(n, dtype=torch.bool) if with_mask else None
    out = w.clone()
    assert fused.fused_prune_(out, mask, key, kernel, 0.004) == "c"
    assert same(out, w.masked_fill(drop, 0.0))
    if with_mask:
        assert torch.equal(mask, ~drop)


def test_c_kernel_writes_positive_zeros_and_keeps_closed_masks_closed():
    w = torch.full((1000,), -1e-6)  # kappa ~ 1: all pruned
    mask = torch.ones(1000, dtype=torch.bool)
    mask[::3] = False
    fused.fused_prune_(w, mask, fused.stream_key(0, 0, 0), "gaussian", 0.01)
    assert torch.all(w.view(torch.int32) == 0)  # +0.0, as masked_fill_ writes
    assert not mask.any()


def test_decisions_do_not_depend_on_thread_count():
    w = awkward(400_000)
    key = fused.stream_key(1, 2, 3)
    outs = []
    for threads in (1, 2):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            out = w.clone()
            fused.fused_prune_(out, None, key, "gaussian", 0.004)
            outs.append(out)
        finally:
            torch.set_num_threads(before)
    assert same(outs[0], outs[1])


def test_reference_backend_for_strided_tensors_gives_the_same_decisions():
    base = awkward(2 * 10002).view(2, 10002)
    key = fused.stream_key(4, 0, 0)
    strided = base[:, ::2]  # not dense: logical order, NumPy reference
    contiguous = strided.contiguous()
    assert fused.fused_prune_(strided, None, key, "laplace", 0.004) == "reference"
    assert fused.fused_prune_(contiguous, None, key, "laplace", 0.004) == "c"
    assert same(strided.contiguous(), contiguous)


def test_fused_step_moves_the_autograd_version_counter():
    w = torch.randn(100) * 1e-3
    v = w._version
    fused.fused_prune_(w, None, fused.stream_key(0, 0, 0), "gaussian", 0.01)
    assert w._version > v


def test_unknown_kernel_has_no_fused_form():
    with pytest.raises(ValueError, match="allowed: gaussian, laplace"):
        fused.fused_prune_(torch.zeros(4), None, 0, "hard", 0.1)


def test_probability_is_kappa_rounded_to_two_to_the_minus_23():
    sigma = 0.01
    values = torch.tensor([0.0, 0.3, 1.0, 2.0, 3.0, 4.0, 5.0, 5.6, 5.9]) * sigma  # kappa from 1 to below 2**-24
    reps = 40_000
    w0 = values.repeat(reps)
    hits = torch.zeros(values.numel())
    for step in range(5):
        w = w0.clone()
        fused.fused_prune_(w, None, fused.stream_key(9, step, 0), "gaussian", sigma)
        hits += (w == 0).view(reps, -1).sum(0)
    n = 5 * reps
    kappa = fused.reference_kappa(values.numpy(), "gaussian", sigma).astype(np.float64)
    p = np.round(kappa * 2**23) / 2**23
    for j in range(values.numel()):
        sd = math.sqrt(max(p[j] * (1 - p[j]), 1e-12) / n)
        assert abs(hits[j].item() / n - p[j]) <= 5 * sd + 1e-12, (values[j].item(), hits[j].item() / n, p[j])
    assert p[-1] == 0 and hits[-1] == 0  # kappa < 2**-24 never prunes


TRITON_SCRIPT = textwrap.dedent("""
    import torch
    from prunedyn.core import fused
    g = torch.Generator().manual_seed(0)
    bad = 0
    for n in (1, 3, 5, 4099, 70_001):
        for kernel in ("gaussian", "laplace"):
            w = torch.randn(n, generator=g) * 0.01
            w[:1] = -0.0
            key = fused.stream_key(5, n, 1)
            drop = fused.reference_decisions(w, key, kernel, 0.004)
            out, mask = w.clone(), torch.ones(n, dtype=torch.bool)
            fused.triton_prune_(out, mask, key, kernel, 0.004)
            ok = torch.equal(out.view(torch.int32), w.masked_fill(drop, 0.0).view(torch.int32)) and torch.equal(mask, ~drop)
            bad += not ok
    # one launch over a group: three tensors (one in channels_last memory order), with masks
    ws = [torch.randn(s, generator=g) * 0.01 for s in ((7,), (4, 3, 3, 3), (1000, 33))]
    ws[1] = ws[1].contiguous(memory_format=torch.channels_last)
    views = [w.permute(fused.storage_order(w)) for w in ws]
    keys = [fused.stream_key(2, 9, j) for j in range(3)]
    drops = [fused.reference_decisions(w, k, "gaussian", 0.006) for w, k in zip(ws, keys)]
    masks = [torch.ones(v.shape, dtype=torch.bool) for v in views]
    before = [w.clone() for w in ws]
    group = fused.TritonGroup(views, [m.view(torch.uint8) for m in masks])
    assert group.matches(views, [m.view(torch.uint8) for m in masks])
    group.launch(keys, "gaussian", 0.006)
    for w, w0, d, m, o in zip(ws, before, drops, masks, [fused.storage_order(w) for w in ws]):
        bad += not torch.equal(w, w0.masked_fill(d, 0.0))
        bad += not torch.equal(m, ~d.permute(o))
    print("MISMATCHES", bad)
""")


def test_triton_kernel_matches_reference_in_the_interpreter():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", TRITON_SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "MISMATCHES 0" in done.stdout


# ----------------------------------------------------------------------------- the pruner
def net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 5))


def train(model, pruner, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, weight_decay=1e-3)
    for _ in range(steps):
        x = torch.randn(16, 3, 8, 8, generator=g)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        pruner.step()


@pytest.mark.parametrize("options", [{}, {"sticky": True}, {"sigma_mode": "relative", "sigma": 0.3}, {"kernel": "laplace"}])
def test_counter_pruner_resumes_exactly(options):
    opts = {"sigma": 0.02, "seed": 3, "stream": "counter", **options}
    a = net()
    pa = StochasticWeightPruner(a, **opts)
    train(a, pa, 6)
    b = net()
    pb = StochasticWeightPruner(b, **opts)
    train(b, pb, 3)
    state, weights = copy.deepcopy(pb.state_dict()), copy.deepcopy(b.state_dict())
    c = net(seed=99)
    c.load_state_dict(weights)
    pc = StochasticWeightPruner(c, **opts)
    pc.load_state_dict(state)
    g_state = torch.Generator().manual_seed(0)
    # the resumed model sees the batches of steps 3..5: replay the first three draws of the data stream
    for _ in range(3):
        torch.randn(16, 3, 8, 8, generator=g_state)
    opt = torch.optim.SGD(c.parameters(), lr=0.05, weight_decay=1e-3)
    for _ in range(3):
        x = torch.randn(16, 3, 8, 8, generator=g_state)
        loss = c(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        pc.step()
    for (name, wa), wc in zip(prunable_weights(a).items(), prunable_weights(c).values()):
        assert torch.equal(wa, wc), name
    assert set(pa.stream.backends.values()) == {"c"}
    if opts.get("sticky"):
        assert all(torch.equal(pa.masks[k], pc.masks[k]) for k in pa.masks)
        assert all(torch.equal(pa.weights[k] == 0, ~pa.masks[k]) for k in pa.masks)


def test_counter_pruner_zeroes_the_reference_decisions_of_its_step_and_tensor():
    model = net()
    pruner = StochasticWeightPruner(model, sigma=0.05, seed=8, stream="counter", start_step=2)
    before = {k: w.detach().clone() for k, w in pruner.weights.items()}
    for _ in range(3):  # steps 0, 1 skipped (start_step), step 2 prunes
        pruner.step()
    for j, (name, w) in enumerate(pruner.weights.items()):
        drop = fused.reference_decisions(before[name], fused.stream_key(8, 2, j), "gaussian", 0.05)
        assert torch.equal(w, before[name].masked_fill(drop, 0.0)), name
        assert drop.any()


def test_counter_stream_for_kernels_without_a_fused_form():
    register_kernel("cauchy_counter_test")(lambda w, sigma: 1.0 / (1.0 + (w / sigma) ** 2))
    try:
        for kernel in ("hard", "cauchy_counter_test"):
            model = net()
            pruner = StochasticWeightPruner(model, kernel=kernel, sigma=0.05, seed=2, stream="counter")
            before = {k: w.detach().clone() for k, w in pruner.weights.items()}
            pruner.step()
            for j, (name, w) in enumerate(pruner.weights.items()):
                u = torch.from_numpy(fused.reference_draws(w.numel(), fused.stream_key(2, 0, j))).view(w.shape)
                assert torch.equal(w, before[name].masked_fill(u < get_kernel(kernel)(before[name], 0.05), 0.0))
            assert set(pruner.stream.backends.values()) == {"reference"}
    finally:
        del KERNELS["cauchy_counter_test"]


def test_config_stream_is_validated_and_changes_the_hash_only_when_set():
    base = load_config("mlp-mnist")
    assert base.pruner.stream == "torch"
    assert config_hash(load_config("mlp-mnist", ["pruner.stream=torch"])) == config_hash(base)
    assert config_hash(load_config("mlp-mnist", ["pruner.stream=counter"])) != config_hash(base)
    with pytest.raises(ConfigError, match="pruner.stream.*allowed: torch, counter"):
        load_config("mlp-mnist", ["pruner.stream=philox"])
    with pytest.raises(ValueError, match="stream must be one of torch, counter"):
        StochasticWeightPruner(net(), stream="philox")


def test_channels_last_weights_are_numbered_in_memory_order_and_take_the_kernel():
    w = awkward(8 * 5 * 3 * 3).view(8, 5, 3, 3)
    last = w.contiguous(memory_format=torch.channels_last)
    key = fused.stream_key(2, 1, 0)
    mask = torch.ones(w.shape, dtype=torch.bool)  # contiguous: another format than the weights
    assert fused.fused_prune_(last, mask, key, "gaussian", 0.004) == "c"
    assert last.is_contiguous(memory_format=torch.channels_last)
    # the same numbers as the contiguous tensor (O, H, W, I) of the same memory
    flat = w.permute(0, 2, 3, 1).contiguous()
    fused.fused_prune_(flat, None, key, "gaussian", 0.004)
    assert same(last.permute(0, 2, 3, 1).contiguous(), flat)
    drop = fused.reference_decisions(w.contiguous(memory_format=torch.channels_last), key, "gaussian", 0.004)
    assert torch.equal(mask, ~drop)
    assert same(last.contiguous(), w.masked_fill(drop, 0.0))


def test_without_a_compiler_the_reference_runs_and_says_so():
    script = textwrap.dedent("""
        import warnings, torch
        from prunedyn.core import fused
        w = torch.randn(1001) * 0.01
        key = fused.stream_key(3, 4, 5)
        drop = fused.reference_decisions(w, key, "gaussian", 0.004)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = w.clone()
            backend = fused.fused_prune_(out, None, key, "gaussian", 0.004)
        print(backend, torch.equal(out, w.masked_fill(drop, 0.0)), any("PRUNEDYN_NATIVE=0" in str(c.message) for c in caught))
    """)
    env = {**os.environ, "PRUNEDYN_NATIVE": "0"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["reference", "True", "True"]


def _prune_in_fresh_process(cache):
    """Weight sparsity after one fused prune in a new interpreter with the kernel cache at ``cache``."""
    script = textwrap.dedent("""
        import torch
        from prunedyn.core import fused
        torch.manual_seed(0)
        w = torch.randn(100_000) * 0.01
        key = fused.stream_key(3, 4, 5)
        drop = fused.reference_decisions(w, key, "gaussian", 0.004)
        out = w.clone()
        backend = fused.fused_prune_(out, None, key, "gaussian", 0.004)
        print(backend, torch.equal(out, w.masked_fill(drop, 0.0)), round(float((out == 0).float().mean()), 3))
    """)
    env = {**os.environ, "PRUNEDYN_CACHE": str(cache)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def test_the_kernel_cache_is_private_and_a_planted_or_corrupt_library_is_rebuilt(tmp_path):
    cache = tmp_path / "cache"
    first = _prune_in_fresh_process(cache)
    assert first[:2] == ["c", "True"] and float(first[2]) > 0.1
    folder = cache / "kernels"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    (lib,) = folder.glob("swp-*.so")
    # a planted library (any other shared object under the expected name) fails the recorded hash
    shutil.copy(_ctypes.__file__, lib)
    assert _prune_in_fresh_process(cache) == first  # rebuilt: the same decisions
    lib.write_bytes(lib.read_bytes()[:1000])  # corrupt (truncated)
    assert _prune_in_fresh_process(cache) == first
    os.chmod(folder, 0o777)  # a folder others could write to is made private again
    assert _prune_in_fresh_process(cache) == first and stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_a_run_records_which_code_drew_its_random_numbers(tmp_path):
    """summary.json's swp_backend: the exact torch stream, or the counter stream with the kernels its
    steps ran; kept through a resume that has no step left to run (killed before the summary)."""
    from prunedyn.data.datasets import DatasetBundle
    from prunedyn.run.config import from_dict
    from prunedyn.run.experiments import run

    g = torch.Generator().manual_seed(0)
    data = DatasetBundle(name="toy", source="synthetic", x_train=torch.randn(48, 1, 4, 4, generator=g),
                         y_train=torch.arange(48) % 3, x_test=torch.randn(24, 1, 4, 4, generator=g),
                         y_test=torch.arange(24) % 3, description="random")
    over = {"model": {"name": "mlp", "hidden": [6]}, "data": {"batch_size": 16}, "epochs": 1,
            "pruner": {"kind": "stochastic", "sigma": 0.01}}
    assert run(from_dict(over), tmp_path / "t", progress=False, data=data)["swp_backend"] == "torch"
    over["pruner"]["stream"] = "counter"
    first = run(from_dict(over), tmp_path / "c", progress=False, data=data)
    expected = "c" if fused.cpu_library() is not None else "reference"
    assert first["swp_backend"] == f"counter:{expected}"
    (tmp_path / "c" / "summary.json").unlink()  # as if killed after the last checkpoint
    assert run(from_dict(over), tmp_path / "c", resume=True, progress=False, data=data)["swp_backend"] == first["swp_backend"]
    over["pruner"] = {"kind": "magnitude", "sparsity": 0.5}
    assert run(from_dict(over), tmp_path / "m", progress=False, data=data)["swp_backend"] == "none"


def test_the_counter_step_is_one_registered_operator_that_passes_torch_opcheck():
    """torch.ops.prunedyn.swp_counter_ (torch.library): its schema says it mutates w and the mask;
    torch.library.opcheck checks the registration (schema, fake tensor, dispatch) on the C kernel's
    path and on the reference's (a strided tensor)."""
    w = awkward(6 * 7).view(6, 7)
    key = fused._signed64(fused.stream_key(3, 1, 0))
    schema = str(torch.ops.prunedyn.swp_counter_.default._schema)
    assert "Tensor(a0!) w" in schema and "Tensor(a1!)? mask" in schema
    for t in (w.clone(), w.clone().t()):
        torch.library.opcheck(torch.ops.prunedyn.swp_counter_.default,
                              (t.clone(), torch.ones_like(t, dtype=torch.bool), key, "gaussian", 0.004),
                              test_utils=("test_schema", "test_faketensor"))
        drop = fused.reference_decisions(t, key & fused.MASK64, "gaussian", 0.004)
        expected = t.clone().masked_fill_(drop, 0.0)
        mask = torch.ones_like(t, dtype=torch.bool)
        torch.ops.prunedyn.swp_counter_(t, mask, key, "gaussian", 0.004)
        torch.testing.assert_close(t, expected, rtol=0, atol=0, equal_nan=True)
        assert torch.equal(mask, ~drop) and 0 < int(drop.sum()) < t.numel()
