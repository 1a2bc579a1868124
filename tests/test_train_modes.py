"""Gradient-descent modes (batch / stochastic / mini-batch) and LR schedules."""

import math

import pytest
import torch

from optimlab import Adam
from optimlab.schedules import build as make_schedule
from optimlab.train import Mode, get_task, train
from optimlab.train.loop import build_model
from optimlab.train.modes import batches


def _take(mode, n, k, seed=0):
    stream = batches(mode, n, torch.Generator().manual_seed(seed))
    return [next(stream) for _ in range(k)]


def test_batch_mode_uses_whole_data_every_step():
    for idx in _take(Mode("batch"), 10, 3):
        assert idx.tolist() == list(range(10))


def test_stochastic_mode_uses_one_example_and_covers_each_epoch():
    steps = _take(Mode("stochastic"), 7, 14)
    assert all(len(i) == 1 for i in steps)
    assert sorted(torch.cat(steps[:7]).tolist()) == list(range(7))
    assert sorted(torch.cat(steps[7:]).tolist()) == list(range(7))


def test_minibatch_mode_keeps_short_last_batch():
    steps = _take(Mode("minibatch", 4), 10, 6)
    assert [len(i) for i in steps] == [4, 4, 2, 4, 4, 2]
    assert sorted(torch.cat(steps[:3]).tolist()) == list(range(10))
    assert steps[0].tolist() != steps[3].tolist()  # reshuffled each epoch


@pytest.mark.parametrize("kind, size, message", [("minibatch", 0, "batch_size must be"),
                                                  ("minibatch", None, "batch_size must be"),
                                                  ("batch", 8, "batch_size applies only"),
                                                  ("mini-batch", None, "did you mean 'minibatch'")])
def test_bad_modes_are_named(kind, size, message):
    with pytest.raises(ValueError, match=message):
        Mode(kind, size)


def test_batch_gd_step_is_full_gradient_step():
    """One step of batch GD with plain SGD is w - lr * (1/N) sum_i grad l_i."""
    task, lr = get_task("cancer-logreg"), 1e-6
    data = task.data()
    reference = build_model(task, 5)
    loss = task.loss(reference(data.x_train), data.y_train)
    grads = torch.autograd.grad(loss, list(reference.parameters()))
    expected = [p.detach() - lr * g for p, g in zip(reference.parameters(), grads)]
    model = build_model(task, 5)
    train(task, "sgd", lr, Mode("batch"), steps=1, model=model)
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.detach(), e)


def test_modes_take_the_stated_number_of_examples():
    task = get_task("cancer-logreg")
    n = task.data().n_train
    for mode, size in [(Mode("batch"), n), (Mode("stochastic"), 1), (Mode("minibatch", 16), 16)]:
        seen = []
        model = build_model(task, 0)
        model.register_forward_hook(lambda m, inp, out: seen.append(len(inp[0])) if m.training else None)
        train(task, "sgd", 1e-7, mode, steps=3, eval_every=100, model=model)
        assert seen == [size] * 3


def _lrs(name, steps, opt_cls, metrics=None):
    p = torch.nn.Parameter(torch.zeros(2))
    opt = opt_cls([p], lr=0.1)
    sched = make_schedule(name, opt, steps)
    out = []
    for t in range(steps):  # out[t]: the LR that step t (0-based) used
        out.append(opt.param_groups[0]["lr"])
        p.grad = torch.ones(2)
        opt.step()
        if metrics is None:
            sched.step()
        else:
            sched.step(metrics[t])
    return out


@pytest.mark.parametrize("name", ["cosine", "step", "warmup-cosine"])
def test_schedules_drive_optimlab_as_torch(name):
    assert _lrs(name, 60, Adam) == _lrs(name, 60, torch.optim.Adam)


def test_schedule_formulas():
    cos = _lrs("cosine", 60, Adam)
    for t in (0, 17, 30, 59):
        assert math.isclose(cos[t], 0.1 * (1 + math.cos(math.pi * t / 60)) / 2, rel_tol=1e-9, abs_tol=1e-15)
    step = _lrs("step", 60, Adam)
    assert [round(step[t], 12) for t in (0, 19, 20, 39, 40, 59)] == [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    warm = _lrs("warmup-cosine:3:0.01", 60, Adam)  # 3 warm-up steps from lr/100, then cosine over 57
    assert math.isclose(warm[0], 0.001) and warm[0] < warm[1] < warm[2] < warm[3]
    assert math.isclose(warm[3], 0.1) and math.isclose(warm[3 + 57 // 2], 0.1 * (1 + math.cos(math.pi * 28 / 57)) / 2)
    flat = _lrs("plateau", 10, Adam, metrics=[1.0] * 10)  # no improvement: halve after patience 3
    assert flat[:5] == [0.1] * 5 and flat[5] == 0.05


def test_plateau_schedule_in_training_reduces_lr():
    r = train("cancer-logreg", "adam", 0.03, schedule="plateau", steps=300, eval_every=10)
    assert min(e["lr"] for e in r.evals) < 0.03
