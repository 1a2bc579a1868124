"""``optimlab serve``: the interactive lab on a local web server."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from typing import Iterator


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(args) -> int:
    import uvicorn

    from .app import LOOPBACK_HOSTS, create_app
    from .schemas import HARD_MAX_STEPS, Limits

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in [0, 65535], got {args.port}")
    if not 1 <= args.max_steps <= HARD_MAX_STEPS or not args.time_budget > 0:
        raise ValueError(f"--max-steps must be in [1, {HARD_MAX_STEPS}] and --time-budget > 0")
    default = Limits()
    limits = Limits(max_steps=args.max_steps, max_total_steps=max(default.max_total_steps, args.max_steps),
                    time_budget_s=args.time_budget)
    loopback = _is_loopback(args.host)
    if not loopback:
        print(f"optimlab serve: warning: listening on {args.host}, not only this machine; "
              "the lab has no authentication", file=sys.stderr)
    print(f"optimlab serve: open http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}/ "
          "(Ctrl+C stops)", file=sys.stderr)
    app = create_app(limits, allowed_hosts=LOOPBACK_HOSTS if loopback else None, processes=True, tour=args.tour)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def register(sub) -> None:
    p = sub.add_parser("serve", help="the interactive lab in the browser (a local web server)",
                       description="Start the web lab: pick a landscape, click a start, drag hyperparameters, "
                                   "watch the optimizers move. Bound to 127.0.0.1 unless --host says otherwise.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--max-steps", type=int, default=2000, help="most steps one request may ask for (default 2000)")
    p.add_argument("--time-budget", type=float, default=5.0,
                   help="seconds one run request may take before it is stopped with an error (default 5)")
    p.add_argument("--tour", default=None, metavar="TOUR_JSON",
                   help="serve the 'try it' presets of this built tour.json (default: the packaged presets)")
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"],
                   help="server log level (default warning)")
    p.set_defaults(func=serve)


@contextmanager
def served(*args: str, ready: str = "/api/meta", timeout_s: float = 180.0) -> Iterator[tuple[str, subprocess.Popen]]:
    """``optimlab serve`` in a subprocess on a free loopback port (for tests and benchmarks):
    yields ``(url, process)`` once ``GET ready`` answers 200 (``/api/health``: once its JSON says
    ``ready``), and always stops the process."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "optimlab.cli", "serve", "--port", str(port), *args],
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(url + ready, timeout=10) as r:
                    if r.status == 200 and (ready != "/api/health" or json.load(r)["ready"]):
                        break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"optimlab serve exited: {proc.stderr.read().decode()[-2000:]}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"optimlab serve did not answer {ready} within {timeout_s:g} s")
            time.sleep(0.2)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
