"""The batched engine gives, number for number, what optimlab's / torch's optimizers give one
trajectory at a time; NAG's look-ahead form relates to torch's Nesterov form as derived."""

import pytest
import torch

from optimlab.lab import engine
from optimlab import catalogue
from optimlab.lab.engine import reference_run, run, sweep

STARTS = torch.tensor([[-1.2, 1.0], [0.5, -0.5], [1.5, 2.0]], dtype=torch.float64)
LRS = [1e-4, 3e-4, 1e-3]


@pytest.fixture(autouse=True)
def float64_default():
    """optimlab keeps 0-dim state (Nadam's mu_product) in the default dtype, as torch does."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("name", [e.name for e in catalogue.lab_entries() if not e.lookahead])
def test_batched_lr_sweep_matches_one_trajectory_at_a_time(name):
    res = sweep("rosenbrock", [name], LRS, STARTS, 60).runs[name]
    assert res.path.shape == (61, len(LRS) * len(STARTS), 2)
    for i, lr in enumerate(LRS):
        for j, start in enumerate(STARTS):
            ref = reference_run("rosenbrock", name, start, 60, lr=lr)
            torch.testing.assert_close(res.path[:, i * len(STARTS) + j], ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", [e.name for e in catalogue.lab_entries() if e.torch and not e.lookahead])
def test_defaults_match_torch_optim(name):
    lrs = torch.tensor([1e-3, 1e-2])
    res = run("himmelblau", name, STARTS[:1].repeat(2, 1), 40, lr=lrs)
    for i, lr in enumerate(lrs.tolist()):
        ref = reference_run("himmelblau", name, STARTS[0], 40, lr=lr, use_torch=True)
        torch.testing.assert_close(res.path[:, i], ref, rtol=1e-10, atol=1e-12)


def test_nag_lookahead_is_torch_nesterov_in_the_lookahead_variable():
    beta = 0.9
    res = run("rosenbrock", "nag", STARTS, 80, lr=1e-3)
    for j, start in enumerate(STARTS):
        ref = reference_run("rosenbrock", "nesterov", start, 80, lr=1e-3, use_torch=True)
        w = res.path[:, j]
        v = w[:-1] - w[1:]  # w_t = w_{t-1} - v_t
        torch.testing.assert_close(w[1:] - beta * v, ref[1:], rtol=1e-10, atol=1e-12)


def test_nag_evaluates_the_gradient_at_the_lookahead_point():
    res = run("bowl", "nag", [[2.0, 1.0]], 3, lr=0.1, record_grads=True)
    w = res.path[:, 0]
    v1 = w[0] - w[1]
    # the second gradient is taken at w1 - beta * v1; the bowl's gradient is 2 * point
    torch.testing.assert_close(res.grads[1, 0], 2 * (w[1] - 0.9 * v1))


def test_hyperparameter_tensor_sweep_other_than_lr():
    betas = torch.tensor([0.5, 0.9, 0.99])
    res = run("beale", "momentum", [[1.0, 1.5]] * 3, 30, lr=1e-3, momentum=betas)
    for i, b in enumerate(betas.tolist()):
        ref = reference_run("beale", "momentum", [1.0, 1.5], 30, lr=1e-3, momentum=b)
        torch.testing.assert_close(res.path[:, i], ref, rtol=1e-12, atol=1e-12)
    b1 = torch.tensor([0.8, 0.95])
    res = run("bowl", "adam", [[1.0, -2.0]] * 2, 20, lr=0.05, beta1=b1)
    for i, b in enumerate(b1.tolist()):
        ref = reference_run("bowl", "adam", [1.0, -2.0], 20, lr=0.05, betas=(b, 0.999))
        torch.testing.assert_close(res.path[:, i], ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("schedule", ["step:10:0.5", "cosine", "warmup:8", "warmup-cosine:5"])
@pytest.mark.parametrize("name", ["momentum", "adam"])
def test_schedules_match_torch_lr_scheduler(schedule, name):
    res = run("rosenbrock", name, STARTS, 40, lr=torch.tensor([1e-3, 2e-3, 5e-4]), schedule=schedule)
    for j, lr in enumerate([1e-3, 2e-3, 5e-4]):
        ref = reference_run("rosenbrock", name, STARTS[j], 40, lr=lr, schedule=schedule, use_torch=True)
        torch.testing.assert_close(res.path[:, j], ref, rtol=1e-10, atol=1e-12)


def test_loss_is_the_landscape_along_the_path():
    res = run("goldstein_price", "adam", STARTS[:2] * 0.5, 25, lr=0.01)
    torch.testing.assert_close(res.loss, res.landscape.value(res.path))


def test_bad_arguments_name_the_argument_and_range():
    with pytest.raises(ValueError, match="lr must be in"):
        run("bowl", "sgd", [1.0, 1.0], 5, lr=-0.1)
    with pytest.raises(ValueError, match="lr must be in"):  # checked at the extremes of a sweep
        run("bowl", "sgd", [[1.0, 1.0]] * 2, 5, lr=torch.tensor([0.1, -0.1]))
    with pytest.raises(ValueError, match="steps must be"):
        run("bowl", "sgd", [1.0, 1.0], 0)
    with pytest.raises(ValueError, match="did you mean 'adam'"):
        run("bowl", "adma", [1.0, 1.0], 5)
    with pytest.raises(ValueError, match="did you mean 'rosenbrock'"):
        run("rosenbrok", "adam", [1.0, 1.0], 5)
    with pytest.raises(ValueError, match="one value per trajectory"):
        run("bowl", "sgd", [[1.0, 1.0]] * 3, 5, lr=[0.1, 0.2])
    with pytest.raises(ValueError, match="starts must have shape"):
        run("bowl", "sgd", [1.0, 1.0, 1.0], 5)


def test_engine_runs_single_threaded_for_small_batches_and_restores_threads():
    before = torch.get_num_threads()
    seen = []
    run("bowl", "sgd", [1.0, 1.0], 3, lr=0.1, progress=lambda t: seen.append((t, torch.get_num_threads())))
    assert [t for t, _ in seen] == [1, 2, 3]
    assert all(n == 1 for _, n in seen)
    assert torch.get_num_threads() == before


def test_schedule_factors_and_errors():
    from optimlab.schedules import factors

    assert factors(None, 3) == [1.0, 1.0, 1.0]
    assert factors("step:2:0.5", 5) == [1.0, 1.0, 0.5, 0.5, 0.25]
    warm = factors("warmup:4", 6)
    assert warm == pytest.approx([0.25, 0.4375, 0.625, 0.8125, 1.0, 1.0])  # torch LinearLR: 1/4 -> 1 over 4 steps
    cos = factors("cosine", 10)
    assert cos[0] == 1.0 and cos[5] == pytest.approx(0.5) and all(a > b for a, b in zip(cos, cos[1:]))
    for bad, msg in [("cosin", "schedule must be one of"), ("step:0:0.5", "allowed: integers >= 1"),
                     ("step:10:2", "gamma must be in"), ("warmup:x", "not an integer"),
                     ("warmup-cosine:20", "warm-up length must be < steps")]:
        with pytest.raises(ValueError, match=msg):
            factors(bad, 10)


def test_plain_data_for_a_web_page():
    import json

    from optimlab.lab import get_landscape

    res = run("rosenbrock", "sgd", [[-1.2, 1.0], [1.5, 2.5]], 10, lr=torch.tensor([1e-3, 1.0]))
    d = res.as_dict(stride=4)
    assert d["steps"] == [0, 4, 8, 10]
    assert d["trajectories"][0]["path"][0] == [-1.2, 1.0]
    assert d["trajectories"][0]["loss"][-1] == pytest.approx(float(res.loss[10, 0]))
    assert None in sum(d["trajectories"][1]["path"], [])  # lr 1.0 blows up: non-finite -> None
    json.dumps(d, allow_nan=False)
    land = get_landscape("himmelblau")
    xs, ys, _, _, z = land.evaluate_grid(5)
    assert z.shape == (5, 5) and float(z[0, 0]) == float(land.value(torch.tensor([xs[0], ys[0]], dtype=torch.float64)))
    json.dumps(land.describe(), allow_nan=False)


@pytest.mark.parametrize("option", ["nonfinite", "state_dtype", "param_rounding", "rounding_seed", "fused"])
def test_execution_options_of_the_optimizers_are_not_lab_hyperparameters(option):
    with pytest.raises(ValueError, match=f"no hyperparameter '{option}'"):
        engine.run("rosenbrock", "adam", [[0.0, 0.0]], 3, **{option: None})
