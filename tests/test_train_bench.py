"""The optimizer benchmark: LR grid, tuning rule, measured seeds, result files."""

import csv
import json
import math

import pytest

from optimlab.train import get_task, lr_grid, run_bench
from optimlab.train.bench import _score, tune, write_results
from optimlab.train.loop import RunResult


pytestmark = pytest.mark.usefixtures("one_thread")


def test_lr_grid_is_log_spaced():
    assert lr_grid(1e-4, 1.0, 2) == [1e-4, 3.16e-4, 1e-3, 3.16e-3, 1e-2, 3.16e-2, 0.1, 0.316, 1.0]
    assert lr_grid(1e-3, 1e-3, 3) == [1e-3]


@pytest.mark.parametrize("args, message", [((0, 1, 2), "lr_min must be"), ((1e-2, 1e-3, 2), "lr_max must be >="),
                                           ((1e-3, 1, 0), "per_decade must be")])
def test_lr_grid_rejects_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        lr_grid(*args)


def _run(lr, steps_to_target, metric):
    return RunResult("digits-mlp", "adam", lr, "m", "none", 0, 10, 1.0, [], [{"step": 10, "metric": metric}],
                     steps_to_target, None, metric, False)


def test_tuning_prefers_fewest_steps_then_smaller_lr():
    task = get_task("digits-mlp")
    runs = [_run(1e-3, None, 0.94), _run(1e-2, 200, 0.96), _run(0.1, 100, 0.97), _run(3e-2, 100, 0.95),
            _run(1.0, None, math.nan), _run(3e-4, None, 0.93)]
    assert min(runs, key=lambda r: _score(task, r)).lr == 3e-2
    assert min([runs[0], runs[4], runs[5]], key=lambda r: _score(task, r)).lr == 1e-3  # none reached: metric


def test_tune_picks_a_grid_lr_that_reaches_target():
    task = get_task("cancer-logreg")
    best, runs = tune(task, "adam", [1e-4, 1e-2, 1e-1], steps=150)
    assert [r.lr for r in runs] == [1e-4, 1e-2, 1e-1]
    assert best.steps_to_target is not None
    assert all(r.steps_to_target is None or r.steps_to_target >= best.steps_to_target for r in runs)


def test_bench_measures_fresh_seeds_and_writes_results(tmp_path):
    res = run_bench("cancer-logreg", ["sgd", "adam"], [1e-3, 3e-2], steps=250, seeds=2)
    assert list(res.summary) == ["sgd", "adam"]
    for name, s in res.summary.items():
        assert [r["seed"] for r in res.runs[name]] == [1, 2]  # tuning used seed 0
        assert all(len(r["train_loss"]) == 250 for r in res.runs[name] if not r["diverged"])
        reached = [r for r in res.runs[name] if r["steps_to_target"] is not None]
        assert s["reached"] == len(reached)
        finals = [r["final_metric"] for r in res.runs[name]]
        assert math.isclose(s["final_metric_mean"], sum(finals) / 2)
    assert res.summary["adam"]["reached"] == 2
    assert all(s["lr_at_grid_edge"] for s in res.summary.values())  # a 2-point grid is all edge
    paths = write_results(res, tmp_path, "bench_x")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temp files left
    data = json.loads((tmp_path / "bench_x.json").read_text())
    assert data["summary"]["adam"]["lr"] == res.summary["adam"]["lr"]
    rows = list(csv.DictReader(open(tmp_path / "bench_x.csv")))
    assert [r["optimizer"] for r in rows] == ["sgd", "adam"] and rows[1]["reached"] == "2"
    assert all((tmp_path / f"bench_x{s}.png").stat().st_size > 10_000 for s in ("_curves", "_lr_grid"))


def test_bench_rejects_unknown_optimizer():
    with pytest.raises(ValueError, match="did you mean 'rmsprop'"):
        run_bench("cancer-logreg", ["rmsprp"], [1e-3])


def test_result_files_are_all_or_nothing(tmp_path):
    from pathlib import Path

    def fails(tmp):
        raise RuntimeError("figure failed")
    with pytest.raises(RuntimeError, match="figure failed"):
        from optimlab._atomic import atomic_write_all
        atomic_write_all([(tmp_path / "a.json", lambda tmp: Path(tmp).write_text("{}")), (tmp_path / "b.png", fails)])
    assert list(tmp_path.iterdir()) == []
