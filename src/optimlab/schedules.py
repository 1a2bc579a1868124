"""Learning-rate schedules: one syntax for the lab, the training tasks, quicktrain, the web page and
every command, built from ``torch.optim.lr_scheduler`` itself.

A schedule is a spec string ``KIND[:ARG[:ARG]]``; ``T`` is the run's number of steps and ``lr0`` its
base learning rate. Arguments left out take the defaults shown.

``constant`` (or ``none``)      ``lr_t = lr0``
``step[:N[:GAMMA]]``             multiply by GAMMA every N steps (StepLR); N = T/3, GAMMA = 0.1
``exponential[:GAMMA]``          multiply by GAMMA every step (ExponentialLR); GAMMA = 0.99
``cosine``                       cosine decay from lr0 to 0 over the run (CosineAnnealingLR, T_max = T;
                                 Loshchilov & Hutter 2017, without restarts)
``warmup[:N[:START]]``           linear warm-up from START * lr0 to lr0 over N steps, then constant
                                 (LinearLR); N = T/20, START = 1/N
``warmup-cosine[:N[:START]]``    the same warm-up, then cosine decay to 0 over the other T - N steps
                                 (SequentialLR)
``plateau[:PATIENCE[:FACTOR]]``  ReduceLROnPlateau: multiply by FACTOR after PATIENCE evaluations
                                 without improvement; PATIENCE = 3, FACTOR = 0.5. It follows a
                                 measured metric, so it is stepped with that metric after each evaluation
                                 (the training tasks); runs without one (the lab) refuse it.

Parsing (:func:`parse`) imports no torch: the command line checks a spec before any work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

KINDS = ("constant", "step", "exponential", "cosine", "warmup", "warmup-cosine", "plateau")
ALIASES = {"none": "constant"}
FORMS = ("constant", "step[:N[:GAMMA]]", "exponential[:GAMMA]", "cosine", "warmup[:N[:START]]",
         "warmup-cosine[:N[:START]]", "plateau[:PATIENCE[:FACTOR]]")
#: each kind's ``:``-separated arguments: (name, int or float)
_ARGS = {"constant": (), "cosine": (), "step": (("N", "int"), ("gamma", "float")), "exponential": (("gamma", "float"),),
         "warmup": (("N", "int"), ("start", "float")), "warmup-cosine": (("N", "int"), ("start", "float")),
         "plateau": (("patience", "int"), ("factor", "float"))}


@dataclass(frozen=True)
class Schedule:
    """A parsed spec: ``kind`` and its explicit arguments (``None`` where the default applies)."""

    kind: str
    args: tuple[Any, ...]
    spec: str

    @property
    def needs_metric(self) -> bool:
        return self.kind == "plateau"


def _error(spec: str, why: str) -> ValueError:
    return ValueError(f"schedule {spec!r}: {why} (allowed: {', '.join(FORMS)})")


def parse(spec: str | None) -> Schedule:
    """Check a spec string; a ValueError names what is wrong and the allowed forms."""
    if spec is None:
        return Schedule("constant", (), "constant")
    if not isinstance(spec, str):
        raise TypeError(f"schedule must be a string, got {type(spec).__name__}")
    head, *rest = spec.strip().split(":")
    kind = ALIASES.get(head.lower(), head.lower())
    if kind not in _ARGS:
        from ._names import closest

        close = closest(head.lower(), [*KINDS, *ALIASES])
        hint = f": did you mean {close!r}?" if close else ""
        raise ValueError(f"schedule must be one of {', '.join(FORMS)}; got {spec!r} (unknown schedule{hint})")
    kinds = _ARGS[kind]
    if len(rest) > len(kinds):
        raise _error(spec, f"{kind} takes at most {len(kinds)} argument(s), got {len(rest)}")
    args: list[Any] = []
    for text, (name, kind_of) in zip(rest, kinds):
        if kind_of == "int":
            try:
                value = int(text)
            except ValueError:
                raise ValueError(f"schedule {spec!r}: {name} {text!r} is not an integer (allowed: integers >= 1)") from None
            if value < 1:
                raise ValueError(f"schedule {spec!r}: {name} {value} is out of range (allowed: integers >= 1)")
        else:
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not 0 < value <= 1:
                raise ValueError(f"schedule {spec!r}: {name} must be in (0, 1], got {text!r}")
        args.append(value)
    return Schedule(kind, tuple(args) + (None,) * (len(kinds) - len(args)), spec)


def _warmup_length(schedule: Schedule, steps: int) -> int:
    n = schedule.args[0] or max(1, steps // 20)
    if schedule.kind == "warmup-cosine" and n >= steps:
        raise _error(schedule.spec, f"warm-up length must be < steps ({steps})")
    return n


def build(spec: str | Schedule | None, optimizer: Any, steps: int, higher_is_better: bool = False) -> Any:
    """The torch scheduler for ``spec`` over a run of ``steps`` steps (``None`` for constant).

    Call ``.step()`` after each optimizer step, except for ``plateau``, whose ``.step(metric)`` is
    called after each evaluation (:func:`is_plateau`).
    """
    from torch.optim import lr_scheduler

    s = spec if isinstance(spec, Schedule) else parse(spec)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if s.kind == "constant":
        return None
    if s.kind == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    if s.kind == "step":
        return lr_scheduler.StepLR(optimizer, step_size=s.args[0] or max(1, steps // 3), gamma=s.args[1] or 0.1)
    if s.kind == "exponential":
        return lr_scheduler.ExponentialLR(optimizer, gamma=s.args[0] or 0.99)
    if s.kind == "plateau":
        return lr_scheduler.ReduceLROnPlateau(optimizer, mode="max" if higher_is_better else "min",
                                              factor=s.args[1] or 0.5, patience=s.args[0] or 3)
    n = _warmup_length(s, steps)
    warm = lr_scheduler.LinearLR(optimizer, start_factor=s.args[1] or 1.0 / n, total_iters=n)
    if s.kind == "warmup":
        return warm
    return lr_scheduler.SequentialLR(optimizer, [warm, lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps - n)],
                                     milestones=[n])


def is_plateau(scheduler: Any) -> bool:
    from torch.optim import lr_scheduler
    return isinstance(scheduler, lr_scheduler.ReduceLROnPlateau)


def factors(spec: str | None, steps: int) -> list[float]:
    """The factors ``[s_1, ..., s_steps]`` (step t uses ``lr0 * s_t``), read off torch's scheduler
    driving a one-parameter optimizer with ``lr = 1`` (``scheduler.step()`` after each step)."""
    s = parse(spec)
    if s.needs_metric:
        raise _error(s.spec, "plateau follows a validation metric; use it with the training tasks (optimlab train)")
    if s.kind == "constant":
        build(s, None, steps)  # checks steps
        return [1.0] * steps
    import torch

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = build(s, opt, steps)
    out = []
    for _ in range(steps):
        out.append(float(opt.param_groups[0]["lr"]))
        opt.step()
        sched.step()
    return out
