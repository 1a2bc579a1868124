"""Optimizer benchmark over the training tasks: ``./run bench optimizer_bench [TASK ...] [-- BENCH ARGS]``.

For each task (default: all of them) runs ``optimlab bench --task TASK`` with its defaults (LR tuned
on a log grid 1e-4..10, 2 points per decade, seed 0; measured on seeds 1..3 at the task's step
budget) and writes ``bench_TASK.{json,csv}`` and two figures into ``out/bench``. The full run takes
tens of minutes on 2 CPU cores (char-lstm dominates); pass ``-- --optimizers adam sgd`` and/or
fewer tasks for a quicker one.
"""

from __future__ import annotations

import sys

from optimlab.cli import main
from optimlab.train.tasks import TASKS

if __name__ == "__main__":
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    tasks = [a for a in (argv[:argv.index("--")] if "--" in argv else argv)] or list(TASKS)
    for name in tasks:
        print(f"== {name}", flush=True)
        rc = main(["bench", "--task", name, *extra])
        if rc:
            raise SystemExit(rc)
