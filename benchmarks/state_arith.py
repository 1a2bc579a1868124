"""Arithmetic cost per element of a step with each state storage, measured where memory is not the
limit: one thread, one tensor small enough for the caches, best of many steps.

On a machine whose cores are shared (or whose memory is fast), a step's time is its arithmetic,
and a low-precision state saves bytes but adds work (bfloat16: random bits and rounding per stored
value; int8: decode, block absmax, encode). This prints that work next to torch's fused Adam and
optimlab's float32 step, so a run of ``step_speed.py`` can be read against it.

    python benchmarks/state_arith.py                      # Adam, 2**18 parameters, 300 steps each
    python benchmarks/state_arith.py --numel 65536 --steps 1000
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
import optimlab  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--numel", type=int, default=1 << 18, help="parameters (default 2**18: 1 MB per float32 buffer)")
    ap.add_argument("--steps", type=int, default=300, help="timed steps per side, alternating (the best counts)")
    args = ap.parse_args()
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


if __name__ == "__main__":
    main()
