"""A task for the tune tests: the built-in MLP task, shortened so that trials take milliseconds."""

from optimlab import tune


def task(make_optimizer, *, trial=None, report=None):
    return tune.quicktask(make_optimizer, trial=trial, report=report, steps=20)


def quadratic(make_optimizer, *, trial=None, report=None):
    """An ill-conditioned quadratic (the elongated bowl), 30 steps: milliseconds per trial."""
    import torch

    w = torch.tensor([2.0, -3.0], requires_grad=True)
    scales = torch.tensor([1.0, 10.0])
    opt = make_optimizer([w])
    for step in range(1, 31):
        opt.zero_grad()
        loss = (scales * w ** 2).sum()
        loss.backward()
        opt.step()
        if report is not None:
            report(step, loss.item())
    return float((scales * w.detach() ** 2).sum())
