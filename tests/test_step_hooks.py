"""optimlab's ``step`` wrapper (optim._hooked) against torch.optim's ``profile_hook_step``.

Step hooks run as torch's run them (global and per-optimizer, pre and post, the arguments each
sees, a pre-hook replacing the arguments, once per step also for Schedule-Free's own ``step``);
the profiler still sees ``Optimizer.step#<class>.step``; and ``record_function`` is entered only
where something would see it.
"""

from __future__ import annotations

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode

import optimlab
from optimlab.kernels import native


def _hook_calls(cls, **kwargs):
    """Every hook call of three steps (the third with a pre-hook that replaces the closure)."""
    p = torch.nn.Parameter(torch.ones(3))
    opt = cls([p], lr=0.1, **kwargs)
    calls = []

    def record(kind):
        def hook(o, args, kw):
            assert o is opt and args[0] is opt
            calls.append((kind, len(args), tuple(sorted(kw)), callable(args[1]) if len(args) > 1 else None))
        return hook

    def replace(o, args, kw):
        if len(args) > 1:  # the closure given: the step gets another one instead
            return (args[0], lambda: torch.tensor(7.0)), kw
        return None

    handles = [register_optimizer_step_pre_hook(record("global pre")), opt.register_step_pre_hook(record("pre")),
               opt.register_step_pre_hook(replace), opt.register_step_post_hook(record("post")),
               register_optimizer_step_post_hook(record("global post"))]
    try:
        results = []
        for closure in (None, None, lambda: torch.tensor(3.0)):
            p.grad = torch.ones(3)
            results.append(opt.step(closure) if closure else opt.step())
        p.grad = torch.ones(3)
        results.append(opt.step(closure=lambda: torch.tensor(5.0)))  # by keyword: no replacement
    finally:
        for handle in handles:
            handle.remove()
    return calls, [None if r is None else float(r) for r in results]


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_step_hooks_run_as_torch_runs_them(name):
    assert _hook_calls(getattr(optimlab, name)) == _hook_calls(getattr(torch.optim, name))


def test_schedule_free_step_runs_its_hooks_once():
    calls, results = _hook_calls(optimlab.SGDScheduleFree)
    assert [c[0] for c in calls].count("pre") == 4 and [c[0] for c in calls].count("post") == 4
    assert results == [None, None, 7.0, 5.0]


def test_the_profiler_sees_the_step():
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3)
    opt = optimlab.Adam([p], lr=0.1)
    with torch.profiler.profile() as prof:
        opt.step()
    assert "Optimizer.step#Adam.step" in {event.name for event in prof.events()}


def test_record_function_only_where_something_records(monkeypatch):
    """With the C++ build and nothing observing, the step enters no ``record_function``; a
    dispatch mode (which would see the profiler's ops) brings it back, as do the other builds."""
    entered = []
    real = torch.autograd.profiler.record_function

    def counting(name, *args):
        entered.append(name)
        return real(name, *args)

    monkeypatch.setattr(torch.autograd.profiler, "record_function", counting)

    class Quiet(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3)
    opt = optimlab.Adam([p], lr=0.1)
    opt.step()
    cpp = native.kind(native.enabled()) == "C++"
    assert entered == ([] if cpp else ["Optimizer.step#Adam.step"])
    with Quiet():
        opt.step()
    assert entered[-1] == "Optimizer.step#Adam.step" and len(entered) == (1 if cpp else 2)
    monkeypatch.setattr(native, "_module", [native.build(against_torch=False)])
    assert native.recording()
    monkeypatch.setattr(native, "_module", [])  # OPTIMLAB_NATIVE=0: nothing is built to answer
    monkeypatch.setenv("OPTIMLAB_NATIVE", "0")
    assert native.recording() and native._module == []
