"""The lab's figures (the tour itself: tests/test_lab_tour.py)."""



import torch
from PIL import Image

from optimlab.lab import _io, plots
from optimlab.lab.engine import run


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
