"""Faults and precision: what every optimizer does about non-finite gradients and low-precision params.

Per-group options, accepted by every optimlab optimizer (keyword-only):

``nonfinite="ignore" | "skip" | "raise"``
    What ``step()`` does when a gradient holds ``inf`` or ``nan``. ``"ignore"`` (default) checks
    nothing, as torch.optim. ``"skip"`` skips the whole step: no parameter of any group moves, no
    state changes, no step count advances; ``optimizer.skipped_steps`` counts the skips.
    ``"raise"`` raises :class:`NonFiniteGradientError` (a ``FloatingPointError``) naming the
    parameter, before any parameter is touched. The check runs only over the groups that ask for
    it (one device sync per step). Under DDP every rank holds the same averaged gradient, so all
    ranks decide alike; FSDP2's sharded (DTensor) gradients are checked across their ranks. With
    ``ZeroRedundancyOptimizer`` each rank's optimizer sees only its own shard of the parameters,
    so a skip there is per shard: check the gradients before ``step()`` instead (or use
    ``torch.amp.GradScaler``, which does).

``state_dtype=None | torch.float32 | torch.float64 | torch.bfloat16 | "int8"``
    How the optimizer state is kept. ``None`` (default) keeps the parameter's dtype, as
    torch.optim. With ``torch.float32`` a ``float16`` / ``bfloat16`` parameter keeps its state in
    float32, the update is computed in float32 from float32 copies of the parameter and the
    gradient, and the result is rounded once into the parameter. (The parameter itself stays low
    precision: there is no float32 master copy, so an update smaller than half a unit in the last
    place of the parameter is lost, as in any low-precision model.) ``torch.bfloat16`` stores the
    state in bfloat16 with stochastic rounding and ``"int8"`` in 8-bit blocks (Dettmers et al.,
    2022); both compute the update in float32 (float64 for float64 parameters): see
    :mod:`optimlab.kernels.precision`. Complex parameters take only the float dtypes.

``param_rounding="nearest" | "stochastic"``
    How the float32 result of the update is rounded into a ``bfloat16`` parameter: to nearest
    (default, as torch) or stochastically (unbiased; pure-bfloat16 training). Parameters of other
    dtypes are unaffected; ``float16`` parameters take only ``"nearest"``. The update of a
    stochastically rounded parameter is computed in float32 (its state kept in float32 unless
    ``state_dtype`` says otherwise).

``rounding_seed=0``
    The seed of the counter-based random bits of stochastic rounding; with the step count and
    each element's position it fixes every rounding, so a resumed run repeats an uninterrupted one.

The functions here are called from ``optimlab.optim.Optimizer`` with a line each.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any, Iterable, Mapping

import torch
from torch import Tensor

from ._checks import check_choice
from .kernels import precision

NONFINITE_CHOICES = ("ignore", "skip", "raise")
STATE_DTYPES = (torch.float32, torch.float64)  # full-precision state: at least the parameter's
LOW_STATE_DTYPES = (torch.bfloat16, precision.INT8)  # stored low, computed in float32
PARAM_ROUNDINGS = ("nearest", "stochastic")
STORAGE_OPTIONS = ("state_dtype", "param_rounding")  # kept by load_state_dict (see keep_state_dtype_on_load)
#: ``state_dtype`` by name (command lines, benchmarks)
STATE_DTYPE_NAMES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
                     "int8": precision.INT8}
_ALLOWED_STATE = 'None, torch.float32, torch.float64, torch.bfloat16 or "int8"'

_COMPLEX_OF = {torch.float32: torch.complex64, torch.float64: torch.complex128}


class NonFiniteGradientError(FloatingPointError):
    """A gradient holds inf or nan and the optimizer was built with ``nonfinite="raise"``."""


def options(nonfinite: str = "ignore", state_dtype: torch.dtype | str | None = None,
            param_rounding: str = "nearest", rounding_seed: int = 0) -> dict[str, Any]:
    """The options as param-group defaults (what each optimizer's ``__init__`` adds)."""
    return {"nonfinite": nonfinite, "state_dtype": state_dtype, "param_rounding": param_rounding,
            "rounding_seed": rounding_seed}



def validate(group: Mapping[str, Any], dtypes: Iterable[torch.dtype] | None = None) -> None:
    """Raise ValueError/TypeError naming the option when a group's setting is not allowed.

    ``dtypes``: the dtypes of the group's parameters where the caller knows them (the fused plan's
    lists, :func:`optimlab.kernels.listing`: each step's checks confirm them before anything
    moves); read from the parameters when None (only where a setting depends on them)."""
    check_choice("nonfinite", group.get("nonfinite", "ignore"), NONFINITE_CHOICES)
    check_choice("param_rounding", group.get("param_rounding", "nearest"), PARAM_ROUNDINGS)
    seed = group.get("rounding_seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"rounding_seed must be an integer in [0, 2**32), got {seed!r}")
    state_dtype = group.get("state_dtype")
    if dtypes is None and (state_dtype is not None or group.get("param_rounding") == "stochastic"):
        dtypes = set(map(_dtype_of, group["params"]))  # (a set: checked every step, of thousands of tensors)
    if group.get("param_rounding") == "stochastic" and torch.float16 in dtypes:
        raise ValueError("param_rounding='stochastic' rounds into bfloat16 parameters; float16 parameters "
                         "take only param_rounding='nearest' (allowed: 'nearest', or bfloat16 parameters)")
    if state_dtype is None:
        return
    if isinstance(state_dtype, str):
        if state_dtype != precision.INT8:
            raise ValueError(f"state_dtype must be {_ALLOWED_STATE}, got {state_dtype!r}")
    elif not isinstance(state_dtype, torch.dtype):
        raise TypeError(f"state_dtype must be {_ALLOWED_STATE}, got {state_dtype!r}")
    elif state_dtype not in STATE_DTYPES + LOW_STATE_DTYPES:
        raise ValueError(f"state_dtype must be {_ALLOWED_STATE}, got {state_dtype}")
    for dtype in dtypes:
        if state_dtype in LOW_STATE_DTYPES:
            if dtype.is_complex:
                raise ValueError(f"state_dtype={state_dtype!r} does not hold the state of a complex parameter "
                                 f"({dtype}; allowed for complex parameters: None, torch.float32, torch.float64)")
            continue
        if torch.finfo(dtype.to_real()).bits > torch.finfo(state_dtype).bits:
            raise ValueError(f"state_dtype={state_dtype} is less precise than a {dtype} parameter "
                             f"(allowed: a dtype at least as precise as the parameter, or None)")


_dtype_of = attrgetter("dtype")


def compute_dtype(param: Tensor, group: Mapping[str, Any]) -> torch.dtype:
    """The dtype the update of ``param`` is computed in (and its state kept in)."""
    state_dtype = group.get("state_dtype")
    if state_dtype in LOW_STATE_DTYPES:  # stored low, computed in float32 (or the parameter's float64)
        return torch.float64 if param.dtype == torch.float64 else torch.float32
    if state_dtype is None and param.dtype == torch.bfloat16 and group.get("param_rounding") == "stochastic":
        return torch.float32  # the float32 result is what is rounded stochastically
    if state_dtype is None or param.dtype in (state_dtype, _COMPLEX_OF[state_dtype]):
        return param.dtype
    return _COMPLEX_OF[state_dtype] if param.is_complex() else state_dtype


def upcast(tensor: Tensor, dtype: torch.dtype) -> Tensor:
    """``tensor`` in the compute dtype (itself when it already is)."""
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


def state_template(param: Tensor, group: Mapping[str, Any]) -> Tensor:
    """What a rule's ``init_state`` builds its state like: the parameter, in the compute dtype."""
    return upcast(param.detach(), compute_dtype(param, group))


def _dtensor_mesh(tensor: Tensor) -> Any:
    """The device mesh of a DTensor (FSDP2, tensor parallel), or None for a plain tensor."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    from torch.distributed.tensor import DTensor

    return tensor.device_mesh if isinstance(tensor, DTensor) else None


def _local_finite(grad: Tensor) -> Tensor:
    """A 0-dim bool: every entry this rank holds is finite (a DTensor's local shard)."""
    if grad.is_sparse:
        return torch.isfinite(grad.coalesce().values()).all()
    if _dtensor_mesh(grad) is not None:
        return torch.isfinite(grad.to_local()).all()
    return torch.isfinite(grad).all()


def _agree_across_shards(grads: list[Tensor], flags: list[Tensor]) -> list[Tensor]:
    """Sharded (DTensor) gradients: AND each flag over all ranks of its mesh, one all-reduce per
    mesh dimension, so that every rank skips (or raises) together and the shards never drift."""
    by_mesh: dict[Any, list[int]] = {}
    for i, grad in enumerate(grads):
        mesh = _dtensor_mesh(grad)
        if mesh is not None:
            by_mesh.setdefault(mesh, []).append(i)  # same order on every rank: the params' order
    flags = list(flags)
    for mesh, indices in by_mesh.items():
        agreed = torch.stack([flags[i] for i in indices]).to(torch.int32)
        for dim in range(mesh.ndim):
            torch.distributed.all_reduce(agreed, op=torch.distributed.ReduceOp.MIN, group=mesh.get_group(dim))
        for j, i in enumerate(indices):
            flags[i] = agreed[j].bool()
    return flags


def grads_finite(optimizer: torch.optim.Optimizer, work: Iterable[tuple[Mapping[str, Any], list[Tensor]]]) -> bool:
    """Check the gradients of the groups that ask for it; False means "skip this step".

    Raises :class:`NonFiniteGradientError` for a group with ``nonfinite="raise"``. Nothing has been
    touched when this runs, so a skip or a raise leaves parameters and state as they were.
    """
    pairs = [(group, p) for group, params in work if group.get("nonfinite", "ignore") != "ignore" for p in params]
    if not pairs:  # (the common case: nothing to look at, and nothing to agree on across shards)
        return True
    grads = [p.grad for _, p in pairs]
    flags = _agree_across_shards(grads, [_local_finite(g) for g in grads])
    checked = [(group, p, flag) for (group, p), flag in zip(pairs, flags)]
    if not checked:
        return True
    flags = torch.stack([f.to(checked[0][2].device) for _, _, f in checked])
    if bool(flags.all()):
        return True
    for group, p, flag in checked:
        if not bool(flag) and group["nonfinite"] == "raise":
            index = next(i for i, g in enumerate(optimizer.param_groups) if g is group)
            shape = tuple(p.shape)
            raise NonFiniteGradientError(
                f"non-finite gradient (inf or nan) for a parameter of shape {shape} in param group {index}; "
                f"nothing was updated (nonfinite='raise')")
    optimizer.skipped_steps = getattr(optimizer, "skipped_steps", 0) + 1
    return False


def check_sparse(optimizer: Any, group: Mapping[str, Any], param: Tensor) -> None:
    """Before any parameter moves: raise unless the rule takes this sparse gradient (as torch.optim)."""
    name = type(optimizer).__name__
    if optimizer.rule.sparse_update is None:
        raise RuntimeError(f"{name} does not support sparse gradients")
    if param.is_complex():
        raise RuntimeError(f"{name} does not support sparse gradients of complex parameters")
    if float(group.get("weight_decay", 0)) != 0:
        raise RuntimeError(f"weight_decay option is not compatible with sparse gradients (allowed: 0), "
                           f"got weight_decay={group['weight_decay']!r}")


def keep_state_dtype_on_load(optimizer: torch.optim.Optimizer) -> None:
    """Make ``load_state_dict`` keep each state tensor in the storage the optimizer keeps it in.

    torch's ``load_state_dict`` casts every state tensor except ``step`` to its parameter's dtype.
    That would round the float32 state of a bfloat16 parameter down to bfloat16 on every resume
    (``state_dtype``), turn 8-bit codes into floats, and move 0-dim running products such as
    NAdam's ``mu_product`` from float32 to the parameter's dtype (bfloat16, or float64), so a
    resumed run would not repeat an uninterrupted one. A pre-hook remembers the saved tensors and
    a post-hook re-stores them from what was saved: in the group's storage (a float32 torch.optim
    state loaded with ``state_dtype="int8"`` is quantized, 8-bit state loaded without it is
    dequantized; see :func:`optimlab.kernels.precision.convert_state`), 0-dim running products as
    saved. The optimizer keeps its own ``state_dtype`` and ``param_rounding``: they say how *this*
    optimizer stores state, so a saved group's values do not replace them (its hyperparameters do,
    as in torch). torch.optim itself cannot read 8-bit state: pass it through an optimlab
    optimizer with ``state_dtype=None`` (which dequantizes on load) first.

    8-bit state carries its format's version: ``state_dict`` adds ``int8_format`` to each parameter
    state holding codes, and ``load_state_dict`` refuses (ValueError, nothing loaded) 8-bit state
    without it or of another version (:func:`optimlab.kernels.precision.check_formats`).
    """
    hooks = optimizer._optimizer_load_state_dict_pre_hooks
    if getattr(optimizer, "_optimlab_hooked", None) is hooks:  # already in this table (load_state_dict
        return  # calls __setstate__, which a copy also calls with fresh, empty tables)
    optimizer._optimlab_hooked = hooks
    saved: dict[str, Any] = {}

    def pre(opt: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
        state_dict = precision.check_formats(state_dict)  # 8-bit codes of this format only
        # how this optimizer stores its state is its own: a saved group's storage options do not
        # replace it (unlike its hyperparameters), the saved state is converted instead
        groups = [{**saved_group, **{k: group[k] for k in STORAGE_OPTIONS if k in group}}
                  for saved_group, group in zip(state_dict["param_groups"], opt.param_groups)]
        state_dict = {**state_dict, "param_groups": groups + state_dict["param_groups"][len(groups):]}
        saved["state_dict"] = state_dict
        return state_dict

    def post(opt: torch.optim.Optimizer) -> None:
        state_dict = saved.pop("state_dict", None)
        if state_dict is None:
            return
        scalar_keys = tuple(getattr(opt.rule, "scalar_state", ()))
        for saved_group, group in zip(state_dict["param_groups"], opt.param_groups):
            for param_id, param in zip(saved_group["params"], group["params"]):
                entry = state_dict["state"].get(param_id)
                if entry is None or param not in opt.state:
                    continue
                state = precision.convert_state(param, group, entry, scalar_keys, compute_dtype(param, group))
                for key in scalar_keys:  # e.g. NAdam's mu_product: as saved
                    if torch.is_tensor(entry.get(key)):
                        state[key] = entry[key].to(device=param.device, copy=True)
                if "step" in opt.state[param]:  # as torch loaded it
                    state["step"] = opt.state[param]["step"]
                opt.state[param] = state

    optimizer.register_load_state_dict_pre_hook(pre, prepend=True)  # before anything reads the state
    optimizer.register_load_state_dict_post_hook(post)
    optimizer.register_state_dict_post_hook(lambda opt, state_dict: precision.tag_formats(state_dict))
