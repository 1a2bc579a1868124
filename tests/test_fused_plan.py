"""The fused path's plan: state edits between steps, many param groups, duplicate parameters.

Each scenario runs three optimizers side by side on identical parameters and gradients:
torch.optim's (the behaviour to match), optimlab's on the fused path, and optimlab's eager
reference (``fused=False``). Hand edits of ``optimizer.state`` are applied to all three between
steps; parameters and ``state_dict`` must match torch's (within float rounding: torch's CPU
``sqrt`` is MKL's, not correctly rounded, the kernel's is) and the fused path must match the eager
one bit for bit, the eager side stepping under a correctly rounded ``sqrt``
(:func:`ieee_sqrt.correctly_rounded_sqrt`).
"""

from __future__ import annotations

import contextlib
import copy
import warnings

import pytest
import torch

import optimlab
from ieee_sqrt import correctly_rounded_sqrt
from optimlab import kernels

SHAPES = [(300,), (5, 3), (7,), (40, 4), (1,)]

CASES = [
    ("SGD", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.01}),
    ("RMSprop", {"lr": 0.01, "centered": True, "momentum": 0.5}),
    ("Adam", {"lr": 0.01, "amsgrad": True}),
    ("AdamW", {"lr": 0.01}),
    ("NAdam", {"lr": 0.01, "decoupled_weight_decay": True, "weight_decay": 0.1}),
]


def _tensor_state(st):
    return [k for k, v in st.items() if torch.is_tensor(v) and v.dim() > 0]


def replace_tensor(opt, params):
    st = opt.state[params[0]]
    for k in _tensor_state(st):
        st[k] = torch.zeros_like(st[k])


def edit_in_place(opt, params):
    for k in _tensor_state(opt.state[params[3]]):
        opt.state[params[3]][k].mul_(0.5)


def reset_step(opt, params):
    opt.state[params[1]]["step"] = torch.tensor(0.0)


def reset_step_in_place(opt, params):
    opt.state[params[2]]["step"].zero_()


def clear(opt, params):
    opt.state.clear()


def delete_one(opt, params):
    del opt.state[params[0]]


def clone_loop(opt, params):  # the "move state" loop before a checkpoint
    for st in opt.state.values():
        for k, v in st.items():
            st[k] = v.clone()


def new_param_data(opt, params):
    params[4].data = params[4].data.clone() + 1.0


def swap_storage(opt, params):  # the same tensor objects, new storages under them, step included
    for k, v in opt.state[params[1]].items():
        v.set_(torch.full_like(v, 0.25) if v.dim() else v.clone())


def data_loop(opt, params):  # the older "move state" loop: v.data = ..., every entry, step included
    for st in opt.state.values():
        for v in st.values():
            if torch.is_tensor(v):
                v.data = v.data.clone()


def set_step(opt, params):  # a 0-dim step given another storage
    opt.state[params[3]]["step"].set_(torch.tensor(1.0, dtype=opt.state[params[3]]["step"].dtype))


EDITS = [replace_tensor, edit_in_place, reset_step, reset_step_in_place, clear, delete_one, clone_loop,
         new_param_data, swap_storage, data_loop, set_step]
# SGD keeps no step count; and a storage swapped under its state is caught through the step's
# (kernels/__init__.py: a swap under a dense state tensor alone is the one unchecked edit)
STEP_EDITS = (reset_step, reset_step_in_place, set_step, swap_storage, data_loop)


def make_params(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=dtype)) for s in SHAPES]


def build(name, kwargs, params, kind):
    groups = [{"params": params[:2]}, {"params": params[2:], "lr": kwargs["lr"] * 0.5}]
    if kind == "torch":
        return getattr(torch.optim, name)(groups, **kwargs, foreach=False)
    return getattr(optimlab, name)(groups, **kwargs, fused=None if kind == "fused" else False)


def side_by_side(name, kwargs, steps, between=lambda step, opts, params: None, dtype=torch.float32):
    """Step torch / fused / eager together with the same fresh gradients; return (params, opts)."""
    kinds = ("torch", "fused", "eager")
    params = {k: make_params(dtype=dtype) for k in kinds}
    opts = {k: build(name, kwargs, params[k], k) for k in kinds}
    g = torch.Generator().manual_seed(1)
    for i in range(steps):
        grads = [torch.randn(p.shape, generator=g, dtype=dtype) for p in params["torch"]]
        for k in kinds:
            for p, grad in zip(params[k], grads):
                p.grad = grad.clone()
            # both of ours: a tensor the fused path leaves to the eager rule steps as the eager side's
            with correctly_rounded_sqrt() if k != "torch" else contextlib.nullcontext():
                opts[k].step()
        between(i, opts, params)
    return params, opts


def assert_match(name, params, opts):
    """fused == eager bit for bit; both within float rounding of torch.optim's for-loop, whose CPU
    sqrt (MKL's) is 1 ulp off the correctly rounded one at times (docs/algorithms.md, parity)."""
    for a, b, c in zip(params["torch"], params["fused"], params["eager"]):
        torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-5, atol=1e-6)
        assert torch.equal(b, c)
    t, f, e = (opts[k].state_dict() for k in ("torch", "fused", "eager"))
    assert t["state"].keys() == f["state"].keys() == e["state"].keys()
    for i in t["state"]:
        assert t["state"][i].keys() == f["state"][i].keys() == e["state"][i].keys()
        for k in t["state"][i]:
            x, y, z = t["state"][i][k], f["state"][i][k], e["state"][i][k]
            torch.testing.assert_close(y, x.to(y.dtype), rtol=1e-5, atol=1e-6)
            assert y.shape == z.shape and y.dtype == z.dtype
            assert torch.equal(y, z), (name, i, k)
    for tg, fg in zip(t["param_groups"], f["param_groups"]):
        assert {k: v for k, v in fg.items() if k in tg and k != "foreach"} == {k: v for k, v in tg.items() if k != "foreach"}


@pytest.mark.parametrize("edit", EDITS, ids=lambda e: e.__name__)
@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[5]], ids=lambda c: c[0])
def test_state_edits_take_effect_as_in_torch(case, edit):
    """Each edit alone, twice, on three kinds of state: lazily made (SGD), plain (Adam), scalar
    (NAdam's mu_product); every class meets every edit in test_every_edit_in_one_run."""
    name, kwargs = case
    if name == "SGD" and edit in STEP_EDITS:
        pytest.skip("SGD keeps no step count (nor one to swap a storage under)")
    if name == "Adagrad" and edit in (clear, delete_one):
        pytest.skip("torch.optim.Adagrad creates its state in __init__ only: a cleared entry is a KeyError there")
    before = dict(kernels.stats)

    def between(i, opts, params):
        if i in (2, 5):
            for k in opts:
                edit(opts[k], params[k])

    params, opts = side_by_side(name, kwargs, 8, between)
    assert kernels.stats["fused_tensors"] - before["fused_tensors"] >= 8 * len(SHAPES) - 3
    assert_match(name, params, opts)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_load_state_dict_between_steps(case):
    """Rewind: load a state_dict saved three steps earlier (torch's into torch, ours into ours)."""
    name, kwargs = case
    saved = {}

    def between(i, opts, params):
        if i == 1:
            for k in opts:
                saved[k] = copy.deepcopy(opts[k].state_dict())
        if i == 4:
            for k in opts:
                opts[k].load_state_dict(saved[k])

    params, opts = side_by_side(name, kwargs, 7, between)
    assert_match(name, params, opts)


def test_plan_is_reused_across_steps_with_fresh_gradients():
    """Fresh gradient tensors each step and an lr schedule do not rebuild the plan."""
    params = make_params()
    opt = optimlab.Adam([{"params": params[:2]}, {"params": params[2:], "lr": 0.5e-2}], lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    plans, calls = kernels.stats["plans"], kernels.stats["kernel_calls"]
    for _ in range(5):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
        sched.step()
    assert kernels.stats["plans"] == plans
    assert kernels.stats["kernel_calls"] - calls == 5  # both groups in one call per step


@pytest.mark.parametrize("name,kwargs", [("SGD", {"lr": 0.1, "momentum": 0.9}), ("NAdam", {"lr": 0.01}),
                                         ("Adam", {"lr": 0.01})])
def test_many_param_groups_one_kernel_call(name, kwargs):
    """Layer-wise lr decay: twelve groups, each its own lr (and a few with weight decay)."""
    def build_groups(params):
        return [{"params": [p], "lr": kwargs["lr"] * 0.8 ** i, "weight_decay": 0.01 if i % 4 == 3 else 0.0}
                for i, p in enumerate(params)]

    g = torch.Generator().manual_seed(0)
    shapes = [(50 + 13 * i,) for i in range(12)]
    ours = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    eager = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    o = getattr(optimlab, name)(build_groups(ours), **kwargs)
    e = getattr(optimlab, name)(build_groups(eager), **kwargs, fused=False)
    t = getattr(torch.optim, name)(build_groups(theirs), **kwargs)
    calls = kernels.stats["kernel_calls"]
    steps = 6
    for _ in range(steps):
        for a, b, c in zip(ours, eager, theirs):
            a.grad = torch.randn(a.shape, generator=g)
            b.grad, c.grad = a.grad.clone(), a.grad.clone()
        t.step()
        with correctly_rounded_sqrt():
            o.step()
            e.step()
    # with and without weight decay: two structures, so two kernel calls a step (SGD's first step
    # has no momentum buffer yet: its own structure, then the buffers appear)
    assert kernels.stats["kernel_calls"] - calls == 2 * steps
    for a, b, c in zip(ours, eager, theirs):
        assert torch.equal(a, b)
        torch.testing.assert_close(a.detach(), c.detach(), rtol=1e-5, atol=1e-6)  # torch's MKL sqrt


def test_structure_change_between_steps():
    """Turning weight decay on in one group between steps changes its kernel, as eager would."""
    def go(fused):
        params = make_params()
        opt = optimlab.Adam([{"params": params[:2]}, {"params": params[2:]}], lr=0.01,
                            fused=None if fused else False)
        g = torch.Generator().manual_seed(2)
        for i in range(4):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g)
            if i == 2:
                opt.param_groups[1]["weight_decay"] = 0.1
            opt.step()
        return params

    fused = go(True)
    with correctly_rounded_sqrt():
        eager = go(False)
    for a, b in zip(fused, eager):
        assert torch.equal(a, b)


@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[5]], ids=lambda c: c[0])
def test_duplicate_parameters_as_torch(case):
    """A parameter listed twice: torch's warning, and torch's for-loop numbers (it is stepped twice)."""
    name, kwargs = case
    results = {}
    for kind in ("torch", "fused", "eager"):
        g = torch.Generator().manual_seed(0)
        a, b = (torch.nn.Parameter(torch.randn(20, generator=g)) for _ in range(2))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if kind == "torch":
                opt = getattr(torch.optim, name)([a, b, a], **kwargs, foreach=False)
            else:
                opt = getattr(optimlab, name)([a, b, a], **kwargs, fused=None if kind == "fused" else False)
        assert any("duplicate parameters" in str(w.message) for w in caught)
        for _ in range(4):
            a.grad, b.grad = torch.randn(20, generator=g), torch.randn(20, generator=g)
            # both of ours: the fused path steps a repeated parameter with the eager rule
            with correctly_rounded_sqrt() if kind != "torch" else contextlib.nullcontext():
                opt.step()
        results[kind] = (a.detach().clone(), b.detach().clone(), opt.state_dict()["state"])
    for x, y, z in zip(results["torch"][:2], results["fused"][:2], results["eager"][:2]):
        torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-6)  # torch's MKL sqrt
        assert torch.equal(y, z)
    ts, fs = results["torch"][2], results["fused"][2]
    assert ts.keys() == fs.keys()
    for i in ts:
        for k in ts[i]:
            torch.testing.assert_close(fs[i][k], ts[i][k].to(fs[i][k].dtype), rtol=1e-5, atol=1e-6)


def test_public_param_state_creates_state_once():
    p = torch.nn.Parameter(torch.randn(4))
    opt = optimlab.Adam([p])
    group = opt.param_groups[0]
    st = opt.param_state(p, group)
    assert set(st) == {"step", "exp_avg", "exp_avg_sq"} and opt.state[p] is st
    assert opt.param_state(p, group) is st
    opt.state[p].clear()  # an empty entry is initialised again, as torch.optim's _init_group does
    assert set(opt.param_state(p, group)) == {"step", "exp_avg", "exp_avg_sq"}


MORE_CASES = [("Adadelta", {"lr": 0.5, "weight_decay": 0.01}), ("Adamax", {"lr": 0.01}),
              ("RAdam", {"lr": 0.01, "decoupled_weight_decay": True, "weight_decay": 0.1}),
              ("ASGD", {"lr": 0.01}), ("Rprop", {"lr": 0.01})]


@pytest.mark.parametrize("case", CASES + MORE_CASES, ids=lambda c: c[0])
def test_every_edit_in_one_run(case):
    """Every torch.optim class optimlab steps element-wise: one edit after each step, then compare."""
    name, kwargs = case
    edits = [e for e in EDITS if not (name == "SGD" and e in STEP_EDITS)
             and not (name == "Adagrad" and e in (clear, delete_one))]

    def between(i, opts, params):
        if i < len(edits):
            for k in opts:
                edits[i](opts[k], params[k])

    params, opts = side_by_side(name, kwargs, len(edits) + 2, between)
    assert_match(name, params, opts)
