"""``optimlab demo``: the main job (see :mod:`optimlab.demo`)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("demo", help="train a small network with every optimizer; write a table and figures",
                       add_help=False)
    p.add_argument("rest", nargs="*")
    p.set_defaults(func=lambda args: __import__("optimlab.demo", fromlist=["main"]).main(args.rest))
