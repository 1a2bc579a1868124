"""Learning-rate schedules, built from ``torch.optim.lr_scheduler`` (they drive optimlab optimizers
unchanged, since they only read and write ``param_groups[i]["lr"]``).

With ``T`` the number of steps and ``lr0`` the base learning rate:

* ``none``: ``lr_t = lr0``;
* ``cosine``: ``lr_t = lr0 * (1 + cos(pi * t / T)) / 2`` (``CosineAnnealingLR``, eta_min = 0;
  Loshchilov & Hutter 2017, without restarts);
* ``step``: ``lr_t = lr0 * 0.1 ** floor(t / (T/3))`` (``StepLR``);
* ``warmup-cosine``: linear ramp from ``lr0/100`` to ``lr0`` over the first 5% of steps
  (``LinearLR``), then cosine decay to 0 (``CosineAnnealingLR``), joined by ``SequentialLR``;
* ``plateau``: ``ReduceLROnPlateau``: multiply the LR by 0.5 after 3 evaluations without an
  improvement of the validation metric; stepped at each evaluation, not each step.
"""

from __future__ import annotations

from torch.optim import lr_scheduler

SCHEDULES = ("none", "cosine", "step", "warmup-cosine", "plateau")


def make_schedule(name: str, optimizer, steps: int, higher_is_better: bool = False):
    """The scheduler for ``name`` (``None`` for ``"none"``); call ``.step()`` after each optimizer step,
    except ``plateau``, whose ``.step(metric)`` is called after each evaluation."""
    if name not in SCHEDULES:
        from .._names import unknown_name_error
        raise unknown_name_error("schedule", name, SCHEDULES)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if name == "none":
        return None
    if name == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    if name == "step":
        return lr_scheduler.StepLR(optimizer, step_size=max(1, steps // 3), gamma=0.1)
    if name == "warmup-cosine":
        warm = max(1, steps // 20)
        return lr_scheduler.SequentialLR(optimizer, [
            lr_scheduler.LinearLR(optimizer, start_factor=0.01, end_factor=1.0, total_iters=warm),
            lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps - warm)),
        ], milestones=[warm])
    return lr_scheduler.ReduceLROnPlateau(optimizer, mode="max" if higher_is_better else "min",
                                          factor=0.5, patience=3)


def is_plateau(scheduler) -> bool:
    return isinstance(scheduler, lr_scheduler.ReduceLROnPlateau)
