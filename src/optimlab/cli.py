"""The ``optimlab`` command. Each feature area registers its own subcommands.

A module listed in ``COMMAND_MODULES`` exposes ``register(subparsers)``, which adds its
subcommands with ``subparsers.add_parser(...)`` and sets ``func=`` (taking the parsed args,
returning an exit code) through ``parser.set_defaults``. Registering imports no torch: the
command's own module is imported when it runs (:func:`lazy`).
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys

from . import _cli_errors

COMMAND_MODULES: list[str] = [
    "optimlab.catalogue_cli",
    "optimlab.demo_cli",
    "optimlab.lab.cli",
    "optimlab.train.cli",
    "optimlab.web.cli",
    "optimlab.quicktask_cli",
    "optimlab.tune",
]


def plain(doc: str) -> str:
    """A docstring as plain text for ``--help``: reST roles and double back-quotes removed."""
    return re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", doc).replace("``", "")


def lazy(module: str, name: str):
    """A command function that imports ``module`` only when it runs, so that ``optimlab --help``
    and every ``optimlab SUB --help`` import neither torch nor matplotlib."""
    def call(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module), name)(args)
    call.__name__ = name
    return call


def build_parser() -> argparse.ArgumentParser:
    parser = _cli_errors.Parser(prog="optimlab", description="Gradient-descent optimizers and a lab for them.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure (any position)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv, debug = _cli_errors.split_debug(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return _cli_errors.run(args.func, args, command=args.command, debug=debug)  # one line, no traceback


if __name__ == "__main__":
    raise SystemExit(main())
