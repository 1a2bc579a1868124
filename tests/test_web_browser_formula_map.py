"""The formula landscape and the (lr, beta) stability map in a real browser (headless Chromium,
Playwright; the server and browser fixtures of tests/test_web_browser.py). Screenshots go to
``out/test-artifacts/``."""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest

from optimlab import catalogue
from optimlab.lab.formula import formula_landscape

from test_web_browser import ARTIFACTS, browser, run_id, server_url, settle, sync_api  # noqa: F401 (fixtures)

DEEP = "(x^2 - 1)^2 + 0.3x + y^2"
DEEP_WINDOW = ((-2.0, 2.5), (-1.5, 1.5))


def submit_formula(page, text: str, window=None, raw: bool = False) -> None:
    if not page.evaluate("document.getElementById('formula-box').open"):
        page.click("#formula-box summary")
    page.evaluate("document.body.dataset.formula = ''")
    if raw:  # longer than the box's maxlength: set as a script would
        page.evaluate("t => { document.getElementById('formula').value = t; }", text)
    else:
        page.fill("#formula", text)
    if window is not None:
        for box, v in zip(("#fx0", "#fx1", "#fy0", "#fy1"), (*window[0], *window[1])):
            page.fill(box, str(v))
    page.click("#formula-submit")


def open_page(browser, url: str, width: int = 1400, height: int = 1000):
    """A page on ``url`` with its first run drawn, and the list its script errors go to."""
    page = browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    settle(page, 0)
    return page, errors


def test_a_typed_formula_runs_and_draws_and_a_malicious_one_runs_nothing(server_url, browser):
    page, errors = open_page(browser, server_url + "#speed=0")
    # the landscape menu's "custom" runs the formula in the box
    before = run_id(page)
    page.select_option("#landscape", "custom")
    settle(page, before)
    box = page.locator("#formula").input_value()
    assert page.evaluate("[window.optimlabLab.result.landscape, window.optimlabLab.state.formula]") == ["custom", box]
    before = run_id(page)
    submit_formula(page, DEEP, DEEP_WINDOW)
    settle(page, before)
    land = formula_landscape(DEEP, DEEP_WINDOW)
    result = page.evaluate("window.optimlabLab.result")
    state = page.evaluate("window.optimlabLab.state")
    assert result["landscape"] == "custom" and state["formula"] == DEEP and result["f_star"] == land.min_value
    assert state["starts"] == [list(land.start)]                       # the formula's default start
    for entry, got in zip(state["opts"], result["runs"]):   # (the numbers: tests/test_web_formula_stability.py)
        assert not entry["userLr"] and got["lr"] == catalogue.lab_lr(entry["name"], land)  # its default lrs
        assert got["path"][0] == [list(land.start)] and len(got["path"]) == state["steps"] + 1
    # the contour is the formula's: its grid and its (numerically found) minima
    bg = page.evaluate("document.getElementById('contour-bg').data[0]")
    assert len(bg["x"]) == 121 and bg["x"][0] == DEEP_WINDOW[0][0] and bg["y"][-1] == DEEP_WINDOW[1][1]
    stars = page.evaluate("document.getElementById('contour-fg').data[0]")
    assert [[a, b] for a, b in zip(stars["x"], stars["y"])] == [list(m) for m in land.minima]
    assert page.locator("#landscape").input_value() == "custom"
    assert DEEP in page.locator("#landscape-formula").inner_text()
    # the URL carries it: a fresh page on it shows the same runs
    url = page.url
    q = parse_qs(url.split("#", 1)[1])
    assert q["landscape"] == ["custom"] and q["formula"] == [DEEP] and q["window"] == ["-2,2.5;-1.5,1.5"]
    other = browser.new_page(viewport={"width": 1400, "height": 1000})
    other.goto(url)
    settle(other, 0)
    assert other.evaluate("window.optimlabLab.result.runs.map(r => r.path)") == [r["path"] for r in result["runs"]]
    assert other.locator("#formula").input_value() == DEEP
    other.close()
    check_refused(page)
    assert not errors, errors


MALICIOUS = [
    ("__import__('os')", "unexpected character"),
    ("x^99999999", "larger than 1e+06"),
    ("9^9^9^9", "exponent"),
    ("x" * 10_000, "at most 200 characters"),
    ("(" * 30 + "x" + ")" * 30, "nested too deeply"),
    ("log(x)", "not finite over the window"),
]


def check_refused(page) -> None:
    """Each malicious formula: its message in the formula box and the page's error line, no request
    for a run, and the last valid run (and landscape) kept."""
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if "/api/run" in r.url or "/api/stability" in r.url else None)
    before, state = run_id(page), page.evaluate("window.optimlabLab.state")
    for text, piece in MALICIOUS:
        submit_formula(page, text, raw=len(text) > 200)
        page.wait_for_function("document.body.dataset.formula === 'refused'", timeout=30_000)
        message = page.locator("#formula-error").inner_text()
        assert page.locator("#formula-error").is_visible() and piece in message, (text[:40], message)
        assert page.locator("#error").is_visible() and piece in page.locator("#error").inner_text()
        if text.startswith("__import__"):
            page.screenshot(path=str(ARTIFACTS / "web-lab-formula-refused.png"))
    page.wait_for_timeout(300)
    assert sent == [] and run_id(page) == before                       # nothing ran
    assert page.evaluate("window.optimlabLab.state") == state


def cell_point(page, lr: float, beta: float) -> tuple[float, float]:
    page.locator("#stability").scroll_into_view_if_needed()
    box = page.locator("#stability").bounding_box()
    px, py = page.evaluate("""([lr, beta]) => { const l = document.getElementById('stability')._fullLayout;
        return [l.xaxis._offset + l.xaxis.l2p(Math.log10(lr)), l.yaxis._offset + l.yaxis.l2p(beta)]; }""", [lr, beta])
    return box["x"] + px, box["y"] + py


def open_map(page, card: int, size: int) -> dict:
    page.click("#stability-box summary")
    page.select_option("#stability-opt", str(card))
    page.select_option("#stability-size", str(size))
    page.evaluate("document.body.dataset.stability = ''")
    page.click("#stability-run")
    page.wait_for_function("document.body.dataset.stability === 'ready'", timeout=60_000)
    return page.evaluate("window.optimlabLab.stability.map")


def test_the_stability_map_renders_and_a_click_runs_that_cell_at_any_width(server_url, browser):
    page, errors = open_page(browser, server_url + "#speed=0&steps=300", height=1100)
    state = page.evaluate("window.optimlabLab.state")
    assert state["opts"][1]["name"] == "momentum"
    m = open_map(page, 1, 16)
    assert m["optimizer"] == "momentum" and m["knob"] == "momentum" and m["steps"] == 300
    assert len(m["lrs"]) == 16 and len(m["betas"]) == 16 and m["start"] == state["starts"][0]
    kinds = page.evaluate("document.getElementById('stability').data.map(t => t.type)")
    assert kinds == ["heatmap", "heatmap", "scatter"]
    assert page.locator("#stability .hm image, #stability .heatmaplayer").count() >= 1
    cells = [(i, j) for i in range(16) for j in range(16)]
    reached = [c for c in cells if m["steps_to_tol"][c[0]][c[1]] >= 0 and not m["diverged"][c[0]][c[1]]]
    diverged = [c for c in cells if m["diverged"][c[0]][c[1]]]
    assert reached and diverged                                          # the map shows the boundary
    page.screenshot(path=str(ARTIFACTS / "web-lab-stability.png"), full_page=True)
    for i, j in (reached[len(reached) // 2], diverged[0]):
        before = run_id(page)
        page.mouse.click(*cell_point(page, m["lrs"][j], m["betas"][i]))
        settle(page, before)
        assert page.evaluate("document.body.dataset.stabilityCell") == f"{i},{j}"
        run = page.evaluate("window.optimlabLab.result.runs[1]")
        assert run["lr"] == m["lrs"][j] and run["hyper"] == {"momentum": m["betas"][i]}
        assert run["metrics"][0]["steps_to_tol"] == m["steps_to_tol"][i][j]
        assert run["metrics"][0]["diverged"] == m["diverged"][i][j]
        assert page.locator(".opt-card[data-index='1'] input.opt-lr").input_value() == str(m["lrs"][j])
    # once the page's steps change, the map's cells are no longer its runs: a click runs nothing
    before = run_id(page)
    page.fill("#steps", "200")
    page.locator("#steps").dispatch_event("change")
    settle(page, before)
    page.mouse.click(*cell_point(page, m["lrs"][0], m["betas"][0]))
    page.wait_for_timeout(300)
    assert run_id(page) == before + 1 and "compute it again" in page.locator("#stability-note").inner_text()
    # the layout at laptop and phone width, the formula box open as well
    page.click("#formula-box summary")
    for width, height in [(1024, 800), (390, 844)]:
        page.set_viewport_size({"width": width, "height": height})
        try:  # plotly's responsive resize follows the window's (debounced; slow on a loaded machine)
            page.wait_for_function(f"document.documentElement.scrollWidth <= {width}", timeout=15_000)
        except sync_api.TimeoutError:
            raise AssertionError(f"the page overflows at {width} px: "
                                 f"{page.evaluate('document.documentElement.scrollWidth')} px wide") from None
        page.wait_for_timeout(600)   # the contour's legend is fitted again 250 ms after a resize
        fg = page.evaluate("""() => { const fg = document.getElementById('contour-fg');
            const l = fg.querySelector('.legend').getBoundingClientRect(), p = fg.getBoundingClientRect();
            return [l.top - p.top, l.bottom - p.top, fg.layout.margin.t]; }""")
        assert fg[0] >= -1 and fg[1] <= fg[2] + 1, (width, fg)           # the legend fits above the plot
        for sel in ("#formula-form", "#stability", "#stability-run"):
            box = page.locator(sel).bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, (width, sel)
        page.screenshot(path=str(ARTIFACTS / f"web-lab-formula-map-{width}px.png"), full_page=True)
    assert not errors, errors
