"""optimlab against torch.optim, driven by torch's own OptimizerInfo database.

``torch.testing._internal.common_optimizers.optim_db`` (shipped with torch) lists, for every
torch.optim class, the constructor configurations torch tests and the inputs that must fail.
Every configuration (with each of the foreach / fused / differentiable flags torch supports on
the CPU) runs through torch's class and optimlab's side by side: the same parameters after each
step, the same ``state_dict`` (state and param groups), the same hook calls, a ``state_dict``
loaded across the two libraries continuing alike, and for each error input an error (or warning)
of torch's declared type. CPU, float32 and float64, every class optimlab offers.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch.testing._internal.common_optimizers import (OptimizerErrorEnum,
                                                        _get_optim_inputs_including_global_cliquey_kwargs,
                                                        optim_db)

import optimlab

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: a second thread only waits

STEPS = 4
CLOSURE_STEPS = 1  # LBFGS: each step is up to max_iter (20) closure evaluations already
INFOS = [info for info in optim_db if hasattr(optimlab, info.optim_cls.__name__)]
TOLERANCE = {torch.float64: dict(rtol=1e-7, atol=1e-10), torch.float32: dict(rtol=2e-5, atol=2e-6)}


def test_every_torch_optimizer_class_is_offered():
    assert {info.optim_cls.__name__ for info in optim_db} <= {info.optim_cls.__name__ for info in INFOS}


def ours(info):
    return getattr(optimlab, info.optim_cls.__name__)


def configurations(info, dtype):
    for config in _get_optim_inputs_including_global_cliquey_kwargs("cpu", dtype, info):
        if not config.kwargs.get("capturable"):  # capturable is for accelerators (not on the CPU)
            yield config.desc, config.kwargs


def make_params(info, dtype, differentiable):
    """Two 2-D weights for Muon (2-D only), otherwise a weight and a bias; for differentiable=True
    non-leaf tensors (a step writes into them under autograd, which a leaf would refuse)."""
    g = torch.Generator().manual_seed(0)
    shapes = [(5, 3), (4, 5)] if info.optim_cls.__name__ == "Muon" else [(5, 3), (5,)]
    leaves = [torch.randn(s, generator=g, dtype=dtype, requires_grad=True) for s in shapes]
    return leaves, [leaf.clone() for leaf in leaves] if differentiable else leaves


def gradients(params, step):
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]


def build(cls, info, params, kwargs):
    kwargs = copy.deepcopy(kwargs)
    if info.supports_param_groups:
        return cls([{"params": [params[0]]}, {"params": params[1:]}], **kwargs)
    return cls(params, **kwargs)


def advance(opt, info, params, step, sparse):
    """One step with step-dependent gradients (none for the second tensor at step 2)."""
    if info.step_requires_closure:
        target = gradients(params, step)

        def closure():
            opt.zero_grad()
            loss = sum(((p - t) ** 2 * (1 + i)).sum() for i, (p, t) in enumerate(zip(params, target)))
            loss.backward()
            return loss

        return opt.step(closure)
    for i, (p, grad) in enumerate(zip(params, gradients(params, step))):
        p.grad = None if (step == 2 and i == 1) else grad.to_sparse() if sparse else grad
    return opt.step()


def steps_of(info):
    return CLOSURE_STEPS if info.step_requires_closure else STEPS


def run(cls, info, kwargs, dtype):
    """Steps of one optimizer; returns the parameters after each step, the optimizer, the params,
    and the hook calls, or the error the steps raised."""
    differentiable = bool(kwargs.get("differentiable"))
    _, params = make_params(info, dtype, differentiable)
    opt = build(cls, info, params, kwargs)
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    trajectory = []
    try:
        for step in range(steps_of(info)):
            advance(opt, info, params, step, info.only_supports_sparse_grads)
            trajectory.append([p.detach().clone() for p in params])
    except Exception as error:  # compared with torch's below
        return error
    return trajectory, opt, params, calls


def assert_state_equal(ours_state, theirs_state, tolerance):
    """Same keys and values (tensors close, dtypes equal; Python numbers as torch keeps them)."""
    if isinstance(theirs_state, torch.Tensor):
        assert isinstance(ours_state, torch.Tensor) and ours_state.dtype == theirs_state.dtype
        torch.testing.assert_close(ours_state.detach(), theirs_state.detach(), **tolerance)
    elif isinstance(theirs_state, dict):
        assert ours_state.keys() == theirs_state.keys()
        for key in theirs_state:
            assert_state_equal(ours_state[key], theirs_state[key], tolerance)
    elif isinstance(theirs_state, (list, tuple)):
        assert len(ours_state) == len(theirs_state)
        for a, b in zip(ours_state, theirs_state):
            assert_state_equal(a, b, tolerance)
    elif isinstance(theirs_state, float):
        assert type(ours_state) is float
        assert ours_state == pytest.approx(theirs_state, rel=tolerance["rtol"], abs=tolerance["atol"])
    else:
        assert type(ours_state) is type(theirs_state) and ours_state == theirs_state


def assert_same_state_dict(ours_sd, theirs_sd, tolerance):
    assert_state_equal(ours_sd["state"], theirs_sd["state"], tolerance)
    assert len(ours_sd["param_groups"]) == len(theirs_sd["param_groups"])
    for ours_group, theirs_group in zip(ours_sd["param_groups"], theirs_sd["param_groups"]):
        for key, value in theirs_group.items():  # optimlab's groups may add options of their own
            assert_state_equal(ours_group[key], value, tolerance)


def continue_after_load(source, target_cls, info, kwargs, dtype):
    """A state_dict from ``source`` loaded into a fresh ``target_cls``: the next step of both agree."""
    trajectory, opt, params, _ = source
    _, fresh = make_params(info, dtype, bool(kwargs.get("differentiable")))
    with torch.no_grad():
        for p, value in zip(fresh, trajectory[-1]):
            p.copy_(value)
    target = build(target_cls, info, fresh, kwargs)
    target.load_state_dict(copy.deepcopy(opt.state_dict()))
    advance(opt, info, params, steps_of(info), info.only_supports_sparse_grads)
    advance(target, info, fresh, steps_of(info), info.only_supports_sparse_grads)
    return [p.detach() for p in params], [p.detach() for p in fresh]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("info", INFOS, ids=[info.optim_cls.__name__ for info in INFOS])
def test_configurations_match_torch(info, dtype):
    checked = 0
    for desc, kwargs in configurations(info, dtype):
        # torch's differentiable path computes bias corrections from its float32 step tensor
        tolerance = TOLERANCE[torch.float32 if kwargs.get("differentiable") else dtype]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. non-leaf .grad access: both libraries alike
            theirs = run(info.optim_cls, info, kwargs, dtype)
            mine = run(ours(info), info, kwargs, dtype)
        where = f"{info.optim_cls.__name__}({kwargs}) [{desc}]"
        if isinstance(theirs, Exception):
            assert isinstance(mine, type(theirs)), f"{where}: torch raised {theirs!r}, optimlab gave {mine!r}"
            continue
        assert not isinstance(mine, Exception), f"{where}: optimlab raised {mine!r}"
        for step, (a, b) in enumerate(zip(mine[0], theirs[0])):
            for x, y in zip(a, b):
                torch.testing.assert_close(x, y, **tolerance, msg=lambda m: f"{where} step {step}: {m}")
        assert mine[3] == theirs[3], f"{where}: hook calls differ"
        assert_same_state_dict(mine[1].state_dict(), theirs[1].state_dict(), tolerance)
        if not kwargs.get("differentiable"):
            for source, target_cls in ((theirs, ours(info)), (mine, info.optim_cls)):
                after, loaded = continue_after_load(source, target_cls, info, kwargs, dtype)
                for x, y in zip(after, loaded):
                    torch.testing.assert_close(x, y, **tolerance, msg=lambda m: f"{where} after load: {m}")
        checked += 1
    assert checked > 0


def outcome(call):
    """The exception type or warning category ``call`` ends in, or None."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            call()
        except Exception as error:
            return error
    return caught


@pytest.mark.parametrize("info", [i for i in INFOS if i.optim_error_inputs_func is not None],
                         ids=[i.optim_cls.__name__ for i in INFOS if i.optim_error_inputs_func is not None])
def test_error_inputs_fail_like_torch(info):
    for dtype in (torch.float32, torch.float64):
        for error_input in info.optim_error_inputs_func(device="cpu", dtype=dtype):
            config = error_input.optimizer_error_input
            expected = error_input.error_type
            for cls in (info.optim_cls, ours(info)):
                def call():
                    opt = cls(config.params, **config.kwargs)
                    if error_input.error_on == OptimizerErrorEnum.STEP_ERROR:
                        opt.step()
                result = outcome(call)
                where = f"{cls.__module__}.{cls.__name__}: {config.desc}"
                if issubclass(expected, Warning):
                    assert isinstance(result, list) and any(issubclass(w.category, expected) for w in result), where
                else:
                    assert isinstance(result, expected), f"{where}: expected {expected.__name__}, got {result!r}"


@pytest.mark.parametrize("info", [i for i in INFOS if i.supports_complex],
                         ids=[i.optim_cls.__name__ for i in INFOS if i.supports_complex])
def test_complex_parameters_match_torch(info):
    """A complex parameter next to a real one, every CPU configuration (fused takes no complex):
    the same numbers as torch.optim, which steps a complex number as a pair of reals."""
    for config in _get_optim_inputs_including_global_cliquey_kwargs("cpu", torch.complex64, info,
                                                                     skip=("differentiable", "fused")):
        if config.kwargs.get("capturable"):
            continue
        finals = []
        for cls in (info.optim_cls, ours(info)):
            g = torch.Generator().manual_seed(0)
            params = [torch.randn(4, 3, dtype=torch.complex64, generator=g, requires_grad=True),
                      torch.randn(3, generator=g, requires_grad=True)]
            opt = cls(params, **copy.deepcopy(config.kwargs))

            def closure():
                opt.zero_grad()
                loss = sum((p.abs() ** 2 * (i + 1)).sum() for i, p in enumerate(params))
                loss.backward()
                if info.only_supports_sparse_grads:
                    for p in params:
                        p.grad = p.grad.to_sparse()
                return loss

            for _ in range(1 if info.step_requires_closure else 3):
                if info.step_requires_closure:
                    opt.step(closure)
                else:
                    closure()
                    opt.step()
            finals.append([torch.view_as_real(p.detach()) if p.is_complex() else p.detach() for p in params])
        for a, b in zip(*finals):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m: f"{config.kwargs}: {m}")


# --- found by running torch's own test/test_optim.py against optimlab (docs/torch_tests.md) -------

@pytest.mark.parametrize("tolerance", [float("inf"), -float("inf"), -1.0])
def test_lbfgs_takes_any_real_tolerance_as_torch(tolerance):
    """torch accepts any threshold: inf stops after the first evaluation, a negative one never stops
    the run (test_second_order_optims_return_consistent_types)."""
    results = []
    for cls in (torch.optim.LBFGS, optimlab.LBFGS):
        p = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
        opt = cls([p], tolerance_grad=tolerance, tolerance_change=tolerance)

        def closure():
            opt.zero_grad()
            loss = (p ** 2 * torch.tensor([1.0, 3.0, 10.0])).sum()
            loss.backward()
            return loss

        out = opt.step(closure)
        results.append((type(out), p.detach().clone(), opt.state[p]["func_evals"]))
    (t0, p0, n0), (t1, p1, n1) = results
    assert t0 is t1 and n0 == n1 and torch.equal(p0, p1)
    with pytest.raises(ValueError, match="tolerance_grad must be a real number, got nan"):
        optimlab.LBFGS([torch.zeros(2, requires_grad=True)], tolerance_grad=float("nan"))


@pytest.mark.parametrize("name", ["SGD", "Adagrad", "Adam", "AdamW"])
def test_fused_true_on_meta_params_is_refused_at_step_as_torch(name):
    """AdaGrad makes its state in __init__: building it on meta params with fused=True must work
    (test_fused_error_on_params_on_meta); the step refuses them; after to_empty it steps."""
    with torch.device("meta"):
        model = torch.nn.Linear(2, 3)
    opt = getattr(optimlab, name)(model.parameters(), fused=True)
    with torch.device("meta"):
        for p in model.parameters():
            p.grad = torch.rand_like(p)
    with pytest.raises(RuntimeError, match="`fused=True` requires all the params to be floating point Tensors"):
        opt.step()
    opt.zero_grad(set_to_none=True)
    model.to_empty(device="cpu")
    for p in model.parameters():
        p.grad = torch.rand_like(p)
    opt.step()
