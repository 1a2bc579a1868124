"""The web lab's server: a FastAPI app that runs the batched engine's numbers for the page.

Routes::

    GET  /                          the page (static/index.html)
    GET  /static/...                the page's script and style
    GET  /vendor/plotly.min.js      plotly.js, served from the installed ``plotly`` package (no CDN)
    GET  /api/meta                  landscapes, optimizers (knobs, defaults, colours), schedules, limits
    GET  /api/health                whether the worker processes are ready
    GET  /api/landscape/{name}      the landscape on a grid (for the contour and the 3-D surface)
    GET  /api/presets               the tour's sections and their "try it" links (see ``presets``)
    POST /api/run                   trajectories, losses and metrics (see ``schemas.RunRequest``)
    POST /api/formula               a landscape typed as a formula in x and y (see :mod:`.stability`)
    POST /api/stability             the (lr, beta) stability / speed map (see :mod:`.stability`)
    GET  /api/openapi.json          the schema of all of the above

The numbers of ``/api/run`` are ``optimlab.lab.engine.run`` and ``optimlab.lab.metrics.rows``
for the same arguments, bit for bit (computed by :mod:`.fastpath`; float64, non-finite values
sent as ``null``). The jobs are split: :mod:`.compute` (what is computed), :mod:`.admission` (who
computes when), :mod:`.schemas` (what is accepted and sent), this module (routes and guards).

Every bad request gets a 4xx whose body is ``{"error": "<one line>", "details": [...]}``
(:class:`~.schemas.ErrorResponse`): 422 for a request that is not valid or asks for more than
:class:`~.schemas.Limits` allow (or runs past the time budget), 404 for an unknown landscape in a
path, 413 for a body that is too large, 400 for a bad ``Host`` header where the server is bound to
this machine, 429 (with ``Retry-After``) when the server is busy.
"""

from __future__ import annotations

import asyncio
import os
import time
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..lab.landscapes import get_landscape
from .admission import Admission
from .compute import ApiError, dumps, landscape_grid_json, meta, run_json, warm_up, warm_up_worker
from . import presets as tour_presets
from .schemas import (HARD_MAX_NAME, ErrorResponse, Health, LandscapeGrid, Limits, MetaResponse, PresetsResponse,
                      RunRequest, RunResponse, check_limits, cost)

STATIC = Path(__file__).parent / "static"

#: the Host header values a server bound to this machine answers (DNS rebinding protection)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def plotly_js_path() -> Path:
    """``plotly.min.js`` as shipped inside the ``plotly`` Python package."""
    return Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(content=dumps(payload), media_type="application/json", status_code=status)


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
        # the time budget of a run counts from here: before its body is read and validated
        scope.setdefault("state", {})["arrived"] = time.monotonic()
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


class HostCheck:
    """ASGI middleware: a request whose ``Host`` header is not one of ``hosts`` (port ignored) gets
    a 400 before the app sees it, so a page on another site cannot reach a server bound to this
    machine by pointing its own name at 127.0.0.1 (DNS rebinding)."""

    def __init__(self, app, hosts: Iterable[str]):
        self.app = app
        self.hosts = {h.lower() for h in hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1").lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name not in self.hosts:
            response = JSONResponse({"error": f"this server answers only to the Host names {sorted(self.hosts)}",
                                     "details": [{"field": "Host", "message": "not an allowed host name"}]},
                                    status_code=400)
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)


ERRORS = {status: {"model": ErrorResponse, "description": text} for status, text in [
    (400, "a bad Host header or Content-Length"), (413, "a request body larger than the server allows"),
    (422, "a request that is not valid, asks for more than the server allows, or ran past the time budget"),
    (429, "the server is busy (see Retry-After)")]}


def create_app(limits: Limits | None = None, allowed_hosts: Iterable[str] | None = None,
               processes: bool = False, tour: str | None = None) -> FastAPI:
    """The web lab's FastAPI app (serve it with uvicorn; ``optimlab serve`` does).

    ``allowed_hosts``: the ``Host`` names to answer (``optimlab serve`` passes
    :data:`LOOPBACK_HOSTS` when bound to this machine); None answers any.
    ``processes``: compute runs in worker processes (one per run slot, started and warmed up in
    the background when the app starts; runs use threads until they are ready) instead of threads. A run is Python float code: in a thread it holds the GIL
    that the event loop needs to answer ``/api/meta`` and the page, so ``optimlab serve`` uses
    processes; threads suit tests that patch the computation in-process.
    ``tour``: a built ``tour.json`` whose "try it" links ``/api/presets`` serves (default: the
    packaged presets, :mod:`.presets`).
    """
    limits = limits or Limits()
    admission = Admission(limits)
    executor: list[Any] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        warm_up(schedules=not processes)
        pool, starting = None, None
        if processes:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            n = limits.light_running + limits.heavy_running
            pool = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=warm_up_worker, initargs=(os.getpid(),))

            async def start() -> None:
                # every worker started and warmed up (each imports torch): until then runs use threads
                loop = asyncio.get_running_loop()
                await asyncio.gather(*[loop.run_in_executor(pool, time.sleep, 0.5) for _ in range(n)])
                executor.append(pool)

            starting = asyncio.create_task(start())
        try:
            yield
        finally:
            if starting is not None:
                starting.cancel()
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    # no Swagger / ReDoc pages: they load their scripts from a CDN; the schema itself is served
    app = FastAPI(title="optimlab web lab", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json",
                  lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    if allowed_hosts is not None:
        app.add_middleware(HostCheck, hosts=allowed_hosts)
    app.state.limits = limits
    app.state.admission = admission
    meta_json = dumps(meta(limits))
    presets_json = dumps(tour_presets.load(tour))

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse({"error": exc.message, "details": exc.details}, status_code=exc.status, headers=exc.headers)

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

    @app.get("/api/meta", response_model=None, responses={200: {"model": MetaResponse}, **ERRORS})
    async def api_meta() -> Response:
        """Landscapes, optimizers, knobs and limits (computed once: never waits for a run)."""
        return Response(content=meta_json, media_type="application/json")

    @app.get("/api/presets", response_model=None, responses={200: {"model": PresetsResponse}, **ERRORS})
    async def api_presets() -> Response:
        """The tour's sections and their "try it" links, with the numbers the tour reports for each
        (read once when the server starts; never reruns the tour)."""
        return Response(content=presets_json, media_type="application/json")

    @app.get("/api/health", response_model=None, responses={200: {"model": Health}, **ERRORS})
    async def api_health() -> Response:
        """Where runs compute now: ``processes`` once the worker processes are ready, else ``threads``."""
        return json_response({"compute": "processes" if executor else "threads",
                              "ready": bool(executor) or not processes})

    @app.get("/api/landscape/{name}", response_model=None,
             responses={200: {"model": LandscapeGrid}, 404: {"model": ErrorResponse}, **ERRORS})
    async def api_landscape(name: str, resolution: int = 121) -> Response:
        """The landscape on a ``resolution x resolution`` grid over its window."""
        if len(name) > HARD_MAX_NAME:
            raise ApiError(404, f"unknown landscape (a name of {len(name)} characters; names have at most {HARD_MAX_NAME})")
        try:
            land = get_landscape(name)
        except ValueError as exc:
            raise ApiError(404, str(exc)) from None
        if not 10 <= resolution <= limits.max_grid:
            raise ApiError(422, f"resolution must be an integer in [10, {limits.max_grid}], got {resolution}",
                           [{"field": "resolution", "message": f"must be in [10, {limits.max_grid}]"}])
        text = await anyio.to_thread.run_sync(landscape_grid_json, land.name, resolution)
        return Response(content=text, media_type="application/json")

    @app.post("/api/run", response_model=None, responses={200: {"model": RunResponse}, **ERRORS})
    async def api_run(req: RunRequest, request: Request) -> Response:
        """Every optimizer from every start; admitted by cost, within the time budget."""
        try:
            check_limits(req, limits)
        except ValueError as exc:
            raise ApiError(422, str(exc)) from None
        text = await admission.compute(request, cost(req), executor, run_json, req)
        return Response(content=text, media_type="application/json")

    from .stability import add_routes  # the formula landscape and the (lr, beta) map

    add_routes(app, limits, admission, executor, ERRORS)
    return app
