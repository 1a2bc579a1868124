"""Pure-bfloat16 Adam: optimlab's fused step with stochastically rounded parameters
(``param_rounding="stochastic"``) against torch's fused Adam on the same bfloat16 parameters
(which rounds to nearest) and optimlab's eager step, in one process, alternating, medians.

    python benchmarks/param_rounding.py                 # 16M parameters, float32 state
    python benchmarks/param_rounding.py --state-dtype bfloat16 --numel 4194304

Prints each side's median ms and the ratio torch / optimlab; ``--check`` exits 1 when the fused
step is slower than torch's fused bfloat16 step by more than ``--slack`` (default 10%).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
import optimlab  # noqa: E402


def side(cls, numel: int, **kwargs):
    g = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.randn(numel, generator=g).to(torch.bfloat16))
    p.grad = (torch.randn(numel, generator=g) * 1e-2).to(torch.bfloat16)
    return cls([p], lr=1e-3, **kwargs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--numel", type=int, default=1 << 24)
    ap.add_argument("--state-dtype", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--samples", type=int, default=9)
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--slack", type=float, default=0.10)
    args = ap.parse_args()
    state_dtype = None if args.state_dtype == "float32" else torch.bfloat16
    sides = {"torch fused Adam (bf16 params, to nearest)": side(torch.optim.Adam, args.numel, fused=True),
             "optimlab fused (stochastic)": side(optimlab.Adam, args.numel, param_rounding="stochastic",
                                                 state_dtype=state_dtype),
             "optimlab eager (stochastic)": side(optimlab.Adam, args.numel, param_rounding="stochastic",
                                                 state_dtype=state_dtype, fused=False)}
    for opt in sides.values():
        for _ in range(2):
            opt.step()
    times: dict[str, list[float]] = {k: [] for k in sides}
    for i in range(args.samples):
        for name, opt in (sides.items() if i % 2 == 0 else reversed(list(sides.items()))):
            t = time.perf_counter()
            opt.step()
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    torch_ms = med["torch fused Adam (bf16 params, to nearest)"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.numel:,} bfloat16 parameters, "
          f"state {args.state_dtype}, median of {args.samples} alternating steps")
    for name, t in med.items():
        print(f"  {name:<44} {t * 1e3:9.2f} ms   torch / this {torch_ms / t:6.2f}")
    ratio = torch_ms / med["optimlab fused (stochastic)"]
    ok = ratio >= 1 - args.slack
    print(f"fused stochastic step at {ratio:.2f}x torch's fused bfloat16 step "
          f"({'within' if ok else 'OUTSIDE'} {args.slack:.0%} of it)")
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
