"""Atomic file output: write to a temporary file in the target folder, then ``os.replace`` it.

A reader never sees a half-written file, and an error while writing leaves no file behind.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Callable, Iterable

from .. import _atomic, _json


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` in one step (the temporary name
    keeps ``path``'s suffix: matplotlib's writers infer the format from it)."""
    return _atomic.atomic_write(path, write, keep_suffix=True)


def write_text(path: str | Path, text: str) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
    return atomic_write(path, write)


def write_json(path: str | Path, data: Any) -> Path:
    """JSON with non-finite numbers as null (:mod:`optimlab._json`)."""
    return write_text(path, _json.dumps(data, indent=2) + "\n")


def csv_text(rows: Iterable[dict[str, Any]]) -> str:
    rows = list(rows)
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_csv(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    return write_text(path, csv_text(rows))


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure atomically (format from the suffix)."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight"))
