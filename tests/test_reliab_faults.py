"""Faults: non-finite gradients, GradScaler, low-precision params, sparse and complex gradients."""

import copy

import pytest
import torch
from reliab_configs import CONFIGS, data, mlp, torch_twin

import optimlab
from optimlab.faults import NonFiniteGradientError
from nested import assert_same

NAMES = sorted(CONFIGS)


def _two_groups(name, **extra):
    cls, kwargs = CONFIGS[name]
    model = mlp()
    groups = [{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": kwargs["lr"] / 2}]
    return model, cls(groups, **kwargs, **extra)


def _train_step(model, opt, x, y):
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()


def _snapshot(model, opt):
    return copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("name", NAMES)
def test_nonfinite_skip_leaves_everything_unchanged_then_continues(name, bad):
    x, y = data()
    model, opt = _two_groups(name, nonfinite="skip")
    ref_model, ref_opt = _two_groups(name)
    for _ in range(2):
        _train_step(model, opt, x, y)
        _train_step(ref_model, ref_opt, x, y)
    before = _snapshot(model, opt)
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    model[2].weight.grad[0, 3] = bad  # one entry of a parameter of the 2nd group
    opt.step()
    assert_same(_snapshot(model, opt), before)  # params AND state (step counts included)
    assert opt.skipped_steps == 1
    _train_step(model, opt, x, y)  # the next finite step is the step the bad one replaced
    _train_step(ref_model, ref_opt, x, y)
    assert_same(model.state_dict(), ref_model.state_dict())
    assert_same(opt.state_dict()["state"], ref_opt.state_dict()["state"])


@pytest.mark.parametrize("name", NAMES)
def test_nonfinite_raise_touches_nothing(name):
    x, y = data()
    model, opt = _two_groups(name, nonfinite="raise")
    _train_step(model, opt, x, y)
    before = _snapshot(model, opt)
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    model[2].bias.grad[0] = float("nan")
    with pytest.raises(NonFiniteGradientError, match="param group 1"):
        opt.step()
    assert_same(_snapshot(model, opt), before)
    assert issubclass(NonFiniteGradientError, FloatingPointError)


@pytest.mark.parametrize("name", NAMES)
def test_nonfinite_default_checks_nothing_like_torch(name):
    """The default (``"ignore"``) is torch.optim's behaviour: a NaN gradient reaches the parameter."""
    cls, kwargs = CONFIGS[name]
    tcls, tkwargs = torch_twin(name)
    p = torch.randn(4, requires_grad=True)
    q = p.detach().clone().requires_grad_()
    ours, theirs = cls([p], **kwargs), tcls([q], **tkwargs)
    assert ours.defaults["nonfinite"] == "ignore" and ours.defaults["state_dtype"] is None
    g = torch.tensor([1.0, float("nan"), -2.0, 0.5])
    p.grad, q.grad = g.clone(), g.clone()
    ours.step()
    theirs.step()
    torch.testing.assert_close(p, q, equal_nan=True)
    assert torch.isnan(p).any()


def test_nonfinite_only_checked_groups_and_sparse_grads():
    a = torch.zeros(3, requires_grad=True)
    b = torch.zeros(3, requires_grad=True)
    opt = optimlab.SGD([{"params": [a], "nonfinite": "ignore"}, {"params": [b], "nonfinite": "raise"}], lr=1.0)
    a.grad = torch.tensor([float("inf"), 0.0, 0.0])
    b.grad = torch.ones(3)
    opt.step()  # group 0 does not ask for the check
    assert torch.isinf(a).any() and torch.equal(b, -torch.ones(3))
    emb = torch.nn.Embedding(5, 2, sparse=True)
    ada = optimlab.Adagrad(emb.parameters(), nonfinite="raise")
    emb(torch.tensor([1, 2])).sum().mul(float("inf")).backward()
    with pytest.raises(NonFiniteGradientError):
        ada.step()


@pytest.mark.parametrize("value, error", [("sometimes", ValueError), (None, ValueError), (1, ValueError)])
def test_nonfinite_bad_value_names_the_argument(value, error):
    with pytest.raises(error, match="nonfinite"):
        optimlab.Adam([torch.zeros(2, requires_grad=True)], nonfinite=value)


@pytest.mark.parametrize("name", NAMES)
def test_gradscaler_cpu_matches_unscaled_training_and_skips_overflow(name):
    cls, kwargs = CONFIGS[name]
    x, y = data()
    plain, scaled = mlp(), mlp()
    opt_plain, opt_scaled = cls(plain.parameters(), **kwargs), cls(scaled.parameters(), **kwargs)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=2)
    for _ in range(5):
        _train_step(plain, opt_plain, x, y)
        opt_scaled.zero_grad()
        scaler.scale(torch.nn.functional.mse_loss(scaled(x), y)).backward()
        scaler.step(opt_scaled)
        scaler.update()
    # a power-of-two scale is exact: scaled training is plain training, bit for bit
    assert_same(scaled.state_dict(), plain.state_dict())
    assert_same(opt_scaled.state_dict()["state"], opt_plain.state_dict()["state"])
    assert scaler.get_scale() > 2.0**12  # it grew: no step was skipped
    # an overflowing scale: the step is skipped (nothing moves) and the scale backs off
    before = _snapshot(scaled, opt_scaled)
    scaler.update(new_scale=2.0**127 * 1.5)
    opt_scaled.zero_grad()
    scaler.scale(torch.nn.functional.mse_loss(scaled(x), y) * 1e10).backward()
    scaler.step(opt_scaled)
    scaler.update()
    assert_same(_snapshot(scaled, opt_scaled), before)
    assert scaler.get_scale() < 2.0**127


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", NAMES)
def test_low_precision_params_with_float32_state(name, dtype):
    """state_dtype=float32: state in float32, update in float32, rounded once into the parameter."""
    cls, kwargs = CONFIGS[name]
    gen = torch.Generator().manual_seed(3)
    p = torch.randn(5, 4, generator=gen).to(dtype).requires_grad_()
    ref = p.detach().float().requires_grad_()  # the float32 reference, rounded like p after each step
    opt = cls([p], **kwargs, state_dtype=torch.float32)
    ref_opt = cls([ref], **kwargs, fused=False)  # the eager path, as the low-precision params take
    for _ in range(4):
        g = torch.randn(5, 4, generator=gen).to(dtype)
        p.grad, ref.grad = g, g.float()
        opt.step()
        ref_opt.step()
        with torch.no_grad():
            ref.copy_(ref.to(dtype).float())
        assert p.dtype == dtype
        assert torch.equal(p.float(), ref)
    tensors = {k: v for k, v in opt.state[p].items() if torch.is_tensor(v) and k != "step" and v.dim() > 0}
    assert (tensors or name == "sgd") and all(v.dtype == torch.float32 for v in tensors.values())
    assert_same(tensors, {k: ref_opt.state[ref][k] for k in tensors})
    # a state_dict round trip keeps the float32 state (torch would cast it to the param's dtype)
    again = cls([p], **kwargs, state_dtype=torch.float32)
    again.load_state_dict(opt.state_dict())
    assert_same({k: again.state[p][k] for k in tensors}, tensors)


def test_low_precision_without_state_dtype_keeps_torch_behaviour():
    p = torch.randn(3, dtype=torch.bfloat16, requires_grad=True)
    opt = optimlab.Adam([p])
    p.grad = torch.ones(3, dtype=torch.bfloat16)
    opt.step()
    assert opt.state[p]["exp_avg"].dtype == torch.bfloat16


@pytest.mark.parametrize("value, error, pdtype", [
    (torch.float16, ValueError, torch.float32), ("float32", ValueError, torch.float32), (32, TypeError, torch.float32),
    (torch.int32, ValueError, torch.float32), (torch.float32, ValueError, torch.float64)])
def test_state_dtype_bad_values_name_the_argument(value, error, pdtype):
    with pytest.raises(error, match="state_dtype"):
        optimlab.SGD([torch.zeros(2, dtype=pdtype, requires_grad=True)], state_dtype=value)


def _embeddings(seed=0):
    torch.manual_seed(seed)
    a = torch.nn.Embedding(20, 4, sparse=True)
    b = torch.nn.Embedding(20, 4, sparse=True)
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("kwargs", [{}, {"lr": 0.5, "lr_decay": 0.01, "initial_accumulator_value": 0.1},
                                    {"maximize": True, "eps": 1e-3}])
def test_sparse_adagrad_matches_torch_bit_for_bit(kwargs):
    ours, theirs = _embeddings()
    opt, ref = optimlab.Adagrad(ours.parameters(), **kwargs), torch.optim.Adagrad(theirs.parameters(), **kwargs)
    gen = torch.Generator().manual_seed(5)
    for _ in range(6):
        idx = torch.randint(0, 20, (12,), generator=gen)  # repeated indices: the grad needs coalescing
        for emb, o in ((ours, opt), (theirs, ref)):
            o.zero_grad()
            (emb(idx) ** 2).sum().backward()
            assert emb.weight.grad.is_sparse
            o.step()
    assert torch.equal(ours.weight, theirs.weight)
    assert torch.equal(opt.state[ours.weight]["sum"], ref.state[theirs.weight]["sum"])
    assert torch.equal(opt.state[ours.weight]["step"], ref.state[theirs.weight]["step"])


def test_sparse_adagrad_equals_dense_rule_on_the_rows_it_names():
    ours, dense = _embeddings()
    opt = optimlab.Adagrad(ours.parameters(), lr=0.3, eps_inside_sqrt=True)
    dense_opt = optimlab.Adagrad(dense.parameters(), lr=0.3, eps_inside_sqrt=True)
    idx = torch.tensor([1, 3, 3, 7])
    for _ in range(3):
        for emb, o, to_dense in ((ours, opt, False), (dense, dense_opt, True)):
            o.zero_grad()
            (emb(idx) ** 2).sum().backward()
            if to_dense:
                emb.weight.grad = emb.weight.grad.to_dense()
            o.step()
    torch.testing.assert_close(ours.weight, dense.weight, rtol=0, atol=1e-6)


def test_sparse_gradients_rejected_before_anything_moves():
    emb = torch.nn.Embedding(6, 2, sparse=True)
    lin = torch.nn.Linear(2, 1)
    opt = optimlab.Adagrad([{"params": lin.parameters()}, {"params": emb.parameters(), "weight_decay": 0.1}])
    lin(emb(torch.tensor([0, 1]))).sum().backward()
    before = copy.deepcopy(lin.state_dict())
    with pytest.raises(RuntimeError, match="weight_decay"):
        opt.step()
    assert_same(lin.state_dict(), before)
    assert all(s["step"] == 0 for s in opt.state.values())
    emb.zero_grad()
    emb(torch.tensor([0])).sum().backward()
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        optimlab.Adam(emb.parameters()).step()


@pytest.mark.parametrize("name", NAMES)
def test_complex_params_match_torch(name):
    cls, kwargs = CONFIGS[name]
    tcls, tkwargs = torch_twin(name)
    gen = torch.Generator().manual_seed(7)
    p = torch.randn(3, 5, dtype=torch.complex64, generator=gen).requires_grad_()
    q = p.detach().clone().requires_grad_()
    ours, theirs = cls([p], **kwargs), tcls([q], **tkwargs)
    for _ in range(5):
        g = torch.randn(3, 5, dtype=torch.complex64, generator=gen)
        p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
    torch.testing.assert_close(p, q)  # complex64 tolerances (torch fuses some products; we do not)
    for key, value in theirs.state[q].items():
        torch.testing.assert_close(ours.state[p][key], value, check_dtype=False)


def test_complex_param_trained_through_autograd():
    """A complex linear map fitted with Adam: the loss falls, as with torch.optim.Adam."""
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(4, 4, dtype=torch.complex64, generator=gen)
    x = torch.randn(32, 4, dtype=torch.complex64, generator=gen)
    w_ours = torch.zeros(4, 4, dtype=torch.complex64, requires_grad=True)
    w_torch = torch.zeros(4, 4, dtype=torch.complex64, requires_grad=True)
    opts = optimlab.Adam([w_ours], lr=0.05), torch.optim.Adam([w_torch], lr=0.05)
    for _ in range(50):
        for w, o in zip((w_ours, w_torch), opts):
            o.zero_grad()
            (x @ w - x @ target).abs().pow(2).mean().backward()
            o.step()
    torch.testing.assert_close(w_ours, w_torch, rtol=1e-4, atol=1e-5)
    assert (x @ w_ours - x @ target).abs().pow(2).mean() < 0.1 * (x @ target).abs().pow(2).mean()


def test_float16_eps_underflow_is_torchs_and_state_dtype_avoids_it():
    """eps=1e-8 is 0 in float16, so a zero gradient gives 0/0 = NaN in torch.optim.Adam and in the
    drop-in default alike; state_dtype=torch.float32 computes the update in float32 and stays finite."""
    def first_step(opt_cls, **kwargs):
        p = torch.zeros(3, dtype=torch.float16, requires_grad=True)
        opt = opt_cls([p], **kwargs)
        p.grad = torch.zeros(3, dtype=torch.float16)
        opt.step()
        return p

    assert torch.isnan(first_step(torch.optim.Adam)).all()
    assert torch.isnan(first_step(optimlab.Adam)).all()
    assert torch.equal(first_step(optimlab.Adam, state_dtype=torch.float32), torch.zeros(3, dtype=torch.float16))
