"""Checkpoints that are never half-written: model, optimizer, scheduler and RNG state in one file.

``save`` writes to a temporary file in the same folder, flushes it to disk, and renames it over
the target (``os.replace``, atomic on POSIX and Windows), so a crash or a kill at any moment leaves
either the previous checkpoint or the new one, never a torn file. ``load`` puts everything back;
training resumed from a checkpoint continues bit for bit as if it had never stopped (given the
same code, data order and thread count), since the RNG state is saved with the rest.

    from optimlab import checkpoint
    checkpoint.save("ckpt.pt", model=model, optimizer=opt, scheduler=sched, step=step)
    ...
    meta = checkpoint.load("ckpt.pt", model=model, optimizer=opt, scheduler=sched)
    step = meta["step"]

With ``torch.distributed.optim.ZeroRedundancyOptimizer`` call ``opt.consolidate_state_dict(to=0)``
on every rank first and save from rank 0 only (see docs/distributed.md).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Callable

import torch

from . import _atomic
from ._cli_errors import one_line

FORMAT = 1


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> Path:
    """Call ``write(fileobj)`` on a temporary file next to ``path``, fsync it, rename it to ``path``.

    If ``write`` raises (or the process dies) the temporary file is removed (or left under a
    ``.name.*.tmp`` name, removed by the next save or load) and ``path`` keeps its previous content.
    """
    def to_file(tmp: str) -> None:
        with open(tmp, "wb") as f:
            write(f)

    return _atomic.atomic_write(path, to_file, durable=True)


def rng_state() -> dict[str, Any]:
    """The state of every random generator training may draw from: torch (CPU, CUDA), Python, NumPy."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": _python_state(random.getstate())}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return state
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state["numpy"] = {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np
        s = state["numpy"]
        np.random.set_state((s["name"], s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"],
                             s["cached_gaussian"]))


def _python_state(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def save(path: str | os.PathLike, *, model: torch.nn.Module | None = None,
         optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None, step: int | None = None,
         extra: dict[str, Any] | None = None, rng: bool = True) -> Path:
    """Write a checkpoint atomically; return its path. Everything given is saved, nothing else."""
    payload: dict[str, Any] = {"format": FORMAT, "step": step, "extra": extra or {}}
    if model is not None:
        payload["model"] = model.state_dict()
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        payload["scheduler"] = scheduler.state_dict()
    if rng:
        payload["rng"] = rng_state()
    return atomic_write(path, lambda f: torch.save(payload, f))


def load(path: str | os.PathLike, *, model: torch.nn.Module | None = None,
         optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None, rng: bool = True,
         map_location: Any = "cpu", weights_only: bool = True) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save` into the objects given; return ``{"step", "extra"}``.

    Raises ValueError naming the missing part when asked to restore something the file lacks.
    Temporary files that killed writers left beside ``path`` are removed (see :mod:`._atomic`).
    """
    _atomic.clean_stale(path)
    with open(path, "rb") as f:  # a missing or unreadable file: the OSError naming it
        try:
            payload = torch.load(f, map_location=map_location, weights_only=weights_only)
        except Exception as exc:  # corrupt, truncated, not torch's format, or refused by weights_only
            reason = one_line(str(exc).split(". ")[0]) or "empty or truncated"
            raise ValueError(f"path {str(path)!r} is not a readable optimlab checkpoint "
                             f"({type(exc).__name__}: {reason})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"path {str(path)!r} is not an optimlab checkpoint (format {FORMAT})")
    for name, obj in (("model", model), ("optimizer", optimizer), ("scheduler", scheduler)):
        if obj is not None and name not in payload:
            raise ValueError(f"{name}: checkpoint {str(path)!r} holds no {name} state")
    for name, obj in (("model", model), ("optimizer", optimizer), ("scheduler", scheduler)):
        if obj is None:
            continue
        try:
            obj.load_state_dict(payload[name])
        except (RuntimeError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise ValueError(f"{name}: the {name} state in checkpoint {str(path)!r} does not fit this "
                             f"{name} ({one_line(exc)})") from exc
    if rng and "rng" in payload:
        set_rng_state(payload["rng"])
    return {"step": payload["step"], "extra": payload["extra"]}
