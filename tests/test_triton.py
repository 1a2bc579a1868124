"""The generated Triton kernels, run by Triton's interpreter on CPU tensors, against the eager rule.

``TRITON_INTERPRET=1`` executes the same kernel source the GPU compiles (pointer tables, chunked
programs, unmasked full blocks and masked tails, scalars as arguments), one numpy operation per
kernel operation: slow, so the tensors are small and the blocks shrunk to 128 elements x 2 per
program so that every path (several programs per tensor, masked tails, several tensors per
launch, unaligned pointers) is taken. The eager side steps under a correctly rounded square root
(:func:`ieee_sqrt.correctly_rounded_sqrt`: torch's CPU sqrt is MKL's, one ulp off on ~17% of
float32 inputs; the kernel's and CUDA's are IEEE), so float32 and float64 parameters must match
bit for bit; half-precision parameters, rounded once by the kernel and after every op by the
eager rule, to a few units in the last place.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("triton")

import optimlab  # noqa: E402
import test_fused  # noqa: E402
from ieee_sqrt import correctly_rounded_sqrt  # noqa: E402
from optimlab import kernels  # noqa: E402
from optimlab.kernels import trace as tracing  # noqa: E402
from optimlab.kernels import triton_gpu  # noqa: E402
from test_fused import CASES, ids  # noqa: E402

SHAPES = [(300,), (7,), (2, 3)]  # 300: an unmasked block, then a masked tail, over two programs


def use_interpreter(monkeypatch, block: int = 128, iters: int = 2) -> None:
    """Triton's interpreter on CPU tensors, the Triton backend forced, programs of ``iters`` blocks of ``block``."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("OPTIMLAB_BACKEND", "triton")
    monkeypatch.setattr(triton_gpu, "BLOCK", block)
    monkeypatch.setattr(triton_gpu, "ITERS", iters)
    monkeypatch.setattr(triton_gpu, "CHUNK", block * iters)


@pytest.fixture
def interpreter(monkeypatch):
    use_interpreter(monkeypatch)
    monkeypatch.setattr(test_fused, "SHAPES", SHAPES)
    monkeypatch.setattr(test_fused, "FIRST_GROUP", [0, 1])


def _fused_vs_eager(name, kwargs, dtype, steps=2):
    before = dict(kernels.stats)
    ours, _ = test_fused.run(name, kwargs, dtype, fused=True, steps=steps)
    assert kernels.stats["eager_tensors"] == before["eager_tensors"]  # nothing fell back
    assert kernels.stats["fused_tensors"] - before["fused_tensors"] == steps * len(SHAPES)
    with correctly_rounded_sqrt():
        eager, _ = test_fused.run(name, kwargs, dtype, fused=False, steps=steps)
    return [p.detach() for p in ours], [p.detach() for p in eager]


ONE_PER_ALGORITHM = [CASES[i] for i in (2, 7, 9, 12, 14, 17)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=ids)
def test_triton_matches_eager(interpreter, case, dtype):
    """Every algorithm and option in float32; every algorithm (its richest option set) in float64."""
    if dtype == torch.float64 and case not in ONE_PER_ALGORITHM:
        pytest.skip("float64: one option set per algorithm")
    ours, eager = _fused_vs_eager(*case, dtype)
    for a, b in zip(ours, eager):
        assert torch.equal(a, b), f"max |triton - eager| {float((a - b).abs().max()):.3g}"


@pytest.mark.parametrize("case, dtype", [(CASES[2], torch.bfloat16), (CASES[12], torch.bfloat16),
                                         (CASES[16], torch.bfloat16), (CASES[2], torch.float16)],
                         ids=["sgd-bf16", "adam-bf16", "nadam-bf16", "sgd-f16"])
def test_triton_low_precision_params_compute_in_float32(interpreter, case, dtype):
    """Half-precision parameters: loaded, computed in float32, rounded once on store. The eager
    rule rounds after every op, so the two agree to a few units in the last place, not exactly
    (float16 Adam is not compared: eager float16 rounds eps=1e-8 to 0 and divides 0 by 0)."""
    ours, eager = _fused_vs_eager(*case, dtype, steps=2)
    for a, b in zip(ours, eager):
        assert a.dtype == dtype
        torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=4e-2 if dtype == torch.bfloat16 else 4e-3)


def test_unaligned_parameters_take_the_unaligned_kernel(interpreter):
    """A parameter whose storage starts 4 bytes off a 16-byte boundary: no alignment hints."""
    def go(fused):
        g = torch.Generator().manual_seed(0)
        storage = torch.randn(301, generator=g)
        params = [torch.nn.Parameter(storage[1:]),  # a contiguous view at element offset 1
                  torch.nn.Parameter(torch.randn(9, generator=g))]
        opt = optimlab.Adam(params, lr=0.01, fused=None if fused else False)
        for _ in range(2):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g)
            opt.step()
        return [p.detach() for p in params]

    ours, eager = go(True), go(False)
    assert ours[0].data_ptr() % 16 != 0
    for a, b in zip(ours, eager):
        torch.testing.assert_close(a, b)
    programs = list(triton_gpu._programs.values())
    assert any(not key[0] for program in programs for key in program.variants)  # key[0]: aligned


def _stepped_adam(cls=optimlab.Adam, **kwargs):
    """Adam (or ``cls``) over ``SHAPES`` with a halving lr schedule, one step (and its kernels) taken."""
    params = [torch.nn.Parameter(torch.randn(s)) for s in SHAPES]
    opt = cls(params, lr=0.01, **kwargs)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    sched.step()
    return params, opt, sched


def test_scheduler_changing_lr_reuses_the_kernel(interpreter):
    params, opt, sched = _stepped_adam()
    compiled = triton_gpu.stats["compiled"]
    for _ in range(3):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == 0.01 / 16
    assert triton_gpu.stats["compiled"] == compiled


def test_device_scalars_give_the_same_numbers_as_python_numbers(interpreter):
    """Capturable form: the step and what the rule derives from it as 0-dim tensors read by the
    kernel from memory, not passed as arguments; same numbers as the Python-number trace."""
    from optimlab.algorithms.adam import adam

    g = torch.Generator().manual_seed(0)
    p, grad, m, v = (torch.randn(300, generator=g).abs() for _ in range(4))
    hyper = dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False,
                 maximize=False, decoupled_weight_decay=False, bias_correction=True)
    results = []
    for step in (3.0, torch.tensor(3.0, dtype=torch.float64)):
        device = torch.device("cpu") if isinstance(step, torch.Tensor) else None
        trace, out = tracing.trace_rule(adam, ["param", "grad", "exp_avg", "exp_avg_sq"],
                                        {**hyper, "step": step}, "adam", device=device)
        kinds = {node[0] for node in trace.nodes}
        assert ("dscalar" in kinds) == (device is not None)
        outputs = [(0, out["param"].index), (2, out["exp_avg"].index), (3, out["exp_avg_sq"].index)]
        structure = (tuple(trace.nodes), tuple(outputs), 4, torch.float32)
        program = triton_gpu.kernel_for(trace, outputs, 4, torch.float32, structure)
        columns = [[p.clone()], [grad], [m.clone()], [v.clone()]]

        class Bucket:  # what launch reads of a plan's bucket
            sizes, cache, names = [300], {}, ("exp_avg", "exp_avg_sq")
            static_ptrs = [columns[k][0].data_ptr() for k in range(4)]  # the gradients' row: the dispatcher's
        triton_gpu.launch(program, Bucket, columns, trace.scalars)
        results.append(columns)
    for a, b in zip(*results):
        torch.testing.assert_close(a[0], b[0], rtol=1e-6, atol=1e-7)


def _launch_one(update, inputs, hyper, n):
    """Trace ``update`` over ``inputs`` (tensors of ``n`` elements) and launch it once in place."""
    trace, out = tracing.trace_rule(update, list(inputs), hyper, "test")
    outputs = [(0, out["param"].index)]
    structure = (tuple(trace.nodes), tuple(outputs), len(inputs), torch.float32)
    program = triton_gpu.kernel_for(trace, outputs, len(inputs), torch.float32, structure)
    columns = [[t.clone()] for t in inputs.values()]

    class Bucket:  # what launch reads of a plan's bucket
        sizes, cache, names = [n], {}, tuple(inputs)[2:]
        static_ptrs = [column[0].data_ptr() for column in columns]  # gradients included, as the dispatcher does
    triton_gpu.launch(program, Bucket, columns, trace.scalars)
    return columns[0][0]


@pytest.mark.parametrize("reciprocal", [False, True], ids=["divide", "reciprocal"])
def test_division_by_a_number_rounds_as_the_device_eager_op(interpreter, monkeypatch, reciprocal):
    """``tensor / number``: torch's CUDA ``div`` multiplies by the float32-rounded reciprocal of
    the number, its CPU ``div`` divides. The kernel does either, bit for bit, and the two differ."""
    monkeypatch.setattr(triton_gpu, "RECIPROCAL", reciprocal)
    g = torch.Generator().manual_seed(3)
    p, grad = torch.randn(300, generator=g), torch.randn(300, generator=g)

    def update(param, grad, *, lr):
        return {"param": param - grad / lr}

    ours = _launch_one(update, {"param": p, "grad": grad}, {"lr": 3.0}, 300)
    inverse = float(np.float32(1.0 / 3.0))  # the reciprocal in double, rounded to float32
    on_cuda, on_cpu = p - grad * inverse, p - grad / 3.0
    assert not torch.equal(on_cuda, on_cpu)  # the two roundings differ somewhere in 300 elements
    assert torch.equal(ours, on_cuda if reciprocal else on_cpu)


def test_reciprocal_is_taken_in_double_then_rounded():
    assert triton_gpu._reciprocal(0.0, False) == math.inf and triton_gpu._reciprocal(-0.0, True) == -math.inf
    assert triton_gpu._reciprocal(3.0, True) == 1.0 / 3.0
    d = (1 - 0.999) ** 0.5  # a divisor where the two float32 roundings differ
    assert triton_gpu._reciprocal(d, False) == float(np.float32(1.0 / d))
    assert float(np.float32(1.0 / d)) != float(np.float32(1.0) / np.float32(d))
    assert triton_gpu._reciprocal(1e-39, False) == math.inf  # 1e39 overflows float32


LAYOUTS = {  # (SPLIT, STREAM, UNROLL, PREFETCH, STAGES, PERSIST)
    "per-block-branch": (False, False, True, 0, 0, 0), "per-program-branch": (True, False, True, 0, 0, 0),
    "evict-first": (True, True, True, 0, 0, 0), "loop": (True, False, False, 0, 0, 0),
    "prefetch-1": (True, False, True, 1, 0, 0), "prefetch-all": (True, False, True, 2, 0, 0),
    "pipelined-loop": (True, False, False, 0, 3, 0), "persistent": (True, False, True, 0, 0, 1),
    "persistent-prefetch": (True, False, True, 1, 0, 1), "persistent-per-block": (False, False, True, 0, 0, 1)}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_program_layout_matches_eager(interpreter, monkeypatch, layout):
    """The kernel with one full/tail branch per program (pointers moved to the chunk, 32-bit
    offsets), the one testing every block, the evict-first form, the form whose blocks are a
    loop (the tail's loop only over blocks that hold elements), a ``tl.range`` loop with pipeline
    stages, blocks whose loads are issued one or all blocks ahead, and a persistent grid (4
    programs per "SM" here: fewer programs than chunks, so each walks several) agree bit for bit
    with the eager rule (several programs per tensor, a tail inside the last one)."""
    split, stream, unroll, prefetch, stages, persist = LAYOUTS[layout]
    for name, value in zip(("SPLIT", "STREAM", "UNROLL", "PREFETCH", "STAGES", "PERSIST"), LAYOUTS[layout]):
        monkeypatch.setattr(triton_gpu, name, value)
    monkeypatch.setattr(triton_gpu, "_processors", lambda device: 1)  # persistent: one program walks every chunk
    launched = []
    real = triton_gpu._load

    def spy(source):
        launched.append(source)
        return real(source)

    monkeypatch.setattr(triton_gpu, "_load", spy)
    ours, eager = _fused_vs_eager(*CASES[12], torch.float32)
    for a, b in zip(ours, eager):
        assert torch.equal(a, b), f"max |triton - eager| {float((a - b).abs().max()):.3g}"
    assert any(key[2:8] == (split, stream, unroll or not split, (prefetch, triton_gpu.ITERS) if prefetch else 0, stages,
                               persist > 0)
               for program in triton_gpu._programs.values() for key in program.variants)
    text = "\n".join(launched)
    assert ("offs_1 = 1 * BLOCK" in text) == bool(prefetch)
    assert ("num_stages=3" in text) == bool(stages)
    assert ("for c in range(pid, nc, tl.num_programs(0))" in text) == bool(persist)


@pytest.mark.parametrize("backend", ["triton", "foreach"])
@pytest.mark.parametrize("case", [CASES[12], CASES[16], CASES[9]], ids=ids)
def test_capturable_step_keeps_its_counters_on_the_device(interpreter, monkeypatch, backend, case):
    """capturable=True through the optimizer, on CPU tensors standing in for CUDA ones: the step
    counter and NAdam's mu_product stay tensors on the parameter's device, the scalars the rule
    derives from them reach the kernel as device scalars, and the numbers equal the non-capturable eager step."""
    monkeypatch.setattr(kernels, "check_capturable", lambda group: None)  # CUDA-only otherwise
    monkeypatch.setenv("OPTIMLAB_BACKEND", backend)
    name, kwargs = case
    seen = []
    real_trace = tracing.trace_rule

    def spy(*args, **kw):
        trace, out = real_trace(*args, **kw)
        seen.append({node[0] for node in trace.nodes})
        return trace, out

    monkeypatch.setattr(tracing, "trace_rule", spy)
    ours, eager = _fused_vs_eager(name, {**kwargs, "capturable": True}, torch.float32)
    # a device value meets the tensors (``dcast``): the step's arithmetic is in the kernel (RMSprop: none)
    assert seen and all(("dcast" in kinds) == (name != "RMSprop") for kinds in seen)
    eager_plain, _ = test_fused.run(name, kwargs, torch.float32, fused=False, steps=2)
    for a, b, c in zip(ours, eager, eager_plain):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, c.detach())


def test_capturable_needs_cuda_parameters():
    with pytest.raises(ValueError, match="capturable=True needs every parameter on a CUDA device"):
        optimlab.Adam([torch.nn.Parameter(torch.randn(3))], capturable=True)


class _AtenOps:
    """The aten ops run inside the ``with`` block (a dispatch mode: every op, even on 0-dim tensors)."""

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        seen = self.seen = []

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                seen.append(func.overloadpacket.__name__)
                return func(*args, **(kwargs or {}))

        self.mode = Mode()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)


@pytest.mark.parametrize("cls", [optimlab.Adam, optimlab.NAdam], ids=["adam", "nadam"])
@pytest.mark.parametrize("backend", ["triton", "foreach"])
def test_capturable_counter_arithmetic_runs_in_the_kernel(interpreter, monkeypatch, backend, cls):
    """capturable Adam / NAdam: a step runs one torch arithmetic op, ``step += 1``; the bias
    corrections (``1 - beta ** step``, their square root and reciprocal, NAdam's momentum
    schedule) are computed inside the Triton kernel, and NAdam's new ``mu_product`` by one more
    small Triton kernel, not as one-element torch kernels (before: ~15 per step, and a stack of
    their results). The foreach executor computes the same nodes with torch. An lr schedule
    builds no kernel."""
    monkeypatch.setattr(kernels, "check_capturable", lambda group: None)  # CUDA-only otherwise
    monkeypatch.setenv("OPTIMLAB_BACKEND", backend)
    params, opt, sched = _stepped_adam(cls, capturable=True)
    compiled = triton_gpu.stats["compiled"]
    with _AtenOps() as ops:
        opt.step()
    arithmetic = [op for op in ops.seen if op in {"add", "add_", "sub", "rsub", "mul", "div", "pow", "sqrt",
                                                  "reciprocal", "stack", "cat", "_to_copy", "fill_"}]
    if backend == "triton":
        assert arithmetic == ["add_"], ops.seen
    else:
        assert "pow" in ops.seen  # the same arithmetic, as torch ops
    sched.step()
    opt.step()
    assert triton_gpu.stats["compiled"] == compiled
    assert float(opt.state[params[0]]["step"]) == 3


def test_device_values_record_what_torch_computes():
    """The arithmetic on a capturable step's device counters is recorded as trace nodes in torch's
    own forms (``number / x`` a reciprocal then a product, ``x / number`` a product by the
    reciprocal taken in double, ``x ** 0.5`` a square root), computed again with torch it equals
    the eager expression bit for bit, and a use on the host is refused (the step then runs eagerly)."""
    step = torch.tensor(7.0, dtype=torch.float64)

    def rule(param, grad, *, step):
        bc1 = 1 - 0.9 ** step
        bc2 = (1 - 0.999 ** step) ** 0.5
        return {"param": param - (0.01 / bc1) * (grad / bc2) - (step / 3.0) * grad}

    trace, out = tracing.trace_rule(rule, ["param", "grad"], {"step": step}, "t", device=torch.device("cpu"))
    kinds = [node[0] for node in trace.nodes]
    assert {"dpow", "dsub", "drecip", "dmul", "dsqrt", "dcast"} <= set(kinds) and "ddiv" not in kinds
    thirds = [n for n in trace.nodes if n[0] == "dmul" and any(trace.nodes[a][0] == "dconst"
                                                               and trace.scalars[trace.nodes[a][1]] == 1 / 3.0
                                                               for a in n[1:])]
    assert thirds  # ``step / 3.0`` as ``step * (1 / 3.0)``
    casts = [i for i, node in enumerate(trace.nodes) if node[0] == "dcast"]
    got = [trace.device_value(trace.nodes[i][1]) for i in casts]
    expected = [0.01 / (1 - 0.9 ** step), (1 - 0.999 ** step) ** 0.5, step * (1 / 3.0)]
    assert sorted(float(x) for x in got) == sorted(float(x) for x in expected)
    for use in (lambda s: s > 1, lambda s: float(s), lambda s: s ** 3, lambda s: bool(s)):
        with pytest.raises(tracing.Unsupported):
            tracing.trace_rule(lambda param, grad, *, step: {"param": param * use(step)}, ["param", "grad"],
                               {"step": step}, "t", device=torch.device("cpu"))
