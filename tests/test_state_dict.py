"""state_dict round trips and torch.optim <-> optimlab interop, mid-training."""

import copy
import io

import pytest
import torch
from torch import nn

import optimlab

ALGOS = [
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("Adagrad", dict(lr=0.05, lr_decay=0.01)),
    ("RMSprop", dict(lr=0.005, momentum=0.5, centered=True)),
    ("Adam", dict(lr=0.005, amsgrad=True)),
    ("AdamW", dict(lr=0.005)),
    ("NAdam", dict(lr=0.005, weight_decay=0.01)),
]


def setup(lib, name, kwargs, dtype=torch.float64):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).to(dtype)
    opt = getattr(lib, name)(model.parameters(), **kwargs)
    return model, opt


def batches(dtype=torch.float64):
    g = torch.Generator().manual_seed(4)
    return [(torch.randn(16, 4, generator=g, dtype=dtype), torch.randn(16, 1, generator=g, dtype=dtype))
            for _ in range(40)]


def train(model, opt, data):
    for x, y in data:
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()


def through_bytes(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def state_equal(a, b):
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for pid in a["state"]:
        for key, value in a["state"][pid].items():
            assert torch.equal(value, b["state"][pid][key]), (pid, key)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name,kwargs", ALGOS, ids=[a[0] for a in ALGOS])
def test_round_trip_continues_bit_identically(name, kwargs, dtype):
    data = batches(dtype)
    model, opt = setup(optimlab, name, kwargs, dtype)
    train(model, opt, data[:15])
    saved_model, saved_opt = through_bytes(model.state_dict()), through_bytes(opt.state_dict())
    train(model, opt, data[15:])

    model2, opt2 = setup(optimlab, name, kwargs, dtype)
    model2.load_state_dict(saved_model)
    opt2.load_state_dict(saved_opt)
    train(model2, opt2, data[15:])
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    state_equal(opt.state_dict(), opt2.state_dict())


@pytest.mark.parametrize("name,kwargs", ALGOS, ids=[a[0] for a in ALGOS])
@pytest.mark.parametrize("direction", ["torch_to_optimlab", "optimlab_to_torch"])
def test_interop_mid_training(name, kwargs, direction):
    """Train k steps in one library, move model + optimizer state to the other, continue.

    The state moves exactly (the loaded state_dict equals the saved one, bit for bit, under
    torch's names and dtypes); the continuation matches an uninterrupted run of the source
    library to float64 rounding (the two libraries order their float operations differently).
    """
    src, dst = (torch.optim, optimlab) if direction == "torch_to_optimlab" else (optimlab, torch.optim)
    data = batches()
    model_a, opt_a = setup(src, name, kwargs)
    train(model_a, opt_a, data[:15])
    saved_model, saved_opt = through_bytes(model_a.state_dict()), through_bytes(opt_a.state_dict())
    train(model_a, opt_a, data[15:])

    model_b, opt_b = setup(dst, name, kwargs)
    model_b.load_state_dict(saved_model)
    opt_b.load_state_dict(saved_opt)
    loaded = opt_b.state_dict()
    for pid, entries in saved_opt["state"].items():
        for key, value in entries.items():
            assert torch.equal(loaded["state"][pid][key], value), (pid, key)
            if dst is optimlab:  # torch.optim itself casts NAdam's mu_product to the param dtype
                assert loaded["state"][pid][key].dtype == value.dtype, (pid, key)
    train(model_b, opt_b, data[15:])
    for a, b in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)


def test_optimlab_options_survive_a_round_trip_and_default_when_loading_torch_state():
    model, opt = setup(optimlab, "Adam", dict(lr=0.01, bias_correction=False))
    train(model, opt, batches()[:3])
    sd = through_bytes(opt.state_dict())
    assert sd["param_groups"][0]["bias_correction"] is False
    fresh = optimlab.Adam(model.parameters(), lr=0.01, bias_correction=True)
    fresh.load_state_dict(sd)
    assert fresh.param_groups[0]["bias_correction"] is False

    model_t, opt_t = setup(torch.optim, "Adam", dict(lr=0.01))
    train(model_t, opt_t, batches()[:3])
    ours = optimlab.Adam(model_t.parameters(), lr=0.01, bias_correction=False)
    ours.load_state_dict(opt_t.state_dict())
    assert ours.param_groups[0]["bias_correction"] is True  # torch's state means torch's convention


def test_sgd_without_momentum_keeps_no_state_like_torch():
    model, opt = setup(optimlab, "SGD", dict(lr=0.1))
    train(model, opt, batches()[:2])
    assert opt.state_dict()["state"] == {}


def test_adagrad_state_exists_before_the_first_step_like_torch():
    model_o, opt_o = setup(optimlab, "Adagrad", dict(lr=0.1, initial_accumulator_value=0.25))
    model_t, opt_t = setup(torch.optim, "Adagrad", dict(lr=0.1, initial_accumulator_value=0.25))
    so, st = opt_o.state_dict()["state"], opt_t.state_dict()["state"]
    assert so.keys() == st.keys()
    for pid in st:
        for key in st[pid]:
            assert torch.equal(so[pid][key], st[pid][key])


def test_zero_grad_and_closure():
    model, opt = setup(optimlab, "Adam", dict(lr=0.01))
    x, y = batches()[0]

    def closure():
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        return loss

    first = opt.step(closure).item()
    for _ in range(20):
        last = opt.step(closure).item()
    assert last < first
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_step_hooks_run():
    model, opt = setup(optimlab, "SGD", dict(lr=0.1))
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    train(model, opt, batches()[:1])
    assert calls == ["pre", "post"]


@pytest.mark.parametrize("name,kwargs", ALGOS, ids=[a[0] for a in ALGOS])
def test_deepcopy_of_optimizer_is_independent(name, kwargs):
    """Training the copy leaves the original untouched and vice versa; both then agree exactly."""
    model, opt = setup(optimlab, name, kwargs)
    data = batches()
    train(model, opt, data[:2])
    model2, clone = copy.deepcopy((model, opt))
    snapshot = copy.deepcopy((model.state_dict(), opt.state_dict()))
    train(model2, clone, data[2:5])  # the copy moves on...
    state_equal(opt.state_dict(), snapshot[1])  # ...the original has not moved
    for key, value in model.state_dict().items():
        assert torch.equal(value, snapshot[0][key]), key
    ahead = copy.deepcopy(clone.state_dict())
    train(model, opt, data[2:5])  # the original catches up: same numbers, the copy unchanged
    state_equal(clone.state_dict(), ahead)
    state_equal(opt.state_dict(), clone.state_dict())
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
