"""The torch.optim adapter: each optimizer is a ``torch.optim.Optimizer`` driving one pure rule.

Param groups, closures, ``zero_grad``, hooks, ``state_dict`` / ``load_state_dict`` and every
``torch.optim.lr_scheduler`` come from ``torch.optim.Optimizer`` itself; this module adds only the
step: per-parameter state created next to the rule that declares it, and the rule applied to it.
Arguments, defaults and state names are torch.optim's, so a ``state_dict`` saved by
``torch.optim.Adam`` loads into ``optimlab.Adam`` and the other way round.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from . import faults, kernels
from ._scalar import scalar_dtype
from .algorithms._base import Rule
from .kernels import precision

Params = Iterable[Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, Tensor]]


class Optimizer(torch.optim.Optimizer):
    """Base of optimlab's optimizers: ``rule`` is the algorithm, everything else is torch's.

    Every optimizer also takes ``nonfinite=``, ``state_dtype=``, ``param_rounding=`` and
    ``rounding_seed=`` (see :mod:`optimlab.faults`; the storage formats are
    :mod:`optimlab.kernels.precision`).
    """

    rule: Rule
    #: options of optimlab's own, set by ``load_state_dict`` when a torch.optim state lacks them
    extra_defaults: dict[str, Any] = {}

    def __init__(self, params: Params, defaults: dict[str, Any]) -> None:
        if defaults.get("differentiable"):
            raise ValueError("differentiable=True is not supported by optimlab (allowed: False)")
        if defaults.get("fused") and defaults.get("foreach"):
            raise ValueError("fused=True and foreach=True cannot both be set (allowed: at most one True)")
        super().__init__(params, defaults)
        faults.keep_state_dtype_on_load(self)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group as torch does, then validate it; a bad group is not kept."""
        super().add_param_group(param_group)
        try:
            self.rule.validate(self.param_groups[-1])
            faults.validate(self.param_groups[-1])
            kernels.check_capturable(self.param_groups[-1])
        except (ValueError, TypeError):
            self.param_groups.pop()
            raise

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in {**self.defaults, **self.extra_defaults}.items():
                if key != "params":
                    group.setdefault(key, value)
        for per_param in self.state.values():
            if "step" in per_param and not torch.is_tensor(per_param["step"]):
                per_param["step"] = torch.tensor(float(per_param["step"]), dtype=scalar_dtype())
            # torch's load_state_dict casts 0-dim state such as NAdam's mu_product to the parameter's
            # dtype; keep it in the dtype it is saved and stepped in, so a resumed run is bit-identical.
            for name in self.rule.scalar_state:
                if torch.is_tensor(per_param.get(name)):
                    per_param[name] = per_param[name].to(scalar_dtype())

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Apply the rule once to every parameter that has a gradient; return ``closure()``."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = []
        for group in self.param_groups:
            self.rule.validate(group)
            faults.validate(group)
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if p.grad.is_sparse:
                    faults.check_sparse(self, group, p)
            work.append((group, params))
        if not faults.grads_finite(self, work):  # nonfinite="skip" / "raise"
            return loss
        if any(precision.low_precision(group) for group in self.param_groups):
            # stochastic rounding keys on each parameter's position (its state_dict id)
            self._param_index = {id(p): i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}
        for group, params in work:
            hyperparams = self.rule.hyperparams(group)
            # the fused kernels take what they can; the rest runs the eager reference below
            for p in kernels.step_group(self, group, params, hyperparams):
                self._apply_rule(p, hyperparams, group)
        return loss

    def _init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        """The parameter's state, created on first use; a rule with no state leaves no entry."""
        if param in self.state:
            return self.state[param]
        state: dict[str, Any] = {}
        if self.rule.counts_steps or precision.rounds_stochastically(param, group):  # the step keys the rounding
            state["step"] = torch.tensor(0.0, dtype=scalar_dtype())
        storage = precision.kind(param, group)
        for name, value in self.rule.init_state(faults.state_template(param, group), group).items():
            if storage is None or name in self.rule.scalar_state:
                state[name] = value
            else:
                precision.store(state, name, value, storage, None)
        if group.get("capturable"):  # the step counter and scalar state live on the device
            for name in ("step", *self.rule.scalar_state):
                if name in state:
                    state[name] = state[name].to(param.device)
        if state:
            self.state[param] = state
        return state

    def _apply_rule(self, param: Tensor, hyperparams: dict[str, Any], group: dict[str, Any]) -> None:
        state = self._init_state(param, group)
        dtype = faults.compute_dtype(param, group)  # the param's dtype unless state_dtype asks for more
        storage = precision.kind(param, group)  # None, "bf16" or "int8": how the state is kept
        real = torch.view_as_real if param.is_complex() else (lambda t: t)
        inputs: dict[str, Any] = {}
        for name, value in state.items():
            if name == "step" or precision.is_scale(name, state):
                continue
            inputs[name] = value.item() if name in self.rule.scalar_state else real(precision.load(state, name, dtype))
        stochastic = precision.rounds_stochastically(param, group)
        if stochastic and "step" not in state:  # a torch.optim SGD state has no step
            state["step"] = torch.tensor(0.0, dtype=scalar_dtype())
            self.state[param] = state
        if "step" in state:
            state["step"] += 1
        if self.rule.counts_steps:
            inputs["step"] = state["step"].item()
        update, grad = self.rule.update, faults.upcast(param.grad, dtype)
        if grad.is_sparse:
            update = self.rule.sparse_update
        else:
            grad = real(grad)
        out = update(real(faults.upcast(param, dtype)), grad, **inputs, **hyperparams)

        def key(name: str) -> int:
            index = self._param_index[id(param)]
            return precision.stream_key(group.get("rounding_seed", 0), int(state["step"].item()), index,
                                        precision.stream_id(name))

        new_param = out.pop("param")
        if stochastic and group.get("param_rounding") == "stochastic" and param.dtype == torch.bfloat16:
            new_param = precision.round_bf16(new_param, key("param"))
        real(param).copy_(new_param)
        for name, value in out.items():
            if name in self.rule.scalar_state:
                state[name].fill_(value)
            elif storage is not None:
                precision.store(state, name, value, storage, key(name) if storage == "bf16" else None)
                self.state[param] = state
            elif name in state:
                real(state[name]).copy_(value)
            else:
                fresh = value.clone()
                state[name] = torch.view_as_complex(fresh) if param.is_complex() else fresh
                self.state[param] = state


#: execution switches every class accepts (torch's where torch has them; ``fused=False`` forces
#: optimlab's eager path); ``capturable`` only where torch has it
_EXECUTION = (("foreach", None), ("differentiable", False), ("fused", None))


def _signature(spec: Any) -> inspect.Signature:
    """``(self, params, <torch's arguments or spec.arguments>, *, <options>, <faults.options()>)``."""
    P = inspect.Parameter
    params = [P("self", P.POSITIONAL_OR_KEYWORD), P("params", P.POSITIONAL_OR_KEYWORD)]
    if spec.torch is not None:
        theirs = inspect.signature(getattr(torch.optim, spec.torch).__init__).parameters.values()
        params += [P(p.name, p.kind, default=p.default) for p in theirs if p.name not in ("self", "params")]
    else:
        params += [P(name, P.POSITIONAL_OR_KEYWORD, default=default) for name, default in spec.arguments]
    have = {p.name for p in params}
    own = [(name, default) for name, default in _EXECUTION if name not in have]
    own += [(o.name, o.default) for o in spec.options]
    own += list(faults.options().items())
    params += [P(name, P.KEYWORD_ONLY, default=default) for name, default in own]
    return inspect.Signature(params)


def _docstring(spec: Any, sig: inspect.Signature) -> str:
    lines = [spec.doc, "", "Arguments (defaults):"]
    lines += [f"    {p.name} = {p.default!r}" for p in list(sig.parameters.values())[2:]]
    lines += [f"    {o.name}: {o.doc}" for o in spec.options]
    lines.append("    nonfinite, state_dtype, param_rounding, rounding_seed: see optimlab.faults")
    return "\n".join(lines)


def install(spec: Any) -> type[Optimizer]:
    """Generate the drop-in class of a catalogue :class:`~optimlab.catalogue.Algorithm` and put it
    in this module (and the ``optimlab`` namespace)."""
    sig = _signature(spec)

    def __init__(self, params: Params, *args: Any, **kwargs: Any) -> None:
        bound = sig.bind(self, params, *args, **kwargs)
        bound.apply_defaults()
        defaults = {k: v for k, v in bound.arguments.items() if k not in ("self", "params")}
        if isinstance(defaults.get("betas"), list):
            defaults["betas"] = tuple(defaults["betas"])
        defaults.update(spec.fixed)
        Optimizer.__init__(self, params, defaults)
        if spec.eager_state:  # as torch.optim does for this class
            for group in self.param_groups:
                for p in group["params"]:
                    self._init_state(p, group)

    __init__.__signature__ = sig
    __init__.__doc__ = "Build the optimizer; arguments as in the class docstring."
    cls = type(spec.name, (Optimizer,), {
        "__init__": __init__, "__doc__": _docstring(spec, sig), "__module__": __name__, "__qualname__": spec.name,
        "rule": spec.rule, "extra_defaults": {o.name: o.default for o in spec.options}})
    globals()[spec.name] = cls
    OPTIMIZERS[spec.name.lower()] = cls
    return cls


def uninstall(spec: Any) -> None:
    """Remove a generated class (a throw-away declaration)."""
    globals().pop(spec.name, None)
    OPTIMIZERS.pop(spec.name.lower(), None)


#: drop-in class name (lower case) -> class, filled by :func:`install`
OPTIMIZERS: dict[str, type[Optimizer]] = {}

from . import catalogue as _catalogue  # noqa: E402

for _spec in _catalogue.algorithms():  # declared before this module was imported
    install(_spec)

SGD = _catalogue.algorithm("SGD").cls
Adagrad = _catalogue.algorithm("Adagrad").cls
RMSprop = _catalogue.algorithm("RMSprop").cls
Adam = _catalogue.algorithm("Adam").cls
AdamW = _catalogue.algorithm("AdamW").cls
NAdam = _catalogue.algorithm("NAdam").cls
