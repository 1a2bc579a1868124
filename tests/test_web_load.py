"""The server under load on loopback (bounded: about 10 s): 48 clients keep sending heavy runs
(each waiting as long as a 429's ``Retry-After`` says before sending again).

``optimlab serve`` runs as its own process (as a user starts it). While 48 client threads post
heavy runs in a loop for a few seconds, the test polls ``/api/meta`` and sends light runs. What
must hold (issue: "the server freezes under ~40 concurrent /api/run calls"):

- ``/api/meta`` keeps answering: p95 under 100 ms, or, on a machine so busy that even an idle
  server is slow, within 5x the p95 measured on the idle server just before, and never 2 s
  (a freeze, as before the fix, took 10 s; on the shared 2-core test machine at load 15 the
  p95 measured 90-400 ms, idle 25-90 ms: ``benchmarks/web_latency.py`` prints the numbers);
- every request is answered; light runs get 200 or 429, never a time-out;
- no 200 arrives later than the time budget plus a small margin (the budget counts queueing);
- a full queue answers 429 with ``Retry-After`` at once.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request

import pytest

from optimlab.web.cli import served

BUDGET_S = 2.0
MARGIN_S = 1.5  # HTTP and scheduling on a loaded 2-core machine (the server's own clock: 0.25 s)
HEAVY = {"landscape": "bowl", "starts": [[0.3 * i - 1.0, 0.5] for i in range(8)], "steps": 400,
         "optimizers": [{"name": n} for n in ("sgd", "momentum", "adam", "rmsprop")]}
LIGHT = {"landscape": "bowl", "starts": [[1.0, 1.0]], "steps": 100, "optimizers": [{"name": "adam"}]}


def post(url: str, body: dict) -> tuple[int, float, dict, dict]:
    req = urllib.request.Request(url + "/api/run", data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, time.monotonic() - t0, dict(r.headers), json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, time.monotonic() - t0, dict(e.headers), json.loads(e.read() or b"{}")


def get_ms(url: str) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url + "/api/meta", timeout=30) as r:
        r.read()
        assert r.status == 200
    return (time.perf_counter() - t0) * 1e3


def p95(values: list[float]) -> float:
    s = sorted(values)
    return s[int(0.95 * (len(s) - 1))]


@pytest.fixture(scope="module")
def server():
    with served("--time-budget", str(BUDGET_S), ready="/api/health") as (url, _):   # workers ready
        yield url


def test_48_heavy_clients_never_freeze_the_server(server):
    url = server
    idle = [get_ms(url) for _ in range(20)]
    stop = threading.Event()
    heavy: list[tuple[int, float, dict, dict]] = []

    def client() -> None:
        while not stop.is_set():
            answer = post(url, HEAVY)
            heavy.append(answer)
            if answer[0] == 429:  # a client that does what Retry-After says (the page does)
                stop.wait(float(answer[2].get("Retry-After") or answer[2].get("retry-after")))

    clients = [threading.Thread(target=client) for _ in range(48)]
    for c in clients:
        c.start()
    meta, light = [], []
    try:
        t_end = time.monotonic() + 6.0
        while time.monotonic() < t_end:
            meta.append(get_ms(url))
            if len(meta) % 5 == 0:
                light.append(post(url, LIGHT))
            time.sleep(0.05)
    finally:
        stop.set()
        for c in clients:
            c.join(60)
    assert not any(c.is_alive() for c in clients), "a client never got an answer"
    statuses = [h[0] for h in heavy]
    assert statuses and set(statuses) <= {200, 422, 429}, set(statuses)
    assert 429 in statuses and 200 in statuses + [h[0] for h in light], {s: statuses.count(s) for s in set(statuses)}
    # 429s come at once with Retry-After; 200s within the budget (queueing included) plus a margin
    refused = [h for h in heavy if h[0] == 429]
    assert all("Retry-After" in h[2] or "retry-after" in h[2] for h in refused)
    assert sorted(h[1] for h in refused)[len(refused) // 2] < 1.0
    late = [(round(h[1], 2), round(h[3]["queued_s"], 2), round(h[3]["elapsed_s"], 2)) for h in heavy + light
            if h[0] == 200 and h[1] > BUDGET_S + MARGIN_S]
    assert not late, f"200s later than the budget {BUDGET_S} s + {MARGIN_S} s (client, queued, computing): {late}"
    served = [h[3]["queued_s"] + h[3]["elapsed_s"] for h in heavy + light if h[0] == 200]
    assert max(served) <= BUDGET_S + 0.25, max(served)   # from arrival to the answer, by the server's clock
    assert {h[0] for h in light} <= {200, 429} and light
    assert all(h[1] < BUDGET_S + MARGIN_S for h in light)
    limit = max(100.0, 5 * p95(idle))
    assert p95(meta) < limit, (f"/api/meta p95 {p95(meta):.0f} ms under load (idle p95 {p95(idle):.0f} ms, "
                               f"max {max(meta):.0f} ms)")
    assert max(meta) < 2000, f"/api/meta took {max(meta):.0f} ms once: a freeze"


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry))
    return kids


def _gone_within(pids: list[int], seconds: float) -> list[int]:
    """The ones of ``pids`` still running after ``seconds`` (zombies count as gone)."""
    deadline = time.monotonic() + seconds
    while True:
        alive = []
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                        alive.append(pid)
            except OSError:
                pass
        if not alive or time.monotonic() > deadline:
            return alive


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
@pytest.mark.parametrize("how,ready", [("terminate", "/api/health"), ("kill", "/api/health"),
                                       ("terminate", "/api/meta")])
def test_the_worker_processes_leave_with_the_server(how, ready):
    """Stopped (SIGTERM, as Ctrl-C or a service manager does) or killed (SIGKILL), the server
    leaves no worker behind: each holds torch (~0.5 GB), and before the fix every stop of a
    loaded test server left three for good. ``/api/meta`` answers before the workers are ready:
    stopped then, the server leaves workers still importing torch, which must go too."""
    with served(ready=ready) as (url, proc):
        deadline = time.monotonic() + 30
        while len(workers := _children(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(workers) >= 2, workers  # the run slots' workers (and multiprocessing's tracker)
        getattr(proc, how)()
        proc.wait(15)
    assert _gone_within(workers, 30.0) == []
