"""What the web lab's server computes: the page's metadata, landscape grids and runs.

Runs use :mod:`.fastpath` (the engine's numbers bit for bit, as plain float arithmetic) and one
batched call of :func:`optimlab.lab.metrics.rows` over every trajectory of a request. JSON is
written directly (``allow_nan=False``), non-finite numbers as ``null``.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Callable, Iterator

import numpy as np
import torch

from .. import _json, catalogue, schedules
from ..lab import engine, metrics
from ..lab.landscapes import LANDSCAPES, Landscape, get_landscape
from . import fastpath
from .custom import FormulaError, landscape_of
from .schemas import LR_RANGE, Limits, RunRequest, knobs


class ApiError(Exception):
    """An error answered with ``status`` and a message the page shows."""

    def __init__(self, status: int, message: str, details: list[dict[str, str]] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or []
        self.headers = headers

    def __reduce__(self):  # raised in a worker process, re-raised in the server's
        return (ApiError, (self.status, self.message, self.details, self.headers))


class BudgetExceeded(Exception):
    pass


# --- JSON -----------------------------------------------------------------------------------------

def nested(t: torch.Tensor | np.ndarray) -> list:
    """A tensor as nested lists of Python floats, non-finite entries as None (JSON null)."""
    return _json.finite(t)


def dumps(payload: Any) -> str:
    """JSON of a payload built clean (:func:`nested`, :func:`optimlab._json.finite`): written as it
    is, NaN refused (``jsonable_encoder`` would walk every float in Python)."""
    return _json.dumps(payload, clean=False, separators=(",", ":"))


# --- metadata and grids ---------------------------------------------------------------------------

def landscape_info(name: str | Landscape) -> dict[str, Any]:
    land = get_landscape(name)
    from ..lab.sampled import DataLandscape

    return {**land.describe(), "global_minima": land.global_minima or len(land.minima),
            # examples a noisy-gradient batch draws from (data landscapes only)
            "examples": land.n_data if isinstance(land, DataLandscape) else None,
            # each optimizer's default learning rate on this landscape (from the catalogue)
            "default_lr": {e.name: catalogue.lab_lr(e, land) for e in catalogue.lab_entries()}}


def optimizer_info(name: str) -> dict[str, Any]:
    spec = catalogue.lab_entry(name)
    ranges = {k: {"range": [r.low, r.high], "open": [r.low_open, r.high_open], "scale": r.scale, "help": r.help}
              for k, r in catalogue.knobs(spec).items()}
    return {"name": spec.name, "label": spec.label, "colour": spec.colour, "default_lr": spec.lab_lr,
            "knobs": knobs(spec), "knob_ranges": ranges, "main": spec.main,
            "options": {k: v for k, v in spec.options.items()},
            # its update rule as MathML with the default numbers (the page writes the card's values in)
            "rule": catalogue.rule_display(spec)}


def meta(limits: Limits) -> dict[str, Any]:
    return {
        "landscapes": [landscape_info(n) for n in LANDSCAPES],
        "optimizers": [optimizer_info(n) for n in catalogue.lab_names()],
        "lr_range": list(LR_RANGE),
        "schedules": {"kinds": [k for k in schedules.KINDS if k != "plateau"],
                      "forms": [f for f in schedules.FORMS if not f.startswith("plateau")]},
        "limits": limits.as_dict(),
    }


@lru_cache(maxsize=16)
def landscape_grid_json(name: str, resolution: int) -> str:
    """:func:`landscape_grid` as JSON text, cached (a page asks for the same grid again and again)."""
    return dumps(landscape_grid(name, resolution))


def landscape_grid(name: str | Landscape, resolution: int) -> dict[str, Any]:
    """The landscape on a ``resolution x resolution`` grid over its window.

    ``z[i][j] = f(x[j], y[i])`` (plotly's layout); ``zplot`` is what the page colours:
    ``log10(f - f* + 1)`` for landscapes marked ``log_plot`` (values spanning many decades), else
    None (the page colours ``z`` itself).
    """
    land = get_landscape(name)
    xs, ys, _, _, z = land.evaluate_grid(resolution)
    return {"name": land.name, "resolution": resolution, "x": nested(xs), "y": nested(ys), "z": nested(z),
            "zplot": nested(land.plot_height(z)) if land.log_plot else None, "log_plot": land.log_plot,
            "zplot_label": land.height_label, "log_offset": land.LOG_OFFSET}


# --- runs -----------------------------------------------------------------------------------------

_threads_lock = threading.Lock()
_single_threaded = 0


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread while small runs compute: their ops take microseconds, and waiting for a
    second OpenMP thread on a busy machine costs milliseconds (the engine does the same)."""
    global _single_threaded
    with _threads_lock:
        if _single_threaded == 0:
            one_thread.saved = torch.get_num_threads()  # type: ignore[attr-defined]
            torch.set_num_threads(1)
        _single_threaded += 1
    try:
        yield
    finally:
        with _threads_lock:
            _single_threaded -= 1
            if _single_threaded == 0:
                torch.set_num_threads(one_thread.saved)  # type: ignore[attr-defined]


def left_window(path: torch.Tensor, land: Landscape) -> list[int | None]:
    """Per trajectory: the first step whose point is non-finite or outside the window, or None."""
    out = ~(torch.isfinite(path).all(dim=-1) & land.in_window(path))
    first = torch.where(out.any(dim=0), torch.argmax(out.to(torch.int8), dim=0), -1).tolist()
    return [None if k < 0 else k for k in first]


def over_budget(deadline: float, limits: Limits) -> None:
    if time.monotonic() > deadline:
        raise ApiError(422, f"the run took longer than this server's time budget of {limits.time_budget_s:g} s "
                            "(waiting included); ask for fewer steps, starts or optimizers")


def budget(limits: Limits, deadline: float | None) -> tuple[float, Any]:
    """``(deadline, check)``: the deadline (default: the time budget from now) and a progress
    callback that raises :class:`BudgetExceeded` past it."""
    deadline = time.monotonic() + limits.time_budget_s if deadline is None else deadline

    def check(_step: int = 0) -> None:
        if time.monotonic() > deadline:
            raise BudgetExceeded()

    return deadline, check


def result_json(compute: Callable[..., dict], req: Any, limits: Limits, deadline: float, queued_s: float) -> str:
    """``compute(req, limits, deadline)`` as JSON text with the time it queued; a 422 instead when it
    is ready only past ``deadline``."""
    result = compute(req, limits, deadline)
    result["queued_s"] = queued_s
    text = dumps(result)
    over_budget(deadline, limits)
    return text


def run_json(req: RunRequest, limits: Limits, deadline: float, queued_s: float) -> str:
    """:func:`run_request` as JSON text (run in a worker thread or process)."""
    return result_json(run_request, req, limits, deadline, queued_s)


def run_request(req: RunRequest, limits: Limits, deadline: float | None = None) -> dict[str, Any]:
    """Every optimizer of ``req`` from every start; :class:`ApiError` (422) past ``deadline``
    (``time.monotonic()``; default: the time budget from now)."""
    t0 = time.perf_counter()
    deadline, check = budget(limits, deadline)
    land = request_landscape(req)
    noise = req.noise.spec() if req.noise is not None else None
    runs: list[engine.Run] = []
    with one_thread():
        for spec in req.optimizers:
            try:
                runs.append(fastpath.run(land, spec.name, req.starts, req.steps, lr=spec.lr, schedule=req.schedule,
                                         progress=check, noise=noise, record_state=req.state, **spec.hyper()))
            except BudgetExceeded:
                raise ApiError(422, f"the run took longer than this server's time budget of {limits.time_budget_s:g} s "
                                    f"(at {spec.name}); ask for fewer steps, starts or optimizers") from None
            except (ValueError, TypeError) as exc:
                raise ApiError(422, f"{spec.name}: {exc}") from None
        over_budget(deadline, limits)
        # one metrics call for every trajectory of the request (each row depends on its own only)
        first = runs[0]
        both = engine.Run(land, first.optimizer, torch.cat([r.path for r in runs], 1),
                          torch.cat([r.loss for r in runs], 1), torch.cat([r.lr for r in runs]), first.lr_factors)
        rows = metrics.rows(both, tol=req.tol)
        left = left_window(both.path, land)
    out = []
    n = len(req.starts)
    for k, (spec, r) in enumerate(zip(req.optimizers, runs)):
        kwargs, _ = fastpath.prepared(r.optimizer.name, float(r.lr[0]), tuple(sorted(spec.hyper().items())))
        allowed = knobs(spec.name)
        used = {key: float(v) for key, v in kwargs.items() if key in allowed}
        mine = rows[k * n:(k + 1) * n]
        for row in mine:
            row["optimizer"] = r.optimizer.name
        out.append({
            "name": r.optimizer.name,
            "label": r.optimizer.label,
            "colour": r.optimizer.colour,
            "lr": float(r.lr[0]),
            "hyper": used,
            "path": nested(r.path),
            "loss": nested(r.loss),
            "left_window": left[k * n:(k + 1) * n],
            "metrics": [{key: _json.finite(v) for key, v in row.items()} for row in mine],
            **({"state": step_state(r)} if req.state else {}),
        })
    return {"landscape": land.name, "steps": req.steps, "schedule": req.schedule,
            "lr_factors": list(first.lr_factors), "tol": req.tol, "f_star": land.min_value,
            "starts": req.starts, "noise": noise, "runs": out, "elapsed_s": time.perf_counter() - t0}


_ROLES: dict[str, tuple[Any, dict[str, str]]] = {}


def state_roles(entry: catalogue.Entry) -> dict[str, str]:
    """:func:`optimlab.catalogue.state_roles`, cached per entry (it writes the rule's display)."""
    hit = _ROLES.get(entry.name)
    if hit is None or hit[0] is not entry:
        hit = _ROLES[entry.name] = (entry, catalogue.state_roles(entry))
    return hit[1]


def step_state(r: engine.Run) -> dict[str, Any]:
    """What the step-through mode shows of run ``r`` (``record_state``: the engine's state, from the
    fast path bit for bit): per step, the gradient and the rule's state after the step, with the
    catalogue's roles. (The step ``w_t - w_{t-1}`` is the path's difference: the page subtracts.)"""
    return {"grad": nested(r.grads), "values": {name: nested(v) for name, v in (r.states or {}).items()},
            "roles": state_roles(r.optimizer)}


def request_landscape(req: Any) -> Landscape:
    """The request's landscape (a formula one is built here: a 422 where it is refused)."""
    try:
        return landscape_of(req)
    except FormulaError as exc:
        raise ApiError(422, f"formula: {exc}", [{"field": "formula", "message": str(exc)}]) from None


def warm_up(schedules: bool = True) -> None:
    """One tiny request through every path, so the first real one does not pay one-time start-ups:
    autograd's (about 2 s), LAPACK's first eigh (the metrics), the fast path's self-check of MKL,
    and with ``schedules`` the import behind torch's learning-rate schedulers (5-10 s on a busy
    machine)."""
    schedule = "cosine" if schedules else "constant"
    engine.run("bowl", "adam", [[1.0, 1.0]], 2, schedule=schedule)
    req = RunRequest(landscape="bowl", starts=[[1.0, 1.0]], steps=3, schedule=schedule,
                     optimizers=[{"name": "adam"}, {"name": "nag"}])
    run_json(req, Limits(), time.monotonic() + 600, 0.0)


def warm_up_worker(server: int | None = None) -> None:
    """A worker process's start (the server uses threads until every worker has done it): it
    leaves when the server (process id ``server``) does (:func:`exit_with_parent`), then warms up."""
    exit_with_parent(server)
    warm_up(schedules=True)


def exit_with_parent(parent: int | None = None, period_s: float = 0.5) -> threading.Thread:
    """Watch, from a daemon thread, for this process's parent (process id ``parent``; None: the
    parent now) to go, and exit then: at once if it has gone already.

    A pool worker blocks reading its task queue, whose writing end every worker holds too, so it
    never sees the end of the queue when the server dies: a server killed (``SIGKILL``) or stopped
    by a re-raised ``SIGTERM`` (uvicorn re-raises it after its shutdown, before ``atexit``) would
    leave its workers behind, each holding torch (~0.5 GB). The server passes its own id: a worker
    still importing torch when the server stops finds itself adopted by then, and a parent taken
    from ``os.getppid()`` at that point would be the adopter. Polled rather than
    ``prctl(PR_SET_PDEATHSIG)``: portable, and the thread that started the worker may end first."""
    parent = os.getppid() if parent is None else parent

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(period_s)
        os._exit(0)

    thread = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    thread.start()
    return thread


__all__ = ["ApiError", "BudgetExceeded", "meta", "run_json", "landscape_grid", "landscape_grid_json", "run_request",
           "warm_up", "warm_up_worker", "exit_with_parent", "dumps", "nested"]
