"""Bit-level parity of optimlab's CPU steps with torch.optim's, for every class whose rule takes a
square root: which pairs are bit-identical, and by how much the others differ.

For each algorithm, the same float32 parameters and gradients (three tensors, ``--steps`` steps)
are stepped by optimlab (the default fused C kernel, and ``fused=False``, the eager rule) and by
torch.optim with ``foreach=False`` (its for-loop, the CPU default), ``foreach=True`` and
``fused=True`` (where torch has it); each optimlab side also runs under
:func:`ieee_sqrt.correctly_rounded_sqrt` (``torch.sqrt``/``Tensor.sqrt`` of CPU tensors computed by
NumPy, correctly rounded) and so does torch's for-loop. A row prints, for each pair of final
parameters, the largest absolute difference and how many elements differ (of the total).

    python benchmarks/torch_parity_bits.py                 # 20 steps, float32
    python benchmarks/torch_parity_bits.py --steps 100 --dtype float64

torch's CPU ``sqrt`` on float tensors is MKL's ``vsSqrt``/``vdSqrt`` (not correctly rounded);
``torch._foreach_sqrt`` and torch's fused CPU kernels are measured here, not assumed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import optimlab  # noqa: E402
from ieee_sqrt import correctly_rounded_sqrt  # noqa: E402

SHAPES = [(4096,), (64, 33), (7,)]
#: (class name, kwargs): every optimlab class with a square root in its rule that torch.optim has
CASES = [
    ("Adam", {"lr": 1e-2}),
    ("Adam", {"lr": 1e-2, "amsgrad": True, "weight_decay": 1e-2}),
    ("AdamW", {"lr": 1e-2}),
    ("NAdam", {"lr": 1e-2}),
    ("RAdam", {"lr": 1e-2}),
    ("RMSprop", {"lr": 1e-2}),
    ("RMSprop", {"lr": 1e-2, "centered": True, "momentum": 0.9}),
    ("Adagrad", {"lr": 1e-1}),
    ("Adadelta", {"lr": 1.0}),
]
#: torch.optim classes with a fused CPU step (torch 2.13)
TORCH_FUSED = {"Adam", "AdamW", "Adagrad"}


def run(make, dtype, steps, ieee=False):
    """The final parameters after ``steps`` steps of the optimizer ``make(params)`` builds."""
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=g, dtype=dtype)) for s in SHAPES]
    opt = make(params)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g, dtype=dtype)
        with correctly_rounded_sqrt() if ieee else contextlib.nullcontext():
            opt.step()
    return torch.cat([p.detach().flatten() for p in params])


def probe(make, state_key, dtype):
    """Which square root a path takes: a step whose update is exactly ``-g / sqrt(x)``.

    ``x`` (65,536 values in [1, 4)) is written into the state entry ``state_key`` (Adam's
    ``max_exp_avg_sq`` with amsgrad and betas (0, 0); Adagrad's ``sum``), the parameter is zero
    and the gradient ``g = 2**-60``, so ``m = g``, both bias corrections are 1, ``g * g`` vanishes
    next to ``x``, ``eps = 1e-30`` vanishes next to ``sqrt(x)``, and the step leaves
    ``p = -(g / s)`` with ``s`` the path's square root of ``x``. Returns (elements where the
    correctly rounded and torch.sqrt's results differ, how many of those the path matches
    correctly rounded, how many torch.sqrt's, elements matching neither)."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(65536, generator=g, dtype=dtype) * 3 + 1
    p = torch.nn.Parameter(torch.zeros_like(x))
    opt = make([p])
    p.grad = torch.zeros_like(x)
    opt.step()  # creates the state
    opt.state[p][state_key].copy_(x)
    with torch.no_grad():
        p.zero_()
    p.grad = torch.full_like(x, 2.0 ** -60)
    opt.step()
    got = -p.detach()
    ieee = p.grad / torch.from_numpy(np.sqrt(x.numpy()))
    mkl = p.grad / torch.sqrt(x)
    apart = ieee != mkl
    neither = int(((got != ieee) & (got != mkl)).sum())
    return int(apart.sum()), int((got == ieee)[apart].sum()), int((got == mkl)[apart].sum()), neither


def sqrt_table(dtype):
    """For each path of Adam and Adagrad (torch.optim's and optimlab's): the probe's counts."""
    adam = {"lr": 1.0, "betas": (0.0, 0.0), "eps": 1e-30, "amsgrad": True}
    adagrad = {"lr": 1.0, "eps": 1e-30}
    print(f"\nWhich square root each path takes ({dtype}; probe(): p = -(2**-60 / sqrt(x)), 65,536 x in [1, 4))")
    print(f"  {'path':<34}{'apart':>8}{'= IEEE':>9}{'= torch.sqrt':>14}{'neither':>9}")
    for name, kwargs, key in (("Adam", adam, "max_exp_avg_sq"), ("Adagrad", adagrad, "sum")):
        paths = {f"torch.optim.{name}(foreach=False)": lambda ps: getattr(torch.optim, name)(ps, **kwargs, foreach=False),
                 f"torch.optim.{name}(foreach=True)": lambda ps: getattr(torch.optim, name)(ps, **kwargs, foreach=True),
                 f"torch.optim.{name}(fused=True)": lambda ps: getattr(torch.optim, name)(ps, **kwargs, fused=True),
                 f"optimlab.{name}() (C kernel)": lambda ps: getattr(optimlab, name)(ps, **kwargs),
                 f"optimlab.{name}(fused=False)": lambda ps: getattr(optimlab, name)(ps, **kwargs, fused=False)}
        for label, make in paths.items():
            apart, ieee, mkl, neither = probe(make, key, dtype)
            print(f"  {label:<34}{apart:>8}{ieee:>9}{mkl:>14}{neither:>9}")
    g = torch.Generator().manual_seed(4)
    x = torch.rand(65536, generator=g, dtype=dtype) * 3 + 1
    ieee = torch.from_numpy(np.sqrt(x.numpy()))
    ops = {"torch.sqrt(x), x.sqrt()": torch.sqrt(x), "x.sqrt_()": x.clone().sqrt_(),
           "torch._foreach_sqrt([x])": torch._foreach_sqrt([x])[0]}
    print("  the ops torch.optim's other rules call (RMSprop, NAdam, RAdam, Adadelta), elements off IEEE:")
    for label, value in ops.items():
        print(f"  {label:<34}{int((value != ieee).sum()):>8} of {x.numel()}")


def fma(a, b, c):
    """float32 ``a * b + c`` rounded once (the float64 product of two float32 is exact)."""
    return (a.double() * b.double() + c.double()).float()


def order_table():
    """Why optimlab and torch.optim differ beyond the square root: torch's CPU ``lerp_``,
    ``addcmul_`` and ``add_(alpha=)`` round once (fused multiply-add); and Adam replayed in
    torch ops, torch's for-loop order vs optimlab's rule's order."""
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(65536, generator=g) for _ in range(3))
    w, s, alpha = torch.tensor(0.1), torch.tensor(1e-3), torch.tensor(-0.05)
    print("\ntorch's CPU ops on 65,536 float32 elements: elements differing from each rounding")
    print(f"  {'op':<30}{'rounded per op':>16}{'one rounding (fma)':>20}")
    for label, got, apart, fused in (
            ("a.lerp(b, 0.1)", a.lerp(b, 0.1), a + w * (b - a), fma(b - a, w, a)),
            ("a.addcmul(b, c, value=1e-3)", a.addcmul(b, c, value=1e-3), a + (s * b) * c, fma(s * b, c, a)),
            ("a.add(b, alpha=-0.05)", a.add(b, alpha=-0.05), a + alpha * b, fma(b, alpha, a))):
        print(f"  {label:<30}{int((got != apart).sum()):>16}{int((got != fused).sum()):>20}")

    p0 = torch.randn(100_000, generator=g)
    grads = [torch.randn(p0.shape, generator=g) for _ in range(20)]
    lr, b1, b2, eps = 1e-2, 0.9, 0.999, 1e-8

    def replay(torch_order):
        p, m, v = p0.clone(), torch.zeros_like(p0), torch.zeros_like(p0)
        for t, grad in enumerate(grads, start=1):
            step_size, bc2_sqrt = lr / (1 - b1 ** t), (1 - b2 ** t) ** 0.5
            if torch_order:  # torch.optim.Adam's _single_tensor_adam
                m.lerp_(grad, 1 - b1)
                v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
                p.addcdiv_(m, (v.sqrt() / bc2_sqrt).add_(eps), value=-step_size)
            else:  # optimlab.algorithms.adam (ewma as a lerp written out)
                m = m + (1 - b1) * (grad - m)
                v = v + (1 - b2) * (grad * grad - v)
                p = p - step_size * (m / (torch.sqrt(v) / bc2_sqrt + eps))
        return p

    def library(lib, **kwargs):
        p = torch.nn.Parameter(p0.clone())
        opt = getattr(lib, "Adam")([p], lr=lr, **kwargs)
        for grad in grads:
            p.grad = grad.clone()
            opt.step()
        return p.detach()

    with correctly_rounded_sqrt():
        torch_loop, ours = library(torch.optim, foreach=False), library(optimlab, fused=False)
        replays = {"torch's order": replay(True), "optimlab's order": replay(False)}
    print("Adam, 20 steps, 100,000 elements, every sqrt correctly rounded: elements differing")
    for label, value in replays.items():
        print(f"  replay in {label:<18} vs torch for-loop {int((value != torch_loop).sum()):>7}"
              f"   vs optimlab eager {int((value != ours).sum()):>7}")


def compare(a, b):
    """(largest |a - b|, elements that differ in their bits)"""
    same = (a == b) | (torch.isnan(a) & torch.isnan(b))
    return (a - b).abs().max().item(), int((~same).sum())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    total = sum(torch.Size(s).numel() for s in SHAPES)
    sqrt_table(dtype)
    if dtype == torch.float32:
        order_table()
    print(f"\ntorch {torch.__version__}, {args.dtype}, {args.steps} steps, {total} elements in {len(SHAPES)} tensors;"
          f" each cell: max |diff| / elements differing")
    for name, kwargs in CASES:
        ours = {
            "fused": run(lambda ps: getattr(optimlab, name)(ps, **kwargs), dtype, args.steps),
            "eager": run(lambda ps: getattr(optimlab, name)(ps, **kwargs, fused=False), dtype, args.steps),
            "eager-ieee": run(lambda ps: getattr(optimlab, name)(ps, **kwargs, fused=False), dtype, args.steps,
                              ieee=True),
        }
        theirs = {
            "for-loop": run(lambda ps: getattr(torch.optim, name)(ps, **kwargs, foreach=False), dtype, args.steps),
            "for-loop-ieee": run(lambda ps: getattr(torch.optim, name)(ps, **kwargs, foreach=False), dtype,
                                 args.steps, ieee=True),
            "foreach": run(lambda ps: getattr(torch.optim, name)(ps, **kwargs, foreach=True), dtype, args.steps),
        }
        if name in TORCH_FUSED:
            theirs["fused"] = run(lambda ps: getattr(torch.optim, name)(ps, **kwargs, fused=True), dtype, args.steps)
        print(f"\n{name} {kwargs}")
        print(f"  {'optimlab vs torch':<16}" + "".join(f"{k:>22}" for k in theirs))
        for ok, ov in ours.items():
            cells = []
            for tv in theirs.values():
                diff, count = compare(ov, tv)
                cells.append(f"{diff:.2e} / {count:>5}" if count else f"{'0 / 0 (bits)':>16}")
            print(f"  {ok:<16}" + "".join(f"{c:>22}" for c in cells))
        pairs = [("optimlab fused", ours["fused"], "optimlab eager-ieee", ours["eager-ieee"]),
                 ("torch foreach", theirs["foreach"], "torch for-loop", theirs["for-loop"])]
        if "fused" in theirs:
            pairs += [("torch fused", theirs["fused"], "torch for-loop", theirs["for-loop"]),
                      ("torch fused", theirs["fused"], "torch for-loop-ieee", theirs["for-loop-ieee"])]
        for a_name, a, b_name, b in pairs:
            diff, count = compare(a, b)
            print(f"  {a_name} vs {b_name}: " + (f"{diff:.2e} / {count}" if count else "0 / 0 (bits)"))


if __name__ == "__main__":
    main()
