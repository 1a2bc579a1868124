"""The dispatcher's per-step checks in C (kernels/native.py) against the same checks in Python.

Each check gets the cases it must tell apart - a plan that still holds, and every kind of change
that must make it fail - and both builds of the module (C++ reading TensorImpls, and C on
Python's C API only, the fallback) must answer as the Python reference does. Then whole runs with
the checks in C++, in C and in Python (``OPTIMLAB_NATIVE=0``) must give identical numbers.
"""

from __future__ import annotations

import os
from array import array

import pytest
import torch

import optimlab
from optimlab import kernels
from optimlab.kernels import cpu, native

pytestmark = pytest.mark.skipif(cpu.compiler() is None, reason="no C compiler")

SHAPES = [(30,), (5, 3), (7,), (1,)]


@pytest.fixture(scope="module", params=["C++", "C"])
def c_module(request):
    """Each build: C++ against torch's headers (what ``native.module()`` picks where it builds) and C."""
    if request.param == "C++":
        module = native.module()
        assert module is not None, "the C checks must build where a C compiler is found"
        if native.kind(module) != "C++":
            pytest.skip(f"no C++ build here: {native.unavailable.get('torch')}")
    else:
        module = native.build(against_torch=False)
    assert native.kind(module) == request.param
    return module


#: enough tensors for the C++ build's two-thread gather (native.c: TWO_THREADS_FROM)
MANY = SHAPES + [(2,)] * 300


def _stepped(name="Adam", shapes=SHAPES, **kwargs):
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    opt = getattr(optimlab, name)(params, lr=0.01, **kwargs)
    for _ in range(2):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    return params, opt


def _gather(module, bucket, grads):
    ptrs = array("q", bucket.static_ptrs)
    n = len(bucket.params)
    out = module.gather(bucket.params, bucket.param_ptrs, bucket.sizes, bucket.dtype, bucket.dicts,
                        bucket.values, bucket.value_ptrs, ptrs, n, grads, bucket.index)
    return out, ptrs[n:2 * n]


def _no_change(params, opt):
    pass


def _grad_view(params, opt):
    """A new gradient each step (zero_grad(set_to_none=True)), here a view at an offset: it holds."""
    params[0].grad = torch.randn(40)[10:]
    params[1].grad = torch.randn(5, 3)


def _grad_float64(params, opt):
    params[0].grad.data = params[0].grad.data.double()


def _grad_transposed(params, opt):
    params[1].grad = torch.randn(3, 5).t()


def _grad_sparse(params, opt):
    params[0].grad = torch.randn(30).to_sparse()


def _grad_subclass(params, opt):
    class Marked(torch.Tensor):
        pass

    params[2].grad = torch.randn(7).as_subclass(Marked)


def _grad_none(params, opt):
    params[3].grad = None


def _grad_resized(params, opt):
    params[2].grad.data = torch.randn(6)


def _param_moved(params, opt):
    params[2].data = params[2].data.clone()


def _entry_replaced(params, opt):
    opt.state[params[1]]["exp_avg"] = torch.zeros(5, 3)


def _entry_added(params, opt):
    opt.state[params[1]]["extra"] = torch.zeros(5, 3)


def _entry_removed(params, opt):
    del opt.state[params[1]]["exp_avg_sq"]


def _storage_swapped(params, opt):
    opt.state[params[0]]["step"].set_(torch.tensor(2.0))


def _step_swapped(params, opt):
    opt.state[params[3]]["step"].data = torch.tensor(5.0)


def _last_grad_float64(params, opt):
    params[-1].grad.data = params[-1].grad.data.double()


def _last_step_swapped(params, opt):
    opt.state[params[-1]]["step"].set_(torch.tensor(2.0))


def _last_entry_replaced(params, opt):
    opt.state[params[-1]]["exp_avg_sq"] = torch.zeros_like(params[-1])


HOLDING = (_no_change, _grad_view)
CHANGES = [_no_change, _grad_view, _grad_float64, _grad_transposed, _grad_sparse, _grad_subclass, _grad_none,
           _grad_resized, _param_moved, _entry_replaced, _entry_added, _entry_removed, _storage_swapped,
           _step_swapped, _last_grad_float64, _last_step_swapped, _last_entry_replaced]


@pytest.mark.parametrize("shapes", [SHAPES, MANY], ids=["few", "many"])
@pytest.mark.parametrize("change", CHANGES, ids=lambda f: f.__name__.strip("_"))
def test_gather_answers_as_python(c_module, change, shapes):
    params, opt = _stepped(shapes=shapes)
    bucket = kernels._plans[opt].buckets[0]
    change(params, opt)
    grads = [p.grad for p in params]
    got, got_row = _gather(c_module, bucket, grads)
    want, want_row = _gather(native.python, bucket, grads)
    assert (got is None) == (want is None) == (change not in HOLDING)
    if got is not None:
        assert all(a is b for a, b in zip(got, want)) and len(got) == len(params)
        assert got_row == want_row == array("q", [g.data_ptr() for g in grads])


@pytest.fixture(scope="module")
def cpp_module():
    """The C++ build (gather_own and listing exist only there and in Python)."""
    module = native.module()
    if module is None or native.kind(module) != "C++":
        pytest.skip(f"no C++ build here: {native.unavailable.get('torch')}")
    return module


def _param_reinterpreted(params, opt):
    """The same memory seen as another dtype: the address holds, the parameter does not."""
    params[0].data = params[0].data.view(torch.complex64)


def _grads_from_backward(params, opt):
    """Gradients fresh from backward(): no Python object exists for them until ``.grad`` is read."""
    for p in params:
        p.grad = None
    sum((p * p).sum() for p in params).backward()


def _gather_own(module, bucket):
    ptrs = array("q", bucket.static_ptrs)
    n = len(bucket.params)
    out = module.gather_own(bucket.params, bucket.param_ptrs, bucket.sizes, bucket.dtype, bucket.dicts,
                            bucket.values, bucket.value_ptrs, ptrs, n)
    return out, ptrs[n:2 * n]


@pytest.mark.parametrize("shapes", [SHAPES, MANY], ids=["few", "many"])
@pytest.mark.parametrize("change", CHANGES + [_param_reinterpreted, _grads_from_backward],
                         ids=lambda f: f.__name__.strip("_"))
def test_gather_own_answers_as_python(cpp_module, change, shapes):
    """gather's check with each gradient read from its parameter (the C++ build: from its autograd
    metadata, first, before Python's getter has made any gradient object): the same answers and
    addresses as Python's; a parameter reinterpreted at the same address fails it too."""
    params, opt = _stepped(shapes=shapes)
    bucket = kernels._plans[opt].buckets[0]
    change(params, opt)
    got, got_row = _gather_own(cpp_module, bucket)
    want, want_row = _gather_own(native.python, bucket)
    assert got is want is (change in HOLDING + (_grads_from_backward,))
    if got:
        assert got_row == want_row == array("q", [p.grad.data_ptr() for p in params])


def test_listing_answers_as_python(cpp_module):
    """A group's parameters (by identity, in order) and whose gradient is there, as the plan saw them."""

    class Quiet(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    params = [torch.nn.Parameter(torch.randn(3)) for _ in range(4)]
    sum(p.sum() for p in params[:3]).backward()  # params[3]: no gradient; the others' have no Python object
    members, mask = tuple(params), bytes([2, 1, 1, 0])
    cases = [(params, mask, True), (params[:3], mask, False), (params[::-1], mask, False),
             (params, bytes([2, 1, 0, 0]), False), (params, bytes([1, 1, 1, 1]), False),
             (params, bytes([2, 2, 2, 2]), True), (params, bytes([0, 1, 1, 0]), True)]  # 2: not looked at
    for module in (cpp_module, native.python):
        for listed, m, want in cases:
            assert module.listing(members, listed, m) is (want if m[0] != 0 else False)
        with Quiet():  # a mode may answer .grad otherwise: never taken as read
            assert module.listing(members, params, mask) is False
    params[0].grad = None
    for module in (cpp_module, native.python):
        assert module.listing(members, params, bytes([0, 1, 1, 0])) is True


def test_with_grads_answers_as_python(c_module):
    params = [torch.nn.Parameter(torch.randn(4)) for _ in range(5)]
    params.append(torch.nn.Parameter(torch.randn(4, dtype=torch.complex64)))
    for i, p in enumerate(params):
        p.grad = None if i == 1 else torch.randn(4, dtype=p.dtype)
    for sparse in (False, True):
        if sparse:
            params[2].grad = torch.randn(4).to_sparse()
        for complex_ in (False, True):
            results = []
            for module in (c_module, native.python):
                grads = ["before"]
                listed, flags = module.with_grads(params, complex_, grads)
                results.append((listed, flags, grads))
            (a, fa, ga), (b, fb, gb) = results
            assert all(x is y for x, y in zip(a, b)) and len(a) == len(b) == 5
            assert fa == fb == (1 if sparse else 0) | (2 if complex_ else 0)
            assert ga[0] == "before" and all(x is y for x, y in zip(ga, gb)) and len(ga) == 6
            assert all(g is p.grad for g, p in zip(ga[1:], a))


def test_with_grads_reads_grads_as_the_getter(c_module):
    """Gradients fresh from backward (no Python object yet: the getter makes one), a gradient
    subclass, and a torch-function mode that sees every ``.grad`` read: as ``p.grad`` answers."""

    class Marked(torch.Tensor):
        pass

    class Seen(torch.overrides.TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.reads = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.reads += getattr(func, "__self__", None) is torch.Tensor.grad  # the getter's __get__
            return func(*args, **(kwargs or {}))

    params = [torch.nn.Parameter(torch.randn(3)) for _ in range(40)]
    sum((p * p).sum() for p in params).backward()  # the gradients' Python objects do not exist yet
    params[5].grad = torch.randn(3).as_subclass(Marked)
    grads = []
    listed, flags = c_module.with_grads(params, False, grads)
    assert listed == params and flags == 0
    assert all(g is p.grad for g, p in zip(grads, params)) and type(grads[5]) is Marked
    assert all(torch.equal(g, 2 * p) for g, p in zip(grads, params) if g is not grads[5])
    for module in (c_module, native.python):
        with Seen() as mode:
            module.with_grads(params, False, [])
        assert mode.reads == len(params)


def test_identity_checks(c_module):
    a, b = torch.zeros(2), torch.zeros(2)
    for module in (c_module, native.python):
        assert module.same([a, b], (a, b)) and not module.same([a, b], (b, a)) and not module.same([a], (a, b))
        state = {a: 1, b: 2}
        assert module.same_state(state, (a, b), (1, 2))
        assert not module.same_state(state, (b, a), (2, 1))  # order matters: it is the plan's order
        assert not module.same_state(state, (a, b), (1, 3)) and not module.same_state(state, (a,), (1,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scalar_buffers_as_torch(c_module, dtype):
    """advance is ``buffer += 1`` and fill is ``fill_`` in the buffer's dtype; same_bytes compares."""
    start = torch.tensor([0.0, 16777216.0, 2.5, -1.0, 1e30], dtype=dtype)  # 2**24: float32 rounding
    for module in (c_module, native.python):
        ours, want = start.clone(), start.clone()
        module.advance(ours.data_ptr(), ours.numel(), dtype == torch.float64)
        want += 1
        assert torch.equal(ours, want)
        assert module.same_bytes(ours.data_ptr(), want.data_ptr(), ours.numel() * ours.element_size())
        module.fill(ours.data_ptr() + ours.element_size(), 3, 0.1, dtype == torch.float64)
        want[1:4].fill_(0.1)
        assert torch.equal(ours, want)
        want[0] = -0.0
        ours[0] = 0.0
        assert not module.same_bytes(ours.data_ptr(), want.data_ptr(), ours.numel() * ours.element_size())


@pytest.mark.parametrize("name,kwargs", [("SGD", {"momentum": 0.9}), ("Adam", {"amsgrad": True}),
                                         ("NAdam", {"weight_decay": 0.1})])
def test_checks_in_c_and_in_python_give_the_same_run(monkeypatch, name, kwargs):
    """Two param groups, an lr schedule, an edit between steps, new gradients every step:
    identical parameters and state with the checks in C++, in C and in Python."""
    runs = []
    for setting in ("C++", "C", "Python"):
        monkeypatch.setenv("OPTIMLAB_NATIVE", "0" if setting == "Python" else "1")
        if setting == "C":
            monkeypatch.setattr(native, "_module", [native.build(against_torch=False)])
        g = torch.Generator().manual_seed(3)
        params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in SHAPES]
        opt = getattr(optimlab, name)([{"params": params[:2]}, {"params": params[2:], "lr": 0.02}], lr=0.01, **kwargs)
        sched = torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)
        plans = kernels.stats["plans"]
        for i in range(5):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g)
            opt.step()
            sched.step()
            if i == 2:
                for st in opt.state.values():
                    for k, v in st.items():
                        if torch.is_tensor(v) and v.dim():
                            v.data = v.data * 0.5
        assert native.kind(native.enabled()) == setting or setting == "C++"
        runs.append(([p.detach().clone() for p in params], opt.state_dict()["state"], kernels.stats["plans"] - plans))
    for pb, sb, nb in runs[1:]:
        pa, sa, na = runs[0]
        assert all(torch.equal(a, b) for a, b in zip(pa, pb))
        assert all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])
        assert na == nb  # the same rebuilds: the builds tell the same changes apart


def test_steps_that_read_gradients_by_address_see_every_change(monkeypatch, cpp_module):
    """The C++ build steps without collecting the gradients (kernels.listing, gather_own) where
    the plan's lists hold; between steps the gradients come from backward(), a parameter loses
    its gradient and gets it back, one comes transposed, a group gains a parameter,
    a torch-function mode is active: every step equals the C build's (which always collects the
    gradients through Python's getter) bit for bit, and the by-address steps did happen."""

    class Quiet(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    def backward(params, g):
        for p in params:
            p.grad = None
        sum((p * torch.randn(p.shape, generator=g)).sum() for p in params).backward()

    def run(direct_steps):
        g = torch.Generator().manual_seed(5)
        params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in MANY]
        extra = torch.nn.Parameter(torch.randn(4, generator=g))
        opt = optimlab.Adam([{"params": params[:3]}, {"params": params[3:], "lr": 0.02}], lr=0.01)
        for i in range(14):  # a change every other step; plain steps between
            backward(params + ([extra] if i >= 8 else []), g)
            if i == 3:
                params[1].grad = None
            if i == 6:  # not contiguous: that parameter steps eagerly
                params[1].grad = torch.randn(3, 5, generator=g).t()
            if i == 8:
                opt.param_groups[0]["params"].append(extra)
            if i == 10:
                with Quiet():
                    opt.step()
                continue
            opt.step()
        return [p.detach().clone() for p in params + [extra]], opt.state_dict()["state"]

    took = []
    real = cpp_module.gather_own
    monkeypatch.setattr(cpp_module, "gather_own", lambda *a: took.append(real(*a)) or took[-1])
    direct = run(took)
    assert took.count(True) >= 4 and False in took  # by address where it held; refused where not
    monkeypatch.setattr(native, "_module", [native.build(against_torch=False)])
    collected = run(None)
    (pa, sa), (pb, sb) = direct, collected
    assert all(torch.equal(a, b) for a, b in zip(pa, pb))
    assert sa.keys() == sb.keys() and all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])


def test_without_torch_headers_the_c_build_is_used(monkeypatch, tmp_path):
    """Where the C++ build cannot be compiled (here: torch's headers not found), the checks run
    in the C build, and a run gives the same numbers."""
    monkeypatch.setenv("OPTIMLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(native, "TORCH_FLAGS", [f for f in native.TORCH_FLAGS if not f.endswith("include")]
                        + ["-I" + str(tmp_path / "missing")])
    monkeypatch.setattr(native, "_module", [])
    monkeypatch.setattr(native, "unavailable", {})
    module = native.module()
    assert native.kind(module) == "C" and "TensorImpl.h" in native.unavailable["torch"]
    assert native.kind(native.enabled()) == "C"
    with pytest.raises(kernels.Unsupported, match="failed before"):  # noted: not compiled again
        native.build(against_torch=True)
    params, opt = _stepped()
    monkeypatch.setenv("OPTIMLAB_NATIVE", "0")
    params_py, opt_py = _stepped()
    assert all(torch.equal(a, b) for a, b in zip(params, params_py))


def test_a_build_that_misreads_tensors_is_refused():
    """The C++ build's import checks its reads against Python's before it is used."""

    class Misreads:
        def __init__(self, address_off=0, probe_off=False, grad_off=0):
            self.address_off, self.probe_off, self.grad_off = address_off, probe_off, grad_off

        def set_dtypes(self, pairs):
            pass

        def impl_address(self, t):
            return t._cdata + self.address_off

        def grad_address(self, t):
            return None if t.grad is None else t.grad._cdata + self.grad_off

        def probe(self, t, dtype):
            sparse = t.is_sparse
            return (None if sparse else t.data_ptr() + 4 * self.probe_off, -1 if sparse else t.numel(),
                    -1 if sparse else int(t.is_contiguous()), int(sparse), int(t.is_complex()), 1)

    native._self_test(Misreads())  # reads as Python does: accepted
    for wrong in (Misreads(address_off=8), Misreads(probe_off=True), Misreads(grad_off=16)):
        with pytest.raises(ImportError):
            native._self_test(wrong)


def test_first_step_leaves_the_global_random_stream_alone():
    """Loading the checks (the C++ build's import self-test included) draws no random numbers: a
    training run's dropout masks and batches must not depend on when the module was first loaded
    (a resumed run loads it mid-run). Fresh process, fused and eager steps."""
    import subprocess
    import sys

    code = ("import torch, optimlab\n"
            "for fused in (None, False):\n"
            "    torch.manual_seed(0)\n"
            "    m = torch.nn.Linear(4, 2)\n"
            "    opt = optimlab.NAdam(m.parameters(), lr=0.01, fused=fused)\n"
            "    m(torch.ones(1, 4)).sum().backward()\n"
            "    before = torch.get_rng_state()\n"
            "    opt.step()\n"
            "    assert torch.equal(before, torch.get_rng_state()), fused\n"
            "print('ok')\n")
    src = os.path.dirname(os.path.dirname(os.path.abspath(optimlab.__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
