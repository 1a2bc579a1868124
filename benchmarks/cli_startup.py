"""How fast the command line answers ``--help``, against ``python -c "import torch"`` in the same run.

Each command runs in a fresh process, the three alternating, ``--repeats`` times; the medians are
compared. Target (issue "One catalogue"): ``optimlab --help`` and ``optimlab compare --help`` each
take under a quarter of torch's import.

    ./run bench cli_startup [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "import torch": [sys.executable, "-c", "import torch"],
    "optimlab --help": [sys.executable, "-m", "optimlab.cli", "--help"],
    "optimlab compare --help": [sys.executable, "-m", "optimlab.cli", "compare", "--help"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="runs of each command (default 7)")
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, argv in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - start)
    torch_s = statistics.median(times["import torch"])
    print(f"{'command':<26} {'median s':>9} {'min s':>7} {'ratio to import torch':>22}")
    ok = True
    for name, values in times.items():
        ratio = statistics.median(values) / torch_s
        print(f"{name:<26} {statistics.median(values):>9.3f} {min(values):>7.3f} {ratio:>22.3f}")
        if name != "import torch":
            ok &= ratio < 0.25
    print(f"target: each optimlab help < 0.25 x import torch -> {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
