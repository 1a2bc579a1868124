"""One Adam step on layout a (1 x 16M float32) for Nsight Compute: torch's fused Adam and
optimlab's Triton kernel in the given layouts, each step inside an NVTX range, so that ``ncu``
profiles just those kernels and their hardware counters can be set side by side (bytes moved
to and from DRAM, achieved bandwidth, occupancy, registers, why warps stall).

    ncu --nvtx --nvtx-include "step/" --section SpeedOfLight --section MemoryWorkloadAnalysis \\
        --section Occupancy --section LaunchStats --section WarpStateStats \\
        python benchmarks/cuda_profile.py [--variant "True,False,True,1024,4,4,0,0,0" ...]

A variant is a tuple of ``cuda_step.VARIANTS`` (the default layout when none is given). Without
ncu it prints each kernel's time from CUDA events (median of 20 steps), a check that it runs.
"""

from __future__ import annotations

import argparse
import ast
import os
import statistics
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import cuda_step  # noqa: E402  (puts src/ and tests/ on the path)
import optimlab  # noqa: E402
from optimlab.kernels import triton_gpu  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", default=[],
                    help="a layout tuple of cuda_step.VARIANTS; repeat for several (default: the first)")
    ap.add_argument("--n", type=int, default=16 << 20, help="parameters (one tensor)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to profile")
        return
    variants = [tuple(ast.literal_eval(v)) for v in args.variant] or [cuda_step.VARIANTS[0]]
    shapes = [(args.n,)]
    profile("torch fused Adam", cuda_step.make_side(shapes, torch.optim.Adam,
                                                    {"lr": 1e-3, "capturable": True, "fused": True})[1])
    for variant in variants:  # the layout is module state read at each launch: one variant at a time
        cuda_step._use(*variant)
        triton_gpu._programs.clear()
        for cls in (optimlab.Adam, optimlab.NAdam):
            opt = cuda_step.make_side(shapes, cls, {"lr": 1e-3, "capturable": True})[1]
            profile(f"optimlab {cls.__name__}, {cuda_step._describe(variant)}", opt)
            del opt


def profile(label: str, opt) -> None:
    """Warm-up steps (compiling outside the range), one step in the NVTX range ``step``, then 20 timed."""
    for _ in range(3):
        opt.step()
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_push("step")
    opt.step()
    torch.cuda.nvtx.range_pop()
    torch.cuda.synchronize()
    times = [cuda_step.cuda_time(opt.step) for _ in range(20)]
    print(f"{label}: {statistics.median(times) * 1e3:.4f} ms per step (events, host work included)", flush=True)


if __name__ == "__main__":
    main()
