"""``optimlab tune``: Optuna search on the built-in task, one SQLite study shared by two workers."""

import json
import subprocess
import sys

import pytest

optuna = pytest.importorskip("optuna")

from optimlab import catalogue, cli, tune  # noqa: E402


def _worker(storage, study, trials, seed):
    cmd = [sys.executable, "-m", "optimlab.cli", "tune", "--algorithm", "sgd", "--trials", str(trials),
           "--storage", storage, "--study", study, "--seed", str(seed), "--task", "reliab_tiny_task:task"]
    env = {"PYTHONPATH": str(__import__("pathlib").Path(__file__).parent), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**__import__("os").environ, **env})


def test_two_workers_share_one_sqlite_study_without_losing_or_repeating_trials(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    per_worker = 4
    workers = [_worker(storage, "shared", per_worker, seed) for seed in (1, 2)]
    outputs = []
    for w in workers:
        out, err = w.communicate(timeout=300)
        assert w.returncode == 0, err[-3000:]
        outputs.append([json.loads(line) for line in out.splitlines() if line.startswith("{")])
    ran = [[r["trial"] for r in rows if "trial" in r] for rows in outputs]
    assert [len(r) for r in ran] == [per_worker, per_worker]
    assert not set(ran[0]) & set(ran[1]), "a trial was run by both workers"

    study = optuna.load_study(study_name="shared", storage=storage)
    numbers = sorted(t.number for t in study.trials)
    assert numbers == list(range(2 * per_worker)), "a trial was lost or created twice"
    assert sorted(ran[0] + ran[1]) == numbers
    assert all(t.state.is_finished() for t in study.trials)
    # each finished trial's reported value is the one the objective stored, once
    stored = {t.number: t.value for t in study.trials}
    for rows in outputs:
        for r in rows:
            if "trial" in r and r["state"] == "COMPLETE":
                assert stored[r["trial"]] == r["value"]
    assert study.user_attrs["algorithm"] == "sgd"


def test_tune_in_process_finds_a_better_lr_than_a_bad_guess(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'one.db'}"
    assert cli.main(["tune", "--algorithm", "adam", "--trials", "8", "--storage", storage, "--seed", "0",
                     "--task", "reliab_tiny_task:quadratic"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    best = lines[-1]
    assert best["best_trial"] is not None and {"lr", "one_minus_beta1", "one_minus_beta2"} <= best["best_params"].keys()
    from reliab_tiny_task import quadratic

    from optimlab.optim import Adam

    bad = quadratic(lambda p: Adam(p, lr=1e-4))  # an lr far too small barely moves
    assert best["best_value"] < bad


@pytest.mark.parametrize("algorithm", catalogue.names())
def test_every_algorithm_has_a_search_space_that_builds_its_optimizer(algorithm):
    study = optuna.create_study()
    trial = study.ask()
    hp = tune.suggest(trial, algorithm)
    space = catalogue.get(algorithm).tune
    assert "lr" in hp and set(trial.params) == set(catalogue.tune_names(algorithm)) and len(space) >= 1
    import torch

    catalogue.get(algorithm).cls([torch.zeros(2, requires_grad=True)], **hp)  # valid settings by construction


def test_pluggable_objective_and_bad_input(tmp_path):
    calls = []

    def task(make_optimizer, *, trial, report):
        import torch
        w = torch.tensor([3.0], requires_grad=True)
        opt = make_optimizer([w])
        for step in range(1, 21):
            opt.zero_grad()
            (w ** 2).sum().backward()
            opt.step()
            report(step, float(w.item() ** 2))
        calls.append(trial.number)
        return float(w.item() ** 2)

    study = tune.run("sgd", n_trials=3, storage=f"sqlite:///{tmp_path / 'p.db'}", task=task, seed=0)
    assert calls == [0, 1, 2] and len(study.trials) == 3
    with pytest.raises(ValueError, match="unknown optimizer 'no-such-optimizer'"):
        tune.run("no-such-optimizer", n_trials=1, storage=f"sqlite:///{tmp_path / 'p.db'}")
    with pytest.raises(ValueError, match="does not match"):
        tune.run("adam", n_trials=1, storage=f"sqlite:///{tmp_path / 'p.db'}", study_name="optimlab-sgd")
    with pytest.raises(ValueError, match="n_trials"):
        tune.run("sgd", n_trials=0, storage=f"sqlite:///{tmp_path / 'p.db'}")
    with pytest.raises(ValueError, match="task"):
        tune.load_task("no_colon")
    assert cli.main(["tune", "--task", "nosuchmodule:f", "--storage", f"sqlite:///{tmp_path / 'q.db'}"]) == 2
    assert cli.main(["tune", "--trials", "0", "--storage", f"sqlite:///{tmp_path / 'q.db'}"]) == 2


def test_trial_of_a_dead_worker_is_failed_and_retried_with_its_params(tmp_path):
    """A worker that dies mid-trial stops its heartbeat; the next worker fails that trial and
    re-runs its parameters, so a crash loses no trial (``--heartbeat``)."""
    import time

    from reliab_tiny_task import quadratic

    url = f"sqlite:///{tmp_path / 'hb.db'}"
    storage = tune.storage_for(url, heartbeat=1)
    study = optuna.create_study(study_name="optimlab-sgd", storage=storage)
    dead = study.ask()  # the dead worker's trial: params drawn, a heartbeat recorded, then silence
    tune.suggest(dead, "sgd")
    storage.record_heartbeat(dead._trial_id)
    time.sleep(6.5)  # past the grace period (4 heartbeats; SQLite clocks count whole seconds)
    trials = tune.run("sgd", n_trials=2, storage=url, task=quadratic, seed=0, heartbeat=1).trials
    assert trials[dead.number].state == optuna.trial.TrialState.FAIL
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retried) == 1 and retried[0].state in (optuna.trial.TrialState.COMPLETE,
                                                      optuna.trial.TrialState.PRUNED)  # ran to its end
    assert retried[0].params == trials[dead.number].params
