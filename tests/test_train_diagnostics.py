"""Per-layer diagnostics: update/parameter norm ratio and the effective per-element step size."""

import csv
import math

import pytest

from optimlab.train import LayerDiagnostics, Mode, train
from optimlab.train.diagnostics import COLUMNS


pytestmark = pytest.mark.usefixtures("one_thread")


def test_plain_sgd_step_size_is_lr_for_every_element():
    diag = LayerDiagnostics(every=5)
    train("digits-mlp", "sgd", 0.05, steps=20, diagnostics=diag)
    assert {r["step"] for r in diag.rows} == {1, 5, 10, 15, 20}
    assert {r["layer"] for r in diag.rows} == {"0.weight", "0.bias", "2.weight", "2.bias"}
    for r in diag.rows:
        # exact up to float32 rounding of w_after - w_before (relative error ~ 6e-8 |w| / |lr g|)
        assert math.isclose(r["step_size_q50"], 0.05, rel_tol=1e-4), (r["layer"], r["step_size_q50"])
        for c in COLUMNS[7:]:
            assert math.isclose(r[c], 0.05, rel_tol=1e-2), (r["layer"], c, r[c])
        # ||dw|| = lr ||g|| for plain SGD
        assert math.isclose(r["update_norm"], 0.05 * r["grad_norm"], rel_tol=1e-4)
        assert math.isclose(r["update_ratio"], r["update_norm"] / r["param_norm"], rel_tol=1e-12)


def test_adam_adapts_the_step_per_parameter():
    diag = LayerDiagnostics(every=10)
    train("digits-mlp", "adam", 1e-3, steps=30, diagnostics=diag)
    weight_rows = [r for r in diag.rows if r["layer"] == "0.weight" and r["step"] > 1]
    # the per-element step sizes spread over an order of magnitude, unlike SGD's single lr
    assert all(r["step_size_q95"] / r["step_size_q05"] > 10 for r in weight_rows)
    # at step 1 Adam's bias-corrected step is lr * g / (|g| + eps): every element with a gradient
    # moves by lr (elements fed by always-blank pixels have g = 0 and do not move)
    first = [r for r in diag.rows if r["step"] == 1 and r["layer"] == "0.weight"][0]
    moved = (first["update_norm"] / 1e-3) ** 2
    assert abs(moved - round(moved)) < 0.05 * moved ** 0.5 and 0.5 * first["numel"] < moved <= first["numel"]


def test_diagnostics_do_not_change_training():
    a = train("cancer-logreg", "adam", 0.03, Mode("minibatch", 32), steps=40)
    b = train("cancer-logreg", "adam", 0.03, Mode("minibatch", 32), steps=40, diagnostics=LayerDiagnostics(3))
    assert a.train_loss == b.train_loss


def test_csv_is_written_atomically(tmp_path):
    diag = LayerDiagnostics(every=10)
    train("cancer-logreg", "sgd", 1e-6, steps=20, diagnostics=diag)
    path = tmp_path / "diag.csv"
    diag.write_csv(path)
    rows = list(csv.DictReader(open(path)))
    assert len(rows) == len(diag.rows) == 3 * 2 and list(rows[0]) == COLUMNS
    assert [p.name for p in tmp_path.iterdir()] == ["diag.csv"]


def test_every_must_be_positive():
    with pytest.raises(ValueError, match="every must be an integer >= 1"):
        LayerDiagnostics(0)
