"""Replaying a trace: later steps rerun only the rule's scalar arithmetic, with the same numbers
as a fresh trace, and trace afresh when a branch on a number would go the other way."""

from __future__ import annotations

import torch

from optimlab.algorithms.adam import adam
from optimlab.algorithms.nadam import nadam
from optimlab.algorithms.sgd import sgd
from optimlab.kernels.trace import CachedTracer, trace_rule

ADAM = dict(beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False,
            decoupled_weight_decay=False, bias_correction=True)


def _same(cached, fresh):
    (t1, o1), (t2, o2) = cached, fresh
    assert t1.nodes == t2.nodes and t1.scalars == t2.scalars  # bit for bit: same Python operations
    assert {k: v for k, v in o1.items() if not hasattr(v, "index")} == \
        {k: v for k, v in o2.items() if not hasattr(v, "index")}


def test_replay_gives_a_fresh_trace_numbers_for_every_step_and_lr():
    tracer = CachedTracer()
    inputs = ["param", "grad", "exp_avg", "exp_avg_sq"]
    first = None
    for step in range(1, 30):
        args = {**ADAM, "lr": 1e-3 * 0.97 ** step, "step": float(step)}
        got = tracer(adam, inputs, args, "adam")
        first = first or got[0]
        assert got[0] is first  # replayed: the same DAG object, new slot values
        _same(got, trace_rule(adam, inputs, args, "adam"))


def test_replay_of_scalar_state_outputs():
    tracer = CachedTracer()
    inputs = ["param", "grad", "exp_avg", "exp_avg_sq"]
    mu_product = 1.0
    for step in range(1, 8):
        args = dict(lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
                    decoupled_weight_decay=False, maximize=False, momentum_schedule=True,
                    mu_product=mu_product, step=float(step))
        got = tracer(nadam, inputs, args, "nadam")
        fresh = trace_rule(nadam, inputs, args, "nadam")
        _same(got, fresh)
        mu_product = got[1]["mu_product"]
        assert isinstance(mu_product, float)


def test_a_branch_on_a_number_that_flips_traces_afresh():
    """``momentum == 0`` is a guard: a momentum that becomes 0 (or leaves it) gives a new DAG."""
    tracer = CachedTracer()
    inputs = ["param", "grad", "momentum_buffer"]
    base = dict(lr=0.1, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False, momentum_form="torch")
    with_momentum = tracer(sgd, inputs, {**base, "momentum": 0.9})
    without = tracer(sgd, inputs, {**base, "momentum": 0.0})
    assert without[0] is not with_momentum[0]
    _same(without, trace_rule(sgd, inputs, {**base, "momentum": 0.0}))
    again = tracer(sgd, inputs, {**base, "momentum": 0.5})
    _same(again, trace_rule(sgd, inputs, {**base, "momentum": 0.5}))


def test_a_rule_using_a_number_as_a_plain_float_is_traced_every_step():
    import math

    def rule(param, grad, *, lr, step):
        return {"param": param - math.sqrt(lr) * grad / step}

    tracer = CachedTracer()
    for step in (1.0, 2.0):
        got = tracer(rule, ["param", "grad"], {"lr": 0.04, "step": step})
        _same(got, trace_rule(rule, ["param", "grad"], {"lr": 0.04, "step": step}))
    assert tracer.concrete


def test_tensor_arguments_are_not_replayed():
    tracer = CachedTracer()
    inputs = ["param", "grad", "exp_avg", "exp_avg_sq"]
    args = {**ADAM, "lr": 1e-3, "step": torch.tensor(2.0, dtype=torch.float64)}
    trace, _ = tracer(adam, inputs, args, "adam", device=torch.device("cpu"))
    assert any(node[0] == "dscalar" for node in trace.nodes) and tracer.entry is None
