"""The web lab's server: a FastAPI app that runs the batched engine for the page.

Routes::

    GET  /                          the page (static/index.html)
    GET  /static/...                the page's script and style
    GET  /vendor/plotly.min.js      plotly.js, served from the installed ``plotly`` package (no CDN)
    GET  /api/meta                  landscapes, optimizers (with their knobs and defaults), schedules, limits
    GET  /api/landscape/{name}      the landscape on a grid (for the contour and the 3-D surface)
    POST /api/run                   trajectories, losses and metrics (see ``schemas.RunRequest``)

The numbers of ``/api/run`` are ``optimlab.lab.engine.run`` and ``optimlab.lab.metrics.rows`` for
the same arguments, unchanged (float64, non-finite values sent as ``null``).

Every bad request gets a 4xx whose body is ``{"error": "<one line>", "details": [...]}``:
422 for a request that is not valid or asks for more than :class:`~.schemas.Limits` allow (or
runs past the time budget), 404 for an unknown landscape in a path, 413 for a body that is too
large, 429 when the server is busy with other runs.
"""

from __future__ import annotations

import json
import math
import threading
import time
from contextlib import asynccontextmanager
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import catalogue
from ..lab import engine, metrics
from ..lab.landscapes import LANDSCAPES, get_landscape
from .. import schedules
from .schemas import HARD_MAX_NAME, KNOB_HELP, KNOB_RANGES, LR_RANGE, knobs, Limits, RunRequest, check_limits

STATIC = Path(__file__).parent / "static"


class ApiError(Exception):
    """An error answered with ``status`` and a message the page shows."""

    def __init__(self, status: int, message: str, details: list[dict[str, str]] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or []


class BudgetExceeded(Exception):
    pass


def plotly_js_path() -> Path:
    """``plotly.min.js`` as shipped inside the ``plotly`` Python package."""
    return Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))


# --- JSON helpers -------------------------------------------------------------------------------

def nested(t: torch.Tensor | np.ndarray) -> list:
    """A tensor as nested lists of Python floats, non-finite entries as None (JSON null)."""
    a = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    a = a.astype(np.float64)
    finite = np.isfinite(a)
    if finite.all():
        return a.tolist()
    obj = a.astype(object)
    obj[~finite] = None
    return obj.tolist()


def json_response(payload: Any, status: int = 200) -> Response:
    """JSON without NaN / Infinity (``allow_nan=False``: a non-finite number left in a payload is a
    bug, not something to send), written directly rather than through ``jsonable_encoder``, which
    walks every float of a large trajectory array in Python."""
    body = json.dumps(payload, allow_nan=False, separators=(",", ":"))
    return Response(content=body, media_type="application/json", status_code=status)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if part in ("body", "query", "path") and not out:
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "request"


def _message(err: dict[str, Any]) -> str:
    msg = str(err.get("msg", "invalid value"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    return msg


# --- computations -------------------------------------------------------------------------------

def landscape_info(name: str) -> dict[str, Any]:
    land = get_landscape(name)
    return {"name": land.name, "formula": land.formula, "description": land.description,
            "window": [list(land.window[0]), list(land.window[1])], "start": list(land.start),
            "minima": [list(m) for m in land.minima], "saddles": [list(s) for s in land.saddles],
            "global_minima": land.global_minima or len(land.minima), "log_plot": land.log_plot,
            "min_value": land.min_value,
            # each optimizer's default learning rate on this landscape (from the catalogue)
            "default_lr": {e.name: catalogue.lab_lr(e, land) for e in catalogue.entries()}}


def optimizer_info(name: str) -> dict[str, Any]:
    spec = engine.get_optimizer(name)
    return {"name": spec.name, "label": spec.label, "default_lr": spec.lab_lr, "colour": spec.colour,
            "knobs": knobs(spec), "main": spec.main,
            "options": {k: v for k, v in spec.options.items()}}


def meta(limits: Limits) -> dict[str, Any]:
    return {
        "landscapes": [landscape_info(n) for n in LANDSCAPES],
        "optimizers": [optimizer_info(n) for n in catalogue.names()],
        "knobs": {k: {"range": list(KNOB_RANGES[k][:2]), "open": list(KNOB_RANGES[k][2:]), "help": KNOB_HELP[k]}
                  for k in KNOB_RANGES},
        "lr_range": list(LR_RANGE),
        "schedules": {"kinds": [k for k in schedules.KINDS if k != "plateau"],
                      "forms": [f for f in schedules.FORMS if not f.startswith("plateau")]},
        "limits": limits.as_dict(),
    }


@lru_cache(maxsize=16)
def landscape_grid_json(name: str, resolution: int) -> str:
    """:func:`landscape_grid` as JSON text, cached (a page asks for the same grid again and again)."""
    return json.dumps(landscape_grid(name, resolution), allow_nan=False, separators=(",", ":"))


def landscape_grid(name: str, resolution: int) -> dict[str, Any]:
    """The landscape on a ``resolution x resolution`` grid over its window.

    ``z[i][j] = f(x[j], y[i])`` (plotly's layout); ``zplot`` is what the page colours:
    ``log10(f - f* + 1)`` for landscapes marked ``log_plot`` (values spanning many decades), else
    None (the page colours ``z`` itself).
    """
    land = get_landscape(name)
    xs, ys, _, _, z = land.evaluate_grid(resolution)
    zplot = torch.log10(torch.clamp(z - land.min_value, min=0) + 1) if land.log_plot else None
    return {"name": land.name, "resolution": resolution, "x": nested(xs), "y": nested(ys), "z": nested(z),
            "zplot": nested(zplot) if land.log_plot else None, "log_plot": land.log_plot,
            "zplot_label": "log10(f - f* + 1)" if land.log_plot else "f(x, y)"}


def run_request(req: RunRequest, limits: Limits) -> dict[str, Any]:
    """Run every optimizer of ``req`` with the batched engine; stop past the time budget."""
    check_limits(req, limits)
    t0 = time.perf_counter()
    deadline = time.monotonic() + limits.time_budget_s

    def check_budget(_step: int) -> None:
        if time.monotonic() > deadline:
            raise BudgetExceeded()

    land = get_landscape(req.landscape)
    out = []
    for spec in req.optimizers:
        try:
            r = engine.run(land, spec.name, req.starts, req.steps, lr=spec.lr, schedule=req.schedule,
                           progress=check_budget, **spec.hyper())
        except BudgetExceeded:
            raise ApiError(422, f"the run took longer than this server's time budget of {limits.time_budget_s:g} s "
                                f"(at {spec.name}); ask for fewer steps, starts or optimizers") from None
        except (ValueError, TypeError) as exc:
            raise ApiError(422, f"{spec.name}: {exc}") from None
        used = {k: float(v) for k, v in engine.prepare(r.optimizer, 1, float(r.lr[0]), spec.hyper(),
                                                        torch.float64)[0].items()
                if k in knobs(spec)}
        out.append({
            "name": r.optimizer.name,
            "label": r.optimizer.label,
            "lr": float(r.lr[0]),
            "hyper": used,
            "path": nested(r.path),
            "loss": nested(r.loss),
            "metrics": [{k: _clean(v) for k, v in row.items()} for row in metrics.rows(r, tol=req.tol)],
        })
    return {"landscape": land.name, "steps": req.steps, "schedule": req.schedule,
            "lr_factors": list(r.lr_factors), "tol": req.tol, "f_star": land.min_value,
            "starts": req.starts, "runs": out, "elapsed_s": time.perf_counter() - t0}


# --- the app ------------------------------------------------------------------------------------

class BodyLimit:
    """ASGI middleware: a request body longer than ``max_bytes`` gets a 413 before it is parsed.

    A declared ``Content-Length`` over the limit is refused at once; a chunked body is read (at
    most ``max_bytes + 1`` bytes of it) before the app sees it, then replayed.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                response = JSONResponse({"error": "invalid Content-Length header", "details": []}, status_code=400)
                return await response(scope, receive, send)
            if too_big:
                return await self._reject(scope, receive, send)
            return await self.app(scope, receive, send)
        messages, seen = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                return await self._reject(scope, receive, send)
            if not message.get("more_body", False):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope, receive, send):
        response = JSONResponse({"error": f"request body larger than {self.max_bytes} bytes", "details": []},
                                status_code=413)
        await response(scope, receive, send)


def warm_up() -> None:
    """One tiny run, so the first request does not pay autograd's one-time start-up (about 2 s)."""
    engine.run("bowl", "adam", [[1.0, 1.0]], 2)


def create_app(limits: Limits | None = None) -> FastAPI:
    """The web lab's FastAPI app (serve it with uvicorn; ``optimlab serve`` does)."""
    limits = limits or Limits()
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        warm_up()
        yield

    # no Swagger / ReDoc pages: they load their scripts from a CDN; the schema itself is served
    app = FastAPI(title="optimlab web lab", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json",
                  lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    slots = threading.BoundedSemaphore(limits.max_concurrent)
    app.state.limits = limits

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse({"error": exc.message, "details": exc.details}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        # never echo the input back: it may hold NaN / Infinity, which JSON cannot carry
        details = []
        for e in exc.errors():
            if e.get("type") == "json_invalid":
                where = e.get("loc", ())[-1]
                details.append({"field": "request", "message": f"the body is not valid JSON (at character {where})"})
            elif e.get("type") == "missing" and tuple(e.get("loc", ())) == ("body",):
                details.append({"field": "request", "message": "the request has no body: send a JSON object"})
            else:
                details.append({"field": _loc(tuple(e.get("loc", ()))), "message": _message(e)})
        if not details:
            details = [{"field": "request", "message": "invalid request"}]
        first = details[0]
        text = first["message"] if first["field"] == "request" else f"{first['field']}: {first['message']}"
        more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
        return JSONResponse({"error": text + more, "details": details}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail), "details": []}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/vendor/plotly.min.js", include_in_schema=False)
    def plotly_js():
        return FileResponse(plotly_js_path(), media_type="text/javascript",
                            headers={"Cache-Control": "public, max-age=86400"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/meta")
    def api_meta():
        return json_response(meta(limits))

    @app.get("/api/landscape/{name}")
    def api_landscape(name: str, resolution: int = 121):
        if len(name) > HARD_MAX_NAME:
            raise ApiError(404, f"unknown landscape (a name of {len(name)} characters; names have at most {HARD_MAX_NAME})")
        try:
            land = get_landscape(name)
        except ValueError as exc:
            raise ApiError(404, str(exc)) from None
        if not 10 <= resolution <= limits.max_grid:
            raise ApiError(422, f"resolution must be an integer in [10, {limits.max_grid}], got {resolution}",
                           [{"field": "resolution", "message": f"must be in [10, {limits.max_grid}]"}])
        return Response(content=landscape_grid_json(land.name, resolution), media_type="application/json")

    @app.post("/api/run")
    def api_run(req: RunRequest):
        try:
            check_limits(req, limits)
        except ValueError as exc:
            raise ApiError(422, str(exc)) from None
        if not slots.acquire(timeout=limits.queue_wait_s):
            raise ApiError(429, f"the server is busy with {limits.max_concurrent} other runs; try again")
        try:
            return json_response(run_request(req, limits))
        finally:
            slots.release()

    return app
