"""Learning-rate schedules for the lab, computed by ``torch.optim.lr_scheduler`` itself.

A schedule is a list of factors ``s_1 .. s_T``: step ``t`` uses ``lr_t = lr * s_t``. The factors
come from running torch's scheduler on a one-parameter optimizer with ``lr = 1``, so the lab's
batched runs see exactly the learning rates a ``torch.optim`` loop with the same scheduler sees
(``scheduler.step()`` after each ``optimizer.step()``).

Spec strings (for the CLI):

``constant``                     ``s_t = 1``
``step:N:GAMMA``                 multiply by GAMMA every N steps (StepLR)
``cosine``                       cosine decay from 1 to 0 over the run (CosineAnnealingLR, T_max = T)
``warmup:N``                     linear warm-up from 1/N to 1 over N steps, then constant (LinearLR)
``warmup-cosine:N``              warm-up over N steps, then cosine decay (SequentialLR)
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.optim import lr_scheduler

SCHEDULES = ("constant", "step", "cosine", "warmup", "warmup-cosine")


def _parse_int(spec: str, text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"schedule {spec!r}: {text!r} is not an integer (allowed: integers >= {low})") from None
    if value < low:
        raise ValueError(f"schedule {spec!r}: {value} is out of range (allowed: integers >= {low})")
    return value


def make_scheduler(spec: str, steps: int) -> Callable[[torch.optim.Optimizer], lr_scheduler.LRScheduler | None]:
    """A factory ``optimizer -> scheduler`` (or None for ``constant``) for a spec string."""
    parts = spec.split(":")
    kind = parts[0]
    if kind == "constant" and len(parts) == 1:
        return lambda opt: None
    if kind == "cosine" and len(parts) == 1:
        return lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    if kind == "step" and len(parts) == 3:
        every = _parse_int(spec, parts[1], 1)
        try:
            gamma = float(parts[2])
        except ValueError:
            gamma = float("nan")
        if not 0 < gamma <= 1:
            raise ValueError(f"schedule {spec!r}: gamma must be in (0, 1], got {parts[2]!r}")
        return lambda opt: lr_scheduler.StepLR(opt, step_size=every, gamma=gamma)
    if kind in ("warmup", "warmup-cosine") and len(parts) == 2:
        n = _parse_int(spec, parts[1], 1)
        if kind == "warmup":
            return lambda opt: lr_scheduler.LinearLR(opt, start_factor=1.0 / n, total_iters=n)
        if n >= steps:
            raise ValueError(f"schedule {spec!r}: warm-up length must be < steps ({steps})")
        return lambda opt: lr_scheduler.SequentialLR(
            opt, [lr_scheduler.LinearLR(opt, start_factor=1.0 / n, total_iters=n),
                  lr_scheduler.CosineAnnealingLR(opt, T_max=steps - n)], milestones=[n])
    raise ValueError(f"schedule must be one of constant, step:N:GAMMA, cosine, warmup:N, warmup-cosine:N; got {spec!r}")


def factors(spec: str | None, steps: int) -> list[float]:
    """The learning-rate factors ``[s_1, ..., s_steps]`` of a schedule spec (None = constant)."""
    if spec is None or spec == "constant":
        make_scheduler(spec or "constant", steps)
        return [1.0] * steps
    factory = make_scheduler(spec, steps)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = factory(opt)
    out = []
    for _ in range(steps):
        out.append(float(opt.param_groups[0]["lr"]))
        opt.step()
        sched.step()
    return out
