"""``optimlab serve``: the interactive lab on a local web server."""

from __future__ import annotations

import ipaddress
import sys


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(args) -> int:
    import uvicorn

    from .app import create_app
    from .schemas import HARD_MAX_STEPS, Limits

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in [0, 65535], got {args.port}")
    if not 1 <= args.max_steps <= HARD_MAX_STEPS or not args.time_budget > 0:
        raise ValueError(f"--max-steps must be in [1, {HARD_MAX_STEPS}] and --time-budget > 0")
    default = Limits()
    limits = Limits(max_steps=args.max_steps, max_total_steps=max(default.max_total_steps, args.max_steps),
                    time_budget_s=args.time_budget)
    if not _is_loopback(args.host):
        print(f"optimlab serve: warning: listening on {args.host}, not only this machine; "
              "the lab has no authentication", file=sys.stderr)
    print(f"optimlab serve: open http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}/ "
          "(Ctrl+C stops)", file=sys.stderr)
    uvicorn.run(create_app(limits), host=args.host, port=args.port, log_level=args.log_level)
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
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"],
                   help="server log level (default warning)")
    p.set_defaults(func=serve)
