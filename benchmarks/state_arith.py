"""Arithmetic cost per element of a step with each state storage, measured where memory is not the
limit: one thread, one tensor small enough for the caches, best of many steps.

On a machine whose cores are shared (or whose memory is fast), a step's time is its arithmetic,
and a low-precision state saves bytes but adds work (bfloat16: random bits and rounding per stored
value; int8: decode, block absmax, encode). This prints that work next to torch's fused Adam and
optimlab's float32 step, so a run of ``step_speed.py`` can be read against it.

    python benchmarks/state_arith.py                      # Adam, 2**18 parameters, 300 steps each
    python benchmarks/state_arith.py --numel 65536 --steps 1000
    python benchmarks/state_arith.py --kernel             # optimlab's compiled kernels alone, called
                                                          # directly (no Python step around them) on
                                                          # 2**13 parameters, which stay in L2

A whole step of 2**18 parameters reads its buffers from L3 and one of a few thousand is mostly
Python: ``--kernel`` times the generated C itself (``cpu.Kernel``, as the step last called it, the
call's cost measured on an empty tensor list and taken off), the arithmetic per element.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
import optimlab  # noqa: E402
from optimlab.kernels import cpu  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--numel", type=int, default=1 << 18, help="parameters (default 2**18: 1 MB per float32 buffer)")
    ap.add_argument("--steps", type=int, default=300, help="timed steps per side, alternating (the best counts)")
    ap.add_argument("--kernel", action="store_true",
                    help="time optimlab's compiled kernels alone (default --numel 2**13, --steps 3000)")
    args = ap.parse_args()
    if args.kernel:
        kernel_arith(args.numel if "--numel" in sys.argv else 1 << 13, args.steps if "--steps" in sys.argv else 3000)
        return
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    grad = torch.randn(args.numel, generator=gen) * 1e-2
    sides = {}
    for label, cls, kwargs in (("torch fused", torch.optim.Adam, {"fused": True}), ("float32", optimlab.Adam, {}),
                               ("bfloat16", optimlab.Adam, {"state_dtype": torch.bfloat16}),
                               ("int8", optimlab.Adam, {"state_dtype": "int8"})):
        p = torch.nn.Parameter(torch.randn(args.numel, generator=gen))
        p.grad = grad.clone()
        opt = cls([p], lr=1e-3, **kwargs)
        for _ in range(5):
            opt.step()
        sides[label] = opt
    best = dict.fromkeys(sides, float("inf"))
    for _ in range(args.steps):
        for label, opt in sides.items():
            t = time.perf_counter()
            opt.step()
            best[label] = min(best[label], time.perf_counter() - t)
    print(f"Adam, {args.numel} parameters, 1 thread, best of {args.steps} alternating steps (ns per parameter):")
    for label, seconds in best.items():
        ratio = seconds / best["float32"]
        print(f"  {label:<12} {seconds / args.numel * 1e9:6.2f} ns   {ratio:5.2f}x optimlab float32")


def kernel_arith(numel: int, calls: int) -> None:
    """Best time per element of each storage's compiled Adam kernel, called ``calls`` times in
    turn with the arguments of the step that last ran it (the state keeps evolving, as in steps)."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    grad = torch.randn(numel, generator=gen) * 1e-2
    captured: list = []
    run = cpu.Kernel.__call__

    def capture(kernel, *call_args):  # the step's own call, arguments kept alive
        captured.append((kernel, call_args))
        run(kernel, *call_args)

    calls_of = {}
    cpu.Kernel.__call__ = capture
    try:
        for label, kwargs in (("float32", {}), ("bfloat16", {"state_dtype": torch.bfloat16}),
                              ("int8", {"state_dtype": "int8"})):
            p = torch.nn.Parameter(torch.randn(numel, generator=gen))
            p.grad = grad.clone()
            opt = optimlab.Adam([p], lr=1e-3, **kwargs)
            for _ in range(3):
                opt.step()
            if not captured:
                raise SystemExit(f"{label}: the step ran no compiled kernel (no C compiler?)")
            calls_of[label] = (opt, captured[-1])
            captured.clear()
    finally:
        cpu.Kernel.__call__ = run
    kernel, (sizes, ptrs, scalars, sets) = calls_of["float32"][1]
    empty = (type(sizes)("q"), ptrs, scalars, sets)  # no tensors: the cost of the call itself
    best = dict.fromkeys([*calls_of, "empty call"], float("inf"))
    for _ in range(calls):
        for label, (_, (k, call_args)) in [*calls_of.items(), ("empty call", (None, (kernel, empty)))]:
            t = time.perf_counter()
            run(k, *call_args)
            best[label] = min(best[label], time.perf_counter() - t)
    call = best.pop("empty call")
    print(f"Adam's compiled kernel, {numel} parameters, 1 thread, best of {calls} alternating calls, less "
          f"the call itself ({call * 1e6:.1f} us) (ns per parameter):")
    for label, seconds in best.items():
        print(f"  {label:<12} {(seconds - call) / numel * 1e9:6.3f} ns   "
              f"{(seconds - call) / (best['float32'] - call):5.2f}x optimlab float32")


if __name__ == "__main__":
    main()
