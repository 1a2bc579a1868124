"""Server time of the largest (lr, beta) stability maps the server admits, against its time budget.

For Momentum, NAG and Adam, the largest map ``Limits()`` allows (40 x 40 cells, steps =
``max_map_work / (cells x rule cost)``: 1,000 steps for Momentum and Adam, 500 for NAG, which
evaluates the landscape twice) on the elongated bowl, computed ``--repeat`` times in this process
by ``optimlab.web.stability.stability_map`` (one batched engine run each): median and min printed.

Exit status 1 when a median is over the server's time budget (``Limits().time_budget_s``, 5 s):
a map the server admits must be one it can finish.

    PYTHONPATH=src python benchmarks/stability_map.py [--repeat 3] [--landscape elongated_bowl]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from optimlab.web.lab_schemas import StabilityRequest
from optimlab.web.schemas import Limits, rule_cost
from optimlab.web.stability import stability_map


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="maps per optimizer (median reported)")
    ap.add_argument("--landscape", default="elongated_bowl", help="a built-in landscape")
    args = ap.parse_args(argv)
    limits = Limits()
    side = limits.max_map_side
    worst = 0.0
    for name in ("momentum", "nag", "adam"):
        steps = min(limits.max_steps, limits.max_map_work // (side * side * rule_cost(name)))
        req = StabilityRequest(landscape=args.landscape, optimizer={"name": name}, steps=steps, n_lr=side, n_beta=side)
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            stability_map(req, limits, time.monotonic() + 600)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        worst = max(worst, med)
        print(f"{name:9s} {side}x{side} cells x {steps} steps on {args.landscape}: median {med:.3f} s, "
              f"min {min(times):.3f} s (budget {limits.time_budget_s:g} s)")
    ok = worst <= limits.time_budget_s
    print(f"largest admitted map: {worst:.3f} s {'within' if ok else 'OVER'} the time budget")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
