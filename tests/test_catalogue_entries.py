"""Every catalogue entry on every surface it declares, and the catalogue's shared vocabularies.

Each entry (the seed's optimizers and those of issue 15) runs, parametrically, through the lab's
batched engine and the web page (``/api/meta`` lists it with its own knob ranges; a run answers
the engine's numbers) when it is a lab entry, and through ``optimlab train`` and ``optimlab
tune``'s objective always. An entry the batched engine cannot run (Adafactor) is refused by the
lab and the page with a reason. Also: colours stay apart (also for deuteranopes) and the closest
name suggested for a typo is the one fewest slips away.
"""

from __future__ import annotations

import functools
import math
from itertools import combinations

import pytest
import torch
from fastapi.testclient import TestClient

from optimlab import catalogue, tune
from optimlab._names import closest, slips
from optimlab.cli import main
from optimlab.lab import engine
from optimlab.train import train
from optimlab.web import create_app


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app()) as c:
        yield c


@pytest.fixture(scope="module")
def meta(client):
    return {o["name"]: o for o in client.get("/api/meta").json()["optimizers"]}


def _lr(entry) -> float:
    return catalogue.signature_defaults(entry.spec)["lr"]  # the class's own default


@pytest.mark.parametrize("name", catalogue.names())
def test_entry_runs_on_every_surface(name, client, meta):
    entry = catalogue.get(name)
    starts = [[-1.2, 1.0], [0.5, -0.5], [1.5, 2.0]]
    if entry.lab:
        run = engine.run("rosenbrock", name, starts, 25)  # the lab: one batched 2-D computation
        assert run.path.shape == (26, 3, 2) and torch.isfinite(run.path).all()
        assert not torch.equal(run.path[-1], run.path[0])  # it moved
        info = meta[name]
        assert info["colour"] == entry.colour and set(info["knobs"]) == set(catalogue.knobs(entry))
        knobs = {k: v for k, v in info["knobs"].items()}
        r = client.post("/api/run", json={"landscape": "rosenbrock", "starts": starts[:2], "steps": 25,
                                          "optimizers": [{"name": name, **knobs}]})
        assert r.status_code == 200, r.text
        got = r.json()["runs"][0]
        want = engine.run("rosenbrock", name, starts[:2], 25, **knobs)
        assert got["path"] == [[[float(x) for x in pt] for pt in row] for row in want.path.tolist()]
        assert got["colour"] == entry.colour
    else:
        assert name not in meta
        with pytest.raises(ValueError, match="does not run in the lab"):
            engine.run("rosenbrock", name, starts, 5)
        r = client.post("/api/run", json={"landscape": "rosenbrock", "starts": starts[:1], "steps": 5,
                                          "optimizers": [{"name": name}]})
        assert r.status_code == 422 and "does not run in the lab" in r.json()["error"]
    # optimlab train: a few steps of a small task
    result = train("cancer-logreg", name, _lr(entry), steps=4, eval_every=4)
    assert result.optimizer == entry.name and result.steps == 4 and all(map(math.isfinite, result.train_loss))
    # optimlab tune: the objective draws the entry's declared space and trains with it
    optuna = pytest.importorskip("optuna")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    value = tune.objective(trial, name, task=functools.partial(tune.quicktask, steps=3))
    assert math.isfinite(value)
    assert set(trial.params) == set(catalogue.tune_names(entry))


def test_new_entries_stay_out_of_the_default_menus():
    assert catalogue.main_names() == ("sgd", "momentum", "nag", "adagrad", "rmsprop", "adam", "nadam")
    new = ["adadelta", "adamax", "radam", "asgd", "rprop", "lion", "sgd-schedule-free", "adamw-schedule-free",
           "ademamix", "adafactor"]
    assert all(n in catalogue.names() and not catalogue.get(n).main for n in new)
    for missing in ("sparseadam", "muon", "lbfgs"):  # sparse-only, 2-D only, closure-driven: no entry
        with pytest.raises(ValueError, match="unknown optimizer"):
            catalogue.get(missing)


def test_the_lab_command_refuses_an_entry_it_cannot_run(capsys, tmp_path):
    code = None
    try:
        code = main(["compare", "--landscape", "bowl", "--optimizers", "adafactor", "--out", str(tmp_path)])
    except SystemExit as exc:
        code = exc.code
    assert code == 2 and "does not run in the lab" in capsys.readouterr().err


# --- knob ranges belong to the entry ---------------------------------------------------------------

def test_the_same_knob_name_has_each_entrys_range(client):
    base = {"landscape": "bowl", "starts": [[1.0, 1.0]], "steps": 5}
    ok = client.post("/api/run", json={**base, "optimizers": [{"name": "ademamix", "alpha": 5.0}]})
    assert ok.status_code == 200, ok.text  # AdEMAMix's alpha: a mixing weight in [0, 20]
    assert ok.json()["runs"][0]["hyper"]["alpha"] == 5.0
    bad = client.post("/api/run", json={**base, "optimizers": [{"name": "rmsprop", "alpha": 5.0}]})
    assert bad.status_code == 422 and "rmsprop's alpha must be in [0, 1)" in bad.json()["error"]
    bad = client.post("/api/run", json={**base, "optimizers": [{"name": "rprop", "eta_plus": 0.5}]})
    assert bad.status_code == 422 and "eta_plus" in bad.json()["error"]
    assert catalogue.knobs("ademamix")["alpha"] != catalogue.knobs("rmsprop")["alpha"]


# --- colours -------------------------------------------------------------------------------------

def _linear(hex_colour):
    rgb = [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    return [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]


def _lab(rgb):
    """CIE L*a*b* (D65) of linear sRGB."""
    r, g, b = rgb
    x, y, z = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047, 0.2126 * r + 0.7152 * g + 0.0722 * b, \
        (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883
    f = [t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116 for t in (x, y, z)]
    return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])


def _deuteranope(rgb):
    """Machado, Oliveira & Fernandes (2009), deuteranopia at severity 1, on linear RGB."""
    m = [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]]
    return [min(1.0, max(0.0, sum(m[i][j] * rgb[j] for j in range(3)))) for i in range(3)]


def test_colours_stay_apart_also_for_deuteranopes():
    """Every pair of entry colours at least 9 CIE76 units apart (the seed palette's closest pair is
    9.6), in normal vision and under simulated deuteranopia."""
    colours = catalogue.colours()
    for (a, ca), (b, cb) in combinations(colours.items(), 2):
        assert math.dist(_lab(_linear(ca)), _lab(_linear(cb))) >= 9, (a, b)
        assert math.dist(_lab(_deuteranope(_linear(ca))), _lab(_deuteranope(_linear(cb)))) >= 9, (a, b)


# --- the closest name ----------------------------------------------------------------------------

def test_slips_count_a_swap_of_neighbours_as_one():
    assert slips("adma", "adam") == 1 and slips("adam", "adam") == 0
    assert slips("adma", "adamax") == 2 and slips("sgd", "sgdd") == 1 and slips("", "abc") == 3
    for a, b in [("nestorov", "nesterov"), ("rmsporp", "rmsprop"), ("cosin", "cosine")]:
        assert slips(a, b) == slips(b, a) == 1


def test_the_closest_name_is_the_fewest_slips_away():
    names = catalogue.names()
    # difflib's ratio alone prefers 'adamax' for 'adma' (more letters in common)
    assert closest("adma", names) == "adam" and closest("adamx", names) == "adamax"
    assert closest("radm", names) == "radam" and closest("lino", names) == "lion"
    assert closest("zzzzzz", names) is None
    with pytest.raises(ValueError, match="did you mean 'adam'"):
        catalogue.get("adma")
