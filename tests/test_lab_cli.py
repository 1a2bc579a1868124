"""The lab's command line: outputs, tables, errors that name the argument, atomic results."""

import csv
import json
import os

import pytest

from optimlab.cli import main


def test_landscapes_lists_every_landscape(capsys):
    from optimlab.lab import LANDSCAPES

    assert main(["landscapes"]) == 0
    out = capsys.readouterr().out
    for name in LANDSCAPES:
        assert name in out


def test_compare_writes_figures_and_results(tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", "--landscape", "bowl", "--optimizers", "sgd,momentum,adam", "--lr", "sgd=0.1,adam=0.05",
                 "--steps", "40", "--out", str(out)])
    assert code == 0
    for name in ("contour.png", "surface.png", "loss.png", "results.csv", "results.json"):
        data = (out / name).read_bytes()
        assert len(data) > 100
        if name.endswith(".png"):
            assert data[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["optimizer"] for r in rows] == ["sgd", "momentum", "adam"]
    assert float(rows[0]["lr"]) == 0.1 and rows[0]["lr_choice"] == "given"
    assert rows[1]["lr_choice"].startswith("auto")
    # GD with lr 0.1 on x^2 + y^2 contracts by 0.8 per step: the final loss is 0.8^80 * f(start)
    f0 = 2.5 ** 2 + 1.5 ** 2
    assert float(rows[0]["final_loss"]) == pytest.approx(f0 * 0.8 ** 80, rel=1e-9)
    meta = json.loads((out / "results.json").read_text())["meta"]
    assert meta["steps"] == 40 and meta["landscape"] == "bowl"
    table = capsys.readouterr().out
    assert "final loss" in table and "momentum" in table
    assert not [p for p in os.listdir(out) if p.endswith(".tmp") or ".tmp." in p]


def test_sweep_writes_curve_and_table(tmp_path, capsys):
    out = tmp_path / "sw"
    code = main(["sweep", "--landscape", "rosenbrock", "--optimizers", "sgd,adam", "--num-lr", "5", "--starts", "4",
                 "--steps", "30", "--lr-min", "1e-4", "--lr-max", "1e-1", "--out", str(out)])
    assert code == 0
    rows = list(csv.DictReader(open(out / "sweep.csv")))
    assert len(rows) == 2 * 5
    assert (out / "lr_sweep.png").read_bytes()[:4] == b"\x89PNG"
    sgd_top = [r for r in rows if r["optimizer"] == "sgd"][-1]
    assert float(sgd_top["diverged_fraction"]) == 1.0  # GD at lr 0.1 on Rosenbrock blows up
    assert "best lr" in capsys.readouterr().out


def test_basins(tmp_path):
    out = tmp_path / "b"
    assert main(["basins", "--optimizers", "sgd,adam", "--grid", "6", "--steps", "60", "--lr", "sgd=0.01,adam=0.1",
                 "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "basins.csv")))
    fractions = [float(rows[0][f"minimum_{k}"]) for k in range(4)] + [float(rows[0]["none_or_diverged"])]
    assert sum(fractions) == pytest.approx(1.0)


@pytest.mark.parametrize("argv, message", [
    (["compare", "--optimizers", "adma"], "did you mean 'adam'"),
    (["compare", "--landscape", "rosenbrok"], "did you mean 'rosenbrock'"),
    (["compare", "--steps", "0"], "argument --steps: must be an integer in [1, 100000], got 0"),
    (["compare", "--lr", "-1"], "argument --lr: must be a number in (0, 100]"),
    (["compare", "--start", "1"], "argument --start: must be two numbers"),
    (["compare", "--schedule", "cosin"], "argument --schedule: schedule must be one of"),
    (["sweep", "--num-lr", "0"], "argument --num-lr: must be an integer in [1, 1000]"),
    (["sweep", "--optimizers", "adam,nestorov"], "did you mean 'nesterov'"),
])
def test_bad_arguments_name_the_argument(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(argv + ["--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_start_outside_the_window_is_refused(tmp_path, capsys):
    assert main(["compare", "--landscape", "bowl", "--start", "5,0", "--out", str(tmp_path / "c")]) == 2
    assert "--start must lie in bowl's window x in [-3, 3]" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_runtime_error_leaves_no_results_file(tmp_path, capsys):
    out = tmp_path / "sw"
    code = main(["sweep", "--lr-min", "0.1", "--lr-max", "0.01", "--steps", "5", "--out", str(out)])
    assert code == 2
    assert "--lr-min must be < --lr-max" in capsys.readouterr().err
    assert not out.exists()


def test_atomic_write_removes_temp_file_on_error(tmp_path):
    from optimlab.lab import _io

    target = tmp_path / "r.csv"
    _io.write_text(target, "old\n")

    def boom(tmp):
        open(tmp, "w").write("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        _io.atomic_write(target, boom)
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["r.csv"]
