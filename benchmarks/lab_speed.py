"""Batched lab engine vs a plain per-trajectory torch.optim loop, measured in one process.

The sweep: 7 optimizers x 20 learning rates x 100 starts x 500 steps on Rosenbrock
(14,000 trajectories). The batched engine runs it as one tensor computation per optimizer
(``optimlab.lab.sweep``). The loop baseline is what one writes without the lab: for each
trajectory a 2-element ``nn.Parameter``, a ``torch.optim`` optimizer, and 500 x (zero_grad,
loss, backward, step). Running all 14,000 that way takes many minutes, so the loop is timed on a
subsample (``--loop-sample`` trajectories per optimizer, spread over the learning rates) and its
per-trajectory cost extrapolated to 14,000; the output says so.

Timings alternate batched / loop rounds and take medians (the machine is shared). The first
round of each is a discarded warm-up (torch.optim's first use imports torch._dynamo).

    ./run bench lab_speed [--rounds 3] [--loop-sample 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from optimlab.lab import MAIN_OPTIMIZERS, reference_run, sweep

N_LR, N_STARTS, STEPS = 20, 100, 500


def setup() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    starts = torch.stack([torch.rand(N_STARTS, generator=g, dtype=torch.float64) * 3 - 1.5,
                          torch.rand(N_STARTS, generator=g, dtype=torch.float64) * 2.5 - 0.5], dim=1)
    lrs = torch.logspace(-5, -1, N_LR, dtype=torch.float64)
    return lrs, starts


def batched(lrs: torch.Tensor, starts: torch.Tensor) -> tuple[float, dict]:
    t0 = time.perf_counter()
    res = sweep("rosenbrock", MAIN_OPTIMIZERS, lrs, starts, STEPS)
    return time.perf_counter() - t0, res.runs


def loop(lrs: torch.Tensor, starts: torch.Tensor, per_optimizer: int) -> tuple[float, int]:
    """Time ``per_optimizer`` torch.optim trajectories of each optimizer; return (seconds, count)."""
    count = 0
    t0 = time.perf_counter()
    for name in MAIN_OPTIMIZERS:
        for k in range(per_optimizer):
            i = (k * (N_LR - 1)) // max(per_optimizer - 1, 1)
            reference_run("rosenbrock", name, starts[k % N_STARTS], STEPS, lr=float(lrs[i]), use_torch=True)
            count += 1
    return time.perf_counter() - t0, count


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds of each (after one warm-up)")
    ap.add_argument("--loop-sample", type=int, default=4, help="loop trajectories per optimizer per round")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the target machine has 2 cores)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    lrs, starts = setup()
    total = len(MAIN_OPTIMIZERS) * N_LR * N_STARTS

    batched(lrs, starts[:2])  # warm-up
    loop(lrs, starts, 1)
    b_times, per_traj = [], []
    for r in range(args.rounds):
        sec, runs = batched(lrs, starts)
        b_times.append(sec)
        lsec, n = loop(lrs, starts, args.loop_sample)
        per_traj.append(lsec / n)
        print(f"round {r + 1}: batched {sec:.2f} s for {total} trajectories; loop {lsec:.2f} s for {n} "
              f"trajectories ({1e3 * lsec / n:.1f} ms each)", flush=True)
    b = statistics.median(b_times)
    p = statistics.median(per_traj)
    loop_total = p * total
    # the batched results agree with the loop on a sampled trajectory (same numbers, not just faster)
    name, i, j = "adam", N_LR // 2, 7
    ref = reference_run("rosenbrock", name, starts[j], STEPS, lr=float(lrs[i]), use_torch=True)
    diff = float((runs[name].path[:, i * N_STARTS + j] - ref).abs().max())
    print(f"\nsweep: {len(MAIN_OPTIMIZERS)} optimizers x {N_LR} learning rates x {N_STARTS} starts x {STEPS} steps "
          f"on rosenbrock = {total} trajectories, torch threads {args.threads}")
    print(f"batched engine (median of {args.rounds}): {b:.2f} s  (target: under 10 s)")
    print(f"per-trajectory torch.optim loop: {1e3 * p:.1f} ms per trajectory (median of {args.rounds} rounds of "
          f"{args.loop_sample * len(MAIN_OPTIMIZERS)} sampled trajectories), extrapolated to {total}: {loop_total:.0f} s")
    print(f"speed-up: {loop_total / b:.0f}x  (target: >= 50x)")
    print(f"check: max |batched - torch.optim loop| on one sampled trajectory: {diff:.2e}")
    return 0 if b < 10 and loop_total / b >= 50 else 1


if __name__ == "__main__":
    sys.exit(main())
