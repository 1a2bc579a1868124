"""The fused step as a training loop sees it: gradients fresh from ``backward()``.

In ``step_speed.py`` the gradients are set once and reused, so their Python objects exist. In a
training loop (``zero_grad()`` then ``backward()``) every step's gradients are new tensors that
have no Python object until ``p.grad`` is read; collecting them makes one per tensor. This times
``opt.step()`` alone after ``loss.backward()`` on 2,000 parameters (layout c of step_speed: 2M
parameters), Adam, with the per-step checks read by address from the TensorImpls (the C++ build;
no gradient object made), the same build collecting the gradients through Python's getter (as
every step did before), the C build (Python's C API) and Python (``OPTIMLAB_NATIVE=0``), and
torch's fused Adam; alternating, medians, in one process. Every optimlab side must end with the
same parameters bit for bit (each side's own parameters, the same gradients every step; exit 1
otherwise). Issue 13's layout-c target is step_speed.py's (gradients kept between steps); this
one has no speed target::

    PYTHONPATH=src python benchmarks/fresh_grads.py [--steps 30] [--layout c|e] [--state-dtype bfloat16]
    PYTHONPATH=src python benchmarks/fresh_grads.py --state-dtype float32,bfloat16,int8

Each ratio (torch fused's median over a side's, and the % of the triad: the triad's median over
the step's, scaled by the bytes) has its 95% interval, the bootstrap over the alternation's rounds
of ``speed_verdicts.ratio_ci``.

``--state-dtype bfloat16``: every optimlab side keeps bfloat16 state (the low-precision kernel);
the %-of-triad column still counts float32's 28 B per parameter (bfloat16 state moves 20).
Several state dtypes (a comma list): a by-address side and a collecting one for each (the
other builds are left out; each pair must end equal bit for bit), all in the same alternation,
and each side's time over the float32 by-address side's: what the storage
costs per step. On layout c each tensor is small, so that is mostly the step's work besides the
kernel; int8 keeps float32 state for tensors under 4,096 elements (all but a few there).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import optimlab  # noqa: E402
from optimlab import kernels  # noqa: E402
from optimlab.kernels import native  # noqa: E402
from speed_verdicts import ci_text, ratio_ci  # noqa: E402
from step_speed import LAYOUTS, STATE_DTYPES, Triad, c_checks, python_checks  # noqa: E402


def side(shapes, cls, **kwargs):
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    return params, cls(params, lr=1e-3, **kwargs)


def backward(params, step: int) -> None:
    for p in params:
        p.grad = None  # zero_grad(set_to_none=True)
    # the same gradients on every side: d/dp of sum(p * w) is w, a fixed draw per step
    g = torch.Generator().manual_seed(step)
    torch.stack([(p * torch.randn(p.shape, generator=g)).sum() for p in params]).sum().backward()


def collected(step):
    """``step()`` with the gradients collected through Python's getter (no by-address step)."""
    real = kernels.listing
    kernels.listing = lambda *a: None
    try:
        step()
    finally:
        kernels.listing = real


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--layout", default="c", choices=["c", "e"])
    ap.add_argument("--state-dtype", default="float32", metavar="LIST",
                    help=f"optimlab's state storage, or several, comma-separated ({', '.join(STATE_DTYPES)}; "
                         f"torch's stays float32)")
    args = ap.parse_args()
    dtypes = args.state_dtype.split(",")
    for d in dtypes:
        if d not in STATE_DTYPES or dtypes.count(d) > 1:
            ap.error(f"--state-dtype: {d!r} unknown or repeated (allowed: {', '.join(STATE_DTYPES)})")
    kinds = {d: {} if d == "float32" else {"state_dtype": STATE_DTYPES[d]} for d in dtypes}
    label, make, _ = LAYOUTS[args.layout]
    shapes = make()
    n = sum(torch.Size(s).numel() for s in shapes)
    module = native.module()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, layout {label}, Adam, gradients from "
          f"backward() every step; optimlab state {', '.join(dtypes)}; checks build: {native.kind(native.enabled())}; median of {args.steps} steps")
    sides = {"torch fused": (side(shapes, torch.optim.Adam, fused=True), lambda s: s())}
    if len(dtypes) > 1:
        for d, ours in kinds.items():
            sides[f"by address {d}"] = (side(shapes, optimlab.Adam, **ours), lambda s: s())
            sides[f"collected {d}"] = (side(shapes, optimlab.Adam, **ours), collected)
    else:
        ours = kinds[dtypes[0]]
        sides["C++ by address"] = (side(shapes, optimlab.Adam, **ours), lambda s: s())
        sides["C++ collected"] = (side(shapes, optimlab.Adam, **ours), collected)
        c_module = native.build(against_torch=False) if module is not None and native.kind(module) == "C++" else None
        if c_module is not None:
            sides["C build"] = (side(shapes, optimlab.Adam, **ours), lambda s: c_checks(c_module, s))
        sides["Python checks"] = (side(shapes, optimlab.Adam, **ours), python_checks)
    triad = Triad()
    times = {k: [] for k in sides}
    bt = []
    for i in range(args.steps + 3):
        names = list(sides) if i % 2 == 0 else list(reversed(sides))
        for k in names:
            (params, opt), how = sides[k]
            backward(params, i)
            t = time.perf_counter()
            how(opt.step)
            if i >= 3:
                times[k].append(time.perf_counter() - t)
        t = time.perf_counter()
        triad()
        bt.append(time.perf_counter() - t)
    bt = bt[3:]  # the timed rounds: round i's triad pairs with round i's steps
    bw = triad.gbs(statistics.median(bt))
    print(f"in-place triad: {bw:.1f} GB/s; Adam moves 28 B/param: {28 * n / bw / 1e6:.3f} ms at that bandwidth; "
          f"[95% CI]: percentile bootstrap over the rounds")
    f32 = times.get("by address float32")
    for k, v in times.items():
        # % of the triad = (28 B * n / step) / (12 B * triad.n / triad): a ratio of medians of one round's samples
        share = ratio_ci(bt, v, 100 * 28 * n / (12 * triad.n))
        versus = f"  this / float32 state {ci_text(ratio_ci(v, f32)):>18}" if f32 and k != "torch fused" else ""
        print(f"  {k:<19} {statistics.median(v) * 1e3:8.3f} ms  {ci_text(share, percent=True):>13} of the triad  "
              f"torch fused / this {ci_text(ratio_ci(times['torch fused'], v)):>18}{versus}")
    same = True  # the sides of one state dtype end with the same parameters bit for bit
    for d in dtypes:
        ours = [k for k in sides if k != "torch fused" and (len(dtypes) == 1 or k.endswith(f" {d}"))]
        same &= all(all(torch.equal(a, b) for a, b in zip(sides[ours[0]][0][0], sides[k][0][0])) for k in ours[1:])
    print(f"optimlab sides of each state dtype equal bit for bit: {same}")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
