"""Every torch.optim.lr_scheduler works unchanged with every optimlab optimizer, giving the
same learning rates and the same parameters as with the torch.optim optimizer."""

import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler as S

import optimlab

ALGOS = [("SGD", dict(lr=0.05, momentum=0.9)), ("Adagrad", dict(lr=0.05)), ("RMSprop", dict(lr=0.005)),
         ("Adam", dict(lr=0.005)), ("AdamW", dict(lr=0.005)), ("NAdam", dict(lr=0.005))]
STEPS = 30


def step_lr(opt):
    return S.StepLR(opt, step_size=7, gamma=0.5)


def cosine(opt):
    return S.CosineAnnealingLR(opt, T_max=STEPS, eta_min=1e-4)


def warmup_cosine(opt):
    warm = S.LinearLR(opt, start_factor=0.1, total_iters=5)
    return S.SequentialLR(opt, [warm, S.CosineAnnealingLR(opt, T_max=STEPS - 5)], milestones=[5])


def one_cycle(opt):
    cycle_momentum = "momentum" in opt.defaults or "betas" in opt.defaults
    return S.OneCycleLR(opt, max_lr=opt.defaults["lr"] * 3, total_steps=STEPS, cycle_momentum=cycle_momentum)


def plateau(opt):
    return S.ReduceLROnPlateau(opt, factor=0.5, patience=1)


SCHEDULES = [step_lr, cosine, warmup_cosine, one_cycle, plateau]


def run(lib, name, kwargs, make_schedule):
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 1)).double()
    opt = getattr(lib, name)(model.parameters(), **kwargs)
    sched = make_schedule(opt)
    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(32, 3, generator=g, dtype=torch.float64), torch.randn(32, 1, generator=g, dtype=torch.float64)
    lrs = []
    for i in range(STEPS):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        if isinstance(sched, S.ReduceLROnPlateau):
            sched.step(round(loss.item(), 1))  # coarse metric, so the plateau is reached
        else:
            sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    return model, lrs


@pytest.mark.parametrize("make_schedule", SCHEDULES, ids=[s.__name__ for s in SCHEDULES])
@pytest.mark.parametrize("name,kwargs", ALGOS, ids=[a[0] for a in ALGOS])
def test_scheduler_matches_torch(name, kwargs, make_schedule):
    model_t, lrs_t = run(torch.optim, name, kwargs, make_schedule)
    model_o, lrs_o = run(optimlab, name, kwargs, make_schedule)
    assert lrs_o == lrs_t
    assert len(set(lrs_t)) > 1, "the schedule must change the learning rate"
    for a, b in zip(model_t.parameters(), model_o.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-7, atol=1e-10)
