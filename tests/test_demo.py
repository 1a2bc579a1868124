"""The demo (the README's main job) writes a complete table and a real figure."""

import csv
import math

import numpy as np
import pytest
import torch
from torch import nn

from optimlab import catalogue, demo
from optimlab.cli import main as cli_main


def reference_run(name, lr, epochs, batch_size=32, seed=0):
    """The demo's protocol written out here, with the torch.optim class the catalogue names as the
    entry's equivalent: same data, initial weights and batch order; returns (losses, val_loss)."""
    torch_name, torch_kwargs = catalogue.get(name).torch
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    (x, y), (xv, yv) = demo.two_spirals(800, gen), demo.two_spirals(400, gen)
    model = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 2))
    opt = getattr(torch.optim, torch_name)(model.parameters(), lr=lr, **torch_kwargs)
    order_gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=order_gen)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            losses.append(loss.item())
    with torch.no_grad():
        val_loss = nn.functional.cross_entropy(model(xv), yv).item()
    return losses, val_loss


def test_demo_numbers_and_figure_match_a_reference_run(tmp_path, monkeypatch):
    """results.csv against torch.optim runs of the same protocol; the figure's axes, labels, scale
    and each curve (the bias-corrected EWMA of the reference losses) read from the figure itself."""
    import matplotlib.pyplot as plt

    figures = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: figures.append(fig) or real_close(fig))
    assert demo.main(["--out", str(tmp_path), "--epochs", "2", "--no-tour"]) == 0
    rows = {r["optimizer"]: r for r in csv.DictReader(open(tmp_path / "results.csv"))}
    (fig,) = figures
    (ax,) = fig.axes
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "step (mini-batch of 32)"
    assert ax.get_ylabel().startswith("training loss (EWMA") and "Two spirals" in ax.get_title()
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines) == [catalogue.get(name).label for name, _ in demo.CONTENDERS]
    checked = 0
    for name, lr in demo.CONTENDERS:
        entry = catalogue.get(name)
        if entry.torch is None:
            continue
        losses, val_loss = reference_run(name, lr, epochs=2)
        row = rows[entry.label]
        assert float(row["val_loss"]) == pytest.approx(val_loss, rel=1e-4, abs=1e-6), name
        assert float(row["final_train_loss"]) == pytest.approx(np.mean(losses[-25:]), rel=1e-4), name
        raw, expected = 0.0, []
        for t, value in enumerate(losses, 1):
            raw = 0.95 * raw + 0.05 * value
            expected.append(raw / (1 - 0.95 ** t))
        np.testing.assert_allclose(lines[entry.label].get_ydata(), expected, rtol=1e-4, err_msg=name)
        assert lines[entry.label].get_color().lower() == entry.colour.lower()
        checked += 1
    assert checked >= 6


def test_demo_writes_table_and_figure(tmp_path):
    assert demo.main(["--out", str(tmp_path), "--epochs", "2", "--no-tour"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert [r["optimizer"] for r in rows] == [catalogue.get(name).label for name, _ in demo.CONTENDERS]
    for r in rows:
        assert math.isfinite(float(r["val_loss"])) and 0.0 <= float(r["val_accuracy"]) <= 1.0
    png = (tmp_path / "loss_curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    assert not list(tmp_path.glob("*.tmp"))


def test_demo_cli_rejects_bad_epochs(tmp_path, capsys):
    assert cli_main(["demo", "--out", str(tmp_path), "--epochs", "0"]) == 2
    assert "--epochs must be >= 1" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
