"""The tour (an HTML page whose verdicts are computed from its numbers) and the figures."""

import base64
import json
import re

import pytest
import torch
from PIL import Image

from optimlab.lab import _io, plots, tour
from optimlab.lab.engine import run


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("tour")
    return out, tour.main(out, gif=False)


def test_tour_page_is_self_contained_with_a_figure_and_verdict_per_claim(built):
    out, page = built
    text = page.read_text()
    sections = json.loads((out / "tour.json").read_text())
    assert {s["key"] for s in sections} >= {"ewma", "momentum", "nag", "local_minimum", "saddle", "adagrad",
                                             "adam_bias", "learning_rate", "schedule"}
    assert text.count("<section") == len(sections)
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) >= len(sections)
    assert base64.b64decode(images[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "src=\"http" not in text and "<script" not in text  # nothing fetched from elsewhere
    for s in sections:
        assert s["numbers"] and s["checks"]
        badge = "holds" if all(c["holds"] for c in s["checks"]) else "does not fully hold"
        assert re.search(rf"href='#{s['key']}'>[^<]*</a>: <span class='\w+'>{badge}</span>", text)


def test_tour_numbers_agree_with_an_independent_run(built):
    out, _ = built
    sections = {s["key"]: s for s in json.loads((out / "tour.json").read_text())}
    # Adam's first step per coordinate is lr with bias correction and lr * (1 - beta1) / sqrt(1 - beta2)
    # without, so the ratio of their lengths is 0.1 / sqrt(0.001) = 3.162
    first = float(sections["adam_bias"]["numbers"]["first step length, without / with bias correction"])
    assert first == pytest.approx((1 - 0.9) / (1 - 0.999) ** 0.5, rel=1e-3)
    # the seed's worked example
    nums = sections["adam_bias"]["numbers"]
    assert any(v == "0.49684" for v in nums.values())
    # GD's saddle escape equals a fresh run's
    res = run("saddle", "sgd", [2.0, 1e-3], 600, lr=0.01)
    first_below = int(torch.nonzero(res.loss[:, 0] < -1.0)[0])
    assert sections["saddle"]["numbers"]["GD: steps to escape"] == str(first_below)


def test_verdicts_are_computed_not_written_in():
    runs, grid = tour.ravine_runs()
    honest = tour.nag_section(runs, grid)
    swapped = tour.nag_section({**runs, "momentum": runs["nag"], "nag": runs["momentum"]},
                               type(grid)({**grid.runs, "momentum": grid.runs["nag"], "nag": grid.runs["momentum"]},
                                          grid.lrs, grid.starts))
    assert honest.checks[0][2] != swapped.checks[0][2]
    assert honest.checks[1][2] != swapped.checks[1][2]


def test_colors_are_okabe_ito_and_distinct():
    keys = ["sgd", "momentum", "nag", "adagrad", "rmsprop", "adam", "nadam", "extra"]
    c = plots.colors_for(keys)
    assert len(set(c.values())) == len(keys)
    assert set(c.values()) <= set(plots.OKABE_ITO)


def test_figures_show_the_data_they_are_given():
    """Read back from the figures: each trajectory's points, the loss curve, the sweep's points,
    the window, the axes' labels and scales."""
    import numpy as np

    from optimlab.lab import get_landscape

    res = run("himmelblau", "adam", torch.tensor([[0.0, 0.0], [1.0, -1.0]], dtype=torch.float64), 30, lr=0.1)
    paths = {"a": res.path[:, 0], "b": res.path[:, 1]}
    ax = plots.contour("himmelblau", paths).axes[0]
    (xlo, xhi), (ylo, yhi) = get_landscape("himmelblau").window
    assert ax.get_xlim() == (xlo, xhi) and ax.get_ylim() == (ylo, yhi)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x", "y") and ax.get_title().startswith("himmelblau")
    lines = {line.get_label(): line for line in ax.get_lines()}
    for name, path in paths.items():
        np.testing.assert_array_equal(lines[name].get_xdata(), path[:, 0].numpy())
        np.testing.assert_array_equal(lines[name].get_ydata(), path[:, 1].numpy())
    assert "known minimum" in lines

    ax = plots.loss_curves({"a": res.loss[:, 0]}).axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_yscale()) == ("step", "loss", "log")
    (line,) = ax.get_lines()
    np.testing.assert_array_equal(line.get_xdata(), np.arange(31))
    np.testing.assert_array_equal(line.get_ydata(), res.loss[:, 0].numpy())

    lrs, final = torch.tensor([0.1, 0.3, 1.0]), torch.tensor([1.0, 0.5, 0.1])
    ax = plots.lr_sweep(lrs, {"a": final}, {"a": torch.tensor([False, False, True])}).axes[0]
    assert (ax.get_xscale(), ax.get_yscale(), ax.get_xlabel()) == ("log", "log", "learning rate")
    curve = next(line for line in ax.get_lines() if line.get_label() == "a")
    np.testing.assert_array_equal(curve.get_xdata(), lrs.numpy())
    np.testing.assert_allclose(curve.get_ydata(), final.numpy())


def test_figures_render(tmp_path):
    res = run("himmelblau", "adam", torch.tensor([[0.0, 0.0], [1.0, -1.0]], dtype=torch.float64), 30, lr=0.1,
              record_grads=True)
    paths = {"a": res.path[:, 0], "b": res.path[:, 1]}
    figs = {"contour.png": plots.contour("himmelblau", paths), "surface.png": plots.surface("himmelblau", paths),
            "loss.png": plots.loss_curves({"a": res.loss[:, 0]}),
            "sweep.png": plots.lr_sweep(torch.tensor([0.1, 1.0]), {"a": torch.tensor([1.0, 0.1])},
                                        {"a": torch.tensor([False, True])}),
            "basins.png": plots.basin_map("himmelblau", {"a": torch.tensor([0, 1, 2, -1])},
                                          torch.tensor([-1.0, 1.0]), torch.tensor([-1.0, 1.0]))}
    for name, fig in figs.items():
        _io.save_figure(fig, tmp_path / name)
        with Image.open(tmp_path / name) as im:
            assert im.format == "PNG" and im.width > 300 and im.height > 200
    gif = plots.animate("himmelblau", paths, str(tmp_path / "t.gif"), frames=5)
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames == 5
