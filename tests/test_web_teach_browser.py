"""The web lab's teaching layer in a real browser (headless Chromium + Playwright, as
tests/test_web_browser.py, whose server and browser fixtures this module reuses): update rules on
the cards, step-through mode, the gradient-noise control and the tour's presets. Screenshots at
1024 px and 390 px go to ``out/test-artifacts/``."""

from __future__ import annotations

import pytest
import torch
from test_web_browser import ARTIFACTS, browser, open_page, run_id, server_url, settle, table  # noqa: F401

from optimlab.lab import engine


def resize(page, width: int, height: int) -> None:
    """A new window size, once the plots have followed it (plotly resizes them a little later)."""
    page.set_viewport_size({"width": width, "height": height})
    page.wait_for_timeout(600)   # the page refits the contour's legend 150 ms after the last resize event
    page.wait_for_function("document.documentElement.scrollWidth <= window.innerWidth + 1 && (() => {"
                           " const fg = document.getElementById('contour-fg');"
                           " return fg._fullLayout && Math.abs(fg._fullLayout.height"
                           " - document.getElementById('contour').clientHeight) < 2"
                           " && fg._fullLayout.width <= document.getElementById('contour').clientWidth + 1; })()",
                           timeout=10_000)
    page.wait_for_timeout(300)


def test_each_card_shows_its_rule_with_the_cards_numbers(server_url, browser):  # noqa: F811
    page, errors = open_page(browser, server_url, "#landscape=bowl&steps=20&speed=0&opt=adam-nobc:lr=0.01"
                                                  "&opt=adagrad-seed:lr=0.1&opt=nag:lr=0.001,momentum=0.9")
    rules = page.eval_on_selector_all(".opt-card", """cards => cards.map(c => ({
        lines: [...c.querySelectorAll('.rule-lines math')].map(m => m.dataset.line),
        mathml: [...c.querySelectorAll('.rule-lines math')].every(m => m instanceof MathMLElement),
        height: c.querySelector('.rule-lines').getBoundingClientRect().height,
        hats: c.querySelectorAll('.rule-lines mover').length,
        knobs: Object.fromEntries([...c.querySelectorAll('mn[data-knob]')].map(m => [m.dataset.knob, m.textContent])),
        epsInSqrt: !!c.querySelector('math[data-line=update] msqrt mn[data-knob=eps]')}))""")
    adam, adagrad, nag = rules
    assert all(r["mathml"] and r["height"] > 30 for r in rules)           # rendered by the browser as MathML
    assert adam["hats"] == 0 and "correction" not in adam["lines"]         # the seed's Adam: no bias correction
    assert adam["knobs"]["lr"] == "0.01" and adam["knobs"]["beta1"] == "0.9"
    assert adagrad["epsInSqrt"] and adagrad["knobs"]["eps"] == "1e\u221210"
    assert nag["knobs"]["lr"] == "0.001" and "velocity" in nag["lines"]
    # the numbers follow the knobs as they move
    before = run_id(page)
    box = page.locator(".opt-card[data-index='0'] input.opt-beta1")
    box.fill("0.75")
    box.dispatch_event("change")
    page.locator(".opt-card[data-index='2'] input.opt-momentum-slider").fill("1")    # 1 - 10**-1 = 0.9 -> 0.9
    page.locator(".opt-card[data-index='2'] input.opt-lr-slider").fill("-2")         # 10**-2
    settle(page, before)
    shown = page.eval_on_selector_all(".opt-card", "cards => cards.map(c => Object.fromEntries("
                                      "[...c.querySelectorAll('mn[data-knob]')].map(m => [m.dataset.knob, m.textContent])))")
    assert shown[0]["beta1"] == "0.75" and shown[2]["lr"] == "0.01"
    # the velocity line of NAG holds the lr (the seed's form): it changed there too
    assert page.evaluate("document.querySelectorAll('.opt-card')[2].querySelector('math[data-line=velocity] "
                         "mn[data-knob=lr]').textContent") == "0.01"
    assert errors == []
    page.close()


def test_step_through_shows_the_state_at_each_step(server_url, browser):  # noqa: F811
    page, errors = open_page(browser, server_url, "#landscape=rosenbrock&start=-1.2,1&steps=30&speed=0"
                                                  "&opt=momentum:lr=0.0005,momentum=0.8&opt=adam:lr=0.05"
                                                  "&opt=nag:lr=0.0005,momentum=0.8")
    before = run_id(page)
    page.check("#stepper-on")
    settle(page, before)
    page.wait_for_function("window.optimlabLab.t === 0", timeout=10_000)
    result = page.evaluate("window.optimlabLab.result")
    assert all(r["state"] for r in result["runs"])
    page.locator("body").press("ArrowRight")
    page.locator("body").press("ArrowRight")
    page.click("#step-forward")
    page.click("#step-back")
    assert page.evaluate("window.optimlabLab.t") == 2
    # the panel shows step 3 (from w_2): each value is the server's, which is the engine's state
    cells = page.eval_on_selector_all("#stepper-bars .step-card", """cards => cards.map(c => Object.fromEntries(
        [...c.querySelectorAll('tr[data-quantity]')].map(r => [r.dataset.quantity,
         [...r.querySelectorAll('td')].map(td => Number(td.dataset.value))])))""")
    ref = {n: engine.run("rosenbrock", n, [[-1.2, 1.0]], 30, lr=lr, record_grads=True, record_state=True, **k)
           for n, lr, k in (("momentum", 0.0005, {"momentum": 0.8}), ("adam", 0.05, {}), ("nag", 0.0005, {"momentum": 0.8}))}
    mo, ad, nag = ref["momentum"], ref["adam"], ref["nag"]
    assert cells[0]["grad"] == mo.grads[2, 0].tolist()
    assert cells[0]["velocity"] == mo.states["momentum_buffer"][2, 0].tolist()
    assert cells[0]["step"] == (mo.path[3, 0] - mo.path[2, 0]).tolist()
    assert "accumulator" not in cells[0]
    assert cells[1]["velocity"] == ad.states["exp_avg"][2, 0].tolist()
    assert cells[1]["accumulator"] == torch.sqrt(ad.states["exp_avg_sq"][2, 0]).tolist()
    assert cells[1]["ratio"] == pytest.approx((-(ad.path[3, 0] - ad.path[2, 0]) / ad.grads[2, 0]).tolist(), rel=1e-12)
    assert cells[2]["grad"] == nag.grads[2, 0].tolist()                  # NAG's: at the look-ahead point
    # arrows on the contour: per optimizer -g, -v and the step, starting at w_2 (NAG's -g at the
    # look-ahead point w_2 - momentum * v_2)
    notes = page.evaluate("document.getElementById('contour-fg').layout.annotations")
    assert len(notes) == 9
    ahead = nag.path[2, 0] - 0.8 * nag.states["momentum_buffer"][1, 0]
    starts = {(a["ax"], a["ay"]) for a in notes}
    assert starts == {tuple(mo.path[2, 0].tolist()), tuple(ad.path[2, 0].tolist()), tuple(nag.path[2, 0].tolist()),
                      tuple(ahead.tolist())}
    assert {(a["x"], a["y"]) for a in notes} >= {tuple(r.path[3, 0].tolist()) for r in (mo, ad, nag)}
    for width, height in ((1024, 900), (390, 844)):
        resize(page, width, height)
        page.screenshot(path=str(ARTIFACTS / f"web-lab-stepper-{width}px.png"), full_page=True)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"{overflow} px wider than {width} px"
    # back to the plain view: no state asked, no arrows
    before = run_id(page)
    page.uncheck("#stepper-on")
    settle(page, before)
    assert "state" not in page.evaluate("window.optimlabLab.result.runs[0]")
    assert not page.evaluate("document.getElementById('contour-fg').layout.annotations || []")
    assert errors == []
    page.close()


def test_the_noise_control_and_the_tours_noise_field(server_url, browser):  # noqa: F811
    hash_ = "#landscape=least_squares&start=-1,1.5&steps=100&speed=0&opt=sgd:lr=0.02&noise=batch=1,seed=5"
    page, errors = open_page(browser, server_url, hash_)
    result = page.evaluate("window.optimlabLab.result")
    assert result["noise"] == "batch=1,seed=5"
    want = engine.run("least_squares", "sgd", [[-1.0, 1.5]], 100, lr=0.02, noise="batch=1,seed=5")
    assert torch.equal(torch.tensor(result["runs"][0]["path"], dtype=torch.float64), want.path)
    assert page.input_value("#noise-batch") == "1" and page.input_value("#noise-seed") == "5"
    before = run_id(page)
    page.fill("#noise-sd", "0.3")
    page.dispatch_event("#noise-sd", "change")
    settle(page, before)
    assert page.evaluate("window.optimlabLab.result.noise") == "sd=0.3,batch=1,seed=5"
    assert "noise=sd=0.3,batch=1,seed=5" in page.url
    page.screenshot(path=str(ARTIFACTS / "web-lab-noise.png"))
    # a batch on a formula landscape: the server's message, nothing run
    before = run_id(page)
    page.goto(page.url.split("#")[0] + "#landscape=rosenbrock&steps=10&speed=0&opt=sgd&noise=batch=4,seed=0")
    page.wait_for_function("document.body.dataset.status === 'error'", timeout=30_000)
    assert "data landscape" in page.locator("#error").inner_text()
    assert [e for e in errors if "status of 422" not in e] == []   # (the browser logs the refused request)
    page.close()


def pick_preset(page, key: str) -> dict:
    page.wait_for_function("document.body.dataset.presets === 'ready'", timeout=30_000)
    si, section = page.evaluate(f"(() => {{ const l = window.optimlabLab.presets.list.sections; "
                                f"const i = l.findIndex(s => s.key === '{key}'); return [i, l[i]]; }})()")
    before = run_id(page)
    page.select_option("#preset", f"{si}:0")
    settle(page, before)
    return section["links"][0]


def check_preset(page, key: str) -> None:
    link = pick_preset(page, key)
    assert page.evaluate("document.body.dataset.presetMatch") == "yes"
    result = page.evaluate("window.optimlabLab.result")
    assert result["noise"] == ("batch=1,seed=5" if key == "noise" else None)
    rows = table(page)
    assert len(rows) == len(link["numbers"])
    for row, want in zip(rows, link["numbers"]):
        assert row[6] == (str(want["steps_to_tol"]) if want["steps_to_tol"] >= 0 else "never")
        assert row[11] == ("yes" if want["diverged"] else "no")
        if "steps_to_escape" in want:
            assert row[12] == (f"at step {want['steps_to_escape']}" if want["steps_to_escape"] >= 0 else "no")
    got = [m["final_loss"] for r in result["runs"] for m in r["metrics"]]
    assert got == [n["final_loss"] for n in link["numbers"]]
    if key == "saddle":   # the tour's saddle claim: GD is the slowest to leave
        esc = {n["optimizer"]: n["steps_to_escape"] for n in link["numbers"]}
        assert esc["sgd"] == -1 and all(v > 0 for k, v in esc.items() if k != "sgd")
    note = page.locator("#preset-note").inner_text()
    assert "The tour reports" in note and "same numbers" in note


def test_presets_reproduce_the_tours_numbers(server_url, browser):  # noqa: F811
    """Two sections of the tour, one with noisy gradients, loaded from the preset menu."""
    page, errors = open_page(browser, server_url, "#steps=5&speed=0")     # a quick first run
    check_preset(page, "noise")
    page.screenshot(path=str(ARTIFACTS / "web-lab-preset-noise-1024px.png"))
    check_preset(page, "saddle")
    for width, height in ((1024, 900), (390, 844)):
        resize(page, width, height)
        page.screenshot(path=str(ARTIFACTS / f"web-lab-preset-saddle-{width}px.png"), full_page=True)
    # a hand change ends the preset
    before = run_id(page)
    box = page.locator(".opt-card[data-index='0'] input.opt-lr")
    box.fill("0.001")
    box.dispatch_event("change")
    settle(page, before)
    assert page.locator("#preset-note").inner_text() == ""
    assert errors == []
    page.close()
