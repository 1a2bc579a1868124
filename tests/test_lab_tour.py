"""The tour: every claim has a sample, an interval and a verdict consistent with it; representative
verdict numbers are recomputed here by plain NumPy (not the engine) on the same sample; the page
renders in headless Chromium.

Recomputed independently (to 1e-9): local_minima.momentum_escapes, local_minima.nag_struggles,
momentum.faster, momentum.overshoots, nag.more_stable, adagrad.beats_gd_scaled, ewma.weights,
ewma.window. The other claims share the same engine, metrics and verdict code.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from optimlab.lab import tour, verdicts
from optimlab.lab.tour import adaptive, basics, figures, momentum as M, page as tour_page, tasks

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "out" / "test-artifacts"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("tour")
    page = tour.main(out, gif=False, real_tasks=False, draw=False)  # every number, no figure drawn
    data = json.loads((out / "tour.json").read_text())
    claims = {c["key"]: c for s in data["sections"] for c in s["claims"]}
    return out, page, data, claims


def test_every_claim_has_enough_runs_an_interval_and_a_consistent_verdict(built):
    _, _, data, claims = built
    assert len(claims) >= 40
    for key, c in claims.items():
        assert c["n"] >= verdicts.MIN_RUNS or c["why_n"], key
        assert c["low"] <= c["effect"] <= c["high"] or c["method"].startswith("Wilson"), key
        assert c["verdict"] == verdicts.decide(c["low"], c["high"], c["threshold"], c["direction"]), key
        for field in ("hypothesis", "metric", "population", "method"):
            assert c[field], (key, field)
    for s in data["sections"]:
        assert s["quote"] and s["seed_file"] and s["experiment"], s["key"]
        assert s["figures"] or s["key"] == "keras", s["key"]
        assert s["claims"], s["key"]


def test_tour_json_is_deterministic(built):
    _, _, data, _ = built
    with figures.disabled():
        again = {s.key: s for s in (basics.ewma_section(), basics.variants_section(), M.local_minimum_section())}
    for s in data["sections"]:
        if s["key"] in again:
            assert json.loads(json.dumps(again[s["key"]].to_json())) == s


def test_try_it_links_use_the_web_hash_format(built):
    _, _, data, _ = built
    url = tour.try_it_url("least_squares", {"sgd": {"lr": 0.1}, "momentum": {"lr": 0.01, "momentum": 0.9}},
                          start=(1, -2), steps=300, noise="batch=1,seed=7", schedule="cosine")
    assert url == ("http://127.0.0.1:8000/#landscape=least_squares&start=1,-2&steps=300&schedule=cosine"
                   "&opt=sgd:lr=0.1&opt=momentum:lr=0.01,momentum=0.9&noise=batch=1,seed=7")
    # every section the browser lab can show links to it (not the EWMA of a series, real tasks, Keras)
    assert all(s["try_it"] for s in data["sections"] if s["key"] not in ("ewma", "keras", "tasks"))


def test_the_web_labs_packaged_presets_are_this_tours_links(built):
    """``src/optimlab/web/static/tour-presets.json`` (the web lab's preset menu) equals what the tour
    builds now: regenerate it with ``python -m optimlab.web.presets out/tour/tour.json``."""
    from optimlab.web import presets

    _, _, data, _ = built
    assert presets.from_tour(data) == presets.load()
    for s in data["sections"]:
        assert [link["url"] for link in s["links"]] == s["try_it"]
        for link in s["links"]:
            assert link["numbers"] and all(n["optimizer"] for n in link["numbers"])


# ----------------------------------------------------------------------- independent NumPy reference

def _shallow_deep_grad(w):
    x, y = w[..., 0], w[..., 1]
    return np.stack([4 * x * (x * x - 1) + 0.3, 2 * y], -1)


def _simulate(grad, kind, w0, lr, beta, steps):
    """GD / heavy ball (torch form) / NAG (look-ahead form), vectorised over runs; returns the path."""
    w = w0.copy()
    v = np.zeros_like(w)
    lr, beta = lr[:, None], beta[:, None]
    path = [w.copy()]
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(steps):
            if kind == "gd":
                w = w - lr * grad(w)
            elif kind == "heavy":
                v = beta * v + grad(w)
                w = w - lr * v
            else:
                v = beta * v + lr * grad(w - beta * v)
                w = w - v
            path.append(w.copy())
    return np.stack(path)


def test_local_minima_claims_recomputed(built):
    _, _, _, claims = built
    starts = M.local_minimum_starts().numpy()
    L, B, S = len(M.LM_LRS), len(M.LM_BETAS), len(starts)
    lr = np.repeat(M.LM_LRS, B * S)
    beta = np.tile(np.repeat(M.LM_BETAS, S), L)
    w0 = np.tile(starts, (L * B, 1))
    roots = np.sort(np.roots([4.0, 0.0, -4.0, 0.3]).real)
    deep_min, shallow_min = np.array([roots[0], 0.0]), np.array([roots[2], 0.0])

    def deep(final):
        d0 = np.linalg.norm(final - deep_min, axis=1)
        d1 = np.linalg.norm(final - shallow_min, axis=1)
        inside = (final[:, 0] >= -2) & (final[:, 0] <= 2.5) & (np.abs(final[:, 1]) <= 1.5)
        return (np.isfinite(final).all(1) & inside & (d0 <= d1) & (d0 < 0.1)).astype(float)

    e = {k: deep(_simulate(_shallow_deep_grad, k, w0, lr, beta, M.LM_STEPS)[-1]) for k in ("gd", "heavy", "nag")}
    assert claims["local_minima.momentum_escapes"]["effect"] == pytest.approx(np.mean(e["heavy"] - e["gd"]), abs=1e-9)
    assert claims["local_minima.nag_struggles"]["effect"] == pytest.approx(np.mean(e["nag"] - e["heavy"]), abs=1e-9)


def _ravine_grad(w):
    return np.stack([0.1 * w[..., 0], 10.0 * w[..., 1]], -1)


def _ravine_steps(path, tol, budget):
    with np.errstate(over="ignore", invalid="ignore"):
        f = 0.05 * path[..., 0] ** 2 + 5 * path[..., 1] ** 2
    hit = f <= tol
    return np.where(hit.any(0), hit.argmax(0), budget + 1).astype(float)


def _crossings(x):
    """Per column: how often the sign of the nonzero entries changes."""
    return np.array([np.count_nonzero(np.diff(np.sign(col[col != 0]))) for col in x.T], dtype=float)


def test_ravine_momentum_claims_recomputed(built):
    _, _, _, claims = built
    starts = M.ravine_starts().numpy()
    lrs, S = M.LR_GRID, len(starts)
    lr = np.repeat(lrs, S)
    w0 = np.tile(starts, (len(lrs), 1))
    steps, cross = {}, {}
    for k in ("gd", "heavy"):
        p = _simulate(_ravine_grad, k, w0, lr, np.full(lr.size, 0.9), M.RAVINE_STEPS)
        steps[k] = _ravine_steps(p, M.RAVINE_TOL, M.RAVINE_STEPS).reshape(len(lrs), S)
        cross[k] = _crossings(p[..., 0]).reshape(len(lrs), S)
    ig = int(np.argmin(np.median(steps["gd"], 1)))
    im = int(np.argmin(np.median(steps["heavy"], 1)))
    want = np.mean(np.log10(steps["gd"][ig]) - np.log10(steps["heavy"][im]))
    assert claims["momentum.faster"]["effect"] == pytest.approx(want, abs=1e-9)
    assert claims["momentum.overshoots"]["effect"] == pytest.approx(np.mean(cross["heavy"][im] - cross["gd"][ig]), abs=1e-9)


def test_nag_stability_claim_recomputed(built):
    _, _, _, claims = built
    starts = M.ravine_starts().numpy()[:12]
    L, B, S = len(M.NAG_LRS), len(M.NAG_BETAS), len(starts)
    lr = np.repeat(M.NAG_LRS, B * S)
    beta = np.tile(np.repeat(M.NAG_BETAS, S), L)
    w0 = np.tile(starts, (L * B, 1))

    def diverged(path):
        end = path[-1]
        inside = (np.abs(end[:, 0]) <= 10) & (np.abs(end[:, 1]) <= 3)
        return (~np.isfinite(path).all(-1).all(0) | ~inside).astype(float)

    d = {k: diverged(_simulate(_ravine_grad, k, w0, lr, beta, M.RAVINE_STEPS)) for k in ("heavy", "nag")}
    assert claims["nag.more_stable"]["effect"] == pytest.approx(np.mean(d["heavy"] - d["nag"]), abs=1e-9)


def test_adagrad_claim_recomputed(built):
    from optimlab.lab.sampled import DATA_LANDSCAPES
    from optimlab.lab.tour.core import random_starts

    _, _, _, claims = built
    land = DATA_LANDSCAPES["scaled_features"]
    A, b = land.features.numpy(), land.targets.numpy()
    H, c = A.T @ A / len(b), A.T @ b / len(b)
    f_star = 0.5 * np.mean((A @ np.linalg.lstsq(A, b, rcond=None)[0] - b) ** 2)
    starts = random_starts(100, adaptive._inner_box("scaled_features"), 21).numpy()
    lrs, S, T = adaptive.ADA_LRS, len(starts), adaptive.ADA_STEPS
    lr = np.repeat(lrs, S)[:, None]
    steps = {}
    for k in ("gd", "adagrad"):
        w = np.tile(starts, (len(lrs), 1))
        acc = np.zeros_like(w)
        path = [w]
        with np.errstate(over="ignore", invalid="ignore"):
            for _ in range(T):
                g = w @ H - c
                if k == "gd":
                    w = w - lr * g
                else:
                    acc = acc + g * g
                    w = w - lr * g / (np.sqrt(acc) + 1e-10)
                path.append(w)
        p = np.stack(path)
        with np.errstate(over="ignore", invalid="ignore"):
            f = 0.5 * np.einsum("tni,ij,tnj->tn", p, H, p) - p @ c + 0.5 * np.mean(b * b)
        hit = (f - f_star) <= 1e-6
        steps[k] = np.where(hit.any(0), hit.argmax(0), T + 1).astype(float).reshape(len(lrs), S)
    ig = int(np.argmin(np.median(steps["gd"], 1)))
    ia = int(np.argmin(np.median(steps["adagrad"], 1)))
    want = np.mean(np.log10(steps["gd"][ig]) - np.log10(steps["adagrad"][ia]))
    assert claims["adagrad.beats_gd_scaled"]["effect"] == pytest.approx(want, abs=1e-9)


def test_ewma_claims_recomputed(built):
    _, _, _, claims = built
    betas = np.array([0.1, 0.5, 0.8, 0.9, 0.95, 0.99])
    window = np.array([int(np.ceil(np.log(np.exp(-1)) / np.log(b))) for b in betas])  # 1 - b^k >= 1 - 1/e
    assert claims["ewma.window"]["effect"] == pytest.approx(np.max(np.abs(window - 1 / (1 - betas))), abs=1e-9)
    assert claims["ewma.weights"]["effect"] < 1e-12


def test_real_task_section_runs_on_a_tiny_plan():
    plan = tasks.Plan("tiny", ("cancer-logreg",), "adding-lstm", 2, 5, 3, (1e-2,))
    with figures.disabled():
        s = tasks.tasks_section(plan)
    assert {c.key for c in s.claims} == {"tasks.adam_lr_range", "tasks.rmsprop_vs_adam", "tasks.nadam_vs_adam",
                                         "tasks.adam_for_lstm", "tasks.plateau"}
    assert all(c.n < verdicts.MIN_RUNS and c.why_n for c in s.claims)
    # the section quotes the benchmark report's verdicts on the seed's practical advice and links it
    assert ("the benchmark report: tuned studies, time to target, performance profiles (docs/benchmark.md)",
            "docs/benchmark.md") in s.see_also
    for claim in tasks.BENCHMARK_CLAIMS:
        assert any(f"'{claim}' " in n and "docs/benchmark.md" in n for n in s.notes), claim


def test_benchmark_verdicts_are_quoted_from_the_report(tmp_path):
    from optimlab.lab.tour.core import REPO, Section
    from optimlab.train import protocol_report as R
    md = tmp_path / "docs" / "bench.md"
    (tmp_path / "docs" / "bench").mkdir(parents=True)
    (tmp_path / "docs" / "bench" / "summary.json").write_text(json.dumps({
        "date": "2026-01-02 03:04 UTC", "label": "", "command": "optimlab protocol", "verdicts": [
            {"claim": "Adam is a good default", "test": "T1", "numbers": "adam 3/5", "verdict": "holds"},
            {"claim": "AdaGrad for sparse features", "test": "T3", "numbers": "0.5 [0.3, 0.9]", "verdict": "inconclusive"}]}))
    notes, links = tasks.benchmark_notes(md_path=md)
    assert len(notes) == 3 and all("2026-01-02 03:04 UTC" in n for n in notes)
    assert "'Adam is a good default' HOLDS - adam 3/5. Test: T1." in notes[0]
    assert "'RMSProp sometimes beats Adam' was not measured" in notes[1]
    assert "'AdaGrad for sparse features' INCONCLUSIVE - 0.5 [0.3, 0.9]" in notes[2]
    assert [p for _, p in links] == ["docs/benchmark.md", "out/bench/report.html"]
    fallback, _ = tasks.benchmark_notes(md_path=tmp_path / "none.md")
    assert len(fallback) == 1 and "docs/benchmark.md" in fallback[0]
    # the committed report carries the summary the tour quotes, with every claim measured
    committed = R.read_summary()
    assert committed is not None and set(tasks.BENCHMARK_CLAIMS) <= {v["claim"] for v in committed["verdicts"]}
    assert (REPO / "docs" / "benchmark.md").read_text().count(committed["date"]) >= 1
    # the page links the report relative to where the tour is written
    sec = Section("x", "X", "seed", "quote", "experiment", see_also=links)
    html = tour_page.render([sec], tmp_path / "out" / "tour", 0.0, "none")
    rel = os.path.relpath(REPO / "docs" / "benchmark.md", (tmp_path / "out" / "tour").resolve())
    assert f"See also: <a href='{rel}'>the benchmark report" in html


@pytest.mark.skipif(not os.path.exists(CHROMIUM) and bool(os.environ.get("OPTIMLAB_SKIP_BROWSER")),
                    reason="OPTIMLAB_SKIP_BROWSER is set and /usr/bin/chromium is missing")
def test_tour_renders_in_headless_chromium(tmp_path):
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: run scripts/ensure_chromium.sh (./run test does)"
    sync_api = pytest.importorskip("playwright.sync_api")
    out = tmp_path
    sections = [basics.ewma_section(), M.curvature_section()]   # drawn: the figures are part of what renders
    page_path = out / "tour.html"
    page_path.write_text(tour_page.render(sections, out, 0.0, "none"))
    data = tour.summary(sections, "none")
    claims = [c for s in sections for c in s.claims]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_path.resolve().as_uri())
            assert page.locator("section").count() == len(data["sections"])
            n_img = page.locator("img").count()
            loaded = page.evaluate("Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length")
            assert n_img == sum(len(s.figures) for s in sections) and loaded == n_img
            assert page.locator("span.v").count() >= 2 * len(claims)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "tour.png"), full_page=False)
            assert not errors
        finally:
            browser.close()
