"""Atomic file output: write a temporary file beside the target, then ``os.replace`` it into place.

A reader never sees a half-written file, and a failure while writing leaves the previous file (or
no file) and no temporary file behind. Every command and the checkpoints write through here.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable

Writer = Callable[[str], None]


def _umask() -> int:
    """The process umask, read without changing it where Linux tells it (else set and restored)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temporary(path: Path, keep_suffix: bool) -> str:
    suffix = ".tmp" + path.suffix if keep_suffix else ".tmp"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    try:  # mkstemp creates 0600; the finished file gets what open() would give it (0644 under umask 022)
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    return tmp


def _remove(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def fsync_file(name: str) -> None:
    with open(name, "rb+") as f:
        os.fsync(f.fileno())


def fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Writer, *, durable: bool = False,
                 keep_suffix: bool = False) -> Path:
    """Call ``write(tmp_name)``, then move the file to ``path`` in one step; return ``path``.

    ``durable``      fsync the file before the rename and the folder after it (checkpoints).
    ``keep_suffix``  the temporary name ends with ``path``'s suffix, for writers that infer the
                     format from the name (Pillow's GIF writer).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path, keep_suffix)
    try:
        write(tmp)
        if durable:
            fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    if durable:
        fsync_dir(path.parent)
    return path


def atomic_write_all(items: Iterable[tuple[Path, Writer]]) -> None:
    """Write several files all-or-nothing: every ``writer(tmp)`` runs first, and only when all have
    succeeded is each temporary file renamed into place."""
    items = [(Path(path), writer) for path, writer in items]
    temps: list[str] = []
    try:
        for path, writer in items:
            path.parent.mkdir(parents=True, exist_ok=True)
            temps.append(_temporary(path, keep_suffix=False))
            writer(temps[-1])
        for (path, _), tmp in zip(items, temps):
            os.replace(tmp, path)
    finally:
        for tmp in temps:
            _remove(tmp)
