"""``optimlab demo``: the main job (see :mod:`optimlab.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="folder for results.csv and figures")
    parser.add_argument("--epochs", type=int, default=40, help="passes over the training set (>= 1)")
    parser.add_argument("--batch-size", type=int, default=32, help="mini-batch size (>= 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, the initial weights and the batch order")
    parser.add_argument("--no-tour", action="store_true", help="skip the lab tour (training table only)")


def register(sub) -> None:
    from .cli import lazy

    p = sub.add_parser("demo", help="train a small network with every optimizer; write a table and figures")
    add_arguments(p)
    p.set_defaults(func=lazy("optimlab.demo", "run"))
