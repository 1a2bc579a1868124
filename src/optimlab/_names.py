"""Looking names up with a helpful error: the valid names and the closest one.

The closest name is the candidate fewest typing slips away (:func:`slips`: a character left out,
added, replaced, or two neighbours swapped), among the names similar enough to be a suggestion at
all (difflib's ratio >= 0.5); ties go to the more similar name (difflib's ratio), then the shorter.
difflib's ratio alone ranks by shared blocks and prefers longer names that contain the typo's
letters ("adma" -> "adamax" over "adam"), which is not the name most people meant.
"""

from __future__ import annotations

import difflib
from typing import Iterable, Mapping, TypeVar

T = TypeVar("T")


def slips(a: str, b: str) -> int:
    """Edit distance counting insertion, deletion, substitution and a swap of two adjacent
    characters as one slip each (the optimal-string-alignment form of Damerau-Levenshtein)."""
    rows = [list(range(len(b) + 1))]
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            row[j] = min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], rows[-2][j - 2] + 1)
        rows.append(row)
    return rows[-1][-1]


def closest(name: str, valid: Iterable[str]) -> str | None:
    """The valid name ``name`` most likely mistypes, or None when none is similar."""
    valid = list(valid)
    candidates = difflib.get_close_matches(name, valid, n=max(len(valid), 1), cutoff=0.5)
    if not candidates:
        return None
    ratio = lambda c: difflib.SequenceMatcher(None, name, c).ratio()  # noqa: E731
    return min(candidates, key=lambda c: (slips(name, c), -ratio(c), len(c), c))


def unknown_name_error(kind: str, name: str, valid: Iterable[str]) -> ValueError:
    """A ValueError naming the unknown ``name``, the closest valid one, and all valid ones."""
    valid = sorted(valid)
    close = closest(name, valid)
    hint = f"; did you mean {close!r}?" if close else ""
    return ValueError(f"unknown {kind} {name!r}{hint} (valid: {', '.join(valid)})")


def lookup(kind: str, name: str, table: Mapping[str, T]) -> T:
    """``table[name]``, or a ValueError from :func:`unknown_name_error`."""
    try:
        return table[name]
    except KeyError:
        raise unknown_name_error(kind, name, table) from None
