"""The formula landscape (a safe, bounded parser; torch differentiates it) and the (lr, beta)
stability map (one batched engine run whose cells equal single runs)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference
import torch
from fastapi.testclient import TestClient

from optimlab import catalogue
from optimlab.lab import engine, get_landscape
from optimlab.lab import formula as F
from optimlab.web import create_app
from optimlab.web import custom as web_custom
from optimlab.web import fastpath

W3 = ((-3.0, 3.0), (-3.0, 3.0))


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app()) as c:
        yield c


# --- the parser -------------------------------------------------------------------------------------

def value(text: str, x: float, y: float) -> float:
    t = torch.tensor([x], dtype=torch.float64), torch.tensor([y], dtype=torch.float64)
    return float(F.evaluate(F.parse(text), *t)[0])


@pytest.mark.parametrize("text, want", [
    ("x^2 + y^2", lambda x, y: x * x + y * y),
    ("2x + 3 y^2 - sin(x y)", lambda x, y: 2 * x + 3 * y ** 2 - math.sin(x * y)),
    ("-x^2", lambda x, y: -(x * x)),                     # the sign binds looser than the power
    ("x * 2^3^2", lambda x, y: x * 512),                 # powers are right-associative
    ("abs(x) ** 2 ** -1", lambda x, y: abs(x) ** 0.5),   # ** is ^, a sign in the exponent
    ("x / 2 / 4 - y", lambda x, y: x / 8 - y),           # left-associative
    ("2(x + 1)(y - 1)", lambda x, y: 2 * (x + 1) * (y - 1)),
    ("e^(-x^2) + 2^y", lambda x, y: math.exp(-x * x) + 2 ** y),
    ("pi x + exp(1) y", lambda x, y: math.pi * x + math.e * y),
    ("sqrt(x^2 + 1) + log(y^2 + 1) + tanh(x) + abs(y) + cos(x)", lambda x, y: (
        math.sqrt(x * x + 1) + math.log(y * y + 1) + math.tanh(x) + abs(y) + math.cos(x))),
    ("  x+ .5e1 *y ", lambda x, y: x + 5 * y),
])
def test_formulas_mean_what_they_say(text, want):
    for x, y in [(0.3, -1.7), (1.25, 2.0), (-2.5, 0.4)]:
        assert value(text, x, y) == pytest.approx(want(x, y), rel=1e-14, abs=1e-14), text


MALICIOUS = [
    ("__import__('os')", "unexpected character"),
    ("__import__", "unknown name '__import__'"),
    ("().__class__", "unexpected character '.'"),
    ("()", "empty parentheses"),
    ("x.__class__", "unexpected character '.'"),
    ("eval(x)", "unknown name 'eval'"),
    ("lambda: x", "unexpected character ':'"),
    ("lambda", "unknown name 'lambda'"),
    ("x; import os", "unexpected character ';'"),
    ("x^99999999", "larger than 1e+06"),
    ("x^999", "exponent 999 is outside [-16, 16]"),
    ("9^9^9^9", "exponent 3.8742e+08 is outside [-16, 16]"),
    ("x**2**2**2**2**2", "exponent 65536 is outside"),
    ("x^y", "variable exponent"),
    ("(-2)^x", "positive base"),
    ("exp(exp(exp(10))) * x", "no finite value"),
    ("1e999 * x", "larger than 1e+06"),
    ("x" * 10_000, "10000 characters; at most 200"),
    ("(" * 40 + "x" + ")" * 40, "nested too deeply"),
    ("-" * 40 + "x", "nested too deeply"),
    ("sin(" * 30 + "x" + ")" * 30, "nested too deeply"),
    ("+".join(["x"] * 99), "more than 160 terms"),
    ("foo(x)", "unknown name 'foo'"),
    ("sin x", "needs parentheses"),
    ("(x + y", "is not closed"),
    ("x +* y", "unexpected '*'"),
    ("", "empty"),
    ("3 + pi", "must use x or y"),
    ("x²", "plain ASCII only"),
]


@pytest.mark.parametrize("text, piece", MALICIOUS)
def test_the_parser_refuses_with_a_message_naming_the_problem(text, piece):
    with pytest.raises(F.FormulaError) as err:
        F.parse(text)
    assert piece in str(err.value)


@pytest.mark.parametrize("text, window, piece", [
    ("log(x)", W3, "not finite over the window"),
    ("1 / x", W3, "values must stay within"),
    ("x^16", ((-1000.0, 1000.0), (-1.0, 1.0)), "values must stay within"),
    ("x + y", ((-3.0, 3.0), (2.0, 2.0)), "y_max - y_min must be at least"),
    ("x + y", ((-3.0, math.inf), (-1.0, 1.0)), "x_max must be a finite number"),
    ("x + y", ((-5000.0, 3.0), (-1.0, 1.0)), "x_min must be a finite number in [-1000, 1000]"),
])
def test_a_formula_must_be_finite_and_bounded_over_a_bounded_window(text, window, piece):
    with pytest.raises(F.FormulaError) as err:
        F.formula_landscape(text, window)
    assert piece in str(err.value)


# --- the landscape ------------------------------------------------------------------------------------

def test_the_gradient_is_the_hand_derived_one():
    land = F.formula_landscape("x^2 y + sin(x) - 3 exp(-y^2) + sqrt(x^2 + 1) + 2^x", W3)
    rng = np.random.default_rng(0)
    pts = rng.uniform(-3, 3, size=(50, 2))
    f, g = land.value_and_grad(torch.tensor(pts))
    x, y = pts[:, 0], pts[:, 1]
    want_f = x * x * y + np.sin(x) - 3 * np.exp(-y * y) + np.sqrt(x * x + 1) + 2.0 ** x
    want_gx = 2 * x * y + np.cos(x) + x / np.sqrt(x * x + 1) + np.log(2.0) * 2.0 ** x
    want_gy = x * x + 6 * y * np.exp(-y * y)
    np.testing.assert_allclose(f.numpy(), want_f, rtol=1e-13)
    np.testing.assert_allclose(g[:, 0].numpy(), want_gx, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(g[:, 1].numpy(), want_gy, rtol=1e-12, atol=1e-13)


def test_minima_and_default_lrs_match_the_built_in_landscape_of_the_same_function():
    deep = F.formula_landscape("(x^2 - 1)^2 + 0.3x + y^2", ((-2.0, 2.5), (-1.5, 1.5)))
    np.testing.assert_allclose(deep.minima, get_landscape("shallow_deep").minima, atol=1e-9)
    assert deep.global_minima == 1 and deep.log_plot
    # a quadratic's curvature is the same everywhere: the catalogue's rule gives the built-in lrs
    bowl = F.formula_landscape("0.05 x^2 + 5 y^2", ((-10.0, 10.0), (-3.0, 3.0)))
    assert bowl.minima == ((0.0, 0.0),) and not bowl.log_plot
    for entry in catalogue.entries():
        assert catalogue.lab_lr(entry, bowl) == catalogue.lab_lr(entry, "elongated_bowl"), entry.name


def test_minima_are_inside_the_window_and_the_edge_only_where_there_is_none():
    # x^3 - 3x falls lower at the window's edge x = -3 (-18) than at its minimum x = 1 (-2)
    cubic = F.formula_landscape("x^3 - 3x + y^2", W3)
    assert cubic.minima == ((1.0, 0.0),) and cubic.min_value == -2.0
    himmelblau = F.formula_landscape("(x^2 + y - 11)^2 + (x + y^2 - 7)^2", ((-5.0, 5.0), (-5.0, 5.0)))
    np.testing.assert_allclose(sorted(himmelblau.minima), sorted(get_landscape("himmelblau").minima), atol=1e-9)
    assert himmelblau.global_minima == 4
    plane = F.formula_landscape("x + y", ((-1.0, 1.0), (-1.0, 1.0)))       # linear: no minimum inside
    assert plane.minima == ((-1.0, -1.0),) and catalogue.lab_lr("sgd", plane) == catalogue.get("sgd").lab_lr


def test_default_lrs_follow_each_formula_not_a_freed_one():
    """The catalogue caches curvature per function object: a formula built after another one was
    dropped must not inherit its lr (CPython reuses a freed object's id)."""
    for text, lr in [("x^2 + y^2", 0.5), ("10 x^2 + 10 y^2", 0.05), ("x^2 + y^2", 0.5)]:
        F.formula_landscape.cache_clear()
        assert catalogue.lab_lr("sgd", F.formula_landscape(text, W3)) == lr


def test_a_formula_run_is_the_engines_and_a_numpy_gd_loop_with_the_hand_written_gradient(client):
    text, window = "x^2 y^2 + 0.5 x^2 + 2 y^2 - cos(x)", ((-2.0, 2.0), (-2.0, 2.0))
    body = {"landscape": "custom", "formula": text, "window": [list(w) for w in window],
            "starts": [[1.5, -1.2], [-0.7, 1.9]], "steps": 40,
            "optimizers": [{"name": "sgd", "lr": 0.05}, {"name": "nag", "lr": 0.02, "momentum": 0.8},
                           {"name": "adam", "lr": 0.05}]}
    r = client.post("/api/run", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    land = F.formula_landscape(text, window)
    assert out["landscape"] == "custom" and out["f_star"] == land.min_value
    # the fast path takes the formula (its trace covers every function of the grammar but none else)
    fastpath.CompiledLandscape(land)
    for spec, got in zip(body["optimizers"], out["runs"]):
        hyper = {k: v for k, v in spec.items() if k not in ("name", "lr")}
        ref = engine.run(land, spec["name"], body["starts"], 40, lr=spec["lr"], **hyper)
        path = torch.tensor(got["path"], dtype=torch.float64)
        assert torch.equal(path, ref.path), spec["name"]

    def grad(p, t):
        x, y = p
        return np.array([2 * x * y * y + x + math.sin(x), 2 * x * x * y + 4 * y])

    old = reference.grad_fn
    reference.grad_fn = grad
    try:
        for s, start in enumerate(body["starts"]):
            want = reference.ref_sgd(np.array(start), 40, 0.05)
            np.testing.assert_allclose(out["runs"][0]["path"][-1][s], want, rtol=1e-9, atol=1e-12)
    finally:
        reference.grad_fn = old


def test_the_formula_route_gives_facts_default_lrs_and_the_grid(client):
    r = client.post("/api/formula", json={"formula": "0.05 x^2 + 5 y^2", "window": [[-10, 10], [-3, 3]],
                                          "resolution": 21})
    assert r.status_code == 200, r.text
    land, grid = r.json()["landscape"], r.json()["grid"]
    assert land["name"] == "custom" and land["minima"] == [[0.0, 0.0]]
    assert land["default_lr"] == {e.name: catalogue.lab_lr(e, "elongated_bowl") for e in catalogue.entries()}
    z = torch.tensor(grid["z"], dtype=torch.float64)
    x, y = torch.tensor(grid["x"], dtype=torch.float64), torch.tensor(grid["y"], dtype=torch.float64)
    assert z.shape == (21, 21) and torch.equal(z, 0.05 * x[None, :] ** 2 + 5 * y[:, None] ** 2)


@pytest.mark.parametrize("text, piece", [m for m in MALICIOUS if m[0] not in ("x" * 10_000, "")]
                         + [("x" * 10_000, "at most 200 characters"), ("", "at least 1 character"),
                            ("log(x)", "not finite over the window")])
def test_a_malicious_formula_gets_a_422_naming_it_and_nothing_runs(client, monkeypatch, text, piece):
    def ran(*a, **k):
        raise AssertionError("an optimizer run started for a refused formula")

    monkeypatch.setattr(fastpath, "run", ran)
    monkeypatch.setattr(engine, "run", ran)
    body = {"landscape": "custom", "formula": text, "starts": [[1.0, 1.0]], "steps": 10,
            "optimizers": [{"name": "adam"}]}
    for route, payload in [("/api/run", body), ("/api/formula", {"formula": text}),
                           ("/api/stability", {"landscape": "custom", "formula": text, "optimizer": {"name": "adam"}})]:
        r = client.post(route, json=payload)
        assert r.status_code == 422, (route, r.text)
        assert piece in r.json()["error"], (route, r.json())
        assert r.json()["error"].startswith("formula: "), r.json()


def test_formula_fields_belong_to_the_custom_landscape(client):
    r = client.post("/api/run", json={"landscape": "bowl", "formula": "x^2", "starts": [[1.0, 1.0]], "steps": 5,
                                      "optimizers": [{"name": "sgd"}]})
    assert r.status_code == 422 and "only for landscape 'custom'" in r.json()["error"]
    r = client.post("/api/run", json={"landscape": "custom", "starts": [[1.0, 1.0]], "steps": 5,
                                      "optimizers": [{"name": "sgd"}]})
    assert r.status_code == 422 and "needs a formula" in r.json()["error"]
    r = client.post("/api/run", json={"landscape": "custom", "formula": "x^2 + y^2", "window": [[-1, 1], [-1, 1]],
                                      "starts": [[2.0, 0.0]], "steps": 5, "optimizers": [{"name": "sgd"}]})
    assert r.status_code == 422 and "outside the custom window" in r.json()["error"]


# --- the stability map -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name, landscape, start, steps, tol", [
    ("momentum", "elongated_bowl", [-9.0, 2.0], 150, 1e-4),
    ("nag", "rosenbrock", [-1.2, 1.0], 200, 1e-2),
    ("adam", "custom:x^2 + 10 y^2", [2.5, 1.5], 150, 1e-4),
])
def test_every_cell_of_the_map_is_the_single_run_at_its_lr_and_beta(client, name, landscape, start, steps, tol):
    ref = {"landscape": landscape}
    if landscape.startswith("custom:"):
        ref = {"landscape": "custom", "formula": landscape.split(":", 1)[1]}
    body = {**ref, "start": start, "optimizer": {"name": name}, "steps": steps, "tol": tol, "n_lr": 6, "n_beta": 5}
    r = client.post("/api/stability", json=body)
    assert r.status_code == 200, r.text
    m = r.json()
    knob = "beta1" if name == "adam" else "momentum"
    assert m["knob"] == knob and len(m["lrs"]) == 6 and len(m["betas"]) == 5
    assert m["lrs"] == sorted(m["lrs"]) and m["betas"] == sorted(m["betas"])
    kinds = set()
    cells = [(i, j) for i in range(5) for j in range(6)]
    for chunk in range(0, len(cells), 10):
        part = cells[chunk:chunk + 10]
        opts = [{"name": name, "lr": m["lrs"][j], knob: m["betas"][i]} for i, j in part]
        run = client.post("/api/run", json={**ref, "starts": [start], "steps": steps, "tol": tol, "optimizers": opts})
        assert run.status_code == 200, run.text
        for (i, j), got in zip(part, run.json()["runs"]):
            row = got["metrics"][0]
            assert m["steps_to_tol"][i][j] == row["steps_to_tol"], (i, j)
            assert m["diverged"][i][j] == row["diverged"], (i, j)
            # Momentum and NAG: bit for bit; Adam's bias correction 1 - beta1**t is torch's vectorised
            # pow on the beta column but Python's pow in a single run (they differ in the last bit in
            # about 1% of cases)
            if name == "adam" and row["loss_gap"] is not None:
                assert m["loss_gap"][i][j] == pytest.approx(row["loss_gap"], rel=1e-12), (i, j)
            else:
                assert m["loss_gap"][i][j] == row["loss_gap"], (i, j)
            kinds.add("diverged" if row["diverged"] else "reached" if row["steps_to_tol"] >= 0 else "not reached")
    assert "reached" in kinds and len(kinds) >= 2, kinds  # the map shows a boundary, not one colour


def test_the_map_is_one_batched_engine_run(client, monkeypatch):
    calls = []
    real = engine.run

    def counting(*a, **k):
        calls.append(k)
        return real(*a, **k)

    monkeypatch.setattr(engine, "run", counting)
    r = client.post("/api/stability", json={"landscape": "bowl", "optimizer": {"name": "adam", "beta2": 0.99},
                                            "steps": 20, "n_lr": 7, "n_beta": 3})
    assert r.status_code == 200, r.text
    assert len(calls) == 1
    assert calls[0]["lr"].shape == (21,) and calls[0]["beta1"].shape == (21,) and calls[0]["beta2"] == 0.99
    assert r.json()["hyper"] == {"beta2": 0.99, "eps": 1e-8}
    lab = catalogue.lab_lr("adam", "bowl")
    lrs = r.json()["lrs"]
    assert lrs[0] == pytest.approx(lab / 100, rel=1e-3) and lrs[-1] == pytest.approx(lab * 10, rel=1e-3)


@pytest.mark.parametrize("patch, piece", [
    ({"optimizer": {"name": "rmsprop"}}, "rmsprop has no momentum or beta1"),
    ({"optimizer": {"name": "nag"}, "beta_min": 0.0}, "needs beta_min > 0"),
    ({"n_lr": 41}, "n_lr must be <= 40"),
    ({"n_lr": 65}, "less than or equal to 64"),
    ({"n_lr": 40, "n_beta": 40, "steps": 2000}, "is more than this server's"),
    ({"lr_min": 0.1, "lr_max": 0.01}, "lr_min must be < lr_max"),
    ({"beta_min": 0.9, "beta_max": 0.5}, "beta_min must be < beta_max"),
    ({"beta_max": 1.0}, "less than 1"),
    ({"lr_min": 1e-5, "lr_max": 1.0001e-5, "n_lr": 30}, "too narrow"),
    ({"start": [50.0, 0.0]}, "outside the bowl window"),
])
def test_a_bad_map_request_gets_a_422_naming_the_problem(client, patch, piece):
    r = client.post("/api/stability", json={"landscape": "bowl", "optimizer": {"name": "momentum"}, **patch})
    assert r.status_code == 422, r.text
    assert piece in r.json()["error"]


def test_the_routes_and_their_bounds_are_in_the_openapi_schema(client):
    schema = client.get("/api/openapi.json").json()
    assert {"/api/formula", "/api/stability"} <= set(schema["paths"])
    comps = schema["components"]["schemas"]
    assert comps["FormulaRequest"]["properties"]["formula"]["maxLength"] == F.MAX_LENGTH
    assert comps["RunRequest"]["properties"]["formula"]["anyOf"][0]["maxLength"] == F.MAX_LENGTH
    assert comps["StabilityRequest"]["properties"]["n_lr"]["maximum"] == 64
    assert "custom" in comps["RunRequest"]["properties"]["landscape"]["enum"]
    assert web_custom.DEFAULT_WINDOW == W3
