"""The web lab's teaching layer on the server: update rules in /api/meta (one definition, the form
of each entry's options), the optimizer's state per step (equal to float64 references written here
from the formulas; positions unchanged), gradient noise (validated, bounded, the engine's numbers)
and the tour's presets (every link parses and runs, giving the numbers the tour reports)."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from optimlab import catalogue
from optimlab.lab import engine
from optimlab.lab.tour.core import parse_try_it, try_it_url
from optimlab.web import Limits, create_app
from optimlab.web import presets as web_presets


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(Limits(time_budget_s=120.0))) as c:
        yield c


def as_array(nested) -> np.ndarray:
    def fill(x):
        return [fill(v) for v in x] if isinstance(x, list) else (math.nan if x is None else x)
    return np.array(fill(nested), dtype=np.float64)


# --- update rules ---------------------------------------------------------------------------------

def lines(rule) -> dict[str, ET.Element]:
    out = {}
    for text in rule["mathml"]:
        el = ET.fromstring(text)
        assert el.tag == "math"
        out.setdefault(el.get("data-line"), el)
    return out


def knobs_in(el: ET.Element | None) -> set[str]:
    return set() if el is None else {mn.get("data-knob") for mn in el.iter("mn") if mn.get("data-knob")}


def one_minus(el: ET.Element, knob: str) -> bool:
    """``(1 - knob)`` appears in ``el``."""
    seq = [(c.tag, c.text, c.get("data-knob")) for c in el.iter() if c.tag in ("mn", "mo")]
    return any(seq[i][:2] == ("mn", "1") and seq[i + 1][1] == "\u2212" and seq[i + 2][2] == knob
               for i in range(len(seq) - 2))


def test_every_entry_in_the_page_has_its_rule_in_the_form_of_its_options(client):
    meta = client.get("/api/meta").json()
    rules = {o["name"]: o["rule"] for o in meta["optimizers"]}
    assert set(rules) == set(catalogue.lab_names())
    assert {n for n, r in rules.items() if r is not None} >= set(catalogue.main_names())
    for name, rule in rules.items():
        if catalogue.get(name).spec.display is None:  # Schedule-Free SGD / AdamW: no display yet
            assert rule is None, name
            continue
        assert rule is not None and rule["mathml"], name
        ls = lines(rule)
        assert "update" in ls and "grad" in ls, name
        # each number shown is the entry's own value of that hyperparameter (its lab default)
        entry = catalogue.get(name)
        kwargs, _ = engine.prepare(entry, 1, entry.lab_lr, {}, torch.float64)
        for el in ls.values():
            for mn in el.iter("mn"):
                k = mn.get("data-knob")
                if k in kwargs:
                    assert float(mn.text.replace("\u2212", "-")) == pytest.approx(float(kwargs[k]), rel=1e-5), (name, k)
        # the velocity / accumulator the step-through view shows are state the rule really has
        state = set(entry.rule.init_state(torch.zeros(1, 2), {"amsgrad": False, "initial_accumulator_value": 0.0,
                                                              "momentum": 0.0, "centered": False, "lr": 1e-3}))
        assert set(rule["roles"]) <= state | {"momentum_buffer"}, name
    rules = {n: rule for n, rule in rules.items() if rule is not None}
    assert [n for n, rule in rules.items() if rule["lookahead"]] == ["nag"]
    r = {n: lines(rules[n]) for n in rules}
    # plain GD: no velocity; torch momentum: v = mu v + g, w -= lr v
    assert "velocity" not in r["sgd"]
    assert knobs_in(r["momentum"]["velocity"]) == {"momentum"} and not one_minus(r["momentum"]["velocity"], "momentum")
    assert "lr" in knobs_in(r["momentum"]["update"])
    # the seed's EWMA momentum: (1 - mu) g in the velocity
    assert one_minus(r["momentum-ewma"]["velocity"], "momentum")
    # the seed's NAG: lr inside the velocity, the gradient at the look-ahead point, w -= v
    assert knobs_in(r["nag"]["velocity"]) == {"momentum", "lr"}
    assert knobs_in(r["nag"]["grad"]) == {"momentum"} and knobs_in(r["nag"]["update"]) == set()
    # torch's Nesterov: w -= lr (g + mu v)
    assert knobs_in(r["nesterov"]["update"]) == {"lr", "momentum"}
    # Adam: bias-corrected hats; the seed's Adam without them
    assert "correction" in r["adam"] and list(r["adam"]["update"].iter("mover"))
    assert "correction" not in r["adam-nobc"] and not any(list(e.iter("mover")) for e in r["adam-nobc"].values())
    # AdaGrad: eps outside the sqrt (torch) / inside it (the seed)
    inside = lambda el: knobs_in(next(el.iter("msqrt")))  # noqa: E731
    assert "eps" not in inside(r["adagrad"]["update"]) and "eps" in knobs_in(r["adagrad"]["update"])
    assert "eps" in inside(r["adagrad-seed"]["update"])
    assert one_minus(r["rmsprop"]["accumulator"], "alpha")
    assert "decay" in r["adamw"] and "decay" not in r["adam"]
    assert one_minus(r["nadam"]["velocity"], "beta1") and "momentum" in r["nadam"]
    # options that change the form change the display (the same function, other values)
    more = lines(catalogue.rule_display("rmsprop", {"momentum": 0.9, "centered": True}))
    assert {"centre", "momentum"} <= set(more)
    assert "lr" in lines(catalogue.rule_display("adagrad", {"lr_decay": 0.1}))


# --- the state per step ---------------------------------------------------------------------------

def rosenbrock_grad(w):
    x, y = w[..., 0], w[..., 1]
    return np.stack([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)], -1)


def reference(name, w0, steps, lr, **k):
    """float64 NumPy, from each formula: per step the gradient, velocity/first moment,
    accumulator and step ``w_t - w_{t-1}``."""
    w = np.array(w0, dtype=np.float64)
    v = np.zeros_like(w)
    a = np.zeros_like(w)
    out = {"grad": [], "velocity": [], "accumulator": [], "step": []}
    for t in range(1, steps + 1):
        mu = k.get("momentum", 0.0)
        g = rosenbrock_grad(w - mu * v if name == "nag" else w)
        old = w.copy()
        if name == "momentum":
            v = g.copy() if t == 1 else mu * v + g
            w = w - lr * v
        elif name == "nag":
            v = mu * v + lr * g
            w = w - v
        elif name == "momentum-ewma":
            v = mu * v + (1 - mu) * g
            w = w - lr * v
        elif name in ("adam", "adam-nobc"):
            b1, b2, eps = k["beta1"], k["beta2"], k["eps"]
            v = b1 * v + (1 - b1) * g
            a = b2 * a + (1 - b2) * g * g
            if name == "adam":
                w = w - lr * (v / (1 - b1 ** t)) / (np.sqrt(a / (1 - b2 ** t)) + eps)
            else:
                w = w - lr * v / (np.sqrt(a) + eps)
        elif name == "adagrad-seed":
            a = a + g * g
            w = w - lr * g / np.sqrt(a + k["eps"])
        elif name == "rmsprop":
            a = k["alpha"] * a + (1 - k["alpha"]) * g * g
            w = w - lr * g / (np.sqrt(a) + k["eps"])
        out["grad"].append(g)
        out["velocity"].append(v.copy())
        out["accumulator"].append(a.copy())
        out["step"].append(w - old)
    return {key: np.stack(val, 0) for key, val in out.items()}


STATE_CASES = {
    "momentum": {"lr": 5e-4, "momentum": 0.8},
    "nag": {"lr": 5e-4, "momentum": 0.85},
    "momentum-ewma": {"lr": 2e-3, "momentum": 0.7},
    "adam": {"lr": 0.05, "beta1": 0.85, "beta2": 0.99, "eps": 1e-6},
    "adam-nobc": {"lr": 0.05, "beta1": 0.8, "beta2": 0.95, "eps": 1e-7},
    "adagrad-seed": {"lr": 0.3, "eps": 1e-4},
    "rmsprop": {"lr": 0.01, "alpha": 0.9, "eps": 1e-6},
}


def test_the_state_per_step_equals_float64_references_and_positions_are_unchanged(client):
    starts, steps = [[-1.2, 1.0], [0.5, 2.5]], 25
    opts = [{"name": n, **k} for n, k in STATE_CASES.items()]
    body = {"landscape": "rosenbrock", "starts": starts, "steps": steps, "optimizers": opts}
    plain = client.post("/api/run", json=body)
    with_state = client.post("/api/run", json={**body, "state": True})
    assert plain.status_code == 200 and with_state.status_code == 200, with_state.text
    for got, bare, (name, k) in zip(with_state.json()["runs"], plain.json()["runs"], STATE_CASES.items()):
        assert got["path"] == bare["path"] and got["loss"] == bare["loss"] and "state" not in bare
        st = got["state"]
        roles = {r: n for n, r in st["roles"].items()}
        for s, start in enumerate(starts):
            ref = reference(name, start, steps, **k)
            np.testing.assert_allclose(as_array(st["grad"])[:, s], ref["grad"], rtol=1e-9, err_msg=name)
            path = as_array(got["path"])
            np.testing.assert_allclose(path[1:, s] - path[:-1, s], ref["step"], rtol=1e-9, atol=1e-15, err_msg=name)
            if "velocity" in roles:
                np.testing.assert_allclose(as_array(st["values"][roles["velocity"]])[:, s], ref["velocity"],
                                           rtol=1e-9, atol=1e-15, err_msg=name)
            if "accumulator" in roles:
                np.testing.assert_allclose(as_array(st["values"][roles["accumulator"]])[:, s], ref["accumulator"],
                                           rtol=1e-9, err_msg=name)
    assert {r["name"]: set(r["state"]["roles"].values()) for r in with_state.json()["runs"]} == {
        "momentum": {"velocity"}, "nag": {"velocity"}, "momentum-ewma": {"velocity"},
        "adam": {"velocity", "accumulator"}, "adam-nobc": {"velocity", "accumulator"},
        "adagrad-seed": {"accumulator"}, "rmsprop": {"accumulator"}}


@pytest.mark.parametrize("landscape", ["rosenbrock", "saddle", "himmelblau", "beale"])
def test_the_fast_paths_recorded_state_is_the_engines_bit_for_bit(landscape):
    """The state the page shows comes from the fast path's generated code (not a fallback):
    gradients, every state tensor and the path equal ``engine.run(record_state=True)``."""
    from optimlab.web import fastpath

    if fastpath.available():
        pytest.skip(fastpath.available())
    starts = [[0.5, 0.7], [-0.3, 0.2]]
    from test_web_fastpath import ENGINE_ONLY  # rules the fast path does not trace (the page runs the engine)

    for name in catalogue.lab_names():
        if name in ENGINE_ONLY:
            continue
        want = engine.run(landscape, name, starts, 30, record_grads=True, record_state=True)
        got = fastpath._run(landscape, name, starts, 30, lr=None, schedule=None, record=True)
        for a, b in [(got.path, want.path), (got.grads, want.grads),
                     *[(got.states[k], want.states[k]) for k in want.states]]:
            assert torch.equal(torch.isfinite(a), torch.isfinite(b)), name
            assert torch.equal(a[torch.isfinite(a)], b[torch.isfinite(b)]), name
        assert set(got.states) == set(want.states), name


def test_the_state_is_bounded(client):
    cap = Limits().max_state_steps
    body = {"landscape": "bowl", "starts": [[1.0, 1.0]], "steps": cap + 1, "optimizers": [{"name": "adam"}]}
    assert client.post("/api/run", json=body).status_code == 200
    r = client.post("/api/run", json={**body, "state": True})
    assert r.status_code == 422 and f"<= {cap}" in r.json()["error"] and "state" in r.json()["error"]
    r = client.post("/api/run", json={**body, "state": "yes"})
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "state"


# --- gradient noise -------------------------------------------------------------------------------

@pytest.mark.parametrize("landscape,noise,spec", [
    ("least_squares", {"batch": 1, "seed": 7}, "batch=1,seed=7"),
    ("rosenbrock", {"sd": 0.5, "seed": 3}, "sd=0.5,seed=3"),
    ("scaled_features", {"sd": 0.1, "batch": 8, "seed": 0}, "sd=0.1,batch=8,seed=0"),
])
def test_noise_runs_the_engines_stochastic_mode(client, landscape, noise, spec):
    start = [0.5, 0.5] if landscape != "least_squares" else [-1.0, 1.5]
    opts = [{"name": "sgd", "lr": 0.001}, {"name": "adam", "lr": 0.05}]
    r = client.post("/api/run", json={"landscape": landscape, "starts": [start], "steps": 60, "optimizers": opts,
                                      "noise": noise})
    assert r.status_code == 200, r.text
    assert r.json()["noise"] == spec
    for got, o in zip(r.json()["runs"], opts):
        want = engine.run(landscape, o["name"], [start], 60, lr=o["lr"], noise=spec)
        assert torch.equal(torch.tensor(got["path"], dtype=torch.float64), want.path)
    exact = client.post("/api/run", json={"landscape": landscape, "starts": [start], "steps": 60, "optimizers": opts})
    assert exact.json()["runs"][0]["path"] != r.json()["runs"][0]["path"] and exact.json()["noise"] is None


@pytest.mark.parametrize("noise,field,piece", [
    ({"sd": -0.1}, "noise.sd", "greater than or equal to 0"),
    ({"sd": 1e9}, "noise.sd", "less than or equal to 100"),
    ({"batch": 0}, "noise.batch", "greater than or equal to 1"),
    ({"batch": 1.5}, "noise.batch", "integer"),
    ({"batch": 10 ** 6}, "noise.batch", "less than or equal to 10000"),
    ({"seed": -1}, "noise.seed", "greater than or equal to 0"),
    ({"seed": "7"}, "noise.seed", "integer"),
    ({"sd": 0.1, "temperature": 2}, "noise.temperature", "Extra inputs"),
    ({"batch": 4}, "request", "data landscape"),
])
def test_bad_noise_gets_a_422_naming_the_field(client, noise, field, piece):
    r = client.post("/api/run", json={"landscape": "rosenbrock", "starts": [[0.0, 0.0]], "steps": 5,
                                      "optimizers": [{"name": "sgd"}], "noise": noise})
    assert r.status_code == 422, r.text
    detail = r.json()["details"][0]
    assert detail["field"] == field and piece in detail["message"], r.json()


# --- presets --------------------------------------------------------------------------------------

def run_body(link_hash: str) -> dict:
    req = parse_try_it("#" + link_hash)
    return {k: v for k, v in req.items() if v is not None}


def test_every_tour_section_has_a_working_preset_with_the_tours_numbers(client):
    data = client.get("/api/presets").json()
    assert data == web_presets.load()
    keys = [s["key"] for s in data["sections"]]
    # every section of the tour, in its order; the three that are not a 2-D run have no link
    assert len(keys) >= 18 and len(set(keys)) == len(keys)
    assert {s["key"] for s in data["sections"] if not s["links"]} == {"ewma", "keras", "tasks"} & set(keys)
    noisy = 0
    for s in data["sections"]:
        for link in s["links"]:
            body = run_body(link["hash"])
            noisy += body.get("noise") is not None
            r = client.post("/api/run", json={**body, "tol": data["tol"]})
            assert r.status_code == 200, (s["key"], link["text"], r.text)
            got = [(run["name"], m) for run in r.json()["runs"] for m in run["metrics"]]
            assert len(got) == len(link["numbers"]), s["key"]
            for (name, m), want in zip(got, link["numbers"]):
                assert name == want["optimizer"], s["key"]
                for key, value in want.items():
                    if key != "optimizer":
                        assert m[key] == value, (s["key"], link["text"], name, key)
    assert noisy >= 4


def test_a_try_it_link_parses_back_to_its_settings():
    url = try_it_url("least_squares", {"sgd": {"lr": 0.1}, "momentum-ewma": {"lr": 0.01, "momentum": 0.9}},
                     start=[(1, -2), (0.5, 0.25)], steps=300, noise="sd=0.2,batch=4,seed=7", schedule="step:50:0.5")
    assert parse_try_it(url) == {
        "landscape": "least_squares", "starts": [[1.0, -2.0], [0.5, 0.25]], "steps": 300, "schedule": "step:50:0.5",
        "optimizers": [{"name": "sgd", "lr": 0.1}, {"name": "momentum-ewma", "lr": 0.01, "momentum": 0.9}],
        "noise": {"sd": 0.2, "batch": 4, "seed": 7}}
    with pytest.raises(ValueError, match="unknown field 'colour'"):
        parse_try_it(url + "&colour=red")
    with pytest.raises(ValueError, match="did you mean"):
        parse_try_it("#landscape=rosenbrok&opt=sgd")


def test_the_openapi_schema_bounds_the_new_fields(client):
    spec = client.get("/api/openapi.json").json()
    schemas = spec["components"]["schemas"]
    noise = schemas["NoiseSpec"]["properties"]
    assert noise["sd"]["minimum"] == 0 and noise["sd"]["maximum"] == 100
    assert noise["batch"]["anyOf"][0]["minimum"] == 1 and noise["batch"]["anyOf"][0]["maximum"] == 10_000
    assert noise["seed"]["minimum"] == 0 and noise["seed"]["maximum"] == 2 ** 31 - 1
    assert schemas["NoiseSpec"]["additionalProperties"] is False
    assert schemas["RunRequest"]["properties"]["state"]["type"] == "boolean"
    assert "StepState" in schemas and "RuleInfo" in schemas and "PresetsResponse" in schemas
    assert "/api/presets" in spec["paths"]
