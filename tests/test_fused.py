"""The fused path (generated C kernels) against the eager reference, torch.optim, and its guards.

Every algorithm and option runs many steps on several param groups, in float32 and float64, with
a scheduler changing ``lr`` between steps, once fused and once eager; parameters and state must
agree bit for bit. torch's eager CPU ``sqrt`` (MKL's ``vsSqrt``) is not correctly rounded (1 ulp
off on ~17% of float32 inputs) while the kernel's is, so the eager side steps under a correctly
rounded one (:func:`ieee_sqrt.correctly_rounded_sqrt`).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

import optimlab
from ieee_sqrt import correctly_rounded_sqrt
from optimlab import kernels

# The first param group (one kernel call) holds tensors 0, 1 and 5: 20,015 + 15,000 elements, so
# the kernel's chunk boundary at 32,768 (CHUNK) falls inside tensor 5; the second group is small.
SHAPES = [(20_000,), (5, 3), (7,), (1,), (33, 4), (15_000,)]
FIRST_GROUP = [0, 1, 5]

CASES = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "maximize": True}),
    ("SGD", {"lr": 0.1, "momentum": 0.8, "dampening": 0.3}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "momentum_form": "ewma", "nesterov": True}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "momentum_form": "lr_in_velocity", "weight_decay": 0.01}),
    ("Adagrad", {"lr": 0.1}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.01, "initial_accumulator_value": 0.1,
                 "eps_inside_sqrt": True, "maximize": True}),
    ("RMSprop", {"lr": 0.01}),
    ("RMSprop", {"lr": 0.01, "centered": True, "momentum": 0.9, "weight_decay": 0.01}),
    ("RMSprop", {"lr": 0.01, "eps_inside_sqrt": True, "maximize": True}),
    ("Adam", {"lr": 0.01}),
    ("Adam", {"lr": 0.01, "amsgrad": True, "weight_decay": 0.01, "maximize": True}),
    ("Adam", {"lr": 0.01, "bias_correction": False}),
    ("AdamW", {"lr": 0.01, "amsgrad": True}),
    ("NAdam", {"lr": 0.01}),
    ("NAdam", {"lr": 0.01, "weight_decay": 0.01, "decoupled_weight_decay": True}),
    ("NAdam", {"lr": 0.01, "momentum_schedule": False, "maximize": True, "weight_decay": 0.01}),
]


def test_a_chunk_boundary_falls_inside_a_tensor_of_one_group():
    from optimlab.kernels.cpu import CHUNK

    sizes = [math.prod(SHAPES[i]) for i in FIRST_GROUP]
    assert sum(sizes[:-1]) < CHUNK < sum(sizes)


def ids(case):
    return case[0] + "-" + "-".join(f"{k}={v}" for k, v in case[1].items())


def make_params(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=dtype)) for s in SHAPES]


def run(name, kwargs, dtype, fused, steps=10, seed=0):
    """Two param groups (the second with its own lr), StepLR-like lr changes, fresh grads each step."""
    params = make_params(dtype, seed)
    first = [params[i] for i in FIRST_GROUP]
    groups = [{"params": first}, {"params": [p for p in params if all(p is not q for q in first)],
                                  "lr": kwargs["lr"] * 0.5}]
    opt = getattr(optimlab, name)(groups, **kwargs, fused=None if fused else False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.9 ** t)
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g, dtype=dtype)
        opt.step()
        sched.step()
    return params, opt


def assert_same(a, b, exact):
    for x, y in zip(a, b):
        if exact:
            assert torch.equal(x, y)
        else:
            torch.testing.assert_close(x, y)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=ids)
def test_fused_matches_eager(case, dtype):
    name, kwargs = case
    before = dict(kernels.stats)
    fused_params, fused_opt = run(name, kwargs, dtype, fused=True)
    assert kernels.stats["eager_tensors"] == before["eager_tensors"]  # nothing fell back
    assert kernels.stats["fused_tensors"] - before["fused_tensors"] == 10 * len(SHAPES)
    with correctly_rounded_sqrt():
        eager_params, eager_opt = run(name, kwargs, dtype, fused=False)
    assert_same([p.detach() for p in fused_params], [p.detach() for p in eager_params], exact=True)
    fs, es = fused_opt.state_dict()["state"], eager_opt.state_dict()["state"]
    assert fs.keys() == es.keys()
    for i in fs:
        assert fs[i].keys() == es[i].keys()
        for k in fs[i]:
            assert fs[i][k].dtype == es[i][k].dtype and fs[i][k].shape == es[i][k].shape
            assert_same([fs[i][k]], [es[i][k]], exact=True)


TORCH_CASES = [
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.01}),
    ("RMSprop", {"lr": 0.01, "centered": True, "momentum": 0.5}),
    ("Adam", {"lr": 0.01, "amsgrad": True}),
    ("AdamW", {"lr": 0.01}),
    ("NAdam", {"lr": 0.01, "decoupled_weight_decay": True, "weight_decay": 0.1}),
]


@pytest.mark.parametrize("case", TORCH_CASES, ids=ids)
def test_fused_matches_torch_and_state_dict_round_trips(case):
    """optimlab's fused step vs torch.optim, 10 steps; then each loads the other's state_dict."""
    name, kwargs = case
    ours = make_params(torch.float32)
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    o = getattr(optimlab, name)(ours, **kwargs)
    t = getattr(torch.optim, name)(theirs, **kwargs)
    g = torch.Generator().manual_seed(3)

    def steps(n):
        for _ in range(n):
            for a, b in zip(ours, theirs):
                a.grad = torch.randn(a.shape, generator=g)
                b.grad = a.grad.clone()
            o.step()
            t.step()
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)

    fused_before = kernels.stats["fused_tensors"]
    steps(10)
    assert kernels.stats["fused_tensors"] > fused_before
    # torch.optim loads optimlab's state (torch's format), and optimlab reloads torch's
    t.load_state_dict(copy.deepcopy(o.state_dict()))
    o.load_state_dict(copy.deepcopy(t.state_dict()))
    steps(5)


def test_scheduler_changing_lr_does_not_rebuild_kernels():
    params = make_params(torch.float32)
    opt = optimlab.Adam(params, lr=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    sched.step()
    loaded, built = kernels.stats["loaded"], kernels.stats["built"]
    lrs = set()
    for _ in range(19):
        opt.step()
        sched.step()
        lrs.add(opt.param_groups[0]["lr"])
    assert len(lrs) == 19  # a new lr every step...
    assert (kernels.stats["loaded"], kernels.stats["built"]) == (loaded, built)  # ...one kernel


def test_fallbacks_give_eager_results():
    """Complex, mixed dtypes, non-contiguous and tensor-lr cases run eagerly, with equal results."""
    def build(fused, lr):
        g = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(4, 3, generator=g)),
                  torch.nn.Parameter(torch.randn(5, generator=g, dtype=torch.float64)),
                  torch.nn.Parameter(torch.randn(3, generator=g, dtype=torch.complex64)),
                  torch.nn.Parameter(torch.randn(3, 4, generator=g).t()),  # not contiguous
                  torch.nn.Parameter(torch.randn(0, 3, generator=g)),  # empty
                  torch.nn.Parameter(torch.randn(6, generator=g, dtype=torch.bfloat16))]
        opt = optimlab.Adam(params, lr=lr, fused=None if fused else False)
        for _ in range(4):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)
            opt.step()
        return params

    before = dict(kernels.stats)
    with correctly_rounded_sqrt():  # both sides: the fused step's fallbacks run the eager rule too
        fused = build(True, 0.01)
        assert kernels.stats["fused_tensors"] - before["fused_tensors"] == 3 * 4  # float32, float64, empty
        assert kernels.stats["eager_tensors"] - before["eager_tensors"] == 3 * 4
        eager = build(False, 0.01)
    assert_same([p.detach() for p in fused], [p.detach() for p in eager], exact=True)
    before = dict(kernels.stats)
    build(True, torch.tensor(0.01))  # a tensor lr goes to the eager rule as it is
    assert kernels.stats["fused_tensors"] == before["fused_tensors"]


def test_environment_variable_forces_eager(monkeypatch):
    monkeypatch.setenv("OPTIMLAB_FUSED", "0")
    before = kernels.stats["fused_tensors"]
    run("Adam", {"lr": 0.01}, torch.float32, fused=True, steps=2)
    assert kernels.stats["fused_tensors"] == before


def test_sparse_gradients_still_rejected():
    p = torch.nn.Parameter(torch.randn(4))
    p.grad = torch.randn(4).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        optimlab.Adam([p]).step()


def test_parameters_skipping_steps_keep_their_own_step_count():
    """A parameter without a gradient on some steps: its step counter lags, as in torch.optim."""
    def go(fused):
        params = make_params(torch.float32)
        opt = optimlab.NAdam(params, lr=0.01, fused=None if fused else False)
        g = torch.Generator().manual_seed(5)
        for i in range(8):
            for j, p in enumerate(params):
                p.grad = None if (j == 1 and i % 3 == 0) else torch.randn(p.shape, generator=g)
            opt.step()
        return params, opt

    fp, fo = go(True)
    with correctly_rounded_sqrt():
        ep, eo = go(False)
    assert_same([p.detach() for p in fp], [p.detach() for p in ep], exact=True)
    assert fo.state[fp[1]]["step"].item() == eo.state[ep[1]]["step"].item() == 5
    assert fo.state[fp[0]]["step"].item() == 8
    assert fo.state[fp[0]]["step"].dim() == 0


def test_multithreaded_kernel_over_several_tensors_matches_eager():
    """Enough elements for the kernel's parallel region (>= 256k): chunks split across threads."""
    shapes = [(150_000,), (7,), (120_000,)]

    def go(fused):
        g = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
        opt = optimlab.SGD(params, lr=0.1, momentum=0.9, fused=None if fused else False)
        for _ in range(3):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g)
            opt.step()
        return params

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert_same([p.detach() for p in go(True)], [p.detach() for p in go(False)], exact=True)
    finally:
        torch.set_num_threads(threads)


def test_momentum_buffers_created_at_different_steps():
    """SGD creates its buffer lazily: parameters that start late form their own bucket."""
    def go(fused):
        g = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(10, generator=g)) for _ in range(4)]
        opt = optimlab.SGD(params, lr=0.1, momentum=0.9, fused=fused)
        for i in range(6):
            for j, p in enumerate(params):
                p.grad = torch.randn(10, generator=g) if (j < 2 or i >= 3) else None
            opt.step()
        return params

    before = kernels.stats["fused_tensors"]
    fused = go(True)
    assert kernels.stats["fused_tensors"] - before == 2 * 6 + 2 * 3
    assert_same([p.detach() for p in fused], [p.detach() for p in go(False)], exact=True)
