"""The web lab in a real browser: Debian's headless Chromium driven by Playwright.

The server runs in this process (uvicorn in a thread, on a free port of 127.0.0.1) and is always
stopped. Chromium is /usr/bin/chromium, installed by ``scripts/ensure_chromium.sh`` from
``./run test`` (Playwright's own browser download is never used). Screenshots go to
``out/test-artifacts/``.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from pathlib import Path

import pytest
import torch
import uvicorn

from optimlab.lab import engine, metrics
from optimlab.web import create_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "out" / "test-artifacts"

if not os.path.exists(CHROMIUM):
    if os.environ.get("OPTIMLAB_SKIP_BROWSER"):
        pytest.skip("OPTIMLAB_SKIP_BROWSER is set and /usr/bin/chromium is missing", allow_module_level=True)
    pytest.fail(f"{CHROMIUM} is missing: run scripts/ensure_chromium.sh (./run test does), "
                "or set OPTIMLAB_SKIP_BROWSER=1 to skip the browser test", pytrace=False)

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def server_url():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def settle(page, after_run: int) -> None:
    """Wait until a run newer than ``after_run`` is drawn and its animation has finished."""
    try:
        page.wait_for_function(f"Number(document.body.dataset.runId) > {after_run} && "
                               "document.body.dataset.status === 'ready' && document.body.dataset.anim === 'done'",
                               timeout=30_000)
    except sync_api.TimeoutError:
        raise AssertionError(f"no new run drawn within 30 s; the page says: {page.evaluate('window.optimlabLab.error')}")


def run_id(page) -> int:
    return int(page.evaluate("document.body.dataset.runId"))


def table(page) -> list[list[str]]:
    return page.eval_on_selector_all("#metrics tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.innerText))")


def tensor(nested) -> torch.Tensor:
    def fill(x):
        return [fill(v) for v in x] if isinstance(x, list) else (math.nan if x is None else x)
    return torch.tensor(fill(nested), dtype=torch.float64)


def test_the_lab_in_a_browser(server_url, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page_errors: list[str] = []
    page.on("pageerror", lambda e: page_errors.append(str(e)))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    page.goto(server_url + "#speed=0")          # no animation until we look at one (keeps the test quick)
    settle(page, 0)
    assert page.evaluate("document.body.dataset.status") == "ready"
    first = page.evaluate("window.optimlabLab.result")
    first_table = table(page)
    n_entries = len(first["runs"])
    assert n_entries >= 2 and len(first_table) == n_entries * len(first["starts"])
    # the contour drew one line per optimizer, as long as the run
    lens = page.evaluate("document.getElementById('contour-fg').data.slice(3).filter(t => t.mode === 'lines')"
                         ".map(t => t.x.length)")
    assert lens == [first["steps"] + 1] * n_entries

    # 1. another optimizer in the first card
    before = run_id(page)
    page.select_option(".opt-card[data-index='0'] select.opt-name", "rmsprop")
    settle(page, before)
    # 2. its learning rate, typed into the box
    before = run_id(page)
    lr_box = page.locator(".opt-card[data-index='0'] input.opt-lr")
    lr_box.fill("0.05")
    lr_box.dispatch_event("change")
    settle(page, before)
    # 3. a hyperparameter, dragged: the momentum slider of the second card (Momentum)
    before = run_id(page)
    assert page.locator(".opt-card[data-index='1'] select.opt-name").input_value() == "momentum"
    page.locator(".opt-card[data-index='1'] input.opt-momentum-slider").fill("2")   # -log10(1 - 0.99)
    settle(page, before)
    assert page.evaluate("window.optimlabLab.result.runs[1].hyper") == {"momentum": 0.99}
    assert page.locator(".opt-card[data-index='1'] input.opt-momentum").input_value() == "0.99"
    # 4. a start point, clicked on the contour at a quarter of the width, three quarters down
    area = page.locator("#contour-fg .nsewdrag").bounding_box()
    (x0, x1), (y0, y1) = page.evaluate("[document.getElementById('contour-fg').layout.xaxis.range,"
                                       " document.getElementById('contour-fg').layout.yaxis.range]")
    before = run_id(page)
    page.select_option("#speed", "1")
    page.mouse.click(area["x"] + 0.25 * area["width"], area["y"] + 0.75 * area["height"])
    # ... and the new trajectories are animated: caught part-way, drawn up to the current step
    page.wait_for_function(f"Number(document.body.dataset.runId) > {before} && document.body.dataset.anim === 'running'"
                           " && window.optimlabLab.t > 0 && window.optimlabLab.t < window.optimlabLab.result.steps",
                           polling="raf", timeout=30_000)
    t_mid, drawn = page.evaluate("[window.optimlabLab.t, document.getElementById('contour-fg').data[3].x.length]")
    assert 0 < t_mid and drawn <= t_mid + 2  # the line holds the steps up to the current one (give or take a frame)
    settle(page, before)
    page.select_option("#speed", "0")
    assert page.evaluate("document.body.dataset.status") == "ready", page.evaluate("window.optimlabLab.error")

    after = page.evaluate("window.optimlabLab.result")
    (sx, sy), = after["starts"]
    assert abs(sx - (x0 + 0.25 * (x1 - x0))) < 0.01 * (x1 - x0)
    assert abs(sy - (y1 - 0.75 * (y1 - y0))) < 0.01 * (y1 - y0)
    run0 = after["runs"][0]
    assert run0["name"] == "rmsprop" and run0["lr"] == 0.05
    assert tensor(run0["path"])[0, 0].tolist() == [sx, sy]
    # the trajectories and the table changed
    assert after["runs"][0]["path"] != first["runs"][0]["path"]
    assert after["runs"][1]["path"] != first["runs"][1]["path"]      # new start moves every trajectory
    new_table = table(page)
    assert new_table != first_table and len(new_table) == n_entries
    assert "RMSProp" in new_table[0][1] and new_table[0][2] == "0.05"
    shown_start = [float(v) for v in new_table[0][3].split(",")]
    assert shown_start == pytest.approx([sx, sy], rel=1e-3, abs=1e-9)

    # what the page shows is what the engine computes for the page's state
    state = page.evaluate("window.optimlabLab.state")
    assert state["starts"] == [[sx, sy]]
    for entry, got in zip(state["opts"], after["runs"]):
        ref = engine.run(state["landscape"], entry["name"], state["starts"], state["steps"], lr=entry["lr"],
                         schedule=state["schedule"], **entry["knobs"])
        path = tensor(got["path"])
        assert torch.equal(torch.isfinite(path), torch.isfinite(ref.path))
        assert torch.equal(path[torch.isfinite(path)], ref.path[torch.isfinite(ref.path)])
        row = metrics.rows(ref)[0]
        assert got["metrics"][0]["oscillation"] == row["oscillation"]
        assert got["metrics"][0]["final_loss"] == row["final_loss"]
    final_loss_cell = new_table[0][5]
    assert float(final_loss_cell) == pytest.approx(after["runs"][0]["metrics"][0]["final_loss"], rel=1e-3)

    page.screenshot(path=str(ARTIFACTS / "web-lab.png"), full_page=True)

    # 5. the URL holds the state: a fresh page on it shows the same runs and table
    url = page.url
    assert "opt=rmsprop:lr=0.05" in url and f"start={sx},{sy}" in url
    other = browser.new_page(viewport={"width": 1400, "height": 1000})
    other.on("pageerror", lambda e: page_errors.append(str(e)))
    other.goto(url)
    settle(other, 0)
    assert other.evaluate("window.optimlabLab.state") == state
    assert other.evaluate("window.optimlabLab.result.runs.map(r => r.path)") == [r["path"] for r in after["runs"]]
    assert table(other) == new_table
    other.close()

    # 6. a bad value gets the server's message on the page, and the last good run stays drawn
    before = run_id(page)
    lr_box.fill("-1")
    lr_box.dispatch_event("change")
    page.wait_for_function("document.body.dataset.status === 'error'", timeout=30_000)
    message = page.locator("#error").inner_text()
    assert page.locator("#error").is_visible() and "lr" in message and "greater than 0" in message
    assert run_id(page) == before and table(page) == new_table
    page.screenshot(path=str(ARTIFACTS / "web-lab-error.png"))

    # 7. the 3-D view draws the surface and the trajectories
    lr_box.fill("0.05")
    lr_box.dispatch_event("change")
    settle(page, before)
    page.click("#tab-surface")
    page.wait_for_function("document.getElementById('surface').data && "
                           "document.getElementById('surface').data.length === 1 + window.optimlabLab.result.runs.length",
                           timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "web-lab-3d.png"))

    # 8. Shift+click adds a second start: every optimizer runs from both
    page.click("#tab-contour")
    before = run_id(page)
    area = page.locator("#contour-fg .nsewdrag").bounding_box()
    page.keyboard.down("Shift")
    page.mouse.click(area["x"] + 0.8 * area["width"], area["y"] + 0.2 * area["height"])
    page.keyboard.up("Shift")
    settle(page, before)
    two = page.evaluate("window.optimlabLab.result")
    assert len(two["starts"]) == 2 and two["starts"][0] == [sx, sy]
    assert all(len(r["path"][0]) == 2 for r in two["runs"]) and len(table(page)) == 2 * n_entries
    assert page.evaluate("document.getElementById('contour-fg').data[2].x.length") == 2   # the start markers
    page.close()

    # 9. a link with a misspelt optimizer shows the server's suggestion
    bad = browser.new_page(viewport={"width": 1400, "height": 1000})
    bad.on("pageerror", lambda e: page_errors.append(str(e)))
    bad.goto(server_url + "#landscape=bowl&opt=adma:lr=0.1")
    bad.wait_for_function("document.body.dataset.status === 'error'", timeout=30_000)
    assert "unknown optimizer 'adma'; did you mean 'adam'?" in bad.locator("#error").inner_text()
    bad.close()
    assert page_errors == []


def open_page(browser, server_url, hash_, width=1400, height=1000):
    page = browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(server_url + hash_)
    settle(page, 0)
    return page, errors


def test_landscape_switch_resets_lrs_the_user_did_not_set(server_url, browser):
    page, errors = open_page(browser, server_url, "#speed=0")
    before = run_id(page)
    box = page.locator(".opt-card[data-index='3'] input.opt-lr")       # Adam: the user sets it
    box.fill("0.3")
    box.dispatch_event("change")
    settle(page, before)
    before = run_id(page)
    page.select_option("#landscape", "rosenbrock")
    settle(page, before)
    meta = page.evaluate("window.optimlabLab.meta.landscapes.find(l => l.name === 'rosenbrock').default_lr")
    runs = page.evaluate("window.optimlabLab.result.runs.map(r => [r.name, r.lr])")
    assert runs[3] == ["adam", 0.3]                                     # the user's choice is kept
    for name, lr in runs[:3]:                                          # the others: Rosenbrock's defaults
        assert lr == meta[name], (name, lr, meta[name])
    assert meta["sgd"] != 0.18                                          # (not the bowl's GD lr of the default page)
    assert errors == []
    page.close()


def test_a_diverging_run_is_marked_and_the_loss_axis_stays_readable(server_url, browser):
    page, errors = open_page(browser, server_url,
                             "#landscape=rosenbrock&start=-1.2,1&steps=100&speed=0&opt=sgd:lr=0.01&opt=adam:lr=0.02")
    result = page.evaluate("window.optimlabLab.result")
    k = result["runs"][0]["left_window"][0]
    assert k is not None and 0 < k < 20                                # GD at lr 0.01 leaves at once
    assert result["runs"][1]["left_window"] == [None]
    legend = page.evaluate("document.getElementById('contour-fg').data.filter(t => t.mode === 'lines').map(t => t.name)")
    assert f"diverged at step {k}" in legend[0] and "diverged" not in legend[1]
    # the line ends where it left the window: k + 1 points, the last on the window's edge
    line = page.evaluate("document.getElementById('contour-fg').data[3]")
    assert len(line["x"]) == k + 1
    (x0, x1), (y0, y1) = [[-2.0, 2.0], [-1.0, 3.0]]
    ex, ey = line["x"][-1], line["y"][-1]
    assert x0 - 1e-9 <= ex <= x1 + 1e-9 and y0 - 1e-9 <= ey <= y1 + 1e-9
    assert min(abs(ex - x0), abs(ex - x1), abs(ey - y0), abs(ey - y1)) < 1e-9
    exits = page.evaluate("document.getElementById('contour-fg').data[5]")
    assert exits["x"] == [ex] and exits["marker"]["symbol"] == "x-thin"
    # the loss axis spans the finite values inside the window, not the ~1e30 of the diverged run
    top = page.evaluate("document.getElementById('loss').layout.yaxis.range[1]")
    zmax = page.evaluate("window.optimlabLab.grid.zmax")
    assert top <= math.log10(zmax) + 0.5, (top, zmax)
    text = page.evaluate("document.getElementById('loss').data[1].text")
    assert text == [f"diverged at step {k}"]
    page.screenshot(path=str(ARTIFACTS / "web-lab-diverged.png"))
    assert errors == []
    page.close()


def test_dragging_a_slider_redraws_before_the_mouse_is_released(server_url, browser):
    page, errors = open_page(browser, server_url, "#speed=0")
    slider = page.locator(".opt-card[data-index='3'] input.opt-lr-slider")
    box = slider.bounding_box()
    y = box["y"] + box["height"] / 2
    start = run_id(page)
    page.mouse.move(box["x"] + 0.6 * box["width"], y)
    page.mouse.down()
    seen = []
    for i in range(1, 13):
        page.mouse.move(box["x"] + (0.6 - 0.03 * i) * box["width"], y)
        page.wait_for_timeout(120)
        seen.append(run_id(page))
    lr_while_held = page.evaluate("window.optimlabLab.result.runs[3].lr")
    page.mouse.up()
    assert seen[-1] >= start + 2, seen                                 # redrawn while the button was down
    assert lr_while_held < 0.5                                          # with an lr from the drag
    assert errors == []
    page.close()


def test_each_optimizer_brings_its_own_knob_ranges(server_url, browser):
    """AdEMAMix's alpha (a weight in [0, 20], linear slider) is not RMSProp's (a decay in [0, 1))."""
    page, errors = open_page(browser, server_url, "#speed=0")
    before = run_id(page)
    page.select_option(".opt-card[data-index='0'] select.opt-name", "ademamix")
    settle(page, before)
    slider = page.locator(".opt-card[data-index='0'] input.opt-alpha-slider")
    assert (slider.get_attribute("min"), slider.get_attribute("max")) == ("0", "20")
    assert page.locator(".opt-card[data-index='0'] label[for='opt0-alpha']").get_attribute("title") == \
        "weight of the slow EMA in the step"
    before = run_id(page)
    slider.fill("5")
    settle(page, before)
    assert page.evaluate("window.optimlabLab.result.runs[0].hyper.alpha") == 5
    before = run_id(page)
    page.select_option(".opt-card[data-index='0'] select.opt-name", "rmsprop")
    settle(page, before)
    slider = page.locator(".opt-card[data-index='0'] input.opt-alpha-slider")
    assert (slider.get_attribute("min"), slider.get_attribute("max")) == ("0", "4")  # -log10(1 - alpha)
    assert errors == []
    page.close()


@pytest.mark.parametrize("width,height", [(1024, 900), (390, 844)])
def test_layout_at_laptop_and_phone_width(server_url, browser, width, height):
    page, errors = open_page(browser, server_url, "#speed=0", width, height)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"the page is {overflow} px wider than a {width} px screen"
    # the legend fits in the contour's top margin: its box ends above the plotting area
    legend = page.locator("#contour-fg .legend").bounding_box()
    area = page.locator("#contour-fg .nsewdrag").bounding_box()
    assert legend["y"] >= page.locator("#contour-fg").bounding_box()["y"] - 1
    assert legend["y"] + legend["height"] <= area["y"] + 2, (legend, area)
    page.screenshot(path=str(ARTIFACTS / f"web-lab-{width}px.png"), full_page=True)
    assert errors == []
    page.close()
