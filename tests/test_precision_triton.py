"""Low-precision state through the generated Triton kernel (Triton's interpreter, CPU tensors).

bfloat16 state (stochastic rounding with the eager path's counter-based bits) and 8-bit block
state (codes and per-block scales) must come out of the Triton kernel bit for bit as the eager
path stores them: the same float32 numbers, rounded or quantized with the same integer
arithmetic. The eager CPU ``sqrt`` (MKL's) is not correctly rounded and the kernel's is: where
the eager side runs under :func:`ieee_sqrt.correctly_rounded_sqrt` the parameters must match bit
for bit too, after every step; elsewhere they agree to torch's tolerances. Tensors of 5,000 and
4,100 elements over chunks of 1,024 take several programs each, a masked tail, and
(4,100 = 16 x 256 + 4) a partial 8-bit block.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

import optimlab  # noqa: E402
from optimlab import kernels  # noqa: E402
from optimlab.kernels import triton_gpu  # noqa: E402
from ieee_sqrt import correctly_rounded_sqrt  # noqa: E402
from test_precision import SGD_STORAGE_IDS, SGD_STORAGES, assert_same_sgd, run_bf16_params, run_sgd  # noqa: E402
from test_triton import use_interpreter  # noqa: E402

SIZES = (5000, 4100)


@pytest.fixture
def interpreter(monkeypatch):
    use_interpreter(monkeypatch, block=512)  # 8-bit blocks of 256 need BLOCK a multiple of 256


def _history(name, kwargs, fused, steps=2):
    """The parameters and the state after each of ``steps`` steps (copies)."""
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(n, generator=g)) for n in SIZES]
    opt = getattr(optimlab, name)(params, **kwargs, fused=None if fused else False)
    history = []
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
        state = {i: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
                 for i, s in opt.state_dict()["state"].items()}
        history.append(([p.detach().clone() for p in params], state))
    return history


def _run(name, kwargs, fused, steps=2):
    return _history(name, kwargs, fused, steps)[-1]


CASES = [("Adam", {"lr": 1e-2}), ("AdamW", {"lr": 1e-2, "amsgrad": True}), ("NAdam", {"lr": 1e-2}),
         ("RMSprop", {"lr": 1e-2, "centered": True, "momentum": 0.9}), ("Adagrad", {"lr": 0.1})]


@pytest.mark.parametrize("state_dtype", [torch.bfloat16, "int8"], ids=["bf16", "int8"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_triton_low_precision_state_equals_the_eager_state(interpreter, case, state_dtype):
    """Parameters and state (bf16 bits, 8-bit codes and scales) equal the eager path's bit for bit
    after every step, the eager square root correctly rounded as the kernel's is. RMSprop's
    momentum buffer (centered, with momentum) is where torch's CPU sqrt showed: its one-ulp error,
    amplified by the cancellation in ``momentum * B + g / d``, flipped a stochastic bfloat16
    rounding at step 2 (one bf16 ulp, 0.002) and so the parameters of step 3 by
    ``lr * momentum * 0.002 = 1.76e-5`` (``cuda_step.py --dry-run``), the stored state equal again
    at step 3."""
    name, kwargs = case
    kwargs = {**kwargs, "state_dtype": state_dtype}
    before = dict(kernels.stats)
    ours = _history(name, kwargs, fused=True, steps=3)
    assert kernels.stats["eager_tensors"] == before["eager_tensors"]  # every tensor took the kernel
    assert kernels.stats["fused_tensors"] - before["fused_tensors"] == 3 * len(SIZES)
    with correctly_rounded_sqrt():
        eager = _history(name, kwargs, fused=False, steps=3)
    stored = {torch.bfloat16: torch.bfloat16, "int8": torch.uint8}[state_dtype]
    assert any(v.dtype == stored for s in ours[-1][1].values() for v in s.values() if torch.is_tensor(v))
    for step, ((params, state), (eager_params, eager_state)) in enumerate(zip(ours, eager), 1):
        for a, b in zip(params, eager_params):
            assert torch.equal(a, b), f"parameters after step {step}: max |diff| {float((a - b).abs().max()):.3g}"
        for i, entries in eager_state.items():
            for key, value in entries.items():
                if torch.is_tensor(value):
                    assert state[i][key].dtype == value.dtype, key
                    assert torch.equal(state[i][key], value), f"{key} after step {step}"  # bits exactly


def test_int8_state_through_the_looped_kernel(interpreter, monkeypatch):
    """The kernel whose blocks are a loop (a run-time block index) writes the same codes and scales."""
    monkeypatch.setattr(triton_gpu, "UNROLL", False)
    _, ours = _run("Adam", {"lr": 1e-2, "state_dtype": "int8"}, fused=True)
    _, eager = _run("Adam", {"lr": 1e-2, "state_dtype": "int8"}, fused=False)
    for i in eager:
        for key in ("exp_avg", "exp_avg_absmax", "exp_avg_sq", "exp_avg_sq_absmax"):
            assert torch.equal(ours[i][key], eager[i][key]), key


def _bits(t):
    return t.view({1: torch.uint8, 2: torch.int16, 4: torch.int32}[t.element_size()])


def test_nan_in_low_precision_state_survives_the_kernel(interpreter):
    """A NaN gradient: bfloat16 keeps a NaN (the quiet bits or-ed in), an 8-bit block takes a NaN
    absmax (a NaN wins on the float bits), with the eager path's bits exactly."""
    for state_dtype in (torch.bfloat16, "int8"):
        results = []
        for fused in (True, False):
            p = torch.nn.Parameter(torch.ones(4096))
            opt = optimlab.Adam([p], lr=1e-2, state_dtype=state_dtype, fused=None if fused else False)
            p.grad = torch.ones(4096)
            p.grad[7] = float("nan")
            opt.step()
            results.append(opt.state_dict()["state"][0])
        ours, eager = results
        for key, value in eager.items():
            if torch.is_tensor(value):
                assert torch.equal(_bits(ours[key]), _bits(value)), key
            else:  # the 8-bit format's version tag
                assert ours[key] == value, key
        nan = ours["exp_avg"].float().isnan() if state_dtype != "int8" else ours["exp_avg_absmax"].isnan()
        assert nan.any() and not nan.all()


def _run_capturable(name, kwargs, fused, pdtype, steps=3):
    """``steps`` steps; after the first, each tensor's step counter is set in place (as a captured
    graph's replay would find it advanced on the device, unseen by the host)."""
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(n, generator=g).to(pdtype)) for n in SIZES]
    opt = getattr(optimlab, name)(params, **kwargs, fused=None if fused else False)
    for t in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g).to(pdtype)
        opt.step()
        if t == 0:
            for p in params:
                opt.state[p]["step"].fill_(40)
    return [p.detach() for p in params], opt.state_dict()["state"]


CAPTURABLE = [("Adam", torch.float32, torch.bfloat16), ("Adam", torch.float32, "int8"),
              ("Adam", torch.bfloat16, None), ("AdamW", torch.bfloat16, "int8"), ("RMSprop", torch.bfloat16, torch.bfloat16),
              ("NAdam", torch.float32, "int8")]  # its mu_product: the single-program store kernel


@pytest.mark.parametrize("case", CAPTURABLE, ids=["f32-bf16", "f32-int8", "bf16-f32", "bf16-int8", "rmsprop-bf16-bf16",
                                                  "nadam-f32-int8"])
def test_capturable_low_precision_fuses_and_reads_the_step_on_the_device(interpreter, monkeypatch, case):
    """A capturable group (no host sync) that rounds stochastically: the kernel reads each
    tensor's step from its 0-dim counter on the device and hashes the key there, so it rounds
    with the eager path's bits even after the counters were changed in place behind the host's
    back; 8-bit state needs no step. Every tensor of every step runs in the kernel; parameters
    and state equal the eager path's bit for bit (its square root correctly rounded)."""
    name, pdtype, state_dtype = case
    monkeypatch.setattr(kernels, "check_capturable", lambda group: None)  # CUDA-only otherwise
    kwargs = {"lr": 1e-2, "state_dtype": state_dtype, "capturable": True,
              "param_rounding": "stochastic" if pdtype == torch.bfloat16 else "nearest"}
    before = dict(kernels.stats)
    ours, our_state = _run_capturable(name, kwargs, True, pdtype)
    assert kernels.stats["fused_tensors"] - before["fused_tensors"] == 3 * len(SIZES)
    assert kernels.stats["eager_tensors"] == before["eager_tensors"]
    with correctly_rounded_sqrt():
        eager, eager_state = _run_capturable(name, kwargs, False, pdtype)
    for a, b in zip(ours, eager):
        assert a.dtype == pdtype and torch.equal(a, b)
    for i in eager_state:
        assert our_state[i].keys() == eager_state[i].keys() and float(our_state[i]["step"]) == 42
        for key, value in eager_state[i].items():
            if torch.is_tensor(value):
                assert torch.equal(our_state[i][key], value), key


def test_8bit_state_runs_eagerly_where_a_kernel_block_splits_its_blocks(monkeypatch):
    """Kernel blocks of 128 elements would split an 8-bit block of 256 between two reductions."""
    use_interpreter(monkeypatch, block=128)
    before = dict(kernels.stats)
    _run("Adam", {"lr": 1e-2, "state_dtype": "int8"}, fused=True, steps=1)
    assert kernels.stats["fused_tensors"] == before["fused_tensors"]
    assert kernels.stats["eager_tensors"] - before["eager_tensors"] == len(SIZES)


@pytest.mark.parametrize("state_dtype", [None, torch.bfloat16, "int8"], ids=["f32-state", "bf16-state", "int8-state"])
@pytest.mark.parametrize("name", ["Adam", "NAdam"])
def test_stochastically_rounded_bf16_params_in_the_kernel(interpreter, name, state_dtype):
    """bfloat16 parameters with ``param_rounding="stochastic"``: the kernel computes in float32 and
    rounds the parameter with the eager path's bits (stream "param"); the state is float32
    (without ``state_dtype``), bfloat16 or 8-bit (codes and scales); parameters and state bit for
    bit as the eager path (its square root correctly rounded) keeps them."""
    before = dict(kernels.stats)
    ours, our_state = run_bf16_params(name, state_dtype, SIZES, steps=2, fused=True)
    assert kernels.stats["fused_tensors"] - before["fused_tensors"] == 2 * len(SIZES)
    assert kernels.stats["eager_tensors"] == before["eager_tensors"]
    with correctly_rounded_sqrt():
        eager, eager_state = run_bf16_params(name, state_dtype, SIZES, steps=2, fused=False)
    for a, b in zip(ours, eager):
        assert a.dtype == torch.bfloat16 and torch.equal(a, b)
    stored = {None: torch.float32, torch.bfloat16: torch.bfloat16, "int8": torch.uint8}[state_dtype]
    for i in eager_state:
        assert our_state[i].keys() == eager_state[i].keys()
        for key in ("exp_avg", "exp_avg_sq"):
            assert our_state[i][key].dtype == eager_state[i][key].dtype == stored
        for key, value in eager_state[i].items():
            if torch.is_tensor(value):
                assert torch.equal(our_state[i][key], value), key


@pytest.mark.parametrize("storage", SGD_STORAGES, ids=SGD_STORAGE_IDS)
def test_sgd_low_precision_in_the_kernel(interpreter, storage):
    """SGD (no step count of its own; the plan keeps the counter that keys its rounding): after
    the first step, which creates the momentum buffer eagerly, the Triton kernel stores the
    eager path's parameters, bf16 bits, 8-bit codes and scales exactly, resumed mid-way too."""
    pdtype, state_dtype = storage
    kwargs, steps = {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "weight_decay": 1e-2}, 3
    ours = run_sgd(kwargs, pdtype, state_dtype, SIZES, steps, fused=True)
    assert ours[2] == {"fused": (steps - 1) * len(SIZES), "eager": len(SIZES)}
    eager = run_sgd(kwargs, pdtype, state_dtype, SIZES, steps, fused=False)
    assert_same_sgd(ours, eager)
    assert_same_sgd(run_sgd(kwargs, pdtype, state_dtype, SIZES, steps, fused=True, stop_at=2), eager)
