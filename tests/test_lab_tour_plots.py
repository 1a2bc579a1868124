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
