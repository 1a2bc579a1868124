"""Low-precision optimizer state (bfloat16, 8-bit blocks) and stochastically rounded bf16 params:
against an independent NumPy emulation (tests/precision_reference.py), bit for bit where the
arithmetic allows; fused against eager; resume at any step; state_dict conversions; bad settings."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

import optimlab
from optimlab import kernels
from optimlab.kernels import precision

import precision_reference as ref
from ieee_sqrt import correctly_rounded_sqrt

# 41 x 100 = 4100 elements: above the 8-bit threshold (4096), a partial last block of 4 elements
BIG = (41, 100)


def _np(t):
    return t.detach().cpu().numpy()


# ----------------------------------------------------------------------------- formats


@pytest.mark.parametrize("signed", [True, False])
def test_code_values_match_the_description(signed):
    table = precision.code_values(signed)
    assert table.dtype == torch.float32 and table.numel() == 256
    assert np.array_equal(_np(table).view(np.uint32), ref.code_values(signed).view(np.uint32))
    magnitudes = table[:128] if signed else table
    assert magnitudes[0] == 0 and magnitudes[-1] == 1.0 and torch.all(magnitudes.diff() > 0)
    assert magnitudes[1] == (2.0 ** -16 if signed else 2.0 ** -32) * 1.25
    if signed:
        assert torch.equal(table[128:], -table[:128])


def _hard_inputs(signed, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(BIG, generator=gen) * torch.logspace(-12, 0, BIG[1])  # every binade of the codes
    if not signed:
        x = x.abs()
    flat = x.view(-1)
    magnitudes = (precision.code_values(signed)[:128] if signed else precision.code_values(signed)).double()
    flat[:256] = 0.0  # an all-zero block
    flat[256] = 1.0   # a block whose other entries sit exactly on code values and on ties between them
    flat[257:377] = magnitudes[-120:].float()
    flat[377:497] = ((magnitudes[-121:-1] + magnitudes[-120:]) / 2).float()  # exact in float32
    low = magnitudes[1].item()  # around the smallest code: ties, the flush to zero
    flat[497:512] = torch.tensor([low, low * 0.95, low * 0.9, low * 0.5, low / 1.25 * 1.1875,
                                  low / 1.25 * 1.18, low / 1.25 * 1.0625, low * 1.05, low * 1.1,
                                  low / 1.25 * 1.3125, low / 1.25 * 1.375, 1e-38, 1e-45, 3e-39, low * 2])
    if signed:
        flat[257:512:2] *= -1
    flat[600:640] = 1e-30 if not signed else -1e-30  # far below the smallest code
    return x


@pytest.mark.parametrize("signed", [True, False])
def test_quantize_is_bit_exact_against_numpy(signed):
    x = _hard_inputs(signed)
    if signed:
        x.view(-1)[512] = -0.0  # keeps its sign bit (a step's arithmetic would make it +0)
    codes, absmax = precision.quantize(x, signed)
    ref_codes, ref_absmax = ref.quantize(_np(x), signed)
    assert codes.dtype == torch.uint8 and absmax.dtype == torch.float32 and absmax.numel() == 17
    assert np.array_equal(_np(absmax), ref_absmax)
    assert np.array_equal(_np(codes), ref_codes)
    back = precision.dequantize(codes, absmax, signed)
    assert np.array_equal(_np(back), ref.dequantize(ref_codes, ref_absmax, signed))
    assert torch.equal(back.view(-1)[:256], torch.zeros(256))  # zeros stay zeros
    if not signed:  # a positive second moment never becomes zero
        assert torch.all(back[x > 0] > 0)
    # the error: at most half a step of three fraction bits (1/16 of |x|), or the smallest code
    smallest = precision.code_values(signed)[1] * absmax.repeat_interleave(precision.BLOCK)[: x.numel()]
    err = (back - x).abs().view(-1)
    assert torch.all(err <= torch.maximum(x.abs().view(-1) * (2.0 ** -4 + 1e-6), smallest * 1.0001))


def test_stochastic_bf16_is_bit_exact_against_numpy_and_unbiased():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5000, generator=gen) * 10.0 ** torch.randint(-30, 30, (5000,), generator=gen)
    x[:4] = torch.tensor([float("inf"), -float("inf"), float("nan"), 0.0])
    for step in (1, 2, 1000):
        k = precision.stream_key(7, step, 3, precision.stream_id("exp_avg"))
        assert k == int(ref.key(7, step, 3, "exp_avg"))
        ours = precision.round_bf16(x, k)
        assert ours.dtype == torch.bfloat16
        expected = ref.stochastic_bf16(_np(x), k)
        assert np.array_equal(_np(ours.float()), expected, equal_nan=True)
    # unbiased: averaged over keys, 1 + 2**-10 (a quarter of bf16's spacing at 1) comes out right
    value = torch.full((4096,), 1 + 2.0 ** -10)
    mean = torch.stack([precision.round_bf16(value, precision.stream_key(0, s, 0, 0)).float()
                        for s in range(64)]).mean()
    assert abs(mean.item() - value[0].item()) < 2e-4
    assert torch.equal(precision.round_bf16(value, None), value.to(torch.bfloat16))


# ----------------------------------------------------------------------------- the optimizers


def _grads(n, shape, seed=5):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen) * 1e-2 for _ in range(n)]


@pytest.mark.parametrize("fused", [None, False], ids=["fused", "eager"])
def test_adam_int8_state_matches_numpy_emulation_step_by_step(fused):
    """The C kernel (``fused=None``) and the eager rule (under a correctly rounded sqrt, as NumPy's
    and the kernel's are) give the emulation's codes, scales and parameters bit for bit."""
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(BIG))
    opt = optimlab.Adam([p], lr=1e-2, state_dtype="int8", fused=fused)
    q = _np(p).copy()
    m_codes, m_max = ref.quantize(np.zeros(BIG, np.float32), True)
    v_codes, v_max = ref.quantize(np.zeros(BIG, np.float32), False)
    for step, g in enumerate(_grads(8, BIG), start=1):
        p.grad = g
        with correctly_rounded_sqrt():
            opt.step()
        m = ref.dequantize(m_codes, m_max, True)
        v = ref.dequantize(v_codes, v_max, False)
        q, m, v = ref.adam_step(q, _np(g), m, v, step, 1e-2, 0.9, 0.999, 1e-8)
        m_codes, m_max = ref.quantize(m, True)
        v_codes, v_max = ref.quantize(v, False)
        state = opt.state[p]
        assert np.array_equal(_np(state["exp_avg"]), m_codes) and np.array_equal(_np(state["exp_avg_absmax"]), m_max)
        assert np.array_equal(_np(state["exp_avg_sq"]), v_codes)
        assert np.array_equal(_np(state["exp_avg_sq_absmax"]), v_max)
        assert np.array_equal(_np(p), q)  # the kernel's sqrt and NumPy's are both correctly rounded


@pytest.mark.parametrize("fused", [None, False], ids=["fused", "eager"])
def test_adam_bf16_state_matches_numpy_emulation_step_by_step(fused):
    torch.manual_seed(0)
    other = torch.nn.Parameter(torch.randn(3))  # p is the optimizer's tensor 1: the key names it
    p = torch.nn.Parameter(torch.randn(BIG))
    opt = optimlab.Adam([{"params": [other]}, {"params": [p], "rounding_seed": 11}], lr=1e-2,
                        state_dtype=torch.bfloat16, fused=fused)
    q, m, v = _np(p).copy(), np.zeros(BIG, np.float32), np.zeros(BIG, np.float32)
    for step, g in enumerate(_grads(8, BIG), start=1):
        p.grad = g
        with correctly_rounded_sqrt():
            opt.step()
        q, m, v = ref.adam_step(q, _np(g), m, v, step, 1e-2, 0.9, 0.999, 1e-8)
        m = ref.stochastic_bf16(m, ref.key(11, step, 1, "exp_avg"))
        v = ref.stochastic_bf16(v, ref.key(11, step, 1, "exp_avg_sq"))
        assert opt.state[p]["exp_avg"].dtype == torch.bfloat16
        assert np.array_equal(_np(opt.state[p]["exp_avg"].float()), m)
        assert np.array_equal(_np(opt.state[p]["exp_avg_sq"].float()), v)
        assert np.array_equal(_np(p), q)


def test_sgd_bf16_params_stochastic_rounding_matches_numpy_exactly():
    """Pure bf16: bf16 parameter, bf16 momentum, both rounded stochastically (no sqrt: all exact)."""
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(BIG).to(torch.bfloat16))
    opt = optimlab.SGD([p], lr=0.1, momentum=0.9, state_dtype=torch.bfloat16, param_rounding="stochastic")
    f = np.float32
    q, buf = _np(p.float()).copy(), None
    for step, g in enumerate(_grads(6, BIG), start=1):
        g = g.to(torch.bfloat16)
        p.grad = g
        opt.step()
        gf = _np(g.float())
        buf = gf.copy() if buf is None else f(0.9) * buf + gf
        q = ref.stochastic_bf16(q - f(0.1) * buf, ref.key(0, step, 0, "param"))  # the step takes float32 buf
        buf = ref.stochastic_bf16(buf, ref.key(0, step, 0, "momentum_buffer"))  # what is stored
        assert p.dtype == torch.bfloat16
        assert np.array_equal(_np(p.float()), q)
        assert np.array_equal(_np(opt.state[p]["momentum_buffer"].float()), buf)
    # nearest rounding would lose these updates: lr * g is far below half an ulp of the weights
    w = torch.nn.Parameter(torch.ones(4096, dtype=torch.bfloat16))
    for rounding, moved in (("nearest", False), ("stochastic", True)):
        w.data.fill_(1.0)
        o = optimlab.SGD([w], lr=1e-4, param_rounding=rounding)
        w.grad = torch.ones_like(w)
        o.step()
        assert bool((w != 1.0).any()) is moved
        if moved:  # unbiased: the mean moved by lr * g (4 standard errors)
            assert abs(w.float().mean().item() - (1.0 - 1e-4)) < 4e-5


CONFIGS = [
    ("Adam", {"lr": 1e-2}),
    ("AdamW", {"lr": 1e-2, "amsgrad": True}),
    ("NAdam", {"lr": 1e-2}),
    ("RMSprop", {"lr": 1e-2, "centered": True, "momentum": 0.9}),
    ("Adagrad", {"lr": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9}),
]
STATES = [torch.bfloat16, "int8"]


def _model(pdtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen).to(pdtype)) for s in (BIG, (5000,), (30,), (7, 9))]


def _run(name, kwargs, state_dtype, steps, fused=None, pdtype=torch.float32, start=None, stop_at=None):
    """Run ``steps`` steps; with ``stop_at`` save a state_dict there and resume in a fresh optimizer."""
    params = _model(pdtype)
    make = lambda ps: getattr(optimlab, name)(  # noqa: E731
        [{"params": ps[:2]}, {"params": ps[2:], "lr": kwargs["lr"] / 2}], **kwargs, state_dtype=state_dtype,
        fused=fused, param_rounding="stochastic" if pdtype == torch.bfloat16 else "nearest")
    opt = make(params)
    grads = _grads(steps, (1,), seed=9)
    gen = torch.Generator().manual_seed(9)
    for t in range(steps):
        for p in params:
            p.grad = (torch.randn(p.shape, generator=gen) * 1e-2).to(pdtype)
        opt.step()
        if stop_at is not None and t + 1 == stop_at:
            buffer = io.BytesIO()
            torch.save({"opt": opt.state_dict(), "params": [p.detach().clone() for p in params]}, buffer)
            buffer.seek(0)
            saved = torch.load(buffer)
            params = [torch.nn.Parameter(t_) for t_ in saved["params"]]
            opt = make(params)
            opt.load_state_dict(saved["opt"])
    del grads
    return params, opt


def _same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].keys() == b[k].keys()
        for name in a[k]:
            x, y = a[k][name], b[k][name]
            if name == precision.FORMAT_KEY:  # the 8-bit format's version, saved with the codes
                assert x == y == precision.INT8_FORMAT
                continue
            assert x.dtype == y.dtype and torch.equal(x, y), (k, name)


@pytest.mark.parametrize("state_dtype", STATES, ids=["bf16", "int8"])
@pytest.mark.parametrize("case", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_resume_at_any_step_is_bit_identical(case, state_dtype):
    name, kwargs = case
    pdtype = torch.bfloat16 if name in ("SGD", "Adam") else torch.float32
    full_params, full = _run(name, kwargs, state_dtype, 6, pdtype=pdtype)
    for stop in (1, 4):
        params, opt = _run(name, kwargs, state_dtype, 6, pdtype=pdtype, stop_at=stop)
        assert all(torch.equal(a, b) for a, b in zip(params, full_params))
        _same_state(opt.state_dict()["state"], full.state_dict()["state"])
    state = full.state[full_params[0]]
    low = [v for k, v in state.items() if k != "step" and v.dim() > 0 and not k.endswith("_absmax")]
    assert low and all(v.dtype == (torch.bfloat16 if state_dtype is torch.bfloat16 else torch.uint8) for v in low)
    small = full.state[full_params[2]]  # 30 elements: float32 under int8, bfloat16 under bf16
    assert all(v.dtype == (torch.bfloat16 if state_dtype is torch.bfloat16 else torch.float32)
               for k, v in small.items() if k != "step" and v.dim() > 0)


@pytest.mark.parametrize("state_dtype", STATES, ids=["bf16", "int8"])
@pytest.mark.parametrize("case", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_fused_equals_eager(case, state_dtype):
    """Low-precision state runs in the generated C kernel (rules that count steps) with the eager
    path's numbers: bfloat16 with the same random bits, 8-bit codes and scales from the same
    comparisons; parameters and every state entry bit for bit, the eager side under a correctly
    rounded sqrt (torch's CPU one, MKL's, is 1 ulp off the kernel's IEEE one at times)."""
    name, kwargs = case
    before = dict(kernels.stats)
    fp, fo = _run(name, kwargs, state_dtype, 5, fused=None)
    fused = kernels.stats["fused_tensors"] - before["fused_tensors"]
    if name != "SGD":
        assert fused == 5 * 4  # every tensor of every step in the kernel
    else:  # SGD's first step creates the momentum buffers, eagerly in their storage; then all fused
        assert fused == 5 * 4 - (4 if state_dtype is torch.bfloat16 else 2)  # int8: 2 small ones float32
    with correctly_rounded_sqrt():
        ep, eo = _run(name, kwargs, state_dtype, 5, fused=False)
    for a, b in zip(fp, ep):
        assert torch.equal(a, b)
    _same_state(fo.state_dict()["state"], eo.state_dict()["state"])


@pytest.mark.parametrize("fused", [None, False], ids=["fused", "eager"])
def test_int8_codes_of_a_step_are_bit_exact_on_hard_inputs(fused):
    """With betas (0, 0) one Adam step stores m = g and v = g * g: the kernel's encoder (integer
    operations on the float's bits) must give NumPy's codes on every binade, on code values, on
    ties between them and around the smallest code exactly, on both signs."""
    g = _hard_inputs(True)
    p = torch.nn.Parameter(torch.zeros(BIG))
    opt = optimlab.Adam([p], lr=0.0, betas=(0.0, 0.0), state_dtype="int8", fused=fused)
    p.grad = g
    before = kernels.stats["fused_tensors"]
    opt.step()
    assert kernels.stats["fused_tensors"] - before == (1 if fused is None else 0)
    for name, value, signed in (("exp_avg", _np(g), True), ("exp_avg_sq", _np(g) * _np(g), False)):
        codes, absmax = ref.quantize(value, signed)
        assert np.array_equal(_np(opt.state[p][name]), codes), name
        assert np.array_equal(_np(opt.state[p][name + "_absmax"]), absmax), name


def test_int8_codes_of_nan_and_inf_are_the_same_fused_and_eager():
    """A NaN or an infinity in a block: its absmax is taken on the bits in both paths (a NaN wins),
    so the codes and scales of the kernel and of the eager path agree bit for bit."""
    g = torch.randn(BIG, generator=torch.Generator().manual_seed(3)) * 1e-2
    g.view(-1)[[5, 300, 301, 700, 4099]] = torch.tensor([float("nan"), float("inf"), -1.0, -float("inf"), float("nan")])
    states = []
    for fused in (None, False):
        p = torch.nn.Parameter(torch.zeros(BIG))
        opt = optimlab.Adam([p], lr=1e-3, state_dtype="int8", fused=fused)
        for _ in range(2):
            p.grad = g.clone()
            opt.step()
        states.append(opt.state[p])
    for name in ("exp_avg", "exp_avg_sq"):
        a, b = states[0][name + "_absmax"], states[1][name + "_absmax"]
        assert torch.equal(a.view(torch.int32), b.view(torch.int32)), name
        assert torch.equal(states[0][name], states[1][name]), name
    assert torch.isnan(states[0]["exp_avg_absmax"][0]) and not torch.isfinite(states[0]["exp_avg_absmax"][2])


def test_fused_bf16_rounding_keeps_nan_and_inf():
    """The kernel rounds a block of 256 sixteen at a time where it holds no NaN, element by element
    where it does: both give the eager path's bits (block 0: a NaN; block 1: infinities, a value
    whose square overflows, a subnormal, no NaN; block 2: 88 elements, a partial block)."""
    grad = torch.randn(600, generator=torch.Generator().manual_seed(3))
    grad[5] = float("nan")
    grad[300:304] = torch.tensor([float("inf"), -float("inf"), 3e38, -1e-40])
    p = torch.nn.Parameter(torch.zeros(600))
    ref_p = torch.nn.Parameter(torch.zeros(600))
    fused = optimlab.Adagrad([p], lr=0.1, state_dtype=torch.bfloat16)
    eager = optimlab.Adagrad([ref_p], lr=0.1, state_dtype=torch.bfloat16, fused=False)
    before = kernels.stats["fused_tensors"]
    for q, o in ((p, fused), (ref_p, eager)):
        for _ in range(2):
            q.grad = grad.clone()
            with correctly_rounded_sqrt():
                o.step()
    assert kernels.stats["fused_tensors"] - before == 2  # the fused optimizer's two steps ran in the kernel
    a, b = fused.state[p]["sum"], eager.state[ref_p]["sum"]
    assert a.view(torch.int16).tolist() == b.view(torch.int16).tolist()
    assert torch.isnan(a[5]) and torch.isinf(a[300]) and torch.isinf(a[301]) and torch.isinf(a[302])
    # the eager sqrt correctly rounded: the parameters' bits too (NaNs included)
    assert p.detach().view(torch.int32).tolist() == ref_p.detach().view(torch.int32).tolist()


# ----------------------------------------------------------------------------- state_dict and bytes


def _stepped(p, opt, steps):
    """(p, opt) after ``steps`` steps of ``opt`` on the test gradients of ``p``."""
    for g in _grads(steps, BIG):
        p.grad = g
        opt.step()
    return p, opt


def _torch_adam_state(steps=3):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(BIG))
    return _stepped(p, torch.optim.Adam([p], lr=1e-2), steps)


def test_torch_fp32_state_loads_into_int8_and_back():
    p, topt = _torch_adam_state()
    saved = topt.state_dict()
    q = torch.nn.Parameter(p.detach().clone())
    ours = optimlab.Adam([q], lr=1e-2, state_dtype="int8")
    ours.load_state_dict(saved)
    state = ours.state[q]
    assert ours.param_groups[0]["state_dtype"] == "int8"
    for name, signed in (("exp_avg", True), ("exp_avg_sq", False)):
        codes, absmax = ref.quantize(_np(topt.state[p][name]), signed)
        assert state[name].dtype == torch.uint8
        assert np.array_equal(_np(state[name]), codes)
        assert np.array_equal(_np(state[name + "_absmax"]), absmax)
    # the reverse: the 8-bit state_dict into a float32 optimizer is dequantized
    back = optimlab.Adam([torch.nn.Parameter(p.detach().clone())], lr=1e-2)
    back.load_state_dict(ours.state_dict())
    back_state = next(iter(back.state.values()))
    assert set(back_state) == {"step", "exp_avg", "exp_avg_sq"}
    for name, signed in (("exp_avg", True), ("exp_avg_sq", False)):
        assert back_state[name].dtype == torch.float32
        assert torch.equal(back_state[name], precision.dequantize(state[name], state[name + "_absmax"], signed))
        original = topt.state[p][name]  # within 1/16 of the value, or below the smallest code
        torch.testing.assert_close(back_state[name], original, rtol=2.0 ** -4 + 1e-6,
                                   atol=2.0 ** -15 * original.abs().max().item())
    # and it keeps stepping; torch.optim.Adam takes the dequantized float32 state as its own
    topt.load_state_dict(back.state_dict())
    assert torch.equal(topt.state[p]["exp_avg"], back_state["exp_avg"])


def test_bf16_state_dict_round_trip_keeps_bf16_and_loads_float32():
    p, topt = _torch_adam_state()
    q = torch.nn.Parameter(p.detach().clone())
    ours = optimlab.Adam([q], lr=1e-2, state_dtype=torch.bfloat16)
    ours.load_state_dict(topt.state_dict())
    assert ours.state[q]["exp_avg"].dtype == torch.bfloat16  # rounded to nearest on load
    assert torch.equal(ours.state[q]["exp_avg"], topt.state[p]["exp_avg"].to(torch.bfloat16))
    again = optimlab.Adam([q], lr=1e-2, state_dtype=torch.bfloat16)
    again.load_state_dict(ours.state_dict())
    _same_state(again.state_dict()["state"], ours.state_dict()["state"])


def _int8_adam(steps=2):
    q = torch.nn.Parameter(torch.randn(BIG, generator=torch.Generator().manual_seed(1)))
    return _stepped(q, optimlab.Adam([q, torch.nn.Parameter(torch.zeros(30))], lr=1e-2, state_dtype="int8"), steps)


def test_int8_state_dict_carries_its_format_version():
    q, opt = _int8_adam()
    saved = opt.state_dict()
    assert saved["state"][0][precision.FORMAT_KEY] == precision.INT8_FORMAT == 2
    assert precision.FORMAT_KEY not in opt.state[q]  # in the state_dict only, not a state entry
    assert precision.FORMAT_KEY not in saved["state"].get(1, {})  # float32 state (30 elements): no tag
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    buffer.seek(0)
    again = optimlab.Adam([torch.nn.Parameter(q.detach().clone()), torch.nn.Parameter(torch.zeros(30))],
                          lr=1e-2, state_dtype="int8")
    again.load_state_dict(torch.load(buffer))
    _same_state(again.state_dict()["state"], saved["state"])
    assert precision.FORMAT_KEY not in next(iter(again.state.values()))
    # a copy (deepcopy, pickle) tags and checks as the original; loading adds no second set of hooks
    import copy
    import pickle
    for twin in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert twin.state_dict()["state"][0][precision.FORMAT_KEY] == precision.INT8_FORMAT
        twin.load_state_dict(saved)
        twin.load_state_dict(twin.state_dict())
        assert len(twin._optimizer_load_state_dict_pre_hooks) == 1


@pytest.mark.parametrize("version", [None, 1, 3, "2"], ids=["untagged", "v1", "v3", "str"])
def test_int8_state_of_another_format_is_refused_and_nothing_loaded(version):
    q, opt = _int8_adam()
    saved = opt.state_dict()
    entry = dict(saved["state"][0])
    if version is None:
        del entry[precision.FORMAT_KEY]
    else:
        entry[precision.FORMAT_KEY] = version
    groups = [{**g, "lr": 0.5} for g in saved["param_groups"]]
    bad = {"state": {**saved["state"], 0: entry}, "param_groups": groups}
    target_q, target = _int8_adam(steps=1)
    before = {k: v.clone() for k, v in target.state[target_q].items()}
    expected = "without the format tag 'int8_format'" if version is None else f"in format int8_format={version!r}"
    with pytest.raises(ValueError, match=rf"state_dict\['state'\]\[0\] holds 8-bit state \['exp_avg', "
                                         rf"'exp_avg_sq'\] {expected}.*int8_format=2"):
        target.load_state_dict(bad)
    assert target.param_groups[0]["lr"] == 1e-2  # nothing half-done
    assert all(torch.equal(v, target.state[target_q][k]) for k, v in before.items())


def test_int8_state_is_a_quarter_of_float32():
    p = torch.nn.Parameter(torch.randn(1 << 20))
    sizes = {}
    for state_dtype in (None, torch.bfloat16, "int8"):
        opt = optimlab.Adam([p], lr=1e-3, state_dtype=state_dtype)
        p.grad = torch.randn_like(p)
        opt.step()
        sizes[state_dtype] = precision.state_bytes(opt.state[p])
    assert sizes["int8"] <= 0.27 * sizes[None]
    assert sizes[torch.bfloat16] <= 0.51 * sizes[None]


# ----------------------------------------------------------------------------- bad settings


@pytest.mark.parametrize("kwargs, match", [
    ({"state_dtype": "int4"}, r"state_dtype must be None, torch.float32, torch.float64, torch.bfloat16 or \"int8\""),
    ({"state_dtype": torch.float16}, "state_dtype must be"),
    ({"state_dtype": "bfloat16"}, "state_dtype must be"),
    ({"param_rounding": "up"}, "param_rounding must be one of 'nearest', 'stochastic'"),
])
def test_bad_settings_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        optimlab.Adam([torch.nn.Parameter(torch.zeros(3))], **kwargs)


@pytest.mark.parametrize("state_dtype", STATES, ids=["bf16", "int8"])
def test_low_precision_state_refuses_complex_params(state_dtype):
    p = torch.nn.Parameter(torch.zeros(3, dtype=torch.complex64))
    with pytest.raises(ValueError, match="state_dtype=.*complex.*allowed for complex parameters: None"):
        optimlab.Adam([p], state_dtype=state_dtype)


def test_stochastic_rounding_refuses_float16_params_and_bad_seeds():
    with pytest.raises(ValueError, match="param_rounding='stochastic'.*float16.*allowed"):
        optimlab.SGD([torch.nn.Parameter(torch.zeros(3, dtype=torch.float16))], lr=0.1, param_rounding="stochastic")
    with pytest.raises(ValueError, match=r"rounding_seed must be an integer in \[0, 2\*\*32\)"):
        optimlab.SGD([{"params": [torch.nn.Parameter(torch.zeros(3))], "rounding_seed": -1}], lr=0.1)
    opt = optimlab.SGD([torch.nn.Parameter(torch.zeros(3))], lr=0.1)
    with pytest.raises(ValueError, match="state_dtype"):  # a bad group is not kept
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2, dtype=torch.complex64))],
                             "state_dtype": "int8"})
    assert len(opt.param_groups) == 1


def run_bf16_params(name, state_dtype, sizes, steps, fused):
    """``steps`` steps of bfloat16 parameters of ``sizes`` with ``param_rounding="stochastic"``:
    the parameters and the state dict's state."""
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(n, generator=g).to(torch.bfloat16)) for n in sizes]
    opt = getattr(optimlab, name)(params, lr=1e-2, param_rounding="stochastic", state_dtype=state_dtype,
                                  fused=None if fused else False)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g).to(torch.bfloat16)
        opt.step()
    return [p.detach() for p in params], opt.state_dict()["state"]


@pytest.mark.parametrize("state_dtype", [None, torch.bfloat16, "int8"], ids=["f32-state", "bf16-state", "int8-state"])
@pytest.mark.parametrize("name", ["Adam", "NAdam", "Adagrad"])
def test_stochastically_rounded_bf16_params_run_in_the_c_kernel(name, state_dtype):
    """``param_rounding="stochastic"`` on bfloat16 parameters: the generated C computes in float32
    and rounds the parameter with the eager path's bits (stream "param"), the state float32,
    bfloat16 or 8-bit (codes and scales; float32 under the 8-bit threshold) exactly as the eager
    path keeps it: bit for bit, the eager side under a correctly rounded sqrt (torch's CPU one is
    an ulp off at times, which may flip a rounding; at these sizes it happens to flip none, so
    :func:`test_fused_equals_eager` is the test that catches it)."""
    from optimlab import kernels

    before = dict(kernels.stats)
    ours, our_state = run_bf16_params(name, state_dtype, (5000, 4100, 7), steps=3, fused=True)
    assert kernels.stats["fused_tensors"] - before["fused_tensors"] == 9
    assert kernels.stats["eager_tensors"] == before["eager_tensors"]
    with correctly_rounded_sqrt():
        eager, eager_state = run_bf16_params(name, state_dtype, (5000, 4100, 7), steps=3, fused=False)
    for a, b in zip(ours, eager):
        assert a.dtype == torch.bfloat16 and torch.equal(a, b)
    for i, entries in eager_state.items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                assert our_state[i][key].dtype == value.dtype and torch.equal(our_state[i][key], value), key


#: SGD's options (each changes the traced rule) for the low-precision SGD tests
SGD_OPTIONS = [
    {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "weight_decay": 1e-2},
    {"lr": 0.1, "momentum": 0.9, "nesterov": True, "maximize": True},
    {"lr": 0.1, "momentum": 0.8, "momentum_form": "ewma"},
    {"lr": 0.1},  # no momentum: no buffer, the step counter only keys the rounding
]
#: (parameter dtype, state_dtype) of SGD's low-precision storages: bf16 parameters are rounded stochastically
SGD_STORAGES = [(torch.float32, torch.bfloat16), (torch.float32, "int8"), (torch.bfloat16, None),
                (torch.bfloat16, torch.bfloat16), (torch.bfloat16, "int8")]
SGD_STORAGE_IDS = ["f32-bf16", "f32-int8", "bf16-f32", "bf16-bf16", "bf16-int8"]


def run_sgd(kwargs, pdtype, state_dtype, sizes, steps, fused, stop_at=None):
    """``steps`` SGD steps on parameters of ``sizes`` (``pdtype``; bfloat16 ones rounded
    stochastically); with ``stop_at``, saved there and resumed in a fresh optimizer. Returns the
    parameters, the state dict's state and how many tensor steps ran fused / eagerly."""
    g = torch.Generator().manual_seed(3)
    params = [torch.nn.Parameter(torch.randn(n, generator=g).to(pdtype)) for n in sizes]
    rounding = "stochastic" if pdtype == torch.bfloat16 else "nearest"
    make = lambda ps: optimlab.SGD(ps, **kwargs, state_dtype=state_dtype, param_rounding=rounding,  # noqa: E731
                                   rounding_seed=11, fused=None if fused else False)
    opt = make(params)
    before = dict(kernels.stats)
    for t in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g).to(pdtype)
        opt.step()
        if stop_at == t + 1:
            saved = {"opt": opt.state_dict(), "params": [p.detach().clone() for p in params]}
            params = [torch.nn.Parameter(p) for p in saved["params"]]
            opt = make(params)
            opt.load_state_dict(saved["opt"])
    ran = {k: kernels.stats[k + "_tensors"] - before[k + "_tensors"] for k in ("fused", "eager")}
    return [p.detach() for p in params], opt.state_dict()["state"], ran


def assert_same_sgd(ours, eager):
    """Parameters and every state entry (bf16 bits, 8-bit codes and scales, step) bit for bit."""
    for a, b in zip(ours[0], eager[0]):
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert ours[1].keys() == eager[1].keys()
    for i, entries in eager[1].items():
        assert ours[1][i].keys() == entries.keys()
        for key, value in entries.items():
            if torch.is_tensor(value):
                assert ours[1][i][key].dtype == value.dtype and torch.equal(ours[1][i][key], value), (i, key)


#: each option set with every storage or two of them (every kernel is a compile on a fresh machine)
SGD_CASES = [(0, k) for k in range(5)] + [(1, 1), (1, 3), (2, 0), (2, 4), (3, 0), (3, 2)]


@pytest.mark.parametrize("case", SGD_CASES, ids=[f"{['dampening-wd', 'nesterov-max', 'ewma', 'plain'][o]}-"
                                                f"{SGD_STORAGE_IDS[k]}" for o, k in SGD_CASES])
def test_sgd_low_precision_runs_in_the_c_kernel(case):
    """SGD counts no steps, yet its low-precision storage keys the stochastic rounding on a
    ``step`` the eager path keeps: the plan keeps and advances the same counter, so the kernel
    rounds with the same bits. Its first step creates the momentum buffer (eagerly, in its
    storage); every later step runs in the generated C: parameters, bf16 bits, 8-bit codes and
    scales and the step equal the eager path's (no square root: exactly), and so does a run
    saved and resumed mid-way."""
    kwargs, (pdtype, state_dtype) = SGD_OPTIONS[case[0]], SGD_STORAGES[case[1]]
    sizes, steps = (5000, 4100), 4
    ours = run_sgd(kwargs, pdtype, state_dtype, sizes, steps, fused=True)
    created = len(sizes) if kwargs.get("momentum") else 0  # the first step's momentum buffers
    assert ours[2] == {"fused": steps * len(sizes) - created, "eager": created}
    eager = run_sgd(kwargs, pdtype, state_dtype, sizes, steps, fused=False)
    assert eager[2]["fused"] == 0
    assert_same_sgd(ours, eager)
    keyed = pdtype == torch.bfloat16 or state_dtype is torch.bfloat16  # the step keys a rounding
    assert all(int(entries["step"]) == steps if keyed else "step" not in entries for entries in ours[1].values())
    assert_same_sgd(run_sgd(kwargs, pdtype, state_dtype, sizes, steps, fused=True, stop_at=2), eager)


@pytest.mark.parametrize("state_dtype", [torch.bfloat16, "int8"])
def test_fresh_gradients_every_step_are_read_by_address(state_dtype, monkeypatch):
    """As in training (``zero_grad(set_to_none=True)``, then ``backward()``): every step's gradients
    are new tensors at new addresses, with no Python object until asked for. The low-precision
    kernels read them where the dispatcher found them this step (a stale address would feed the
    moments last step's gradient or freed memory): the moments and the parameters equal the eager
    path's bit for bit (its sqrt correctly rounded, as in :func:`test_fused_equals_eager`)."""
    from optimlab.kernels import native

    checks, took = native.enabled(), []
    if hasattr(checks, "gather_own"):  # the C++ build and Python read gradients by address
        real = checks.gather_own
        monkeypatch.setattr(checks, "gather_own", lambda *a: took.append(real(*a)) or took[-1])
    sizes = (5000, 8192, 300)
    results = []
    for fused in (None, False):
        params = [torch.nn.Parameter(torch.randn(n, generator=torch.Generator().manual_seed(7 + n))) for n in sizes]
        opt = optimlab.Adam(params, lr=1e-2, state_dtype=state_dtype, fused=fused)
        gen = torch.Generator().manual_seed(3)
        before = kernels.stats["fused_tensors"]
        for _ in range(5):
            opt.zero_grad(set_to_none=True)
            sum((p * torch.randn(p.shape, generator=gen)).sum() for p in params).backward()
            with correctly_rounded_sqrt():
                opt.step()
        assert kernels.stats["fused_tensors"] - before == (5 * len(sizes) if fused is None else 0)
        results.append(([p.detach().clone() for p in params], opt.state_dict()["state"]))
    if hasattr(checks, "gather_own"):
        # every step after the one that planned, each bucket (int8: the 300-element tensor's state
        # stays float32, in a bucket of its own)
        assert took == [True] * 4 * (2 if state_dtype == "int8" else 1)
    (fused_params, fused_state), (eager_params, eager_state) = results
    for a, b in zip(fused_params, eager_params):
        assert torch.equal(a, b)
    for index, entry in fused_state.items():
        for name, value in entry.items():
            other = eager_state[index][name]
            assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other, (index, name)
