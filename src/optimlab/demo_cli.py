"""``optimlab demo``: the main job (see :mod:`optimlab.demo`)."""

from __future__ import annotations


def register(sub) -> None:
    from . import demo

    p = sub.add_parser("demo", help="train a small network with every optimizer; write a table and figures")
    demo.add_arguments(p)
    p.set_defaults(func=demo.run)
