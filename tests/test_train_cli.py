"""``optimlab train | lr-find | bench`` from the command line."""

import json
import subprocess
import sys

import pytest
import torch

from optimlab.cli import main


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_train_writes_curves_and_diagnostics(tmp_path, capsys):
    rc = main(["train", "--task", "cancer-logreg", "--optimizer", "adam", "--lr", "0.03", "--steps", "60",
               "--schedule", "warmup-cosine", "--diagnostics-every", "20", "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    stem = "train_cancer-logreg_adam"
    assert names == sorted(f"{stem}{s}" for s in (".json", "_loss.csv", "_evals.csv", "_curves.png",
                                                   "_diagnostics.csv", "_diagnostics.png"))
    run = json.loads((tmp_path / f"{stem}.json").read_text())
    assert run["steps"] == 60 and run["schedule"] == "warmup-cosine" and len(run["train_loss"]) == 60
    out = capsys.readouterr().out
    assert "cancer-logreg: adam lr=0.03, batch, schedule warmup-cosine" in out and "reached" in out
    # the numbers are those of the same run made through the library, and the CSV holds them too
    from optimlab.train.loop import train

    ref = train("cancer-logreg", "adam", lr=0.03, steps=60, schedule="warmup-cosine")
    assert run["train_loss"] == pytest.approx(ref.train_loss, rel=1e-6)
    assert run["final_metric"] == pytest.approx(ref.final_metric, rel=1e-6)
    import csv

    rows = list(csv.reader(open(tmp_path / f"{stem}_loss.csv")))
    losses = [float(r[-1]) for r in rows[1:]]
    assert losses == pytest.approx(run["train_loss"], rel=1e-5) and len(losses) == 60  # 6 digits


def test_train_stochastic_mode(tmp_path):
    assert main(["train", "--task", "sparse-logreg", "--optimizer", "sgd", "--lr", "0.1", "--mode", "stochastic",
                 "--steps", "30", "--out", str(tmp_path), "--no-progress"]) == 0
    run = json.loads((tmp_path / "train_sparse-logreg_sgd.json").read_text())
    assert run["mode"] == "stochastic"


def test_lr_find_cli(tmp_path, capsys):
    assert main(["lr-find", "--task", "cancer-logreg", "--optimizer", "adam", "--steps", "40",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "suggested lr" in out and "rule min/10" in out and "median over" in out and "range" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr_find_cancer-logreg_adam.csv",
                                                          "lr_find_cancer-logreg_adam.png"]


def test_bench_cli(tmp_path, capsys):
    assert main(["bench", "--task", "cancer-logreg", "--optimizers", "sgd,adam", "--lr-min", "1e-2", "--lr-max",
                 "1e-1", "--per-decade", "1", "--steps", "40", "--seeds", "1", "--out", str(tmp_path)]) == 0
    assert "tuned lr" in capsys.readouterr().out
    assert len(list(tmp_path.iterdir())) == 4


@pytest.mark.parametrize("argv, message", [
    (["train", "--task", "digits_mlp"], "unknown task 'digits_mlp'; did you mean 'digits-mlp'? (valid:"),
    (["train", "--task", "digits-mlp", "--optimizer", "nesterov-sgd"], "unknown optimizer"),
    (["train", "--task", "digits-mlp", "--lr", "-0.1"], "lr must be a number in (0, 100]"),
    (["train", "--task", "digits-mlp", "--mode", "stochastic", "--batch-size", "8"], "batch_size applies only"),
    (["train", "--task", "digits-mlp", "--schedule", "cos"], "unknown schedule"),
    (["train", "--task", "digits-mlp", "--threads", "0"], "--threads must be in [1,"),
    (["train", "--task", "digits-mlp", "--seed", "-1"], "--seed must be in [0,"),
    (["train", "--task", "digits-mlp", "--steps", "0"], "steps must be an integer >= 1"),
    (["lr-find", "--task", "digits-mlp", "--rule", "bogus"], "--rule must be one of"),
    (["lr-find", "--task", "digits-mlp", "--seeds", "0"], "--seeds must be in [1, 100]"),
    (["bench", "--task", "digits-mlp", "--optimizers", "adam", "sgdd"], "did you mean 'sgd'"),
    (["bench", "--task", "digits-mlp", "--seeds", "0"], "seeds must be an integer in [1, 100]"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, capsys, argv, message):
    assert main(argv + ["--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_command_line_from_a_fresh_process(tmp_path):
    """A real process: argparse wiring, the error path and its exit code (training is tested above)."""
    proc = subprocess.run([sys.executable, "-m", "optimlab.cli", "train", "--task", "digits_mlp",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown task 'digits_mlp'; did you mean 'digits-mlp'?" in proc.stderr
    assert not (tmp_path / "out").exists()
