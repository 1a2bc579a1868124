"""Atomic file output: write a temporary file beside the target, then ``os.replace`` it into place.

A reader never sees a half-written file, and a failure while writing leaves the previous file (or
no file) and no temporary file behind. Every command and the checkpoints write through here.

A writer killed outright (SIGKILL, power loss) cannot remove its temporary file. Its name,
``.NAME.HOST.PID.RANDOM.tmp``, says who wrote it, so the next write of ``NAME`` (and a checkpoint
resume) removes the temporary files of ``NAME`` whose writer on this host is no longer running;
those of live writers, and of other hosts sharing the folder, are left alone.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Callable, Iterable

Writer = Callable[[str], None]


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_host()}.{os.getpid()}.", suffix=suffix)
    try:  # mkstemp creates 0600; the finished file gets what open() would give it (0644 under umask 022)
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    return tmp


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by someone else
        return True
    return True


def clean_stale(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files left beside ``path`` by killed writers on this host; return them."""
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.name}.{_host()}.") + r"(\d+)\.[^.]+\.tmp(\.[^.]*)?$")
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            try:
                if entry.is_file(follow_symlinks=False):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


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
    clean_stale(path)
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
            clean_stale(path)
            temps.append(_temporary(path, keep_suffix=False))
            writer(temps[-1])
        for (path, _), tmp in zip(items, temps):
            os.replace(tmp, path)
    finally:
        for tmp in temps:
            _remove(tmp)
