"""One trajectory the plain way (a parameter, ``backward()``, ``optimizer.step()``): what the
batched engine is tested and benchmarked against."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .. import catalogue, schedules
from .. import optim as _optim
from ..catalogue import Entry
from .landscapes import Landscape, get_landscape


def reference_run(landscape: str | Landscape, optimizer: str | Entry, start: Any, steps: int, *,
                  lr: float | None = None, schedule: str | None = None, use_torch: bool = False,
                  dtype: torch.dtype = torch.float64, **options: Any) -> Tensor:
    """One trajectory the plain way: a ``(2,)`` parameter, ``loss.backward()``, ``optimizer.step()``.

    Uses ``optimlab.optim`` (or ``torch.optim`` with ``use_torch=True``, where it has the
    algorithm); ``options`` are constructor arguments. For ``nag`` this runs torch's Nesterov
    form, whose iterates are the look-ahead points ``w - beta * v``. Returns the ``(steps + 1, 2)``
    path. This is what the batched engine is tested and benchmarked against.
    """
    land = get_landscape(landscape)
    spec = catalogue.get(optimizer)
    w = torch.nn.Parameter(torch.as_tensor(start, dtype=dtype).clone())
    lr = catalogue.lab_lr(spec, land) if lr is None else lr
    if use_torch:
        if spec.torch is None:
            raise ValueError(f"torch.optim has no equivalent of {spec.name}")
        cls_name, kwargs = spec.torch
        opt = getattr(torch.optim, cls_name)([w], lr=lr, **kwargs, **options)
    elif spec.lookahead:
        momentum = options.pop("momentum", spec.options["momentum"])
        opt = _optim.SGD([w], lr=lr, momentum=momentum, nesterov=True, **options)
    else:
        opt = spec.cls([w], lr=lr, **{**spec.options, **options})
    sched = schedules.build(schedule, opt, steps)
    path = [w.detach().clone()]
    for _ in range(steps):
        opt.zero_grad()
        land.fn(w[0], w[1]).backward()
        opt.step()
        if sched is not None:
            sched.step()
        path.append(w.detach().clone())
    return torch.stack(path)
