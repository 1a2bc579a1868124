"""The algorithms beyond the first six: each against an independent float64 reference written from
its paper's formula (tests/reference.py), fused equal to eager, and torch.optim's modes
(differentiable steps, tensor hyperparameters of any shape, sparse SGD, complex Adagrad, fused off
supported devices). Parity with torch.optim itself, state_dict interop and error types are in
tests/test_conformance.py, driven by torch's own OptimizerInfo database."""

import numpy as np
import pytest
import torch

import optimlab
from ieee_sqrt import correctly_rounded_sqrt
from reference import (grad_fn, ref_adadelta, ref_adafactor, ref_adamax, ref_ademamix, ref_asgd, ref_lbfgs,
                       ref_lion, ref_muon, ref_radam, ref_rprop, ref_schedule_free, ref_sparse_adam)
from stepping import P0, STEPS, assert_close, run_on_reference_gradients

pytestmark = pytest.mark.usefixtures("one_thread")



def run_optimlab(cls, steps=STEPS, p0=P0, **kwargs):
    opt, p = run_on_reference_gradients(cls, steps, p0, **kwargs)
    return p.detach().numpy(), opt, p


CASES = [
    (optimlab.Adadelta, ref_adadelta, dict()),
    (optimlab.Adadelta, ref_adadelta, dict(lr=0.5, rho=0.8, eps=1e-4, weight_decay=0.1, maximize=True)),
    (optimlab.Adamax, ref_adamax, dict(lr=0.01)),
    (optimlab.Adamax, ref_adamax, dict(lr=0.01, betas=(0.8, 0.99), eps=1e-3, weight_decay=0.1, maximize=True)),
    (optimlab.RAdam, ref_radam, dict(lr=0.01)),
    (optimlab.RAdam, ref_radam, dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.1)),
    (optimlab.RAdam, ref_radam, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    (optimlab.Rprop, ref_rprop, dict()),
    (optimlab.Rprop, ref_rprop, dict(lr=0.05, etas=(0.3, 1.5), step_sizes=(1e-3, 0.2), maximize=True)),
    (optimlab.Adafactor, ref_adafactor, dict()),
    (optimlab.Adafactor, ref_adafactor, dict(lr=0.05, beta2_decay=-0.5, eps=(1e-20, 1e-2), d=2.0,
                                             weight_decay=0.01, maximize=True)),
    (optimlab.Lion, ref_lion, dict(lr=0.01)),
    (optimlab.Lion, ref_lion, dict(lr=0.01, betas=(0.8, 0.95), weight_decay=0.1, maximize=True)),
    (optimlab.AdEMAMix, ref_ademamix, dict(lr=0.01)),
    (optimlab.AdEMAMix, ref_ademamix, dict(lr=0.01, betas=(0.8, 0.99, 0.999), alpha=5.0, beta3_warmup=40,
                                           alpha_warmup=30, weight_decay=0.1, maximize=True)),
]


@pytest.mark.parametrize("cls,ref,kwargs", CASES, ids=[f"{c.__name__}-{k}" for c, _, k in CASES])
def test_matches_reference(cls, ref, kwargs):
    got, _, _ = run_optimlab(cls, **kwargs)
    assert_close(got, ref(P0, STEPS, **kwargs))


def test_radam_switches_on_the_adaptive_step_after_rho_exceeds_five():
    # with b2 = 0.999, rho_t > 5 from the 6th step: the first 5 steps are SGD with momentum
    early, _, _ = run_optimlab(optimlab.RAdam, steps=5, lr=0.01)
    assert_close(early, ref_radam(P0, 5, lr=0.01))
    m = np.zeros_like(P0)
    p = P0.copy()
    for t in range(1, 6):
        m = 0.9 * m + 0.1 * grad_fn(p, t)
        p = p - 0.01 * m / (1 - 0.9 ** t)
    np.testing.assert_allclose(early, p, rtol=1e-12)


@pytest.mark.parametrize("kwargs", [dict(t0=20, lr=0.05), dict(t0=1e6, lr=0.05, lambd=1e-2, alpha=0.5,
                                                                 weight_decay=0.1, maximize=True)])
def test_asgd_matches_reference_with_its_average(kwargs):
    got, opt, p = run_optimlab(optimlab.ASGD, **kwargs)
    ref_p, ref_ax = ref_asgd(P0, STEPS, **kwargs)
    assert_close(got, ref_p, rtol=1e-6, atol=1e-9)  # eta and mu are float32 state, as in torch
    np.testing.assert_allclose(opt.state[p]["ax"].numpy(), ref_ax, rtol=1e-6, atol=1e-9)


def test_adafactor_vector_parameter_matches_reference():
    p0 = np.linspace(-1.0, 1.0, 7)
    got, opt, p = run_optimlab(optimlab.Adafactor, p0=p0, lr=0.05)
    np.testing.assert_allclose(got, ref_adafactor(p0, STEPS, lr=0.05), rtol=1e-10)
    assert set(opt.state[p]) == {"step", "variance"}


def test_adafactor_matrix_state_is_factored():
    _, opt, p = run_optimlab(optimlab.Adafactor, steps=3)
    assert opt.state[p]["row_var"].shape == (3, 1) and opt.state[p]["col_var"].shape == (1, 4)


@pytest.mark.parametrize("kwargs", [dict(lr=0.02), dict(lr=0.02, nesterov=False, momentum=0.8, weight_decay=0.01,
                                                         adjust_lr_fn="match_rms_adamw", ns_steps=3)])
def test_muon_matches_reference_in_float64_iteration(kwargs):
    got, _, _ = run_optimlab(optimlab.Muon, ns_dtype=torch.float64, **kwargs)
    assert_close(got, ref_muon(P0, STEPS, **kwargs), rtol=1e-9, atol=1e-11)


def test_muon_orthogonalises():
    from optimlab.algorithms.muon import newton_schulz

    m = torch.randn(16, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    o = newton_schulz(m, steps=10, dtype=torch.float64)
    singular = torch.linalg.svdvals(o)
    assert singular.min() > 0.6 and singular.max() < 1.3  # the quintic's band around 1
    u, _, vh = torch.linalg.svd(m, full_matrices=False)
    assert torch.nn.functional.cosine_similarity((u @ vh).flatten(), o.flatten(), dim=0) > 0.95


def test_muon_refuses_non_matrices():
    with pytest.raises(ValueError, match="2D"):
        optimlab.Muon([torch.nn.Parameter(torch.zeros(3))])


def test_sparse_adam_matches_lazy_adam_reference():
    def rows(t):
        return sorted({t % 3, (2 * t + 1) % 3})

    kwargs = dict(lr=0.02, betas=(0.8, 0.95), eps=1e-6)
    p = torch.tensor(P0, dtype=torch.float64, requires_grad=True)
    opt = optimlab.SparseAdam([p], **kwargs)
    for t in range(1, STEPS + 1):
        r = rows(t)
        values = torch.from_numpy(grad_fn(p.detach().numpy(), t)[r])
        p.grad = torch.sparse_coo_tensor(torch.tensor([r]), values, p.shape)
        opt.step()
    assert_close(p.detach().numpy(), ref_sparse_adam(P0, STEPS, rows, **kwargs))
    assert opt.state[p]["step"] == STEPS and type(opt.state[p]["step"]) is int  # torch keeps an int
    p.grad = torch.ones_like(p)
    with pytest.raises(RuntimeError, match="dense gradients"):
        opt.step()


@pytest.mark.parametrize("kwargs", [dict(lr=0.5), dict(lr=0.01, momentum=0.8, weight_decay=0.01, warmup_steps=10),
                                    dict(lr=0.3, r=1.0, weight_lr_power=1.0, maximize=True)])
def test_schedule_free_sgd_matches_the_three_sequence_reference(kwargs):
    got, opt, p = run_optimlab(optimlab.SGDScheduleFree, **kwargs)
    kw = {k: v for k, v in kwargs.items() if k != "momentum"}
    ref_y, ref_x = ref_schedule_free(P0, STEPS, beta=kwargs.get("momentum", 0.9), **kw)
    assert_close(got, ref_y, rtol=1e-6, atol=1e-9)  # the running weight sum is float32 state
    opt.eval()
    np.testing.assert_allclose(p.detach().numpy(), ref_x, rtol=1e-6, atol=1e-9)
    with pytest.raises(RuntimeError, match="train"):
        opt.step()
    opt.train()
    np.testing.assert_allclose(p.detach().numpy(), ref_y, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("kwargs", [dict(lr=0.05), dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01,
                                                          warmup_steps=20)])
def test_schedule_free_adamw_matches_the_three_sequence_reference(kwargs):
    got, opt, p = run_optimlab(optimlab.AdamWScheduleFree, **kwargs)
    beta1, beta2 = kwargs.get("betas", (0.9, 0.999))
    kw = {k: v for k, v in kwargs.items() if k != "betas"}
    ref_y, ref_x = ref_schedule_free(P0, STEPS, beta=beta1, adam=True, beta2=beta2, **kw)
    assert_close(got, ref_y, rtol=1e-6, atol=1e-9)
    opt.eval()
    np.testing.assert_allclose(p.detach().numpy(), ref_x, rtol=1e-6, atol=1e-9)


def test_lbfgs_without_line_search_matches_two_loop_reference():
    scale = np.linspace(0.5, 4.0, P0.size)
    target = np.sin(np.arange(P0.size))

    def loss_grad(x):
        return 0.5 * np.sum(scale * (x - target) ** 2), scale * (x - target)

    p = torch.tensor(P0, dtype=torch.float64, requires_grad=True)
    opt = optimlab.LBFGS([p], lr=0.5, max_iter=7, history_size=3, tolerance_change=0, tolerance_grad=0)
    s, tg = torch.from_numpy(scale.reshape(P0.shape)), torch.from_numpy(target.reshape(P0.shape))

    def closure():
        opt.zero_grad()
        loss = 0.5 * (s * (p - tg) ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    # 7 iterations each step; the 7th moves without re-evaluating, so the next step starts from there
    assert_close(p.detach().numpy(), ref_lbfgs(P0, loss_grad, 7, lr=0.5, history_size=3), rtol=1e-10)


def test_lbfgs_strong_wolfe_minimises_rosenbrock():
    finals = []
    for lib in (optimlab, torch.optim):
        p = torch.tensor([-1.2, 1.0], dtype=torch.float64, requires_grad=True)
        opt = lib.LBFGS([p], line_search_fn="strong_wolfe", max_iter=200, max_eval=400)

        def closure():
            opt.zero_grad()
            loss = (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2
            loss.backward()
            return loss

        opt.step(closure)
        finals.append((p.detach().clone(), opt.state[p]["func_evals"]))
    torch.testing.assert_close(finals[0][0], torch.ones(2, dtype=torch.float64), atol=1e-3, rtol=0)
    assert torch.equal(finals[0][0], finals[1][0]) and finals[0][1] == finals[1][1]  # the same search as torch


FUSABLE = [(optimlab.Adadelta, {}), (optimlab.Adamax, dict(lr=0.01)), (optimlab.RAdam, dict(lr=0.01)),
           (optimlab.ASGD, dict(t0=3)), (optimlab.AdEMAMix, dict(lr=0.01, beta3_warmup=5, alpha_warmup=5)),
           (optimlab.SGDScheduleFree, dict(lr=0.1)), (optimlab.AdamWScheduleFree, {})]


@pytest.mark.parametrize("cls,kwargs", FUSABLE, ids=[c.__name__ for c, _ in FUSABLE])
def test_fused_path_takes_the_elementwise_rules_and_equals_eager(cls, kwargs):
    """The generated kernel equals the eager rule bit for bit, the eager ``sqrt`` correctly
    rounded as the kernel's is (torch's CPU one, MKL's, is 1 ulp off at times)."""
    from optimlab import kernels

    results = []
    for fused in (None, False):
        g = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(50, generator=g)), torch.nn.Parameter(torch.randn(7, 3, generator=g))]
        opt = cls(params, fused=fused, **kwargs)
        before = kernels.stats["fused_tensors"]
        for _ in range(8):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g)
            with correctly_rounded_sqrt():
                opt.step()
        if fused is None:
            assert kernels.stats["fused_tensors"] - before == 16
        results.append(torch.cat([p.detach().flatten() for p in params]))
    assert torch.equal(results[0], results[1])


# --- torch's modes -------------------------------------------------------------------------------

DIFFERENTIABLE = [(optimlab.SGD, dict(momentum=0.9, nesterov=True)), (optimlab.Adam, dict(amsgrad=True)),
                  (optimlab.RAdam, {}), (optimlab.Adadelta, {}), (optimlab.Rprop, {}), (optimlab.NAdam, {})]


@pytest.mark.parametrize("cls,kwargs", DIFFERENTIABLE, ids=[c.__name__ for c, _ in DIFFERENTIABLE])
def test_differentiable_step_gradchecks_and_matches_torch(cls, kwargs):
    """Three steps as a function of (param, lr): gradcheck it, and compare its value and its
    gradient with torch.optim's differentiable step (torch's own cannot always take a tensor lr
    there: Adadelta refuses it, NAdam's backward fails, so the comparison uses a float lr)."""
    g = torch.Generator().manual_seed(0)
    p0 = torch.randn(4, dtype=torch.float64, generator=g, requires_grad=True)
    grads = [torch.randn(4, dtype=torch.float64, generator=g) for _ in range(3)]
    lr0 = torch.tensor(0.01, dtype=torch.float64, requires_grad=True)

    def stepped(lib_cls):
        def f(p_leaf, lr=0.01):
            p = p_leaf.clone()
            opt = lib_cls([p], lr=lr, differentiable=True, **kwargs)
            for grad in grads:
                p.grad = grad
                opt.step()
            return p
        return f

    ours = stepped(cls)
    # Rprop's lr only seeds its step sizes (a float, as in torch): no gradient flows to it
    assert torch.autograd.gradcheck(ours, (p0,) if cls is optimlab.Rprop else (p0, lr0))
    theirs = stepped(getattr(torch.optim, cls.__name__))
    out_ours, out_theirs = ours(p0), theirs(p0)
    torch.testing.assert_close(out_ours, out_theirs, rtol=1e-6, atol=1e-9)
    weights = torch.arange(4, dtype=torch.float64)
    d_ours = torch.autograd.grad((out_ours * weights).sum(), p0)
    d_theirs = torch.autograd.grad((out_theirs * weights).sum(), p0)
    torch.testing.assert_close(d_ours, d_theirs, rtol=1e-5, atol=1e-8)


def test_leaf_params_under_differentiable_fail_like_torch():
    for lib in (torch.optim, optimlab):
        p = torch.nn.Parameter(torch.ones(3))
        p.grad = torch.ones(3)
        with pytest.raises(RuntimeError, match="leaf Variable"):
            lib.Adam([p], differentiable=True).step()


@pytest.mark.parametrize("shape", [(), (1,), (1, 1), (1, 1, 1)])
def test_one_element_tensor_hyperparameters_of_any_shape(shape):
    results = []
    for lib in (torch.optim, optimlab):
        p = torch.nn.Parameter(torch.arange(3.0))
        opt = lib.Adam([p], lr=torch.full(shape, 0.1), betas=(torch.full(shape, 0.8), torch.full(shape, 0.9)))
        for _ in range(3):
            p.grad = torch.ones(3)
            opt.step()
        results.append(p.detach().clone())
    torch.testing.assert_close(results[1], results[0])


@pytest.mark.parametrize("kwargs", [dict(lr=0.1), dict(lr=0.1, momentum=0.9, nesterov=True), dict(lr=0.1, maximize=True)])
def test_sgd_takes_sparse_gradients_like_torch(kwargs):
    results = []
    for lib in (torch.optim, optimlab):
        emb = torch.nn.Embedding(6, 3, sparse=True, _weight=torch.arange(18.0).reshape(6, 3))
        opt = lib.SGD(emb.parameters(), **kwargs)
        for i in range(4):
            opt.zero_grad()
            (emb(torch.tensor([i % 6, 4, 4])) ** 2).sum().backward()
            opt.step()
        results.append(emb.weight.detach().clone())
    torch.testing.assert_close(results[1], results[0])
    assert torch.equal(results[1][5], torch.arange(15.0, 18.0))  # a row never named does not move


def test_complex_adagrad_seeds_both_parts_of_the_accumulator():
    p = torch.nn.Parameter(torch.zeros(2, dtype=torch.complex64))
    for lib in (torch.optim, optimlab):
        opt = lib.Adagrad([p], initial_accumulator_value=0.5)
        assert torch.equal(opt.state[p]["sum"], torch.full((2,), 0.5 + 0.5j))


def test_fused_on_meta_params_is_refused_like_torch():
    for lib in (torch.optim, optimlab):
        p = torch.nn.Parameter(torch.zeros(3, device="meta"))
        p.grad = torch.zeros(3, device="meta")
        with pytest.raises(RuntimeError, match="fused"):
            lib.Adam([p], fused=True).step()
