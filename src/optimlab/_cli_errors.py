"""How every ``optimlab`` command fails: one line on stderr and a non-zero exit, never a traceback.

``optimlab.cli.main`` runs each subcommand through :func:`run`. A failure the user can cause (a
bad value, a missing or unreadable file, a corrupt checkpoint, a database URL that does not
parse or connect) prints ``optimlab COMMAND: error: MESSAGE`` and exits 2; anything else prints
``optimlab COMMAND: error: TYPE: MESSAGE`` and exits 1; Ctrl-C exits 130. A bad flag is reported
by :class:`Parser` the same way (argparse's usage block is left to ``--help``). ``--debug``
anywhere on the command line (or ``OPTIMLAB_DEBUG=1``) lets the traceback through instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, NoReturn, Sequence

#: failures a user causes with what they type or point at
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError, LookupError)
MAX_CHARS = 300


def one_line(message: object) -> str:
    """``message`` on one line (whitespace runs collapsed), at most :data:`MAX_CHARS` characters."""
    text = " ".join(str(message).split())
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 3] + "..."


def split_debug(argv: Sequence[str]) -> tuple[list[str], bool]:
    """``argv`` without its ``--debug`` flags (before a ``--``), and whether there was one."""
    argv = list(argv)
    end = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:end]
    kept = [a for a in argv[:end] if a != "--debug"] + argv[end:]
    env = os.environ.get("OPTIMLAB_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off")
    return kept, debug or env


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (its subcommand parsers inherit the class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def describe(exc: BaseException) -> str:
    """The one line printed for ``exc``."""
    if isinstance(exc, OSError) and exc.strerror and getattr(exc, "filename", None) is not None:
        return f"{exc.filename}: {exc.strerror}"
    text = one_line(exc) or type(exc).__name__
    if isinstance(exc, USER_ERRORS):
        return text
    return f"{type(exc).__name__}: {text}"


def run(func: Callable[[Any], Any], args: Any, *, command: str, debug: bool = False) -> int:
    """``func(args)`` as an exit code; a failure becomes one line on stderr (or, with ``debug``,
    the traceback)."""
    if debug:
        return int(func(args) or 0)
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print(f"optimlab {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the whole point: no traceback reaches the user
        hint = "" if isinstance(exc, USER_ERRORS) else " (run with --debug for the traceback)"
        print(f"optimlab {command}: error: {describe(exc)}{hint}", file=sys.stderr)
        return 2 if isinstance(exc, USER_ERRORS) else 1
