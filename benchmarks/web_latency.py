"""Server time of the web lab's typical request, and /api/meta while heavy runs compute.

Starts ``optimlab serve`` on a free loopback port (a separate process, as a user runs it), then:

1. the typical page request (4 optimizers x 1 start x 300 steps on the page's default landscape)
   sent ``--repeat`` times one after another: median of the server's own ``elapsed_s`` (the
   computation) and of the wall time seen by the client, printed with the request; then the same
   request with the step-through state (``"state": true``) and with gradient noise (``sd=0.5``,
   which the engine computes), alternating with the plain one: medians and ratios;
2. the same computation through ``optimlab.lab.engine.run`` + ``metrics.rows`` per optimizer in
   this process (what the server did before the fast path), alternating with the fast path:
   median ratio;
3. ``/api/meta`` latency (median, p95, max) while 4 client threads keep sending a heavy request
   (8 starts x 4 optimizers x 1,000 steps on Rastrigin) for ``--load-seconds``.

Exit status 1 when the typical request's median server time, with or without the state, is over
``--target-ms`` (50) or the p95 of /api/meta under load is over 100 ms.

    PYTHONPATH=src python benchmarks/web_latency.py [--repeat 30] [--load-seconds 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import urllib.error
import urllib.request

TYPICAL = {"landscape": "elongated_bowl", "starts": [[-9.0, 2.0]], "steps": 300,
           "optimizers": [{"name": "sgd", "lr": 0.18}, {"name": "momentum", "lr": 0.02, "momentum": 0.9},
                          {"name": "nag", "lr": 0.02, "momentum": 0.9}, {"name": "adam", "lr": 0.5}]}
HEAVY = {"landscape": "rastrigin", "starts": [[0.1 * i - 0.3, 0.2] for i in range(8)], "steps": 1000,
         "optimizers": [{"name": n} for n in ("sgd", "momentum", "adam", "rmsprop")]}


def post(url: str, body: dict, timeout: float = 60) -> tuple[int, dict, float]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url + "/api/run", data=data, headers={"content-type": "application/json"})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.load(r), time.perf_counter() - t0
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}"), time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--load-seconds", type=float, default=8.0)
    ap.add_argument("--target-ms", type=float, default=50.0)
    args = ap.parse_args()

    from optimlab.web.cli import served

    with served(ready="/api/health") as (url, _):
        for _ in range(3):
            post(url, TYPICAL)
        server, wall = [], []
        for _ in range(args.repeat):
            status, out, dt = post(url, TYPICAL)
            assert status == 200, out
            server.append(out["elapsed_s"] * 1e3)
            wall.append(dt * 1e3)
        med = statistics.median(server)
        print(f"typical request: {json.dumps(TYPICAL)}")
        print(f"  server time: median {med:.1f} ms (min {min(server):.1f}, max {max(server):.1f}) over {args.repeat}; "
              f"client wall time: median {statistics.median(wall):.1f} ms")

        # the step-through mode (each step's gradient and state: "state": true) and gradient noise
        # (the engine's stochastic mode), alternating with the plain request
        variants = {"plain": TYPICAL, "state": {**TYPICAL, "state": True},
                    "noise": {**TYPICAL, "noise": {"sd": 0.5, "seed": 0}}}
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(max(3, args.repeat // 3)):
            for k, body in variants.items():
                status, out, _ = post(url, body)
                assert status == 200, out
                times[k].append(out["elapsed_s"] * 1e3)
        state_med = statistics.median(times["state"])
        print("  alternating: " + ", ".join(f"{k} median {statistics.median(v):.1f} ms" for k, v in times.items())
              + f"; state / plain {state_med / statistics.median(times['plain']):.2f}x, "
              f"noise / plain {statistics.median(times['noise']) / statistics.median(times['plain']):.1f}x")

        # the same work the old way (engine + metrics per optimizer) against the fast path, alternating
        import torch

        from optimlab.lab import engine, metrics
        from optimlab.web import fastpath
        torch.set_num_threads(1)

        def old() -> None:
            for o in TYPICAL["optimizers"]:
                kw = {k: v for k, v in o.items() if k != "name"}
                metrics.rows(engine.run(TYPICAL["landscape"], o["name"], TYPICAL["starts"], TYPICAL["steps"], **kw))

        def new() -> None:
            for o in TYPICAL["optimizers"]:
                kw = {k: v for k, v in o.items() if k != "name"}
                fastpath.run(TYPICAL["landscape"], o["name"], TYPICAL["starts"], TYPICAL["steps"], **kw)

        old(), new()
        ratios = []
        for _ in range(5):
            t0 = time.perf_counter(); old(); t_old = time.perf_counter() - t0
            t0 = time.perf_counter(); new(); t_new = time.perf_counter() - t0
            ratios.append(t_old / t_new)
        print(f"  engine + per-run metrics / fast path (trajectories only), same process: median ratio "
              f"{statistics.median(ratios):.1f}x")

        # /api/meta while heavy runs keep the server busy
        stop = threading.Event()
        codes: list[int] = []

        def heavy() -> None:
            while not stop.is_set():
                status, _, _ = post(url, HEAVY)
                codes.append(status)
                if status == 429:
                    time.sleep(0.05)

        workers = [threading.Thread(target=heavy) for _ in range(4)]
        for w in workers:
            w.start()
        meta = []
        t_end = time.monotonic() + args.load_seconds
        while time.monotonic() < t_end:
            t0 = time.perf_counter()
            urllib.request.urlopen(url + "/api/meta", timeout=30).read()
            meta.append((time.perf_counter() - t0) * 1e3)
            time.sleep(0.05)
        stop.set()
        for w in workers:
            w.join(60)
        meta.sort()
        p95 = meta[int(0.95 * (len(meta) - 1))]
        print(f"/api/meta under 4 heavy clients ({json.dumps(HEAVY)[:80]}...): median {statistics.median(meta):.1f} ms, "
              f"p95 {p95:.1f} ms, max {meta[-1]:.1f} ms over {len(meta)}; heavy answers: "
              f"{ {c: codes.count(c) for c in sorted(set(codes))} }")
        ok = med <= args.target_ms and state_med <= args.target_ms and p95 < 100
        print("PASS" if ok else f"FAIL (target: median <= {args.target_ms:g} ms with and without state, "
                                "/api/meta p95 < 100 ms)")
        return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
