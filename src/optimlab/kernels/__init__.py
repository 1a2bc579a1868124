"""Fused execution of the update rules: the dispatcher between the fused path and the eager one.

``Optimizer.step`` hands all its param groups here at once (:func:`step`). Parameters the fused
path can take (dense, contiguous, a dtype and device a backend takes, with float hyperparameters,
listed once) are gathered into *sets* (one param group, one step count and scalar state) and the
sets into *buckets* (one backend, device, dtype, state layout and traced structure). Each set's
rule is traced (:mod:`.trace`; replayed while only its numbers change) into an element-wise
expression whose Python numbers are the set's scalars; on the CPU, sets whose expressions have the same structure share one
generated C kernel (:mod:`.cpu`), which applies it to every tensor of the bucket in one pass over
memory, each tensor reading its own set's scalars. So a hundred param groups (layer-wise learning
rates) cost one kernel call, not a hundred. (The Triton and foreach backends take one set per
bucket: one launch per param group.) Everything else is returned to the caller, which runs the eager reference
(``Optimizer._apply_rule``), so results never depend on which path ran.

The bucketing (a *plan*) is built once and revalidated every step by identity, which is cheap:
the same ``optimizer.state`` and param groups, the same parameters with gradients, each
parameter's state dict the same object holding the same tensors at the same addresses, the
parameters at the same addresses, and the 0-dim ``step`` / scalar state holding the values the
plan last wrote. Anything a user does between steps - replace a state tensor, reset ``step``,
``state.clear()``, ``del state[p]``, a ``st[k] = v.clone()`` loop, ``load_state_dict``,
``p.data = ...``, a storage swapped under a 0-dim ``step`` (``st["step"].set_(t)``, a
``v.data = ...`` loop over the state), another ``state_dtype`` or ``param_rounding`` set in a
param group (its storage: compared per group) - fails one of these checks and the plan is rebuilt from
the state as it now is, so the step sees exactly what torch.optim's would; in-place edits
(``st[k].zero_()``) need no check, the kernel reads the memory. One edit is not checked, to keep
the check cheap: swapping the storage under a dense state tensor alone (``st["exp_avg"].set_(t)``
or ``.data = t`` on it, with the ``step`` left as it is); replace the entry instead
(``st[k] = t``). The per-tensor part of the checks (and reading each gradient's address) runs
in one loop per bucket (:mod:`.native`: C++ reading each tensor's ``TensorImpl``, else C on
Python's C API; in Python where neither can be built, or with ``OPTIMLAB_NATIVE=0``), so it
costs a few memory reads per tensor and no Python.
Where the plan's lists still hold (each group lists the same parameters, each one's gradient
there or not as before: :func:`listing`, one C loop) and every bucket's backend reads gradients
by address (the CPU's), a step does not collect the gradients at all: each bucket's check reads
every gradient from its parameter's autograd metadata (``gather_own``), so a gradient fresh from
``backward()`` gets no Python object; any mismatch sends the step the collecting way
(``with_grads``, ``gather``), which sees the change as before.
The plan keeps each bucket's ``step`` counters (and Nadam's ``mu_product``) as 0-dim views into
one small buffer, so advancing two thousand counters is one C loop; they remain torch's
per-parameter 0-dim tensors. It also keeps the storages of the tensors it points at, so a stale
address is never one that was freed.

A parameter listed twice in a group runs eagerly, once per listing and in order, as torch.optim's
default (for-loop) step does; torch warns about such a group when it is added.

Switches: ``OPTIMLAB_FUSED=0`` in the environment, or ``fused=False`` on an optimizer (its
param group), force the eager path; ``OPTIMLAB_BACKEND=c|triton|foreach`` forces a backend;
``OPTIMLAB_NATIVE=0`` runs the per-step checks in Python.
"""

from __future__ import annotations

import collections
import os
import warnings
import weakref
from array import array
from itertools import chain
from operator import attrgetter, is_
from typing import Any, Sequence

import torch
from torch import Tensor

from . import cpu, foreach, native, precision, precision_cpu
from .trace import CachedTracer, DVal, Unsupported, Vec, trace_rule

__all__ = ["step", "listing", "fused_enabled", "check_capturable", "stats", "Unsupported", "listed_twice_state",
           "hide_state_made_this_step"]

#: counters for tests and diagnostics: tensors stepped by each path, plans built, kernels built/loaded
stats = cpu.stats
stats.update({"fused_tensors": 0, "eager_tensors": 0, "plans": 0, "kernel_calls": 0})
_refused: set[Any] = set()  # structures whose kernel could not be built: not retried every step
_plans: "weakref.WeakKeyDictionary[Any, _Plan]" = weakref.WeakKeyDictionary()
_data_ptr = Tensor.data_ptr
_dtype_of = attrgetter("dtype")
_numel = Tensor.numel
_untyped_storage = Tensor.untyped_storage
_values = dict.values
_ROUND = {torch.float32: lambda x: array("f", (x,))[0], torch.float64: float}  # a number as that dtype


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
    """False when ``OPTIMLAB_FUSED=0``, or the group says ``fused=False`` or ``differentiable=True``
    (a differentiable step runs the eager rule under autograd)."""
    if native.switched_off("OPTIMLAB_FUSED"):
        return False
    return group is None or _group_fused(group)


def _group_fused(group: dict[str, Any]) -> bool:
    return group.get("fused") is not False and not group.get("differentiable")


class _Set:
    """Tensors of one param group whose step count and scalar state agree: one set of scalars."""

    __slots__ = ("group", "start", "stop", "values", "tracer", "trace")

    def __init__(self, group: int, start: int, stop: int, values: dict[str, float]) -> None:
        self.group, self.start, self.stop = group, start, stop
        self.values = values  # "step" and the rule's scalar state, as the state tensors hold them
        self.tracer = CachedTracer()  # this set's trace, replayed while only numbers change
        self.trace: Any = None  # the trace last checked against the bucket's structure


class _Bucket:
    """Sets of one dtype, state layout and traced structure: one kernel call per step."""

    def __init__(self, backend: Any, capturable: bool, dtype: torch.dtype, names: tuple[str, ...],
                 structure: tuple, kernel: Any, outputs: list[tuple[int, int]], fresh: list[str], round_: Any,
                 n_slots: int) -> None:
        self.backend, self.capturable = backend, capturable
        self.cache: dict[str, Any] = {}  # the backend's own per-bucket data (device pointer tables)
        self.dtype, self.names, self.structure, self.kernel = dtype, names, structure, kernel
        self.nodes, self.outputs, self.fresh = list(structure[0]), outputs, fresh
        self.round, self.n_slots = round_, n_slots  # how ``step`` rounds; scalars per set
        self.sets: list[_Set] = []
        self.params: tuple[Tensor, ...] = ()
        self.dicts: tuple[dict | None, ...] = ()  # each parameter's state dict as ``optimizer.state`` holds it

    def finish(self, rule: Any, items: list[tuple[Tensor, dict, int]]) -> None:
        """Fix the tensors' order, addresses and scalar buffers once the sets are all added
        (``items``: each parameter, its state, and its gradient's position in the step's list)."""
        self.params = tuple(p for p, _, _ in items)
        self.index = array("q", (at for _, _, at in items))
        states = [state for _, state, _ in items]
        self.sizes = array("q", map(_numel, self.params))
        self.param_ptrs = array("q", map(_data_ptr, self.params))
        self.scalars: dict[str, Tensor] = {}  # name -> the buffer the per-parameter 0-dim views share
        self.expected: dict[str, Tensor] = {}  # what the plan last wrote there
        for name in self.sets[0].values:  # the counters (``step``: see :func:`_counters`), scalar state
            buffer = torch.stack([state[name] for state in states])
            for i, state in enumerate(states):
                state[name] = buffer[i]
            self.scalars[name], self.expected[name] = buffer, buffer.clone()
        self.values = tuple(chain.from_iterable(map(_values, states)))  # every state value, in order
        # the 0-dim counters' addresses: the plan made them views into its buffer, so a storage
        # swapped under one (``st["step"].set_(t)``, a ``v.data = ...`` loop over the state) is a
        # change. (Not the dense tensors': reading those addresses every step costs ~25% of a
        # 2,000-tensor step, measured; a swap under one is the one edit left unchecked.)
        self.value_ptrs = array("q", (_data_ptr(v) if isinstance(v, Tensor) and v.dim() == 0 else 0
                                      for v in self.values))
        # the 0-dim buffers' own memory, checked and advanced in place (not on the device: capturable)
        self.scalar_memory = {} if self.capturable else {
            name: (_data_ptr(buffer), _data_ptr(self.expected[name]), buffer.element_size(),
                   buffer.dtype == torch.float64) for name, buffer in self.scalars.items()}
        self.columns = [[state[name] for state in states] for name in self.names]
        self.static_ptrs = array("q", self.param_ptrs)  # buffer-major: params, gradients, state
        self.static_ptrs.extend(array("q", bytes(8 * len(self.params))))  # the gradients' row, rewritten each step
        for column in self.columns:
            self.static_ptrs.extend(map(_data_ptr, column))
        # the plan's own references: an address it holds is never reused while it lives
        self.keep = [_untyped_storage(t) for t in chain(self.params, self.values)]
        self.offsets = array("q")  # per tensor: where its set's scalars start
        for i, s in enumerate(self.sets):
            self.offsets.extend([i * self.n_slots] * (s.stop - s.start))


class _Plan:
    def __init__(self, optimizer: Any, flags: list[bool], listed: list[tuple[Tensor, ...]]) -> None:
        self.state, self.groups = optimizer.state, list(optimizer.param_groups)
        self.flags = flags  # per group: fused_enabled
        self.listed = listed  # per group: its parameters with gradients (held: their ids stay theirs)
        self.buckets: list[_Bucket] = []
        self.rest: list[list[Tensor]] = []  # per group: parameters for the eager path
        self.transient = False  # some tensors are eager only for this step's gradients: rebuild next
        self.state_keys: tuple = ()  # ``optimizer.state``'s keys and values when the plan was made
        self.state_dicts: tuple = ()
        # for :func:`listing`: per group, all its parameters, what each one's gradient was (mask:
        # 0 none, 1 some - the eager ones, 2 in a bucket) and the eager ones with gradients; and
        # whether every bucket's backend reads gradients by address only (then a step may skip
        # making the gradients' Python objects)
        self.members: list[tuple[Tensor, ...]] = []
        self.masks: list[bytes] = []
        self.eager: list[tuple[Tensor, ...]] = []
        self.direct = False
        # also for :func:`listing`, per group: the dtypes of its parameters in buckets (each step's
        # check confirms them) and its other parameters (whose dtypes are read each step)
        self.bucket_dtypes: list[frozenset[torch.dtype]] = []
        self.unbucketed: list[tuple[Tensor, ...]] = []
        # per group, how it stores state (a change in a param group makes a new plan: the
        # buckets' backends and kernels follow from it)
        self.storage = [_storage(group) for group in self.groups]


def _storage(group: dict[str, Any]) -> tuple:
    """The settings of a param group that choose its low-precision backends (:mod:`.precision_cpu`)."""
    return group.get("state_dtype"), group.get("param_rounding")


def step(optimizer: Any, work: Sequence[tuple[dict[str, Any], Sequence[Tensor]]],
         hyperparams: Sequence[dict[str, Any]], grads: list[Tensor] | None) -> list[list[Tensor]] | None:
    """Step what the fused path can of every ``(group, params)``; return, per group, the rest.

    ``grads``: the parameters' gradients in ``work``'s order, all groups one after another, as
    :func:`.native.with_grads` collected them. None: ``work`` holds :func:`listing`'s lists and
    each bucket reads its gradients from its parameters (``gather_own``: no Python objects for
    them); then None is returned, nothing done, where the plan does not hold as it is (the caller
    collects the gradients and calls again)."""
    checks = native.enabled()  # the per-tensor checks in C (kernels/native.py), else in Python
    direct = grads is None
    flags = [False] * len(work) if native.switched_off("OPTIMLAB_FUSED") else [_group_fused(g) for g, _ in work]
    plan = _plans.get(optimizer)
    if (plan is None or plan.flags != flags or plan.state is not optimizer.state
            or len(plan.groups) != len(work) or not all(map(is_, plan.groups, (g for g, _ in work)))
            or plan.storage != [_storage(g) for g, _ in work]
            or not all(a is b or checks.same(a, b) for a, b in zip(plan.listed, (params for _, params in work)))):
        plan = None
    scalars = _revalidate(optimizer, plan, hyperparams, checks, grads) if plan is not None else None
    if scalars is None and direct:
        return None
    if scalars is None:
        plan = _plans[optimizer] = _make_plan(optimizer, work, hyperparams, flags)
        scalars = _revalidate(optimizer, plan, hyperparams, checks, grads)
        if scalars is None:  # cannot happen for a plan just built from this very state; be safe
            del _plans[optimizer]
            stats["eager_tensors"] += sum(len(params) for _, params in work)
            return [list(params) for _, params in work]
    stale = plan.transient
    for bucket, (bucket_grads, values, outs) in zip(plan.buckets, scalars):
        stale |= _run_bucket(optimizer, bucket, bucket_grads, values, outs, checks)
    if stale:  # new state entries appeared, or some tensors were eager for this step only
        del _plans[optimizer]
    rest = [list(r) for r in plan.rest]
    n_rest = sum(map(len, rest))
    if (n_rest and torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()
            and any(r and group.get("capturable") for r, (group, _) in zip(rest, work))):
        raise RuntimeError("capturable=True: some parameters cannot take the fused step (dtype, layout, "
                           "sparse or tensor hyperparameters) and the eager step reads its counter on the "
                           "host, which a CUDA graph cannot capture")
    stats["fused_tensors"] += sum(len(params) for _, params in work) - n_rest
    stats["eager_tensors"] += n_rest
    return rest


def listing(optimizer: Any, checks: Any) -> tuple[list[tuple[Tensor, ...]], list[tuple[Tensor, ...]],
                                                  list[frozenset[torch.dtype]]] | None:
    """Per group, the parameters with gradients and, of those, the ones stepped eagerly, as the
    plan recorded them - where each group still lists the same parameters and each one's gradient
    is there or not as it was (those in buckets are looked at by the step's ``gather_own``) - and
    the dtypes of all its parameters: the buckets' as planned (``gather_own`` confirms them before
    anything moves; a change sends the step the collecting way, which reads them all again), the
    others' read here (for :func:`optimlab.faults.validate`, which need not read thousands). Reads
    no gradient's Python object. None: collect the gradients (``with_grads``), as without a plan.

    Only where every bucket's backend reads gradients by address (``GRADS_BY_ADDRESS``), the
    checks have ``gather_own`` (the C++ build, and Python), and no group asks for what reads the
    gradients before the step (``nonfinite``) or runs under autograd (``differentiable``)."""
    plan = _plans.get(optimizer)
    if plan is None or not plan.direct or not hasattr(checks, "listing"):
        return None
    groups = optimizer.param_groups
    if len(groups) != len(plan.groups) or not all(map(is_, groups, plan.groups)):
        return None
    for group, members, mask in zip(groups, plan.members, plan.masks):
        if (group.get("nonfinite", "ignore") != "ignore" or group.get("differentiable")
                or not checks.listing(members, group["params"], mask)):
            return None
    return plan.listed, plan.eager, [known.union(map(_dtype_of, others))
                                     for known, others in zip(plan.bucket_dtypes, plan.unbucketed)]


def _make_plan(optimizer: Any, work: Sequence[tuple[dict[str, Any], list[Tensor]]],
               hyperparams: Sequence[dict[str, Any]], flags: list[bool]) -> _Plan:
    rule = optimizer.rule
    stats["plans"] += 1
    plan = _Plan(optimizer, flags, [tuple(params) for _, params in work])
    sets: dict[tuple, list[tuple[Tensor, dict, int]]] = {}
    position = 0  # of each parameter in ``work``, all groups one after another: its gradient's
    for index, ((group, params), hp) in enumerate(zip(work, hyperparams)):
        rest: list[Tensor] = []
        plan.rest.append(rest)
        first, position = position, position + len(params)
        if not flags[index] or any(isinstance(v, Tensor) for v in hp.values()):
            rest.extend(params)
            continue
        listed_twice = _listed_twice(params)
        capturable = bool(group.get("capturable"))
        for at, p in enumerate(params, first):
            g = p.grad
            # bfloat16 / 8-bit state, or a stochastically rounded bfloat16 parameter (kernels/precision_cpu.py)
            low = precision.kind(p, group) is not None or precision.rounds_param(p, group)
            backend = None if not _plain(p) else precision_cpu.backend_for(p, group, rule) if low else _backend(p)
            if id(p) in listed_twice or backend is None or not _plain(g):  # subclasses (FSDP2's DTensor)
                rest.append(p)
                continue
            dtype = p.dtype
            if (not p.is_contiguous() or g.dtype != dtype or g.device != p.device or g.layout != torch.strided
                    or not g.is_contiguous() or g.shape != p.shape):
                plan.transient |= p.is_contiguous()  # the gradient's fault: look again next step
                rest.append(p)
                continue
            state = optimizer.param_state(p, group)
            scalar_names = _counters(rule, p, group)
            names = tuple(k for k in state if k not in scalar_names
                          and not precision.is_scale(k, state))  # 8-bit block scales travel with their codes
            scalar_device = p.device if capturable else torch.device("cpu")
            dense_like = backend.state_ok if low else _dense_like
            if not all(dense_like(state[k], p) for k in names) or not all(
                    isinstance(state.get(k), Tensor) and state[k].dim() == 0 and state[k].device == scalar_device
                    and state[k].dtype in _ROUND for k in scalar_names):
                rest.append(p)
                continue
            values = tuple((k, state[k].dtype, state[k].item()) for k in scalar_names)
            sets.setdefault((index, backend, p.device, dtype, names, values), []).append((p, state, at))
    buckets: dict[tuple, tuple[_Bucket, list]] = {}
    for (index, backend, device, dtype, names, values), items in sets.items():
        set_values = {k: v for k, _, v in values}
        round_ = _ROUND[values[0][1]] if values and values[0][0] == "step" else float
        capturable = bool(work[index][0].get("capturable"))
        if capturable:
            arguments, on = _device_arguments({k: items[0][1][k] for k in set_values}, rule.counts_steps), device
        else:
            arguments, on = _arguments(set_values, round_, rule.counts_steps), None
        try:
            trace, outputs, fresh, _ = _trace(rule, names, {**hyperparams[index], **arguments}, dtype, on)
            if fresh and not getattr(backend, "MAKES_STATE", True):  # (SGD's first momentum buffer)
                plan.rest[index].extend(p for p, _, _ in items)  # the eager step creates it in its storage;
                plan.transient = True  # the next step is planned again, with it
                continue
            structure = (tuple(trace.nodes), tuple(outputs), len(names) + 2, dtype, names)  # names: precision_cpu
            kernel = _kernel(rule, backend, trace, outputs, len(names) + 2, dtype, structure)
        except Unsupported:
            kernel = None
        if kernel is None:
            plan.rest[index].extend(p for p, _, _ in items)
            continue
        # on the CPU, sets of one structure share a bucket; elsewhere (and capturable) a set is one
        shared = getattr(backend, "SCALAR_SETS", False) and not capturable
        key = (backend, device, dtype, names, structure, round_, tuple(set_values)) + (
            () if shared else (index, values))
        bucket, members = buckets.setdefault(key, (_Bucket(
            backend, capturable, dtype, names, structure, kernel, outputs, fresh, round_,
            max(1, len(trace.scalars))), []))
        bucket.sets.append(_Set(index, len(members), len(members) + len(items), set_values))
        members.extend(items)
    for bucket, members in buckets.values():
        bucket.finish(rule, members)
        bucket.dicts = tuple(map(optimizer.state.get, bucket.params))
        if hasattr(bucket.backend, "prepare"):  # a backend's own setup (precision_cpu: rounding keys, scales)
            bucket.backend.prepare(bucket, optimizer, work[bucket.sets[0].group][0])
        plan.buckets.append(bucket)
    # ``optimizer.state`` as it is now: compared entry by entry (by identity, in order) each step,
    # which is cheap where looking each parameter up is not (a tensor's __hash__ is Python code)
    plan.state_keys, plan.state_dicts = tuple(optimizer.state.keys()), tuple(optimizer.state.values())
    _record_listing(plan, rule)
    return plan


def _record_listing(plan: _Plan, rule: Any) -> None:
    """What :func:`listing` compares with: each group's parameters and whose gradient was there."""
    stepped = {id(p) for bucket in plan.buckets for p in bucket.params}
    for group, listed in zip(plan.groups, plan.listed):
        members = tuple(group["params"])
        with_grad = set(map(id, listed))
        plan.members.append(members)
        plan.masks.append(bytes(2 if id(p) in stepped else 1 if id(p) in with_grad else 0 for p in members))
        plan.eager.append(tuple(p for p in listed if id(p) not in stepped))
        plan.bucket_dtypes.append(frozenset(p.dtype for p in members if id(p) in stepped))
        plan.unbucketed.append(tuple(p for p in members if id(p) not in stepped))
    plan.direct = (not rule.sparse_only and not any(g.get("differentiable") for g in plan.groups)
                   and all(getattr(b.backend, "GRADS_BY_ADDRESS", False) for b in plan.buckets))


def _listed_twice(params: list[Tensor]) -> set[int]:
    ids = list(map(id, params))
    if len(set(ids)) == len(ids):
        return set()
    seen: set[int] = set()
    return {i for i in ids if i in seen or seen.add(i)}


def listed_twice_state(optimizer: Any, group: dict[str, Any], params: list[Tensor]) -> dict[int, set[str]] | None:
    """For the parameters listed more than once in ``params``: their state's names before the step
    (after initialisation, which torch.optim also does for every parameter before updating any)."""
    twice = _listed_twice(params)
    if not twice:
        return None
    return {id(p): set(optimizer.param_state(p, group)) for p in params if id(p) in twice}


def hide_state_made_this_step(optimizer: Any, param: Tensor, before: dict[int, set[str]] | None) -> None:
    """Before a repeated parameter's next update, drop the state entries its earlier update created.

    torch.optim collects every parameter's state before it updates any, so each listing of a
    parameter whose state is created lazily (SGD's momentum buffer) sees no entry on that step and
    the last listing's entry is kept; listings after that share the state and update it in turn.
    """
    if before is None or id(param) not in before:
        return
    state = optimizer.state.get(param)
    if state:
        for name in set(state) - before[id(param)]:
            del state[name]


_PLAIN = frozenset({torch.Tensor, torch.nn.Parameter})


def _plain(t: Tensor) -> bool:
    return type(t) in _PLAIN


def _dense_like(t: Any, p: Tensor) -> bool:
    return (isinstance(t, Tensor) and _plain(t) and t.dtype == p.dtype and t.device == p.device
            and t.layout == torch.strided and t.is_contiguous() and t.shape == p.shape)


def _counters(rule: Any, p: Tensor, group: dict[str, Any]) -> list[str]:
    """The 0-dim state of ``p`` that the plan keeps and advances: ``step`` where the rule counts
    steps, or where it keys ``p``'s stochastic rounding (a rule that counts none, SGD: the eager
    path keeps the same counter, ``Optimizer.param_state``), then the rule's scalar state."""
    keyed = rule.counts_steps or precision.rounds_stochastically(p, group)
    return (["step"] if keyed else []) + list(rule.scalar_state)


def _arguments(values: dict[str, float], round_: Any, counts_steps: bool = True) -> dict[str, float]:
    """The rule's ``step`` and scalar-state arguments: ``step`` as eager sees it after ``+= 1``
    (``round_`` rounds a number to the dtype of the ``step`` tensor); none for a rule that counts
    no steps (its counter keys the rounding only)."""
    arguments = dict(values)
    if "step" in arguments:
        if counts_steps:
            arguments["step"] = round_(arguments["step"] + 1)
        else:
            del arguments["step"]
    return arguments


def _device_arguments(values: dict[str, Tensor], counts_steps: bool = True) -> dict[str, Tensor]:
    """A capturable step's ``step`` and scalar-state arguments: the plan's 0-dim buffers on the
    device (no ``step`` for a rule that counts none). The trace records what the rule computes
    from them; the kernel reads them when it runs, after the step's ``step += 1``."""
    return {name: value for name, value in values.items() if counts_steps or name != "step"}


def _trace(rule: Any, names: tuple[str, ...], arguments: dict[str, Any], dtype: torch.dtype,
           device: torch.device | None = None, tracer: CachedTracer | None = None,
           known: Any = None) -> tuple[Any, list[tuple[int, int]], list[str], dict[str, Any]]:
    """Trace ``rule`` over inputs ``param, grad, *names``: (trace, outputs, fresh names, scalar outputs).

    ``device``: a capturable step, whose counter and scalar state are 0-dim tensors there.
    ``tracer``: a set's :class:`CachedTracer`, replaying its last trace when only numbers changed;
    when it returns ``known`` (a trace whose outputs were read before), outputs and fresh names
    are not read again (None)."""
    inputs = ["param", "grad", *names]
    trace, out = (tracer or trace_rule)(rule.update, inputs, arguments, rule.name, device)
    if known is not None and trace is known:
        return trace, None, None, {name: _scalar_output(value)
                                   for name, value in out.items() if name in rule.scalar_state}
    outputs: list[tuple[int, int]] = []
    fresh: list[str] = []
    scalar_out: dict[str, float] = {}
    for name, value in out.items():
        if name in rule.scalar_state:
            scalar_out[name] = _scalar_output(value)
            continue
        if not isinstance(value, Vec):
            raise Unsupported(f"output {name!r} is not element-wise")
        if name in inputs:
            outputs.append((inputs.index(name), value.index))
        else:
            fresh.append(name)
            outputs.append((len(inputs) + len(fresh) - 1, value.index))
    return trace, outputs, fresh, scalar_out


def _scalar_output(value: Any) -> Any:
    """Scalar state the rule returns: a number, or (capturable) a device value computed after the launch."""
    return value if isinstance(value, (Tensor, DVal)) else float(value)


def _kernel(rule: Any, backend: Any, trace: Any, outputs: list[tuple[int, int]], n_inputs: int,
            dtype: torch.dtype, structure: tuple) -> Any:
    """The backend's kernel for ``structure``, or None (once warned) when it cannot be built."""
    if (backend, structure) in _refused:
        return None
    try:
        return backend.kernel_for(trace, outputs, n_inputs, dtype, structure)
    except Unsupported as error:
        _refused.add((backend, structure))
        warnings.warn(f"optimlab: fused {rule.name} step unavailable, running eagerly ({error})",
                      RuntimeWarning, stacklevel=5)
        return None


def _revalidate(optimizer: Any, plan: _Plan, hyperparams: Sequence[dict[str, Any]], checks: Any,
                all_grads: list[Tensor] | None) -> list | None:
    """Check the plan against the state as it is now and trace this step; None: rebuild it.

    ``checks``: :mod:`.native`'s functions (C, or the same in Python). Returns, per bucket,
    ``(gradients, scalars per set, scalar outputs per set)`` (gradients None where ``all_grads``
    is: read from the parameters, by address only). Nothing is written here but each
    bucket's row of gradient addresses, so a rebuild after a failed check starts from untouched state.
    """
    rule = optimizer.rule
    state = optimizer.state
    same_state = checks.same_state if type(state) in _DICTS else native.python.same_state
    if not same_state(state, plan.state_keys, plan.state_dicts):  # del / clear / a new entry / st = {...}
        return None
    out = []
    for bucket in plan.buckets:
        n = len(bucket.params)
        # the parameters at their addresses (p.data = ...); each state dict holding the same tensors
        # at the same addresses (an entry replaced, added or removed; st[k].set_(t)); the gradients
        # plain, dense, contiguous, of the bucket's dtype and sizes; their addresses into the table
        if all_grads is None:  # read from the parameters (step's ``grads`` None)
            grads = None
            if not checks.gather_own(bucket.params, bucket.param_ptrs, bucket.sizes, bucket.dtype, bucket.dicts,
                                     bucket.values, bucket.value_ptrs, bucket.static_ptrs, n):
                return None
        else:
            grads = checks.gather(bucket.params, bucket.param_ptrs, bucket.sizes, bucket.dtype, bucket.dicts,
                                  bucket.values, bucket.value_ptrs, bucket.static_ptrs, n, all_grads, bucket.index)
            if grads is None:
                return None
        for name, (address, expected, size, _) in bucket.scalar_memory.items():  # st["step"].zero_() ...
            if not checks.same_bytes(address, expected, size * n):
                return None
        shared = getattr(bucket.backend, "SCALAR_SETS", False)
        slots: Any = array("d") if shared else []
        outs = []
        for s in bucket.sets:
            if bucket.capturable:  # counter and scalar state stay 0-dim device tensors: no host sync
                arguments = _device_arguments({name: buffer[0] for name, buffer in bucket.scalars.items()},
                                              rule.counts_steps)
                device = bucket.params[0].device
            else:
                arguments, device = _arguments(s.values, bucket.round, rule.counts_steps), None
            try:
                trace, outputs, fresh, scalar_out = _trace(
                    rule, bucket.names, {**hyperparams[s.group], **arguments}, bucket.dtype, device, s.tracer,
                    s.trace)
            except Unsupported:
                return None
            if trace is not s.trace:  # a fresh trace (a replay returns the same one): same structure?
                if trace.nodes != bucket.nodes or outputs != bucket.outputs or fresh != bucket.fresh:
                    return None  # an option changed the rule's shape (say weight_decay 0 -> 0.1)
                s.trace = trace
            slots.extend(trace.scalars or [0.0])
            outs.append(scalar_out)
        out.append((grads, slots, outs))
    return out


def _run_bucket(optimizer: Any, bucket: _Bucket, grads: list[Tensor] | None, slots: Any,
                scalar_outs: list[dict[str, Any]], checks: Any) -> bool:
    """Run the bucket's kernel and advance its scalar state; True when new state entries appeared."""
    params = bucket.params
    new_state = [[torch.empty_like(p) for p in params] for _ in bucket.fresh]
    n = len(params)
    if "step" in bucket.scalars:
        if bucket.capturable:  # one kernel; ``expected`` serves the host checks, which capturable skips
            bucket.scalars["step"] += 1
        else:  # the same float additions as ``+= 1`` on the buffers, without two torch calls
            address, expected, _, double = bucket.scalar_memory["step"]
            checks.advance(address, n, double)
            checks.advance(expected, n, double)
    bucket.backend.launch(bucket.kernel, bucket, [params, grads, *bucket.columns, *new_state], slots)
    stats["kernel_calls"] += 1
    for s, scalar_out in zip(bucket.sets, scalar_outs):
        if "step" in s.values:
            s.values["step"] = bucket.round(s.values["step"] + 1)
        for name, value in scalar_out.items():
            if bucket.capturable:  # computed now, from the counters the kernel read (Nadam's mu_product)
                target = bucket.scalars[name][s.start:s.stop]
                if isinstance(value, DVal):
                    store = getattr(bucket.backend, "store_device_value", None)  # one kernel (Triton)
                    if store is not None and store(value.trace, value.index, target):
                        continue
                    value = value.trace.device_value(value.index)  # torch, one kernel per operation
                target.fill_(value)
                continue
            address, expected, size, double = bucket.scalar_memory[name]
            checks.fill(address + size * s.start, s.stop - s.start, value, double)
            checks.fill(expected + size * s.start, s.stop - s.start, value, double)
            s.values[name] = _ROUND[torch.float64 if double else torch.float32](value)
    if bucket.fresh:  # a state created lazily (SGD's momentum buffer) is kept, as the eager path keeps it
        for i, p in enumerate(params):
            state = bucket.dicts[i]
            if state is None:
                state = optimizer.state[p] = {}
            for name, column in zip(bucket.fresh, new_state):
                state[name] = column[i]
    return bool(bucket.fresh)


_DICTS = frozenset({dict, collections.defaultdict})  # what the C check walks (PyDict_Next)
