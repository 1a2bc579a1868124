"""``optimlab optimizers``: the catalogue as a table (every name the other commands accept)."""

from __future__ import annotations

import argparse


def cmd_optimizers(args: argparse.Namespace) -> int:
    from . import catalogue

    rows = [(e.name, e.label, e.algorithm + (f" {dict(e.options)}" if e.options else ""),
             e.torch[0] + (f" {dict(e.torch[1])}" if e.torch[1] else "") if e.torch else "-",
             ", ".join(e.aliases) or "-", e.colour, e.seed if e.lab else f"{e.seed} (not in the lab: train and tune only)")
            for e in catalogue.entries()]
    if args.names:
        print("\n".join(r[0] for r in rows))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="optimlab's optimizers (names are case-insensitive; aliases work too)")
    for header in ("name", "label", "class and options", "torch.optim equivalent", "aliases", "colour", "what it is"):
        table.add_column(header)
    for row in rows:
        table.add_row(*row[:5], f"[{row[5]}]{row[5]}[/]", row[6])
    Console().print(table)
    return 0


def register(sub) -> None:
    p = sub.add_parser("optimizers", help="list every optimizer name the commands accept (the catalogue)")
    p.add_argument("--names", action="store_true", help="print the names only, one per line")
    p.set_defaults(func=cmd_optimizers)
