"""The torch.optim adapter: each optimizer is a ``torch.optim.Optimizer`` driving one pure rule.

Param groups, closures, ``zero_grad``, hooks, ``state_dict`` / ``load_state_dict`` and every
``torch.optim.lr_scheduler`` come from ``torch.optim.Optimizer`` itself; this module adds only the
step: per-parameter state created next to the rule that declares it, and the rule applied to it.
Arguments, defaults and state names are torch.optim's, so a ``state_dict`` saved by
``torch.optim.Adam`` loads into ``optimlab.Adam`` and the other way round.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from . import faults, kernels
from ._scalar import scalar_dtype
from .algorithms import adagrad, adam, nadam, rmsprop, sgd
from .algorithms._base import Rule
from .kernels import precision

Params = Iterable[Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, Tensor]]


class Optimizer(torch.optim.Optimizer):
    """Base of optimlab's optimizers: ``rule`` is the algorithm, everything else is torch's.

    Every optimizer also takes ``nonfinite=``, ``state_dtype=`` and ``param_rounding=`` (see
    :mod:`optimlab.faults`; the storage formats are :mod:`optimlab.kernels.precision`).
    """

    rule: Rule
    #: options of optimlab's own, set by ``load_state_dict`` when a torch.optim state lacks them
    extra_defaults: dict[str, Any] = {}

    def __init__(self, params: Params, defaults: dict[str, Any]) -> None:
        for name in ("capturable", "differentiable"):
            if defaults.get(name):
                raise ValueError(f"{name}=True is not supported by optimlab (allowed: False)")
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


def _torch_flags(foreach: bool | None, fused: bool | None, differentiable: bool,
                 capturable: bool | None = False) -> dict[str, Any]:
    flags = {"foreach": foreach, "differentiable": differentiable, "fused": fused}
    if capturable is not None:
        flags["capturable"] = capturable
    return flags


class SGD(Optimizer):
    """Stochastic / mini-batch / batch gradient descent with Momentum and Nesterov.

    Arguments and defaults are ``torch.optim.SGD``'s; ``momentum_form`` picks the momentum formula:
    ``"torch"`` (default), ``"ewma"`` (the seed's ``v = b*v + (1-b)*g``, ``v0 = 0``) or
    ``"lr_in_velocity"`` (``v = b*v + lr*g; w = w - v``). Rules: :mod:`optimlab.algorithms.sgd`.
    """

    rule = sgd.RULE
    extra_defaults = {"momentum_form": "torch"}

    def __init__(self, params: Params, lr: float | Tensor = 1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, differentiable: bool = False, fused: bool | None = None,
                 momentum_form: str = "torch", nonfinite: str = "ignore",
                 state_dtype: torch.dtype | str | None = None, param_rounding: str = "nearest") -> None:
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay,
                    "nesterov": nesterov, "maximize": maximize,
                    **_torch_flags(foreach, fused, differentiable, capturable=None),
                    "momentum_form": momentum_form, **faults.options(nonfinite, state_dtype, param_rounding)}
        super().__init__(params, defaults)


class Adagrad(Optimizer):
    """AdaGrad with ``torch.optim.Adagrad``'s arguments and defaults.

    ``eps_inside_sqrt=True`` gives the seed's ``w -= lr * g / sqrt(V + eps)``.
    Rules: :mod:`optimlab.algorithms.adagrad`.
    """

    rule = adagrad.RULE
    extra_defaults = {"eps_inside_sqrt": False}

    def __init__(self, params: Params, lr: float | Tensor = 1e-2, lr_decay: float = 0, weight_decay: float = 0,
                 initial_accumulator_value: float = 0, eps: float = 1e-10, foreach: bool | None = None, *,
                 maximize: bool = False, differentiable: bool = False, fused: bool | None = None,
                 eps_inside_sqrt: bool = False, nonfinite: str = "ignore",
                 state_dtype: torch.dtype | str | None = None, param_rounding: str = "nearest") -> None:
        defaults = {"lr": lr, "lr_decay": lr_decay, "eps": eps, "weight_decay": weight_decay,
                    "initial_accumulator_value": initial_accumulator_value, "maximize": maximize,
                    **_torch_flags(foreach, fused, differentiable, capturable=None),
                    "eps_inside_sqrt": eps_inside_sqrt, **faults.options(nonfinite, state_dtype, param_rounding)}
        super().__init__(params, defaults)
        for group in self.param_groups:  # torch.optim.Adagrad creates its state up front
            for p in group["params"]:
                self._init_state(p, group)


class RMSprop(Optimizer):
    """RMSProp with ``torch.optim.RMSprop``'s arguments and defaults.

    ``eps_inside_sqrt=True`` gives the seed's ``w -= lr * g / sqrt(V + eps)``.
    Rules: :mod:`optimlab.algorithms.rmsprop`.
    """

    rule = rmsprop.RULE
    extra_defaults = {"eps_inside_sqrt": False}

    def __init__(self, params: Params, lr: float | Tensor = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0, momentum: float = 0, centered: bool = False, capturable: bool = False,
                 foreach: bool | None = None, maximize: bool = False, differentiable: bool = False, *,
                 fused: bool | None = None, eps_inside_sqrt: bool = False, nonfinite: str = "ignore",
                 state_dtype: torch.dtype | str | None = None, param_rounding: str = "nearest") -> None:
        defaults = {"lr": lr, "momentum": momentum, "alpha": alpha, "eps": eps, "centered": centered,
                    "weight_decay": weight_decay, "maximize": maximize,
                    **_torch_flags(foreach, fused, differentiable, capturable),
                    "eps_inside_sqrt": eps_inside_sqrt, **faults.options(nonfinite, state_dtype, param_rounding)}
        super().__init__(params, defaults)


class Adam(Optimizer):
    """Adam with ``torch.optim.Adam``'s arguments and defaults.

    ``bias_correction=False`` gives the seed's uncorrected form (0.5 -> 0.49684 in its worked
    example); ``decoupled_weight_decay=True`` is AdamW. Rules: :mod:`optimlab.algorithms.adam`.
    """

    rule = adam.RULE
    extra_defaults = {"bias_correction": True}

    def __init__(self, params: Params, lr: float | Tensor = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, amsgrad: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None, decoupled_weight_decay: bool = False,
                 bias_correction: bool = True, nonfinite: str = "ignore",
                 state_dtype: torch.dtype | str | None = None, param_rounding: str = "nearest") -> None:
        defaults = {"lr": lr, "betas": tuple(betas) if isinstance(betas, list) else betas, "eps": eps,
                    "weight_decay": weight_decay, "amsgrad": amsgrad, "maximize": maximize,
                    **_torch_flags(foreach, fused, differentiable, capturable),
                    "decoupled_weight_decay": decoupled_weight_decay, "bias_correction": bias_correction,
                    **faults.options(nonfinite, state_dtype, param_rounding)}
        super().__init__(params, defaults)


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay (default 0.01), as ``torch.optim.AdamW``."""

    def __init__(self, params: Params, lr: float | Tensor = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None, bias_correction: bool = True, nonfinite: str = "ignore",
                 state_dtype: torch.dtype | str | None = None, param_rounding: str = "nearest") -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True, bias_correction=bias_correction,
                         nonfinite=nonfinite, state_dtype=state_dtype, param_rounding=param_rounding)


class NAdam(Optimizer):
    """Nadam with ``torch.optim.NAdam``'s arguments and defaults.

    ``momentum_schedule=False`` drops Dozat's warming momentum (``mu_t = beta1``), the plain Nadam
    of the seed. Rules: :mod:`optimlab.algorithms.nadam`.
    """

    rule = nadam.RULE
    extra_defaults = {"momentum_schedule": True}

    def __init__(self, params: Params, lr: float | Tensor = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, momentum_decay: float = 4e-3,
                 decoupled_weight_decay: bool = False, *, foreach: bool | None = None, maximize: bool = False,
                 capturable: bool = False, differentiable: bool = False, fused: bool | None = None,
                 momentum_schedule: bool = True, nonfinite: str = "ignore",
                 state_dtype: torch.dtype | str | None = None, param_rounding: str = "nearest") -> None:
        defaults = {"lr": lr, "betas": tuple(betas) if isinstance(betas, list) else betas, "eps": eps,
                    "weight_decay": weight_decay, "momentum_decay": momentum_decay,
                    "decoupled_weight_decay": decoupled_weight_decay, "maximize": maximize,
                    **_torch_flags(foreach, fused, differentiable, capturable),
                    "momentum_schedule": momentum_schedule, **faults.options(nonfinite, state_dtype, param_rounding)}
        super().__init__(params, defaults)


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD, "adagrad": Adagrad, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW, "nadam": NAdam}
