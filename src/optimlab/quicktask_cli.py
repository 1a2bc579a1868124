"""optimlab quicktrain: train the built-in small MLP on generated data, with checkpoints.

A run killed at any moment and started again with the same --checkpoint resumes bit for bit
(the module optimlab.quicktask holds the task).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--optimizer", default="adam", help="optimizer name, case-insensitive (`optimlab optimizers` lists them; default adam)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="an optimizer argument, e.g. --set lr=0.01 --set momentum=0.9 (repeatable)")
    p.add_argument("--steps", type=int, default=200, help="optimizer steps (default 200)")
    p.add_argument("--batch-size", type=int, default=32, help="examples per mini-batch (default 32)")
    p.add_argument("--seed", type=int, default=0, help="seed of data, weights and batch order (default 0)")
    p.add_argument("--schedule", default="cosine", metavar="SPEC",
                   help="learning-rate schedule (the spec syntax of optimlab.schedules; default cosine)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="checkpoint file: resumed from when it exists, written every --checkpoint-every steps")
    p.add_argument("--checkpoint-every", type=int, default=10, help="steps between checkpoints (default 10)")
    p.add_argument("--out", type=Path, default=None, help="write the final model state_dict here (atomically)")
    p.add_argument("--pause", type=float, default=0.0, help="seconds to sleep after each step (to watch or kill a run)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (fixed, so reruns are bit-identical)")




def register(sub) -> None:
    from .cli import lazy

    p = sub.add_parser("quicktrain", help="train the built-in small MLP; checkpoint, and resume after a crash",
                       description=__doc__)
    add_arguments(p)
    p.set_defaults(func=lazy("optimlab.quicktask", "run"))
