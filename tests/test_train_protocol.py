"""The benchmark protocol: profile arithmetic by hand, misses as failures, targets, intervals, and a
miniature protocol run end to end through a killed and restarted worker."""

import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

from optimlab.train import protocol as P  # noqa: E402
from optimlab import catalogue  # noqa: E402
from optimlab.train import space as S  # noqa: E402
from optimlab.train.space import default_hparams, search_space  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
INF = math.inf


def test_profile_and_score_by_hand():
    # ratios to the fastest: x: A 1, B 3, C miss;  y: A 1, B miss, C 2;  z: nobody solved
    times = {"x": {"A": 10.0, "B": 30.0, "C": INF}, "y": {"A": 20.0, "B": INF, "C": 40.0},
             "z": {"A": INF, "B": INF, "C": INF}}
    prof = P.profile(times, [1.0, 2.0, 2.9, 3.0, 4.0])
    assert prof["A"] == pytest.approx([2 / 3] * 5)
    assert prof["B"] == pytest.approx([0, 0, 0, 1 / 3, 1 / 3])
    assert prof["C"] == pytest.approx([0, 1 / 3, 1 / 3, 1 / 3, 1 / 3])
    # area over tau in [1, 4] / 3, averaged over the 3 tasks: A (3 + 3 + 0) / 9, B (1) / 9, C (2) / 9
    score = P.profile_score(times, 4.0)
    assert score == pytest.approx({"A": 6 / 9, "B": 1 / 9, "C": 2 / 9})
    # the closed form equals the integral of the step function
    taus = np.linspace(1, 4, 30001)
    fine = P.profile(times, taus)
    for o in "ABC":
        assert np.trapezoid(fine[o], taus) / 3 == pytest.approx(score[o], abs=1e-3)


def test_misses_are_failures_in_medians_and_reach():
    assert P.median_inf([3.0, INF, 1.0]) == 3.0
    assert P.median_inf([3.0, INF, INF]) == INF        # more than half missed
    assert P.median_inf([2.0, 4.0, INF, INF]) == INF   # half of an even count missed
    assert P.median_inf([2.0, 4.0, 6.0, INF]) == 5.0
    curve = [[10, 0.1, 0.80], [20, 0.2, None], [30, 0.3, 0.91], [40, 0.4, 0.95]]
    assert P.first_reach(curve, 0.9, True) == (30.0, 0.3)
    assert P.first_reach(curve, 0.99, True) == (INF, INF)
    assert P.first_reach([[5, 0.5, 0.3], [10, 1.0, 0.05]], 0.1, False) == (10.0, 1.0)


def test_target_is_the_worse_quartile_of_the_best_baseline():
    finals = {"a": [0.9, 0.8, 0.95, 0.7], "b": [0.85, 0.86, None, 0.84], "c": []}
    # medians: a 0.85, b 0.845 (a diverged run counts as worst) -> baseline a; target: the 3rd best of 4
    assert P.set_target(finals, True, 0.25) == (0.8, "a")
    assert P.set_target(finals, True, 0.5) == (0.9, "a")
    assert P.set_target(finals, True, 0.0) == (0.7, "a")
    losses = {"a": [0.3, 0.1, 0.2, float("nan")], "b": [0.25, 0.26, 0.27, 0.24]}
    # medians: a 0.25 (nan worst), b 0.255 -> baseline a; the 3rd best of [0.1, 0.2, 0.3, inf]
    assert P.set_target(losses, False, 0.25) == (0.3, "a")
    assert P.set_target({"a": [0.5] * 9}, False, 0.25) == (0.5, "a")
    with pytest.raises(ValueError, match="diverged"):
        P.set_target({"a": [None, None]}, True)


def test_bootstrap_interval_and_verdict():
    fast, slow = [1.0, 1.1, 0.9, 1.05, 0.95] * 4, [2.0, 2.2, 1.8, 2.1, 1.9] * 4
    point, lo, hi = P.bootstrap_ratio(fast, slow)
    assert point == pytest.approx(0.5) and lo < 0.5 < hi < 1 and P.verdict(lo, hi) == "holds"
    assert P.verdict(*P.bootstrap_ratio(slow, fast)[1:]) == "does not hold"
    assert P.verdict(*P.bootstrap_ratio(fast, fast)[1:]) == "inconclusive"
    both_miss = P.bootstrap_ratio([INF] * 4, [INF] * 4)
    assert math.isnan(both_miss[1]) and P.verdict(*both_miss[1:]) == "inconclusive"
    assert P.bootstrap_ratio([1.0, 1.0], [INF, INF])[0] == 0.0  # the other always missed


def _record(study, lr, curve, final, seed=0):
    return {"params": {"lr": lr}, "study": study, "seed": seed, "cpu_seconds": 1.0,
            "run": {"final": final, "diverged": final is None, "steps": 30, "seconds": 0.3, "evals": curve}}


def test_analyse_hand_built_results():
    """Two optimizers on one task; 'slow' never reaches the target in study 1 (a miss)."""
    proto = P.Protocol(("digits-mlp",), ("adam", "sgd"), trials=1, studies=2, eval_seeds=2, default_seeds=1)

    def curve(hit_step, final):
        return [[s, s / 100, final if s >= hit_step else 0.5] for s in (10, 20, 30)]
    raw = {"digits-mlp": {
        "adam": {"tune": [_record(0, 1e-3, curve(10, 0.97), 0.97), _record(1, 2e-3, curve(10, 0.97), 0.97)],
                 "eval": [_record(0, 1e-3, curve(10, 0.97), 0.97), _record(0, 1e-3, curve(20, 0.96), 0.96),
                          _record(1, 2e-3, curve(10, 0.98), 0.98), _record(1, 2e-3, curve(30, 0.96), 0.96)],
                 "default": [_record(0, 1e-3, curve(30, 0.96), 0.96)]},
        "sgd": {"tune": [_record(0, 0.1, curve(10, 0.9), 0.9), _record(1, 0.1, curve(10, 0.9), 0.9)],
                "eval": [_record(0, 0.1, curve(20, 0.96), 0.96), _record(0, 0.1, curve(30, 0.96), 0.96),
                         _record(1, 0.1, curve(30, 0.9), 0.9), _record(1, 0.1, curve(30, 0.9), 0.9)],
                "default": [_record(0, 1e-3, curve(30, 0.5), 0.5)]}}}
    r = P.analyse(proto, raw)
    t = r["tasks"]["digits-mlp"]
    # adam finals [0.97, 0.96, 0.98, 0.96]: median 0.965 > sgd's 0.93 -> baseline; 3rd best of 4: 0.96
    assert (t["baseline"], t["target"]) == ("adam", 0.96)
    adam, sgd = t["optimizers"]["adam"], t["optimizers"]["sgd"]
    assert [s["steps"] for s in adam["studies"]] == [15.0, 20.0]      # medians of (10, 20) and (10, 30)
    assert [s["steps"] for s in sgd["studies"]] == [25.0, INF]        # study 1: both seeds end at 0.9: misses
    assert [s["reached"] for s in sgd["studies"]] == [2, 0]
    assert adam["steps"] == 17.5 and sgd["steps"] == INF              # median over 2 studies, a miss -> miss
    assert adam["steps_range"] == [15.0, 20.0] and sgd["steps_range"] == [25.0, INF]
    assert r["score_steps"] == {"adam": 1.0, "sgd": 0.0}              # a miss never scores
    assert adam["default"]["reached"] == 1 and sgd["default"]["reached"] == 0
    assert (r["budget"]["runs"], r["budget"]["cpu_seconds"]) == (14, 14.0)


def test_search_edge_flags_a_best_value_in_the_outermost_cell():
    bounds = {"lr": [1e-4, 10.0, True], "momentum": [0.0, 0.99, False]}
    # 8 cells of the log range 1e-4..10: each 10 ** (5 / 8) wide; the outer ones end at 10 ** -3.375 and 10 ** 0.375
    assert P.search_edge({"lr": 4.1e-4, "momentum": 0.5}, bounds, 8) == ["lr low"]
    assert P.search_edge({"lr": 4.3e-4, "momentum": 0.5}, bounds, 8) == []
    assert P.search_edge({"lr": 2.3, "momentum": 0.5}, bounds, 8) == []
    assert P.search_edge({"lr": 2.4, "momentum": 0.98}, bounds, 8) == ["lr high", "momentum high"]
    assert P.search_edge({"lr": 1.0, "momentum": 0.05}, bounds, 8) == ["momentum low"]  # 0.99 / 8 = 0.124
    assert P.search_edge({"lr": 1.0}, {}, 8) == []      # no numeric range stored (a categorical space)


def test_space_defaults_and_bad_input():
    lr = catalogue.get("adam").tune["lr"]
    # every main entry searches lr 1e-4..10 (log): before, it stopped at 1 and the protocol found SGD's
    # best lr above 1 on sparse-logreg in all three studies (a best value on the edge of the range)
    assert all(catalogue.get(n).tune["lr"] == catalogue.Range(1e-4, 10.0, log=True) for n in catalogue.main_names())
    assert search_space("adam") == {"lr": lr} and search_space("Adam", "full") == dict(catalogue.get("adam").tune)
    assert default_hparams("adam") == {"lr": 1e-3} and default_hparams("nadam") == {"lr": 2e-3}
    points = P.sobol_points(search_space("sgd"), 8, seed=3)
    lrs = sorted(p["lr"] for p in points)
    assert len(set(lrs)) == 8 and lr.low <= lrs[0] and lrs[-1] <= lr.high
    # a scrambled Sobol sequence puts one point in each eighth of the log range
    bins = sorted(int(8 * math.log(x / lr.low) / math.log(lr.high / lr.low)) for x in lrs)
    assert bins == list(range(8))
    assert P.sobol_points(search_space("sgd"), 8, seed=3) == points
    # the full space: an enqueued point comes back through the catalogue's suggest as constructor arguments
    full = search_space("adam", "full")
    pt = P.sobol_points(full, 1, seed=0)[0]
    assert set(pt) == {"lr", "one_minus_beta1", "one_minus_beta2"}
    study = optuna.create_study()
    study.enqueue_trial(pt)
    kwargs = S.suggest(study.ask(), "adam", "full")
    assert kwargs["lr"] == pt["lr"] and kwargs["betas"] == (1 - pt["one_minus_beta1"], 1 - pt["one_minus_beta2"])
    import torch
    S.build("adam", [torch.zeros(2, requires_grad=True)], kwargs)
    assert S.point({"c": catalogue.Choice((False, True))}, [0.99]) == {"c": True}
    with pytest.raises(ValueError, match="space must be"):
        search_space("adam", "wide")
    with pytest.raises(ValueError, match="optimizer"):
        P.Protocol(("digits-mlp",), ("adamz",))
    with pytest.raises(ValueError, match="task"):
        P.Protocol(("digits-nope",), ("adam",))
    with pytest.raises(ValueError, match="trials must be"):
        P.Protocol(("digits-mlp",), ("adam",), trials=0)
    with pytest.raises(ValueError, match="repeat"):
        P.Protocol(("digits-mlp", "digits-mlp"), ("adam",))
    with pytest.raises(ValueError, match="workers"):
        P.run_protocol(P.Protocol(("digits-mlp",), ("adam",)), "sqlite://", workers=0)


MINI = ["--tasks", "diabetes-mlp", "sparse-logreg", "--optimizers", "adam", "sgd", "--trials", "3",
        "--studies", "2", "--eval-seeds", "2", "--default-seeds", "1", "--steps", "60", "--eval-every", "20"]


def _tune_trials(url):
    storage = P._storage(url)
    out = []
    for name in optuna.study.get_all_study_names(storage):
        if name.startswith("tune/"):
            out += [(name, t) for t in optuna.load_study(study_name=name, storage=storage).trials]
    return out


def _tune_states(db):
    """The tuning trials' states read straight from Optuna's SQLite tables: a look cheap enough
    (about a millisecond) to catch a worker mid-trial even on a loaded machine."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as c:
        return [state for (state,) in c.execute(
            "SELECT t.state FROM trials t JOIN studies s ON t.study_id = s.study_id WHERE s.study_name LIKE 'tune/%'")]


def test_miniature_protocol_killed_and_restarted_loses_and_repeats_nothing(tmp_path):
    from optimlab import cli
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    left_running = 0
    for attempt in range(4):  # the worker may finish a trial (or the whole run) before the kill: try afresh
        db = tmp_path / f"protocol{attempt}.db"
        url = f"sqlite:///{db}"
        proc = subprocess.Popen([sys.executable, "-m", "optimlab.cli", "protocol", *MINI, "--out", str(tmp_path),
                                 "--storage", url], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.time() + 240
            while time.time() < deadline and proc.poll() is None:
                time.sleep(0.01)
                try:
                    states = _tune_states(db)
                except sqlite3.Error:  # the database or its schema is still being created
                    continue
                if states.count("COMPLETE") >= 2 and "RUNNING" in states:
                    proc.send_signal(signal.SIGKILL)
                    break
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=60)
        if proc.returncode != -signal.SIGKILL:
            assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
            continue  # it ran to the end before the look caught a trial running
        left_running = [t.state.name for _, t in _tune_trials(url)].count("RUNNING")
        if left_running:
            break
    assert left_running == 1  # one worker, killed mid-trial

    assert cli.main(["protocol", *MINI, "--out", str(tmp_path), "--storage", url,
                     "--docs", str(tmp_path / "docs" / "mini.md")]) == 0
    # every study's completed points are exactly its Sobol points: none lost, none run twice
    by_study = {}
    for name, t in _tune_trials(url):
        by_study.setdefault(name, []).append(t)
    assert len(by_study) == 2 * 2 * 2
    failed = 0
    for name, trials in by_study.items():
        _, task, opt, s = name.split("/")
        done = sorted(t.params["lr"] for t in trials if t.state.name == "COMPLETE")
        assert done == sorted(p["lr"] for p in P.sobol_points(search_space(opt), 3, P.tuning_seed(int(s))))
        for t in trials:
            if t.state.name == "FAIL":  # the killed trial: re-run once from its own parameters
                failed += 1
                again = [u for u in trials if u.user_attrs.get("retry_of") == t.number]
                planned = t.params or t.system_attrs["fixed_params"]  # killed before or after it drew its point
                assert len(again) == 1 and again[0].params == planned and again[0].state.name == "COMPLETE"
        assert all(t.state.name in ("COMPLETE", "FAIL") for t in trials)
    assert failed == left_running

    import json
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["recovered"] == result["budget"]["retried"] == 1 and result["budget"]["runs"] == 2 * 2 * (2 * 3 + 2 * 2 + 1)
    # the report's profile is the profile of its own per-task times (misses as failures)
    times = {t: {o: (INF if v == "inf" else v) for o, v in row.items()} for t, row in result["times"]["seconds"].items()}
    assert result["score_seconds"] == pytest.approx(P.profile_score(times, 4.0))
    for name in ("report.md", "report.html", "profile.png", "sensitivity_diabetes-mlp.png", "docs/mini.md",
                 "docs/mini/profile.png", "docs/mini/sensitivity_sparse-logreg.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "](mini/profile.png)" in (tmp_path / "docs" / "mini.md").read_text()
    from optimlab.train.protocol_report import read_summary
    short = read_summary(tmp_path / "docs" / "mini.md")  # what the tour quotes
    assert short["verdicts"] == result["verdicts"] and short["score_steps"] == result["score_steps"]
    assert short["date"] in (tmp_path / "docs" / "mini.md").read_text()
    md = (tmp_path / "report.md").read_text()
    assert "held out" in md and "Adam is a good default" in md and "torch 2." in md
    # every study's best value is checked against the edges of the range stored with its trials
    flagged = [(t, o, st["study"]) for t, row in result["tasks"].items() for o, p in row["optimizers"].items()
               for st in p["studies"] if st["edge"]]
    assert "Best values on the edge of the search range" in md and md.count("(edge)") >= len(flagged)
    for t, o, s in flagged:
        assert f"{o} on {t}, study {s} (lr " in md


def test_tune_drives_a_training_task(tmp_path, capsys):
    import json

    from optimlab import Adam, cli, tune
    from optimlab.train import train
    url = f"sqlite:///{tmp_path / 't.db'}"
    assert cli.main(["tune", "--algorithm", "adam", "--trials", "2", "--storage", url, "--seed", "0",
                     "--task", "train:diabetes-mlp"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    trials = [r for r in rows if "trial" in r]
    assert len(trials) == 2 and all(t["state"] == "COMPLETE" for t in trials)
    # the stored value is the final validation MSE of that very training run
    hp = trials[0]["params"]
    again = train("diabetes-mlp", seed=0, optimizer_factory=lambda p: Adam(
        p, lr=hp["lr"], betas=(1 - hp["one_minus_beta1"], 1 - hp["one_minus_beta2"])))
    assert trials[0]["value"] == pytest.approx(again.final_metric, rel=1e-6)
    with pytest.raises(ValueError, match="task"):
        tune.load_task("train:no-such-task")


def test_held_out_and_non_stationary_tasks_are_declared_and_shift_half_way():
    import torch

    from optimlab.train import get_task
    assert get_task("diabetes-mlp").held_out and not get_task("digits-mlp").held_out
    task = get_task("shift-char-lstm")
    first, late_first, second = task.train_tensors(0, 100), task.train_tensors(49, 100), task.train_tensors(50, 100)
    assert first[0] is late_first[0] and first[0].shape == second[0].shape
    assert not torch.equal(first[0], second[0]) and not torch.equal(first[1], second[1])
    # the validation text is the second half's (source code); 10% of the INPUT characters are noise
    val = task.data()
    for x, y in ((first[0], first[1]), (val.x_val, val.y_val)):
        flipped = (x[:, 1:] != y[:, :-1]).float().mean().item()
        assert 0.07 < flipped < 0.13
    assert torch.equal(val.x_val, task.shift().x_val)


def test_a_unit_enqueued_twice_runs_once(tmp_path):
    """Two machines preparing the same study at once enqueue its points twice; each runs once."""
    url = f"sqlite:///{tmp_path / 'dup.db'}"
    proto = P.Protocol(("diabetes-mlp",), ("sgd",), trials=2, studies=1, steps=3, eval_every=3)
    storage = P._storage(url)
    study = P._load(storage, "tune/diabetes-mlp/sgd/0", create=True)
    points = P.sobol_points(search_space("sgd"), 2, 0)
    for _ in range(2):  # what a racing second machine does
        for i, p in enumerate(points):
            study.enqueue_trial(p, user_attrs={"task": "diabetes-mlp", "optimizer": "sgd", "seed": 0, "study": 0,
                                               "index": i, "space": "lr"})
    assert P.work(url, ["tune/diabetes-mlp/sgd/0"], proto) == 2
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "FAIL"]
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert sorted(t.params["lr"] for t in done) == sorted(p["lr"] for p in points)


def test_workers_never_pop_the_same_trial(tmp_path):
    """SQLite ignores SELECT ... FOR UPDATE: without the file lock two workers popped one trial."""
    import threading
    url = f"sqlite:///{tmp_path / 'pop.db'}"
    study = P._load(P._storage(url), "s", create=True)
    for i in range(40):
        study.enqueue_trial({"lr": 1e-3}, user_attrs={"index": i})
    popped, barrier = [], threading.Barrier(4)

    def worker():
        mine = P._load(P._storage(url), "s")
        barrier.wait()
        while (tid := P.pop_trial(mine, url)) is not None:
            popped.append(tid)
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(popped) == sorted(t._trial_id for t in study.get_trials(deepcopy=False))  # each once
