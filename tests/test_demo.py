"""The demo (the README's main job) writes a complete table and a real figure."""

import csv
import math

from optimlab import catalogue, demo
from optimlab.cli import main as cli_main


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
