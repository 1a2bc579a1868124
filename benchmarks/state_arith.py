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
    python benchmarks/state_arith.py --ceiling            # 2**24 parameters, the machine's threads:
                                                          # each storage's bytes moved with almost no
                                                          # arithmetic, against torch fused and
                                                          # optimlab's steps (what bounds a ratio);
                                                          # each ratio and share with its 95%
                                                          # interval (speed_verdicts.py: the bootstrap
                                                          # resamples the alternation's rounds)

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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import optimlab  # noqa: E402
from optimlab.kernels import cpu  # noqa: E402
from speed_verdicts import ci_text, ratio_ci  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--numel", type=int, default=1 << 18, help="parameters (default 2**18: 1 MB per float32 buffer)")
    ap.add_argument("--steps", type=int, default=300, help="timed steps per side, alternating (the best counts)")
    ap.add_argument("--kernel", action="store_true",
                    help="time optimlab's compiled kernels alone (default --numel 2**13, --steps 3000)")
    ap.add_argument("--ceiling", action="store_true",
                    help="the step's bytes with almost no arithmetic, all threads (default --numel 2**24, --steps 31)")
    args = ap.parse_args()
    if args.ceiling:
        ceiling(args.numel if "--numel" in sys.argv else 1 << 24, args.steps if "--steps" in sys.argv else 31)
        return
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


#: each storage's Adam bytes (parameter read and written, gradient read, both moments read and
#: written; 8-bit: a float32 scale per 256 codes) with one add or multiply per element, in the
#: kernels' threads and block order: the time that memory alone sets
BYTES_C = r"""
#include <stdint.h>
void bytes_f32(float *restrict p, const float *restrict g, float *restrict m, float *restrict v, int64_t n) {
  #pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < n; j++) { p[j] -= 1e-3f * g[j]; m[j] = m[j] * 0.9f + g[j]; v[j] = v[j] * 0.5f + g[j]; }
}
void bytes_bf16(float *restrict p, const float *restrict g, uint16_t *restrict m, uint16_t *restrict v, int64_t n) {
  #pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < n; j++) { p[j] -= 1e-3f * g[j]; m[j] = (uint16_t)(m[j] + 1); v[j] = (uint16_t)(v[j] + 3); }
}
void bytes_int8(float *restrict p, const float *restrict g, uint8_t *restrict m, uint8_t *restrict v,
                float *restrict sm, float *restrict sv, int64_t n) {
  #pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < n / 256; b++) {
    for (int64_t j = b * 256; j < b * 256 + 256; j++) {
      p[j] -= 1e-3f * g[j]; m[j] = (uint8_t)(m[j] + 1); v[j] = (uint8_t)(v[j] + 3);
    }
    sm[b] = sm[b] * 0.5f + 1.0f; sv[b] = sv[b] * 0.5f + 1.0f;
  }
}
"""


def ceiling(numel: int, steps: int) -> None:
    """torch fused Adam, optimlab's Adam with each storage, and each storage's bytes moved with
    almost no arithmetic (:data:`BYTES_C`), alternating, medians: how far each step is from the
    time its memory traffic alone takes, and the best ratio against torch fused that bytes allow."""
    import ctypes
    import hashlib
    import statistics

    numel -= numel % 256
    key = "state-arith-bytes-" + hashlib.sha256((BYTES_C + " ".join(cpu.FLAGS)).encode()).hexdigest()[:16]
    lib = cpu.obtain(BYTES_C, key, lambda library, path: library)
    gen = torch.Generator().manual_seed(0)
    grad = torch.randn(numel, generator=gen) * 1e-2
    sides: dict[str, object] = {}
    for label, cls, kwargs in (("torch fused float32", torch.optim.Adam, {"fused": True}),
                               ("optimlab float32", optimlab.Adam, {}),
                               ("optimlab bfloat16", optimlab.Adam, {"state_dtype": torch.bfloat16}),
                               ("optimlab int8", optimlab.Adam, {"state_dtype": "int8"})):
        p = torch.nn.Parameter(torch.randn(numel, generator=gen))
        p.grad = grad.clone()
        sides[label] = cls([p], lr=1e-3, **kwargs).step
    keep = []  # the byte kernels' buffers, alive for the run

    def buffers(*tensors):
        keep.extend(tensors)
        return [ctypes.c_void_p(t.data_ptr()) for t in tensors] + [ctypes.c_int64(numel)]

    p, m, v = torch.randn(numel), torch.zeros(numel), torch.zeros(numel)
    f32 = buffers(p, grad, m, v)
    m16, v16 = torch.zeros(numel, dtype=torch.int16), torch.zeros(numel, dtype=torch.int16)
    b16 = buffers(p.clone(), grad, m16, v16)
    m8, v8 = torch.zeros(numel, dtype=torch.uint8), torch.zeros(numel, dtype=torch.uint8)
    i8 = buffers(p.clone(), grad, m8, v8, torch.ones(numel // 256), torch.ones(numel // 256))
    sides["bytes of float32 state"] = lambda: lib.bytes_f32(*f32)
    sides["bytes of bfloat16 state"] = lambda: lib.bytes_bf16(*b16)
    sides["bytes of int8 state"] = lambda: lib.bytes_int8(*i8)
    for step in sides.values():
        for _ in range(3):
            step()
    times: dict[str, list[float]] = {label: [] for label in sides}
    order = list(sides)
    for i in range(steps):
        for label in (order if i % 2 == 0 else order[::-1]):
            t = time.perf_counter()
            sides[label]()
            times[label].append(time.perf_counter() - t)
    print(f"Adam, {numel} parameters, {torch.get_num_threads()} threads, median of {steps} alternating steps; "
          f"[95% CI]: percentile bootstrap over the rounds (speed_verdicts.ratio_ci)")
    print(f"{'':<26} {'ms':>8} {'torch fused / this [95% CI]':>28} {'bytes-only ms / this [95% CI]':>30}")
    for label, t in times.items():
        storage = label.split()[-1] if label.startswith("optimlab") else None
        floor = times.get(f"bytes of {storage} state") if storage else None
        share = ci_text(ratio_ci(floor, t, 100), percent=True) if floor else ""
        print(f"{label:<26} {statistics.median(t) * 1e3:8.2f} {ci_text(ratio_ci(times['torch fused float32'], t)):>28} "
              f"{share:>30}")


if __name__ == "__main__":
    main()
