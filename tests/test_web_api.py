"""The web lab's API: its numbers are the engine's, and no request, however bad, gets a 5xx."""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import reference
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optimlab import catalogue
from optimlab.lab import LANDSCAPES, engine, get_landscape, metrics
from optimlab.web import Limits, create_app
from optimlab.web import app as web_app
from optimlab.web import compute as web_compute
from optimlab.web.schemas import knobs


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app()) as c:
        yield c


def as_tensor(nested) -> torch.Tensor:
    """JSON nested lists (null for non-finite) back to a float64 tensor (null -> nan)."""
    def fill(x):
        return [fill(v) for v in x] if isinstance(x, list) else (math.nan if x is None else x)
    return torch.tensor(fill(nested), dtype=torch.float64)


def same(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal bit for bit where finite; non-finite (sent as null) where the engine's is non-finite."""
    assert a.shape == b.shape
    fa, fb = torch.isfinite(a), torch.isfinite(b)
    assert torch.equal(fa, fb)
    assert torch.equal(a[fa], b[fb])


def post(client, body, **kw):
    return client.post("/api/run", json=body, **kw)


BASE = {"landscape": "elongated_bowl", "starts": [[-9.0, 2.0]], "steps": 20,
        "optimizers": [{"name": "adam", "lr": 0.3}]}


# --- the numbers ----------------------------------------------------------------------------------

def test_meta_lists_every_landscape_and_optimizer_with_the_engines_defaults(client):
    r = client.get("/api/meta")
    assert r.status_code == 200
    m = r.json()
    assert [l["name"] for l in m["landscapes"]] == list(LANDSCAPES)
    assert [o["name"] for o in m["optimizers"]] == catalogue.lab_names()
    assert "adafactor" in catalogue.names() and "adafactor" not in catalogue.lab_names()
    for o in m["optimizers"]:
        spec = catalogue.get(o["name"])
        assert o["default_lr"] == spec.lab_lr and o["colour"] == spec.colour
        kwargs, _ = engine.prepare(spec, 1, spec.lab_lr, {}, torch.float64)
        assert o["knobs"] == {k: float(kwargs[k]) for k in o["knobs"]}
        ranges = catalogue.knobs(spec)  # each optimizer's own knob ranges, as the catalogue declares them
        assert set(o["knob_ranges"]) == set(o["knobs"]) == set(ranges)
        for k, info in o["knob_ranges"].items():
            r = ranges[k]
            assert info == {"range": [r.low, r.high], "open": [r.low_open, r.high_open], "scale": r.scale,
                            "help": r.help}
            assert r.contains(o["knobs"][k]), (o["name"], k)  # the default lies in the range
    # every seed optimizer has the knobs the seeds talk about
    knobs = {o["name"]: set(o["knobs"]) for o in m["optimizers"]}
    assert knobs["sgd"] == set()
    assert knobs["momentum"] == knobs["nag"] == knobs["momentum-ewma"] == {"momentum"}
    assert knobs["adagrad"] == {"eps"} and knobs["rmsprop"] == {"alpha", "eps"}
    assert knobs["adam"] == knobs["nadam"] == knobs["adam-nobc"] == {"beta1", "beta2", "eps"}
    assert m["limits"]["max_steps"] == Limits().max_steps


@pytest.mark.parametrize("part", range(2))
def test_every_optimizer_matches_the_engine_number_for_number(client, part):
    """Requests with all lab optimizers (as many per request as the server allows), two starts,
    a schedule and changed knobs."""
    names = catalogue.lab_names()
    per = Limits().max_optimizers
    assert len(names) <= 2 * per  # two requests cover them all
    names = names[part * per:(part + 1) * per]
    starts = [[-1.2, 1.0], [0.5, 2.5]]
    opts = []
    for name in names:
        entry = {"name": name, "lr": catalogue.lab_lr(name, "rosenbrock") * 0.5}
        for k, v in knobs(catalogue.get(name)).items():
            entry[k] = {"eps": 1e-6}.get(k, round(v * 0.95, 6))
        opts.append(entry)
    body = {"landscape": "rosenbrock", "starts": starts, "steps": 40, "schedule": "warmup-cosine:5",
            "optimizers": opts, "tol": 1e-3}
    r = post(client, body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert [run["name"] for run in out["runs"]] == names
    refs = []
    for entry, got in zip(opts, out["runs"]):
        hyper = {k: v for k, v in entry.items() if k not in ("name", "lr")}
        ref = engine.run("rosenbrock", entry["name"], starts, 40, lr=entry["lr"], schedule="warmup-cosine:5", **hyper)
        refs.append(ref)
        same(as_tensor(got["path"]), ref.path)
        same(as_tensor(got["loss"]), ref.loss)
        assert got["lr"] == entry["lr"] and got["hyper"] == hyper
        # per optimizer, the metrics agree with metrics.rows of its own run (sums over steps may
        # round differently in a wider batch: 1e-12) ...
        for row, want in zip(got["metrics"], metrics.rows(ref, tol=1e-3)):
            assert row.keys() == want.keys()
            for k, v in want.items():
                if isinstance(v, float) and not math.isfinite(v):  # a run that left the reals: null
                    assert row[k] is None, k
                elif isinstance(v, float):
                    assert row[k] == pytest.approx(v, rel=1e-12, abs=1e-300), k
                else:
                    assert row[k] == v, k
    # ... and bit for bit with metrics.rows of all the engine's runs as one batch (what the server does)
    batch = engine.Run(refs[0].landscape, refs[0].optimizer, torch.cat([r.path for r in refs], 1),
                       torch.cat([r.loss for r in refs], 1), torch.cat([r.lr for r in refs]), refs[0].lr_factors)
    rows = json.loads(json.dumps(metrics.rows(batch, tol=1e-3)))
    sent = [row for got in out["runs"] for row in got["metrics"]]
    assert [{**r, "optimizer": s["optimizer"]} for r, s in zip(rows, sent)] == sent
    assert [s["optimizer"] for s in sent] == [name for name in names for _ in starts]
    assert out["lr_factors"] == ref.lr_factors and out["f_star"] == get_landscape("rosenbrock").min_value


def _rosenbrock_grad(p):
    x, y = p
    return np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])


# lab optimizer -> (NumPy reference of tests/reference.py, its arguments from the request's knobs)
INDEPENDENT = {
    "sgd": (lambda k: reference.ref_sgd, lambda k: {}),
    "momentum": (lambda k: reference.ref_sgd, lambda k: {"momentum": k["momentum"]}),
    "nesterov": (lambda k: reference.ref_sgd, lambda k: {"momentum": k["momentum"], "nesterov": True}),
    "momentum-ewma": (lambda k: reference.ref_sgd, lambda k: {"momentum": k["momentum"], "momentum_form": "ewma"}),
    "adagrad": (lambda k: reference.ref_adagrad, lambda k: {"eps": k["eps"]}),
    "adagrad-seed": (lambda k: reference.ref_adagrad, lambda k: {"eps": k["eps"], "eps_inside_sqrt": True}),
    "rmsprop": (lambda k: reference.ref_rmsprop, lambda k: {"alpha": k["alpha"], "eps": k["eps"]}),
    "adam": (lambda k: reference.ref_adam, lambda k: {"betas": (k["beta1"], k["beta2"]), "eps": k["eps"]}),
    "adam-nobc": (lambda k: reference.ref_adam,
                  lambda k: {"betas": (k["beta1"], k["beta2"]), "eps": k["eps"], "bias_correction": False}),
    "nadam": (lambda k: reference.ref_nadam, lambda k: {"betas": (k["beta1"], k["beta2"]), "eps": k["eps"]}),
}


def test_the_numbers_match_independent_numpy_references(client, monkeypatch):
    """Not the engine the server calls: float64 NumPy loops written from each formula
    (tests/reference.py) on Rosenbrock's gradient written here, from two starts."""
    monkeypatch.setattr(reference, "grad_fn", lambda p, t: _rosenbrock_grad(p))
    starts, steps = [[-1.2, 1.0], [0.5, 2.5]], 30
    opts = []
    for name in INDEPENDENT:
        entry = {"name": name, "lr": catalogue.get(name).lab_lr * 0.5}
        entry.update({k: {"eps": 1e-6, "momentum": 0.8, "alpha": 0.95, "beta1": 0.85, "beta2": 0.99}[k]
                      for k in knobs(catalogue.get(name))})
        opts.append(entry)
    r = post(client, {"landscape": "rosenbrock", "starts": starts, "steps": steps, "optimizers": opts})
    assert r.status_code == 200, r.text
    for entry, got in zip(opts, r.json()["runs"]):
        ref_fn, ref_kwargs = INDEPENDENT[entry["name"]]
        k = {key: v for key, v in entry.items() if key not in ("name", "lr")}
        path = as_tensor(got["path"]).numpy()
        assert path.shape[0] == steps + 1 or path.shape[1] == steps + 1, path.shape
        finals = path[-1] if path.shape[0] == steps + 1 else path[:, -1]
        for s, start in enumerate(starts):
            want = ref_fn(k)(np.array(start), steps, entry["lr"], **ref_kwargs(k))
            np.testing.assert_allclose(finals[s], want, rtol=1e-9, atol=1e-12, err_msg=entry["name"])


def test_defaults_apply_when_knobs_are_left_out(client):
    r = post(client, {**BASE, "optimizers": [{"name": "nag"}, {"name": "rmsprop", "alpha": 0.9}]})
    assert r.status_code == 200
    nag, rms = r.json()["runs"]
    same(as_tensor(nag["path"]), engine.run("elongated_bowl", "nag", [[-9.0, 2.0]], 20).path)
    same(as_tensor(rms["path"]), engine.run("elongated_bowl", "rmsprop", [[-9.0, 2.0]], 20, alpha=0.9).path)
    assert nag["lr"] == catalogue.lab_lr("nag", "elongated_bowl") and nag["hyper"] == {"momentum": 0.9}


def test_a_diverging_run_sends_null_for_non_finite_numbers(client):
    body = {"landscape": "rosenbrock", "starts": [[-1.5, 2.5]], "steps": 60, "optimizers": [{"name": "sgd", "lr": 50.0}]}
    r = post(client, body)
    assert r.status_code == 200
    assert "NaN" not in r.text and "Infinity" not in r.text    # strict JSON
    got = r.json()["runs"][0]
    ref = engine.run("rosenbrock", "sgd", [[-1.5, 2.5]], 60, lr=50.0)
    assert not torch.isfinite(ref.path).all()                    # the case is what it claims to be
    same(as_tensor(got["path"]), ref.path)
    assert got["metrics"][0]["diverged"] is True


def test_landscape_grid_is_the_function_on_its_window(client):
    for name, res in (("himmelblau", 31), ("elongated_bowl", 10)):
        r = client.get(f"/api/landscape/{name}", params={"resolution": res})
        assert r.status_code == 200
        g = r.json()
        land = get_landscape(name)
        x, y, z = (torch.tensor(g[k], dtype=torch.float64) for k in ("x", "y", "z"))
        assert x.shape == (res,) and y.shape == (res,) and z.shape == (res, res)
        assert (x[0], x[-1]) == land.window[0] and (y[0], y[-1]) == land.window[1]
        assert torch.equal(z, land.fn(x[None, :].expand(res, res), y[:, None].expand(res, res)))
        if land.log_plot:
            assert g["log_offset"] == 1e-3  # the one log-plot transform: log10(f - f* + 0.001)
            want = torch.log10(torch.clamp(z - land.min_value, min=0) + 1e-3)
            assert torch.allclose(torch.tensor(g["zplot"], dtype=torch.float64), want, rtol=1e-12, atol=1e-12)
        else:
            assert g["zplot"] is None


def test_page_and_plotly_are_served_from_the_package_without_a_cdn(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert '<script src="/vendor/plotly.min.js">' in page.text
    js = client.get("/vendor/plotly.min.js")
    assert js.status_code == 200
    assert js.content == web_app.plotly_js_path().read_bytes() and b"plotly.js v" in js.content[:200]
    for path in ("/", "/static/app.js", "/static/style.css"):
        text = client.get(path).text
        assert client.get(path).status_code == 200
        assert "https://" not in text and "http://" not in text and "cdn" not in text.lower()


# --- bad requests -----------------------------------------------------------------------------------

def opt(**kw):
    return {**BASE, "optimizers": [{"name": "adam", "lr": 0.1, **kw}]}


BAD = [
    # (request body, expected status, a piece of the message)
    ({**BASE, "steps": 10**9}, 422, "steps"),
    ({**BASE, "steps": 2001}, 422, "steps must be <= 2000"),
    ({**BASE, "steps": 0}, 422, "steps"),
    ({**BASE, "steps": -5}, 422, "steps"),
    ({**BASE, "steps": 10.5}, 422, "steps"),
    ({**BASE, "steps": "100"}, 422, "steps"),
    ({**BASE, "steps": True}, 422, "steps"),
    ({**BASE, "steps": None}, 422, "steps"),
    ({k: v for k, v in BASE.items() if k != "steps"}, 422, "steps"),
    ({**BASE, "landscape": "rosenbrok"}, 422, "did you mean 'rosenbrock'"),
    ({**BASE, "landscape": ""}, 422, "landscape"),
    ({**BASE, "landscape": 3}, 422, "landscape"),
    ({**BASE, "landscape": "x" * 10_000}, 422, "landscape"),
    ({**BASE, "optimizers": [{"name": "adma"}]}, 422, "did you mean 'adam'"),
    ({**BASE, "optimizers": [{"name": "RMSPropp"}]}, 422, "unknown optimizer"),   # (names are case-insensitive)
    ({**BASE, "optimizers": []}, 422, "optimizers"),
    ({**BASE, "optimizers": [{"lr": 0.1}]}, 422, "name"),
    ({**BASE, "optimizers": ["adam"]}, 422, "optimizers[0]"),
    ({**BASE, "optimizers": [{"name": "sgd", "beta1": 0.9}]}, 422, "sgd has no hyperparameter 'beta1'"),
    ({**BASE, "optimizers": [{"name": "sgd", "momentum": 0.9}]}, 422, "sgd has no hyperparameter 'momentum'"),
    ({**BASE, "optimizers": [{"name": "adagrad", "alpha": 0.9}]}, 422, "adagrad has no hyperparameter"),
    ({**BASE, "optimizers": [{"name": "adam", "weight_decay": 0.1}]}, 422, "weight_decay"),
    (opt(lr=0), 422, "lr"),
    (opt(lr=-0.1), 422, "lr"),
    (opt(lr=1e3), 422, "lr"),
    (opt(lr="0.1"), 422, "lr"),
    (opt(lr=[0.1, 0.2]), 422, "lr"),
    (opt(lr=True), 422, "lr"),
    (opt(lr=float("nan")), 422, "finite"),
    (opt(lr=float("inf")), 422, "finite"),
    (opt(beta1=float("-inf")), 422, "finite"),
    (opt(beta1=1.0), 422, "beta1"),
    (opt(beta2=1.0), 422, "beta2: Input should be less than 1"),  # the web's own bound, not the engine's
    (opt(beta2=1.5), 422, "beta2"),
    (opt(beta2=-0.1), 422, "beta2"),
    (opt(eps=0.0), 422, "eps"),
    (opt(eps=-1e-8), 422, "eps"),
    (opt(eps=float("nan")), 422, "finite"),
    ({**BASE, "optimizers": [{"name": "momentum", "momentum": 1.0}]}, 422, "momentum"),
    ({**BASE, "optimizers": [{"name": "rmsprop", "alpha": 2}]}, 422, "alpha"),
    ({**BASE, "starts": []}, 422, "starts"),
    ({**BASE, "starts": [[1.0]]}, 422, "starts[0]"),
    ({**BASE, "starts": [[1.0, 2.0, 3.0]]}, 422, "starts[0]"),
    ({**BASE, "starts": [1.0, 2.0]}, 422, "starts[0]"),
    ({**BASE, "starts": [[float("nan"), 0.0]]}, 422, "finite"),
    ({**BASE, "starts": [[0.0, float("inf")]]}, 422, "finite"),
    ({**BASE, "starts": [[50.0, 0.0]]}, 422, "outside the elongated_bowl window"),
    ({**BASE, "starts": [[0.0, 0.0]] * 9}, 422, "at most 8 start points"),
    ({**BASE, "starts": [[0.0, 0.0]] * 65}, 422, "starts"),
    ({**BASE, "optimizers": [{"name": "sgd"}] * 13}, 422, "at most 12 optimizers"),
    ({**BASE, "steps": 1000, "optimizers": [{"name": "sgd"}] * 7}, 422, "steps x optimizers = 7000"),
    ({**BASE, "schedule": "bogus"}, 422, "schedule must be one of"),
    ({**BASE, "schedule": "warmup-cosine:20"}, 422, "warm-up length must be < steps"),
    ({**BASE, "schedule": "step:0:0.5"}, 422, "out of range"),
    ({**BASE, "schedule": "step:5:2"}, 422, "gamma"),
    ({**BASE, "schedule": "step:5:nan"}, 422, "gamma"),
    ({**BASE, "schedule": ""}, 422, "schedule"),
    ({**BASE, "tol": 0}, 422, "tol"),
    ({**BASE, "tol": float("inf")}, 422, "tol"),
    ({**BASE, "colour": "red"}, 422, "colour"),
    ({**BASE, "optimizers": [{"name": "adam", "lr": 0.1, "foo": 1}]}, 422, "foo"),
]


@pytest.mark.parametrize("body,status,piece", BAD, ids=[f"{i}-{b[2][:30]}" for i, b in enumerate(BAD)])
def test_a_bad_run_request_gets_a_4xx_with_a_message(client, body, status, piece):
    r = client.post("/api/run", content=json.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()
    assert isinstance(err["error"], str) and err["error"]
    assert piece in err["error"], err["error"]


@pytest.mark.parametrize("raw,piece", [
    ('{"landscape": "bowl"', "not valid JSON"),
    ("", "no body"),
    ("null", "valid dictionary"),
    ("[]", "valid dictionary"),
    ('"bowl"', "valid dictionary"),
    ('{"landscape": "bowl", "starts": [[1e999, 0]], "steps": 5, "optimizers": [{"name": "sgd"}]}', "finite"),
    ('{"landscape": "bowl", "starts": [[1, 0]], "steps": 5, "optimizers": [{"name": "sgd", "lr": -Infinity}]}', "finite"),
    ('{"landscape": "bowl", "starts": [[NaN, 0]], "steps": 5, "optimizers": [{"name": "sgd"}]}', "finite"),
    ('{"landscape": "bowl", "starts": [[1, 0]], "steps": 1e400, "optimizers": [{"name": "sgd"}]}', "steps"),
    ('{"landscape": "bowl", "starts": [[1, 0]], "steps": 99999999999999999999999999, "optimizers": [{"name": "sgd"}]}',
     "steps"),
])
def test_malformed_json_and_non_finite_literals_get_a_422(client, raw, piece):
    r = client.post("/api/run", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert piece in r.json()["error"]


def test_a_body_too_large_gets_a_413_declared_or_chunked(client):
    big = json.dumps({**BASE, "pad": "x" * 100_000})
    r = client.post("/api/run", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "larger than" in r.json()["error"]

    def chunks():
        for _ in range(100):
            yield b"x" * 1000
    r = client.post("/api/run", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = client.post("/api/run", content=b"{}", headers={"content-type": "application/json", "content-length": "abc"})
    assert r.status_code == 400 and "Content-Length" in r.json()["error"]
    deep = "[" * 5000 + "]" * 5000            # too deep for the JSON parser: still a 4xx
    r = client.post("/api/run", content=deep, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]
    # a small chunked body is read and handled as usual
    small = json.dumps(BASE).encode()
    r = client.post("/api/run", content=iter([small[:10], small[10:]]), headers={"content-type": "application/json"})
    assert r.status_code == 200


def test_landscape_route_errors(client):
    r = client.get("/api/landscape/rosenbrok")
    assert r.status_code == 404 and "did you mean 'rosenbrock'" in r.json()["error"]
    for res, piece in (("5000", "resolution must be"), ("3", "resolution must be"), ("abc", "resolution"),
                       ("1e3", "resolution")):
        r = client.get("/api/landscape/bowl", params={"resolution": res})
        assert r.status_code == 422 and piece in r.json()["error"]
    r = client.get("/api/landscape/" + "x" * 5000)
    assert r.status_code == 404 and len(r.json()["error"]) < 200
    r = client.get("/api/nothing")
    assert r.status_code == 404 and r.json()["error"]
    r = client.get("/api/run")
    assert r.status_code == 405 and r.json()["error"]


def test_the_point_cap_bounds_the_size_of_an_answer():
    with TestClient(create_app(Limits(max_points=100))) as c:
        assert post(c, {**BASE, "steps": 49, "starts": [[0.0, 0.0]] * 2}).status_code == 200
        r = post(c, {**BASE, "steps": 50, "starts": [[0.0, 0.0]] * 2})
        assert r.status_code == 422 and "102 points" in r.json()["error"]


def test_a_run_past_the_time_budget_is_stopped_with_a_422():
    with TestClient(create_app(Limits(time_budget_s=1e-6))) as c:
        r = post(c, {**BASE, "steps": 500})
        assert r.status_code == 422
        assert "time budget" in r.json()["error"]


def test_a_full_queue_answers_429_at_once_and_heavy_runs_never_delay_light_ones(monkeypatch):
    """One light slot, no light queue, one heavy slot with a queue of one: while a light and a heavy
    run are held inside the computation, a second light run is refused at once (429, Retry-After),
    a second heavy one waits and is refused when its time budget runs out, a third heavy one is
    refused at once; /api/meta answers throughout."""
    release = threading.Event()
    inside = threading.Semaphore(0)
    real_run = web_compute.fastpath.run

    def held_run(*args, **kw):
        inside.release()
        assert release.wait(20)
        return real_run(*args, **kw)

    limits = Limits(light_running=1, light_queue=0, heavy_running=1, heavy_queue=1, time_budget_s=2.0, light_cost=20)
    heavy = {**BASE, "steps": 30}
    with TestClient(create_app(limits)) as c:
        monkeypatch.setattr(web_compute.fastpath, "run", held_run)
        results = {}
        threads = [threading.Thread(target=lambda k=k, b=b: results.setdefault(k, post(c, b)))
                   for k, b in (("light", BASE), ("heavy", heavy))]
        for t in threads:
            t.start()
        try:
            assert inside.acquire(timeout=20) and inside.acquire(timeout=20)   # both are computing
            t0 = time.monotonic()
            r = post(c, BASE)
            assert r.status_code == 429 and "busy" in r.json()["error"] and r.headers["retry-after"] == "1"
            assert time.monotonic() - t0 < 1.0                                 # at once, not after a wait
            waiting = threading.Thread(target=lambda: results.setdefault("waiting", post(c, heavy)))
            waiting.start()
            time.sleep(0.3)
            r = post(c, heavy)                                                 # the heavy line is full
            assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 4   # 1 .. 2 x the budget
            t0 = time.monotonic()
            assert c.get("/api/meta").status_code == 200 and time.monotonic() - t0 < 1.0
            waiting.join(10)
            assert results["waiting"].status_code == 429 and "time budget" in results["waiting"].json()["error"]
        finally:
            release.set()
            for t in threads:
                t.join(20)
        # the runs that were admitted in time finish (past the budget: the deadline counts the hold)
        assert {results["light"].status_code, results["heavy"].status_code} <= {200, 422}


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(landscape=st.sampled_from(["bowl", "saddle", "rosenbrok"]) | JSONISH,
       starts=st.just([[0.5, 0.5]]) | JSONISH,
       steps=st.integers(-3, 30) | JSONISH,
       optimizers=st.lists(st.fixed_dictionaries({"name": st.sampled_from(catalogue.lab_names()) | JSONISH},
                                                 optional={"lr": st.floats() | JSONISH, "beta1": st.floats(),
                                                           "momentum": st.floats(), "eps": st.floats()}),
                           max_size=3) | JSONISH,
       schedule=st.sampled_from(["constant", "cosine", "step:3:0.5", "warmup:40"]) | JSONISH)
def test_no_request_gets_a_5xx(client, landscape, starts, steps, optimizers, schedule):
    body = {"landscape": landscape, "starts": starts, "steps": steps, "optimizers": optimizers, "schedule": schedule}
    r = client.post("/api/run", content=json.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code in (200, 422), r.text
    if r.status_code == 422:
        assert r.json()["error"]


# --- the command --------------------------------------------------------------------------------------

def test_optimlab_serve_starts_a_server_on_localhost_and_stops():
    from optimlab.web.cli import served

    with served() as (url, proc):
        port = int(url.rsplit(":", 1)[1])
        with urllib.request.urlopen(url + "/api/meta", timeout=30) as resp:
            meta = json.load(resp)
        assert [l["name"] for l in meta["landscapes"]] == list(LANDSCAPES)
        # bound to 127.0.0.1: the server is not listening on the machine's other addresses
        conns = Path("/proc/net/tcp").read_text().splitlines()[1:]
        listening = [c.split()[1] for c in conns if c.split()[3] == "0A" and int(c.split()[1].split(":")[1], 16) == port]
        assert listening == ["0100007F:%04X" % port]
        # and answers only to this machine's names (DNS rebinding): another Host gets a 400
        req = urllib.request.Request(url + "/api/meta", headers={"Host": f"evil.example:{port}"})
        with pytest.raises(urllib.error.HTTPError) as bad:
            urllib.request.urlopen(req, timeout=30)
        assert bad.value.code == 400 and "Host" in json.loads(bad.value.read())["error"]
    assert proc.poll() is not None


def test_optimlab_serve_refuses_bad_settings_before_starting(capsys):
    from optimlab.cli import main

    assert main(["serve", "--max-steps", "0"]) == 2
    assert main(["serve", "--port", "70000"]) == 2
    assert main(["serve", "--time-budget", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--max-steps must be in [1, 100000]" in err and "--port must be in [0, 65535]" in err
