"""Looking names up with a helpful error: the valid names and a close-match suggestion (difflib)."""

from __future__ import annotations

import difflib
from typing import Iterable, Mapping, TypeVar

T = TypeVar("T")


def unknown_name_error(kind: str, name: str, valid: Iterable[str]) -> ValueError:
    """A ValueError naming the unknown ``name``, the closest valid one, and all valid ones."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown {kind} {name!r}{hint} (valid: {', '.join(valid)})")


def lookup(kind: str, name: str, table: Mapping[str, T]) -> T:
    """``table[name]``, or a ValueError from :func:`unknown_name_error`."""
    try:
        return table[name]
    except KeyError:
        raise unknown_name_error(kind, name, table) from None
