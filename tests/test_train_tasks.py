"""Each training task: fixed data with a train/validation split, and its tuned default optimizer
reaches the stated target within the task's step budget."""

import math

import pytest
import torch

from optimlab.train import TASKS, get_task, train
from optimlab.train.tasks import cancer_data, sparse_bayes_accuracy, sparse_data, stdlib_text


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", list(TASKS))
def test_default_optimizer_reaches_target_within_budget(name):
    task = TASKS[name]
    r = train(task, stop_at_target=True)
    assert not r.diverged
    assert r.steps_to_target is not None and r.steps_to_target <= task.budget_steps, (
        f"{name}: {task.target_text} not reached in {task.budget_steps} steps; last {r.final_metric:.4g}")
    assert task.reached(r.evals[-1]["metric"])
    assert r.seconds_to_target > 0


@pytest.mark.parametrize("name", list(TASKS))
def test_data_is_fixed_and_split(name):
    task = TASKS[name]
    a, b = task.make_data(), task.make_data()
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_val, b.y_val)
    assert len(a.x_train) == len(a.y_train) > len(a.x_val) == len(a.y_val) > 0
    assert a.x_train.isfinite().all() and a.x_val.isfinite().all()


def test_run_is_reproducible_and_seed_changes_it():
    a = train("cancer-logreg", steps=30, seed=3)
    b = train("cancer-logreg", steps=30, seed=3)
    c = train("cancer-logreg", steps=30, seed=4)
    assert a.train_loss == b.train_loss
    assert a.train_loss != c.train_loss


def test_cancer_features_are_unscaled():
    x = cancer_data().x_train
    scale = x.abs().mean(0)
    assert scale.max() / scale.min() > 1e5  # features on very different scales


def test_sparse_features_are_rare_and_target_is_near_bayes():
    x = sparse_data().x_train
    freq = x.mean(0)
    assert freq.max() > 0.2 and freq.min() < 0.01
    bayes = sparse_bayes_accuracy()
    assert get_task("sparse-logreg").target < bayes < get_task("sparse-logreg").target + 0.05


def test_text_ships_with_python():
    text = stdlib_text()
    assert "Beautiful is better than ugly." in text  # the Zen of Python, from `this`
    assert len(text) > 100_000 and all(c == "\n" or 32 <= ord(c) < 127 for c in text)


def test_divergence_stops_the_run():
    """Weights so large that the logits overflow: the loss is non-finite at once, and the run stops
    there (not at the end of its 200-step budget) marked diverged, with a NaN final metric."""
    import torch

    from optimlab.train.loop import build_model

    task = get_task("digits-mlp")
    model = build_model(task, 0)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e30)
    r = train(task, "sgd", lr=0.1, steps=200, model=model)
    assert r.diverged and r.steps == 1 and len(r.train_loss) == 1
    assert not math.isfinite(r.train_loss[-1]) and math.isnan(r.final_metric)
    healthy = train("cancer-logreg", "sgd", lr=0.1, steps=5)
    assert not healthy.diverged and healthy.steps == 5


@pytest.mark.parametrize("bad, message", [("digit-mlp", "did you mean 'digits-mlp'"), ("nope", "valid: ")])
def test_unknown_task_lists_valid_names(bad, message):
    with pytest.raises(ValueError, match=message) as info:
        get_task(bad)
    assert "char-lstm" in str(info.value)


def test_unknown_optimizer_lists_valid_names():
    with pytest.raises(ValueError, match="did you mean 'adam'") as info:
        train("cancer-logreg", "adma", steps=1)
    assert "nesterov" in str(info.value)


@pytest.mark.parametrize("kwargs, message", [({"lr": -1.0}, "lr must be"), ({"steps": 0}, "steps must be"),
                                             ({"eval_every": 0}, "eval_every must be"),
                                             ({"schedule": "cosin"}, "did you mean 'cosine'")])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        train("cancer-logreg", **kwargs)
