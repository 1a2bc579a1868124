"""Fused execution of the update rules: the dispatcher between the fused path and the eager one.

``Optimizer.step`` hands each param group here. Parameters the fused path can take (dense,
contiguous, float32/float64, on the CPU, with float hyperparameters) are bucketed by dtype and
state layout; each bucket's rule is traced once per step (:mod:`.trace`) into an element-wise
expression, and one generated C kernel (:mod:`.cpu`) applies it to every tensor of the bucket in
one pass over memory. Everything else is returned to the caller, which runs the eager reference
(``Optimizer._apply_rule``), so results never depend on which path ran.

The bucketing (a *plan*) is cached per param group and rebuilt when the set of parameters with
gradients changes or ``load_state_dict`` replaces the state. A plan keeps each bucket's ``step``
counters (and Nadam's ``mu_product``) as 0-dim views into one small buffer, so advancing two
thousand counters is one operation; they remain torch's per-parameter 0-dim tensors.

Switches: ``OPTIMLAB_FUSED=0`` in the environment, or ``fused=False`` on an optimizer (its
param group), force the eager path. CUDA tensors take the eager path (see README).
"""

from __future__ import annotations

import os
import warnings
import weakref
from array import array
from operator import attrgetter
from typing import Any

import torch
from torch import Tensor

from . import cpu, foreach, precision, precision_cpu
from .trace import Unsupported, Vec, trace_rule

__all__ = ["step_group", "fused_enabled", "check_capturable", "stats", "Unsupported"]

#: counters for tests and diagnostics: tensors stepped by each path, kernels built and loaded
stats = cpu.stats
stats.update({"fused_tensors": 0, "eager_tensors": 0, "plans": 0})
_refused: set[Any] = set()  # structures whose kernel could not be built: not retried every step
_plans: "weakref.WeakKeyDictionary[Any, dict[int, _Plan]]" = weakref.WeakKeyDictionary()
_data_ptr = Tensor.data_ptr
_numel = Tensor.numel
_is_contiguous = Tensor.is_contiguous
_dtype = attrgetter("dtype")
_grad = attrgetter("grad")


def _backend(p: Tensor) -> Any:
    """The executor for ``p``'s bucket: generated C on the CPU, Triton on CUDA where triton is
    installed, foreach calls on other devices; ``OPTIMLAB_BACKEND=c|triton|foreach`` forces one
    (a parameter it cannot take runs eagerly). None: eager."""
    forced = os.environ.get("OPTIMLAB_BACKEND", "").strip().lower()
    dtype, device = p.dtype, p.device
    if forced in ("c", "cpu"):
        return cpu if cpu.accepts(dtype, device) else None
    if forced == "foreach":
        return foreach if foreach.accepts(dtype, device) else None
    if forced == "triton" or (device.type == "cuda" and not forced):
        from . import triton_gpu as triton_backend  # imports triton only when a GPU step needs it
        if triton_backend.accepts(dtype, device, forced == "triton"):
            return triton_backend
        if forced:
            return None
    if cpu.accepts(dtype, device):
        return cpu
    return foreach if device.type != "cpu" and foreach.accepts(dtype, device) else None


def check_capturable(group: dict[str, Any]) -> None:
    """``capturable=True`` (step counters on the device, no host sync): CUDA parameters only."""
    if not group.get("capturable"):
        return
    for p in group["params"]:
        if p.device.type != "cuda":
            raise ValueError("capturable=True needs every parameter on a CUDA device (a CUDA graph "
                             f"captures device work only); got one on {p.device} (allowed there: False)")


def fused_enabled(group: dict[str, Any] | None = None) -> bool:
    """False when ``OPTIMLAB_FUSED=0`` or the group says ``fused=False``."""
    if os.environ.get("OPTIMLAB_FUSED", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return group is None or group.get("fused") is not False


class _Bucket:
    """Tensors of one dtype and state layout whose step and scalar state agree."""

    def __init__(self, rule: Any, backend: Any, dtype: torch.dtype, names: tuple[str, ...], items: list) -> None:
        self.backend, self.dtype, self.names = backend, dtype, names
        self.cache: dict[str, Any] = {}  # the backend's own per-bucket data (device pointer tables)
        self.params = [p for p, _ in items]
        self.state_dicts = [state for _, state in items]
        self.states = [[state[name] for _, state in items] for name in names]
        self.sizes = array("q", map(_numel, self.params))
        # the state tensors are the plan's own references: their addresses hold while it lives
        self.state_ptrs = array("q")
        for column in self.states:
            self.state_ptrs.extend(map(_data_ptr, column))
        self.scalars: dict[str, Tensor] = {}  # name -> the buffer the per-parameter 0-dim views share
        for name in (["step"] if rule.counts_steps else []) + list(rule.scalar_state):
            per_param = [state[name] for _, state in items]
            buffer = torch.stack(per_param)
            for i, (_, state) in enumerate(items):
                state[name] = buffer[i]
            self.scalars[name] = buffer


class _Plan:
    def __init__(self, ids: tuple[int, ...], state: Any) -> None:
        self.ids, self.state = ids, state
        self.buckets: list[_Bucket] = []
        self.rest: list[Tensor] = []
        self.stale = False


def step_group(optimizer: Any, group: dict[str, Any], params: list[Tensor],
               hyperparams: dict[str, Any]) -> list[Tensor]:
    """Step what the fused path can of ``params``; return the rest for the eager path."""
    if not params or not fused_enabled(group) or any(isinstance(v, Tensor) for v in hyperparams.values()):
        stats["eager_tensors"] += len(params)
        return params
    plans = _plans.setdefault(optimizer, {})
    ids = tuple(map(id, params))
    plan = plans.get(id(group))
    if plan is None or plan.ids != ids or plan.state is not optimizer.state:
        plan = plans[id(group)] = _make_plan(optimizer, group, params, ids)
    rest = list(plan.rest)
    capturable = bool(group.get("capturable"))
    for bucket in plan.buckets:
        outcome = _run_bucket(optimizer, hyperparams, bucket, capturable)
        if outcome is None:
            rest.extend(bucket.params)
        elif outcome:  # new state entries appeared: the layout changed
            plan.stale = True
    if plan.stale:
        del plans[id(group)]
    stats["fused_tensors"] += len(params) - len(rest)
    stats["eager_tensors"] += len(rest)
    if rest and capturable and torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
        raise RuntimeError(f"capturable=True: {len(rest)} parameter(s) of this group cannot take the fused "
                           "step (dtype, layout, sparse or tensor hyperparameters) and the eager step "
                           "reads its counter on the host, which a CUDA graph cannot capture")
    return rest


def _make_plan(optimizer: Any, group: dict[str, Any], params: list[Tensor], ids: tuple[int, ...]) -> _Plan:
    rule = optimizer.rule
    stats["plans"] += 1
    plan = _Plan(ids, optimizer.state)
    groups: dict[tuple, list] = {}
    for p in params:
        g = p.grad
        dtype = p.dtype
        low = precision.kind(p, group) is not None  # bfloat16 / 8-bit state (kernels/precision_cpu.py)
        backend = None if not _plain(p) else precision_cpu.backend_for(p, group, rule) if low else _backend(p)
        if (backend is None or not _plain(g)  # tensor subclasses (FSDP2's DTensor) have no plain storage
                or g.dtype != dtype or g.device != p.device or g.layout != torch.strided
                or not p.is_contiguous() or not g.is_contiguous() or g.shape != p.shape):
            plan.rest.append(p)
            continue
        state = optimizer._init_state(p, group)
        names = tuple(k for k in state if k != "step" and k not in rule.scalar_state
                      and not precision.is_scale(k, state))  # 8-bit block scales travel with their codes
        scalars = (["step"] if rule.counts_steps else []) + list(rule.scalar_state)
        scalar_device = p.device if group.get("capturable") else torch.device("cpu")
        dense_like = backend.state_ok if low else _dense_like
        if not all(dense_like(state[k], p) for k in names) or not all(
                isinstance(state.get(k), Tensor) and state[k].dim() == 0 and state[k].device == scalar_device
                for k in scalars):
            plan.rest.append(p)
            continue
        key = (backend, p.device, dtype, names, tuple((state[k].dtype, state[k].item()) for k in scalars))
        groups.setdefault(key, []).append((p, state))
    plan.buckets = [_Bucket(rule, backend, dtype, names, items)
                    for (backend, _, dtype, names, _), items in groups.items()]
    for bucket in plan.buckets:
        if hasattr(bucket.backend, "prepare"):  # a backend's per-bucket setup (precision_cpu: rounding keys)
            bucket.backend.prepare(bucket, optimizer, group)
    return plan


def _plain(t: Tensor) -> bool:
    return type(t) in (torch.Tensor, torch.nn.Parameter)


def _dense_like(t: Any, p: Tensor) -> bool:
    return (isinstance(t, Tensor) and t.dtype == p.dtype and t.device == p.device and t.layout == torch.strided
            and t.is_contiguous() and t.shape == p.shape)


def _run_bucket(optimizer: Any, hyperparams: dict[str, Any], bucket: _Bucket, capturable: bool = False) -> bool | None:
    """Trace, fetch the kernel, run it over the bucket. None: leave it to eager; True: state grew.

    ``capturable``: the step counter and scalar state stay 0-dim device tensors (float64 copies)
    through the rule, so nothing is read on the host."""
    rule = optimizer.rule
    params, dtype, names = bucket.params, bucket.dtype, bucket.names
    grads = list(map(_grad, params))
    # what can change between steps without the plan noticing: fresh gradients, `p.data = ...`
    if (set(map(_dtype, grads)) != {dtype} or not all(map(_is_contiguous, grads))
            or not all(map(_is_contiguous, params)) or array("q", map(_numel, grads)) != bucket.sizes
            or array("q", map(_numel, params)) != bucket.sizes):
        return None
    arguments: dict[str, Any] = dict(hyperparams)
    device = params[0].device if capturable else None
    for name in rule.scalar_state:
        value = bucket.scalars[name][0]
        arguments[name] = value.to(torch.float64) if capturable else value.item()
    if rule.counts_steps:
        step = bucket.scalars["step"][0]  # what eager sees after `+= 1`:
        arguments["step"] = step.to(torch.float64) + 1 if capturable else (step + 1).item()
    inputs = ["param", "grad", *names]
    try:
        trace, out = trace_rule(rule.update, inputs, arguments, rule.name, device)
        outputs: list[tuple[int, int]] = []
        fresh: list[str] = []
        scalar_out: dict[str, float] = {}
        for name, value in out.items():
            if name in rule.scalar_state:
                scalar_out[name] = value if isinstance(value, Tensor) else float(value)
                continue
            if not isinstance(value, Vec):
                raise Unsupported(f"output {name!r} is not element-wise")
            if name in inputs:
                outputs.append((inputs.index(name), value.index))
            else:
                fresh.append(name)
                outputs.append((len(inputs) + len(fresh) - 1, value.index))
        structure = (tuple(trace.nodes), tuple(outputs), len(inputs), dtype, names)  # names: precision_cpu
        if (bucket.backend, structure) in _refused:
            return None
        try:
            kernel = bucket.backend.kernel_for(trace, outputs, len(inputs), dtype, structure)
        except Unsupported as error:
            _refused.add((bucket.backend, structure))
            warnings.warn(f"optimlab: fused {rule.name} step unavailable, running eagerly ({error})",
                          RuntimeWarning, stacklevel=4)
            return None
    except Unsupported:
        return None

    new_state = [[torch.empty_like(p) for p in params] for _ in fresh]
    if rule.counts_steps:
        bucket.scalars["step"] += 1
    bucket.backend.launch(kernel, bucket, [params, grads, *bucket.states, *new_state], trace.scalars)
    for name, value in scalar_out.items():
        bucket.scalars[name].fill_(value)
    for name, column in zip(fresh, new_state):
        for state, t in zip(bucket.state_dicts, column):
            state[name] = t
    if fresh:  # a state created lazily (SGD's momentum buffer) is kept, as the eager path keeps it
        for p, state in zip(params, bucket.state_dicts):
            optimizer.state[p] = state
    return bool(fresh)
