"""Low-precision state on the fused path's plan, with gradients fresh from ``backward()``.

Where the plan's lists hold, a step makes no Python object per tensor: the gradients are read
by address (``kernels.listing``, ``gather_own``), the ``state_dtype`` check takes the dtypes from
the plan (:func:`optimlab.faults.validate`'s ``dtypes``), and the kernel hashes the rounding keys
from a row written once per seed and the step (:mod:`optimlab.kernels.precision_cpu`). These
tests make every change between steps that the plan must still see, and compare the step that
reads gradients by address with the one that collects them (bit for bit) and with the eager
reference (state bit for bit; parameters within the eager CPU sqrt's ulp, as in
``test_precision.test_fused_equals_eager``).
"""

from __future__ import annotations

import copy

import pytest
import torch

import optimlab
from optimlab import kernels
from optimlab.kernels import native, precision

SIZES = [(5000,), (4100,), (64, 64), (5000,), (30,), (7, 9)]
OTHER = {torch.bfloat16: "int8", "int8": torch.bfloat16}


def _backward(params, g):
    for p in params:
        p.grad = None  # zero_grad(set_to_none=True)
    sum((p * torch.randn(p.shape, generator=g)).sum() for p in params).backward()


def _low_tensors(state):
    return [k for k, v in state.items() if torch.is_tensor(v) and v.dim() and v.dtype != torch.float32]


def _run(state_dtype, mode, monkeypatch):
    """14 steps of Adam over two groups, a change before most of them; ``mode``: "address" (the
    default step), "collected" (``kernels.listing`` answers None: gradients collected through
    Python, the state_dtype check reads every parameter) or "eager" (``fused=False``)."""
    with monkeypatch.context() as m:
        if mode == "collected":
            m.setattr(kernels, "listing", lambda *a: None)
        g = torch.Generator().manual_seed(11)
        params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in SIZES]
        opt = optimlab.Adam([{"params": params[:3]}, {"params": params[3:], "lr": 5e-3}], lr=1e-2,
                            state_dtype=state_dtype, fused=False if mode == "eager" else None)
        saved = None
        for i in range(14):
            _backward(params, g)
            if i == 2:  # a gradient gone (and back the step after)
                params[1].grad = None
            if i == 4:  # a gradient not contiguous: that parameter steps eagerly
                params[2].grad = torch.randn(64, 64, generator=g).t()
                saved = copy.deepcopy(opt.state_dict())
            if i == 5:  # a step count replaced by hand: the rounding keys follow it
                opt.state[params[0]]["step"] = torch.tensor(1.0)
            if i == 6:  # ... and reset in place
                opt.state[params[3]]["step"].zero_()
            if i == 7:  # a new seed for one group's rounding
                opt.param_groups[0]["rounding_seed"] = 12345
            if i == 8:  # a state tensor replaced by hand with another dtype (float32)
                st = opt.state[params[0]]
                for k in _low_tensors(st):
                    st[k] = precision.load(st, k, torch.float32).clone()
            if i == 9:  # another state_dtype in one group
                opt.param_groups[1]["state_dtype"] = OTHER[state_dtype]
            if i == 11:  # a checkpoint loaded (the state of step 4, in the format it was saved in)
                opt.load_state_dict(saved)
            opt.step()
        return [p.detach().clone() for p in params], opt.state_dict()["state"]


@pytest.mark.parametrize("state_dtype", [torch.bfloat16, "int8"], ids=["bf16", "int8"])
def test_changes_between_steps_are_seen_as_by_the_collecting_and_eager_steps(state_dtype, monkeypatch):
    checks, took = native.enabled(), []
    if hasattr(checks, "gather_own"):  # the C++ build and Python read gradients by address
        real = checks.gather_own
        monkeypatch.setattr(checks, "gather_own", lambda *a: took.append(real(*a)) or took[-1])
    address = _run(state_dtype, "address", monkeypatch)
    if hasattr(checks, "gather_own"):
        assert took.count(True) >= 6 and False in took  # by address where the lists held; not where not
    collected = _run(state_dtype, "collected", monkeypatch)
    eager = _run(state_dtype, "eager", monkeypatch)
    for (params, state), exact in ((collected, True), (eager, False)):
        for a, b in zip(address[0], params):
            assert torch.equal(a, b) if exact else torch.allclose(a, b, rtol=1e-5, atol=1e-7)
        assert address[1].keys() == state.keys()
        for i, entry in address[1].items():
            assert entry.keys() == state[i].keys(), i
            for k, v in entry.items():
                assert torch.equal(v, state[i][k]) if torch.is_tensor(v) else v == state[i][k], (i, k)
    # the state dtypes as asked: group 1 changed its storage at step 9 (tensors of 4,096 or more)
    low = {torch.bfloat16: torch.bfloat16, "int8": torch.uint8}
    assert address[1][0]["exp_avg"].dtype == low[state_dtype]
    assert address[1][3]["exp_avg"].dtype == low[OTHER[state_dtype]]


def _snapshot(opt, params):
    return [p.detach().clone() for p in params], copy.deepcopy(opt.state_dict()["state"])


def _same(a, b):
    assert all(torch.equal(x, y) for x, y in zip(a[0], b[0]))
    assert a[1].keys() == b[1].keys()
    assert all(torch.equal(v, b[1][i][k]) for i in a[1] for k, v in a[1][i].items() if torch.is_tensor(v))


def _stepped(state_dtype, extra):
    """An optimizer that has stepped three times with fresh gradients (the by-address step),
    its parameters, and ``extra`` in its first group."""
    g = torch.Generator().manual_seed(2)
    params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in SIZES]
    opt = optimlab.Adam([{"params": params[:3] + extra}, {"params": params[3:]}], lr=1e-2, state_dtype=state_dtype)
    for _ in range(3):
        _backward(params + [p for p in extra if p.requires_grad], g)
        opt.step()
    checks = native.enabled()
    if hasattr(checks, "listing"):  # the step that follows reads by address (the case under test)
        assert kernels.listing(opt, checks) is not None
    return opt, params, g


@pytest.mark.parametrize("state_dtype", [torch.bfloat16, "int8"], ids=["bf16", "int8"])
def test_a_parameter_without_gradient_turned_complex_is_refused(state_dtype):
    """Every parameter of a low-precision group is checked each step, also one without a
    gradient (which no kernel reads): a complex one is refused before anything moves."""
    frozen = torch.nn.Parameter(torch.zeros(6), requires_grad=False)
    opt, params, g = _stepped(state_dtype, [frozen])
    frozen.data = torch.zeros(3, dtype=torch.complex64)
    _backward(params, g)
    before = _snapshot(opt, params)
    with pytest.raises(ValueError, match="state_dtype=.*complex parameter"):
        opt.step()
    _same(before, _snapshot(opt, params))


@pytest.mark.parametrize("state_dtype", [torch.bfloat16, "int8"], ids=["bf16", "int8"])
def test_a_stepped_parameter_turned_complex_is_refused(state_dtype):
    """A parameter of a kernel's bucket given a complex dtype at the same address: refused
    before anything moves (the bucket's check sees the dtype, the collecting step the rest)."""
    opt, params, g = _stepped(state_dtype, [])
    _backward(params, g)
    params[0].data = params[0].data.view(torch.complex64)
    params[0].grad = None
    before = _snapshot(opt, params)
    with pytest.raises(ValueError, match="state_dtype=.*complex parameter"):
        opt.step()
    _same(before, _snapshot(opt, params))


def test_a_state_dtype_less_precise_than_an_eager_parameter_is_refused():
    """A float64 parameter (stepped eagerly under bfloat16 state) in a group whose state_dtype is
    then set to float32: refused, naming the argument, before anything moves."""
    wide = torch.nn.Parameter(torch.randn(40, dtype=torch.float64))
    opt, params, g = _stepped(torch.bfloat16, [wide])
    opt.param_groups[0]["state_dtype"] = torch.float32
    _backward(params + [wide], g)
    before = _snapshot(opt, params + [wide])
    with pytest.raises(ValueError, match="state_dtype=torch.float32 is less precise than a torch.float64"):
        opt.step()
    _same(before, _snapshot(opt, params + [wide]))
