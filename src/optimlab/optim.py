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
from .algorithms import (adadelta, adafactor, adagrad, adam, ademamix, adamax, asgd, lbfgs, lion, muon, nadam,
                         radam, rmsprop, rprop, schedule_free, sgd, sparse_adam)
from .algorithms._base import Rule

Params = Iterable[Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, Tensor]]
_FUSED_DEVICES = ("cpu", "cuda", "mps", "xpu", "hpu")  # where torch.optim accepts fused=True


class Optimizer(torch.optim.Optimizer):
    """Base of optimlab's optimizers: ``rule`` is the algorithm, everything else is torch's.

    Every optimizer also takes ``nonfinite=`` and ``state_dtype=`` (see :mod:`optimlab.faults`).
    """

    rule: Rule
    #: options of optimlab's own, set by ``load_state_dict`` when a torch.optim state lacks them
    extra_defaults: dict[str, Any] = {}

    def __init__(self, params: Params, defaults: dict[str, Any]) -> None:
        if defaults.get("capturable"):
            raise ValueError("capturable=True is not supported by optimlab (allowed: False)")
        if defaults.get("fused") and defaults.get("differentiable"):
            raise RuntimeError("fused=True does not support differentiable=True (allowed: at most one True)")
        if defaults.get("fused") and defaults.get("foreach"):
            raise RuntimeError("fused=True and foreach=True cannot both be set (allowed: at most one True)")
        self.rule.validate(defaults)  # the arguments first, as torch.optim checks them before the params
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
            if "step" in per_param and not torch.is_tensor(per_param["step"]) and not self.rule.int_step:
                per_param["step"] = torch.tensor(float(per_param["step"]), dtype=scalar_dtype())
            # torch's load_state_dict casts 0-dim state such as NAdam's mu_product to the parameter's
            # dtype; keep it in the dtype it is saved and stepped in, so a resumed run is bit-identical.
            for name in self.rule.scalar_state:
                if torch.is_tensor(per_param.get(name)):
                    per_param[name] = per_param[name].to(scalar_dtype())

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Apply the rule once to every parameter that has a gradient; return ``closure()``.

        With ``differentiable=True`` the step runs under autograd, as torch.optim's: the new
        parameters and state are differentiable functions of the old ones and of tensor
        hyperparameters (the eager rule runs; the fused path takes no part).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.set_grad_enabled(bool(self.defaults.get("differentiable"))):
            self._step()
        return loss

    def _step(self) -> None:
        work = []
        for group in self.param_groups:
            self.rule.validate(group)
            faults.validate(group)
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                self._check_grad(group, p)
            work.append((group, params))
        if not faults.grads_finite(self, work):  # nonfinite="skip" / "raise"
            return
        for group, params in work:
            # one-element tensor hyperparameters of any shape act as 0-dim ones (torch's _to_scalar)
            hyperparams = {k: v.reshape(()) if isinstance(v, Tensor) and v.dim() else v
                           for k, v in self.rule.hyperparams(group).items()}
            # the fused kernels take what they can; the rest runs the eager reference below
            rest = params if group.get("differentiable") else kernels.step_group(self, group, params, hyperparams)
            for p in rest:
                self._apply_rule(p, hyperparams, group)

    def _check_grad(self, group: dict[str, Any], p: Tensor) -> None:
        """Before any parameter moves: refuse what the rule does not take, as torch.optim does."""
        name = type(self).__name__
        if p.is_complex() and not self.rule.complex_ok:
            raise RuntimeError(f"{name} does not support complex parameters")
        if p.grad.is_sparse:
            faults.check_sparse(self, group, p)
        elif self.rule.sparse_only:
            raise RuntimeError(f"{name} does not support dense gradients, please consider Adam instead")

    def _init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        """The parameter's state, created on first use; a rule with no state leaves no entry."""
        if param in self.state:
            return self.state[param]
        if group.get("fused") and not (param.device.type in _FUSED_DEVICES and torch.is_floating_point(param)):
            raise RuntimeError(f"fused=True requires floating-point parameters on one of {_FUSED_DEVICES}, "
                               f"got {param.dtype} on {param.device.type}")
        state: dict[str, Any] = {}
        if self.rule.counts_steps:
            state["step"] = 0 if self.rule.int_step else torch.tensor(0.0, dtype=scalar_dtype())
        state.update(self.rule.init_state(faults.state_template(param, group), group))
        if state:
            self.state[param] = state
        return state

    def _apply_rule(self, param: Tensor, hyperparams: dict[str, Any], group: dict[str, Any]) -> None:
        state = self._init_state(param, group)
        dtype = faults.compute_dtype(param, group)  # the param's dtype unless state_dtype asks for more
        real = torch.view_as_real if param.is_complex() else (lambda t: t)
        inputs: dict[str, Any] = {}
        for name, value in state.items():
            if name == "step":
                continue
            inputs[name] = value.item() if name in self.rule.scalar_state else real(value)
        if self.rule.counts_steps:
            state["step"] += 1
            inputs["step"] = state["step"] if self.rule.int_step else state["step"].item()
        update, grad = self.rule.update, faults.upcast(param.grad, dtype)
        if grad.is_sparse:
            update = self.rule.sparse_update
        else:
            grad = real(grad)
        out = update(real(faults.upcast(param, dtype)), grad, **inputs, **hyperparams)
        real(param).copy_(out.pop("param"))
        for name, value in out.items():
            if name in self.rule.scalar_state:
                state[name].fill_(value)
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
                 state_dtype: torch.dtype | None = None) -> None:
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay,
                    "nesterov": nesterov, "maximize": maximize,
                    **_torch_flags(foreach, fused, differentiable, capturable=None),
                    "momentum_form": momentum_form, **faults.options(nonfinite, state_dtype)}
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
                 state_dtype: torch.dtype | None = None) -> None:
        defaults = {"lr": lr, "lr_decay": lr_decay, "eps": eps, "weight_decay": weight_decay,
                    "initial_accumulator_value": initial_accumulator_value, "maximize": maximize,
                    **_torch_flags(foreach, fused, differentiable, capturable=None),
                    "eps_inside_sqrt": eps_inside_sqrt, **faults.options(nonfinite, state_dtype)}
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
                 state_dtype: torch.dtype | None = None) -> None:
        defaults = {"lr": lr, "momentum": momentum, "alpha": alpha, "eps": eps, "centered": centered,
                    "weight_decay": weight_decay, "maximize": maximize,
                    **_torch_flags(foreach, fused, differentiable, capturable),
                    "eps_inside_sqrt": eps_inside_sqrt, **faults.options(nonfinite, state_dtype)}
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
                 state_dtype: torch.dtype | None = None) -> None:
        defaults = {"lr": lr, "betas": tuple(betas) if isinstance(betas, list) else betas, "eps": eps,
                    "weight_decay": weight_decay, "amsgrad": amsgrad, "maximize": maximize,
                    **_torch_flags(foreach, fused, differentiable, capturable),
                    "decoupled_weight_decay": decoupled_weight_decay, "bias_correction": bias_correction,
                    **faults.options(nonfinite, state_dtype)}
        super().__init__(params, defaults)


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay (default 0.01), as ``torch.optim.AdamW``."""

    def __init__(self, params: Params, lr: float | Tensor = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None, bias_correction: bool = True, nonfinite: str = "ignore",
                 state_dtype: torch.dtype | None = None) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True, bias_correction=bias_correction,
                         nonfinite=nonfinite, state_dtype=state_dtype)


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
                 state_dtype: torch.dtype | None = None) -> None:
        defaults = {"lr": lr, "betas": tuple(betas) if isinstance(betas, list) else betas, "eps": eps,
                    "weight_decay": weight_decay, "momentum_decay": momentum_decay,
                    "decoupled_weight_decay": decoupled_weight_decay, "maximize": maximize,
                    **_torch_flags(foreach, fused, differentiable, capturable),
                    "momentum_schedule": momentum_schedule, **faults.options(nonfinite, state_dtype)}
        super().__init__(params, defaults)




def _pair(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


class Adadelta(Optimizer):
    """Adadelta with ``torch.optim.Adadelta``'s arguments and defaults. Rules: :mod:`optimlab.algorithms.adadelta`."""

    rule = adadelta.RULE

    def __init__(self, params: Params, lr: float | Tensor = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0, foreach: bool | None = None, *, capturable: bool = False,
                 maximize: bool = False, differentiable: bool = False, nonfinite: str = "ignore",
                 state_dtype: torch.dtype | None = None) -> None:
        defaults = {"lr": lr, "rho": rho, "eps": eps, "weight_decay": weight_decay, "maximize": maximize,
                    "capturable": capturable, "foreach": foreach, "differentiable": differentiable,
                    **faults.options(nonfinite, state_dtype)}
        super().__init__(params, defaults)


class Adamax(Optimizer):
    """Adamax with ``torch.optim.Adamax``'s arguments and defaults. Rules: :mod:`optimlab.algorithms.adamax`."""

    rule = adamax.RULE

    def __init__(self, params: Params, lr: float | Tensor = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, foreach: bool | None = None, *, maximize: bool = False,
                 differentiable: bool = False, capturable: bool = False, nonfinite: str = "ignore",
                 state_dtype: torch.dtype | None = None) -> None:
        defaults = {"lr": lr, "betas": _pair(betas), "eps": eps, "weight_decay": weight_decay, "foreach": foreach,
                    "maximize": maximize, "differentiable": differentiable, "capturable": capturable,
                    **faults.options(nonfinite, state_dtype)}
        super().__init__(params, defaults)


class RAdam(Optimizer):
    """RAdam with ``torch.optim.RAdam``'s arguments and defaults (``decoupled_weight_decay=True``:
    AdamW-style decay). Rules: :mod:`optimlab.algorithms.radam`."""

    rule = radam.RULE

    def __init__(self, params: Params, lr: float | Tensor = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, decoupled_weight_decay: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, nonfinite: str = "ignore",
                 state_dtype: torch.dtype | None = None) -> None:
        defaults = {"lr": lr, "betas": _pair(betas), "eps": eps, "weight_decay": weight_decay, "maximize": maximize,
                    "foreach": foreach, "capturable": capturable, "decoupled_weight_decay": decoupled_weight_decay,
                    "differentiable": differentiable, **faults.options(nonfinite, state_dtype)}
        super().__init__(params, defaults)


class ASGD(Optimizer):
    """Averaged SGD with ``torch.optim.ASGD``'s arguments and defaults; the average is
    ``state[p]["ax"]``. Rules: :mod:`optimlab.algorithms.asgd`."""

    rule = asgd.RULE

    def __init__(self, params: Params, lr: float | Tensor = 1e-2, lambd: float = 1e-4, alpha: float = 0.75,
                 t0: float = 1e6, weight_decay: float = 0, foreach: bool | None = None, maximize: bool = False,
                 differentiable: bool = False, capturable: bool = False, *, nonfinite: str = "ignore",
                 state_dtype: torch.dtype | None = None) -> None:
        defaults = {"lr": lr, "lambd": lambd, "alpha": alpha, "t0": t0, "weight_decay": weight_decay,
                    "foreach": foreach, "maximize": maximize, "differentiable": differentiable,
                    "capturable": capturable, **faults.options(nonfinite, state_dtype)}
        super().__init__(params, defaults)


class Rprop(Optimizer):
    """Rprop with ``torch.optim.Rprop``'s arguments and defaults. Rules: :mod:`optimlab.algorithms.rprop`."""

    rule = rprop.RULE

    def __init__(self, params: Params, lr: float | Tensor = 1e-2, etas: tuple[float, float] = (0.5, 1.2),
                 step_sizes: tuple[float, float] = (1e-6, 50), *, capturable: bool = False,
                 foreach: bool | None = None, maximize: bool = False, differentiable: bool = False,
                 nonfinite: str = "ignore", state_dtype: torch.dtype | None = None) -> None:
        defaults = {"lr": lr, "etas": etas, "step_sizes": step_sizes, "foreach": foreach, "maximize": maximize,
                    "differentiable": differentiable, "capturable": capturable,
                    **faults.options(nonfinite, state_dtype)}
        super().__init__(params, defaults)


class SparseAdam(Optimizer):
    """SparseAdam with ``torch.optim.SparseAdam``'s arguments and defaults: dense parameters,
    sparse gradients (``nn.Embedding(sparse=True)``). Rules: :mod:`optimlab.algorithms.sparse_adam`."""

    rule = sparse_adam.RULE

    def __init__(self, params: Params, lr: float | Tensor = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, maximize: bool = False, *, nonfinite: str = "ignore",
                 state_dtype: torch.dtype | None = None) -> None:
        defaults = {"lr": lr, "betas": _pair(betas), "eps": eps, "maximize": maximize,
                    **faults.options(nonfinite, state_dtype)}
        super().__init__(params, defaults)
        for kind, refused in (("Sparse", Tensor.is_sparse.__get__), ("Complex", Tensor.is_complex)):
            where = [[i, j] for i, group in enumerate(self.param_groups)
                     for j, p in enumerate(group["params"]) if refused(p)]
            if where:
                what = "requires dense parameter tensors" if kind == "Sparse" else "does not support complex parameters"
                raise ValueError(f"{kind} params at indices {where}: SparseAdam {what}")


class Adafactor(Optimizer):
    """Adafactor with ``torch.optim.Adafactor``'s arguments and defaults (factored second moment
    for matrices). Runs eagerly. Rules: :mod:`optimlab.algorithms.adafactor`."""

    rule = adafactor.RULE

    def __init__(self, params: Params, lr: float | Tensor = 1e-2, beta2_decay: float = -0.8,
                 eps: tuple[float | None, float] = (None, 1e-3), d: float = 1.0, weight_decay: float = 0.0, *,
                 foreach: bool | None = None, maximize: bool = False, nonfinite: str = "ignore",
                 state_dtype: torch.dtype | None = None) -> None:
        defaults = {"lr": lr, "beta2_decay": beta2_decay, "eps": eps, "d": d, "weight_decay": weight_decay,
                    "foreach": foreach, "maximize": maximize, **faults.options(nonfinite, state_dtype)}
        super().__init__(params, defaults)


class Muon(Optimizer):
    """Muon with ``torch.optim.Muon``'s arguments and defaults, for 2-D parameters (momentum, then
    Newton-Schulz orthogonalisation). Runs eagerly. ``ns_dtype`` (optimlab's) is the dtype of the
    iteration, bfloat16 as torch. Rules: :mod:`optimlab.algorithms.muon`."""

    rule = muon.RULE
    extra_defaults = {"ns_dtype": torch.bfloat16}

    def __init__(self, params: Params, lr: float | Tensor = 1e-3, weight_decay: float = 0.1, momentum: float = 0.95,
                 nesterov: bool = True, ns_coefficients: tuple[float, float, float] = muon.NS_COEFFICIENTS,
                 eps: float = 1e-7, ns_steps: int = 5, adjust_lr_fn: str | None = None, *,
                 ns_dtype: torch.dtype = torch.bfloat16, nonfinite: str = "ignore",
                 state_dtype: torch.dtype | None = None) -> None:
        defaults = {"lr": lr, "weight_decay": weight_decay, "momentum": momentum, "nesterov": nesterov,
                    "ns_coefficients": ns_coefficients, "eps": eps, "ns_steps": ns_steps,
                    "adjust_lr_fn": adjust_lr_fn, "ns_dtype": ns_dtype, **faults.options(nonfinite, state_dtype)}
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        for p in self.param_groups[-1]["params"]:
            if p.ndim != 2:
                self.param_groups.pop()
                raise ValueError(f"Muon only supports 2-D parameters, got a parameter of shape {tuple(p.shape)}")


class Lion(Optimizer):
    """Lion (Chen et al., 2023): the sign of an interpolated momentum. Arguments and defaults of
    the paper's code (lr 1e-4, betas (0.9, 0.99)). Rules: :mod:`optimlab.algorithms.lion`."""

    rule = lion.RULE

    def __init__(self, params: Params, lr: float | Tensor = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0, *, maximize: bool = False, foreach: bool | None = None,
                 nonfinite: str = "ignore", state_dtype: torch.dtype | None = None) -> None:
        defaults = {"lr": lr, "betas": _pair(betas), "weight_decay": weight_decay, "maximize": maximize,
                    "foreach": foreach, **faults.options(nonfinite, state_dtype)}
        super().__init__(params, defaults)


class AdEMAMix(Optimizer):
    """AdEMAMix (Pagliardini et al., 2024): Adam plus a slow EMA of gradients. Arguments and
    defaults of the paper's code. Rules: :mod:`optimlab.algorithms.ademamix`."""

    rule = ademamix.RULE

    def __init__(self, params: Params, lr: float | Tensor = 1e-3,
                 betas: tuple[float, float, float] = (0.9, 0.999, 0.9999), alpha: float = 2.0,
                 beta3_warmup: int | None = None, alpha_warmup: int | None = None, eps: float = 1e-8,
                 weight_decay: float = 0.0, *, maximize: bool = False, foreach: bool | None = None,
                 nonfinite: str = "ignore", state_dtype: torch.dtype | None = None) -> None:
        defaults = {"lr": lr, "betas": _pair(betas), "alpha": alpha, "beta3_warmup": beta3_warmup,
                    "alpha_warmup": alpha_warmup, "eps": eps, "weight_decay": weight_decay, "maximize": maximize,
                    "foreach": foreach, **faults.options(nonfinite, state_dtype)}
        super().__init__(params, defaults)


class _ScheduleFree(Optimizer):
    """Schedule-Free (Defazio et al., 2024): the parameters hold ``y`` in training mode; call
    ``optimizer.eval()`` before evaluating or saving the model (parameters become the average
    ``x``) and ``optimizer.train()`` before training again, as the authors' code asks."""

    def __init__(self, params: Params, defaults: dict[str, Any]) -> None:
        super().__init__(params, {**defaults, "train_mode": True})

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        if not all(group["train_mode"] for group in self.param_groups):
            raise RuntimeError(f"{type(self).__name__}.step() needs training mode: call optimizer.train() first "
                               f"(allowed: step after train(), evaluate after eval())")
        return super().step(closure)

    @torch.no_grad()
    def _switch(self, train: bool) -> None:
        move = schedule_free.training_point if train else schedule_free.evaluation_point
        for group in self.param_groups:
            if group["train_mode"] == train:
                continue
            beta = schedule_free.interpolation_beta(group)
            for p in group["params"]:
                if "z" in self.state.get(p, {}):
                    real = torch.view_as_real if p.is_complex() else (lambda t: t)
                    real(p).copy_(move(real(p), real(self.state[p]["z"]), beta))
            group["train_mode"] = train

    def train(self) -> None:
        """Parameters to the training point ``y`` (the gradient is taken there)."""
        self._switch(True)

    def eval(self) -> None:
        """Parameters to the averaged point ``x`` (evaluate and checkpoint the model there)."""
        self._switch(False)


class SGDScheduleFree(_ScheduleFree):
    """Schedule-Free SGD; arguments and defaults of the authors' ``SGDScheduleFree``.
    Rules: :mod:`optimlab.algorithms.schedule_free`."""

    rule = schedule_free.SGD_RULE

    def __init__(self, params: Params, lr: float | Tensor = 1.0, momentum: float = 0.9, weight_decay: float = 0,
                 warmup_steps: int = 0, r: float = 0.0, weight_lr_power: float = 2.0, *, maximize: bool = False,
                 foreach: bool | None = None, nonfinite: str = "ignore",
                 state_dtype: torch.dtype | None = None) -> None:
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "warmup_steps": warmup_steps,
                    "r": r, "weight_lr_power": weight_lr_power, "maximize": maximize, "foreach": foreach,
                    **faults.options(nonfinite, state_dtype)}
        super().__init__(params, defaults)


class AdamWScheduleFree(_ScheduleFree):
    """Schedule-Free AdamW; arguments and defaults of the authors' ``AdamWScheduleFree``.
    Rules: :mod:`optimlab.algorithms.schedule_free`."""

    rule = schedule_free.ADAMW_RULE

    def __init__(self, params: Params, lr: float | Tensor = 2.5e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, warmup_steps: int = 0, r: float = 0.0,
                 weight_lr_power: float = 2.0, *, maximize: bool = False, foreach: bool | None = None,
                 nonfinite: str = "ignore", state_dtype: torch.dtype | None = None) -> None:
        defaults = {"lr": lr, "betas": _pair(betas), "eps": eps, "weight_decay": weight_decay,
                    "warmup_steps": warmup_steps, "r": r, "weight_lr_power": weight_lr_power, "maximize": maximize,
                    "foreach": foreach, **faults.options(nonfinite, state_dtype)}
        super().__init__(params, defaults)


class LBFGS(torch.optim.Optimizer):
    """L-BFGS with ``torch.optim.LBFGS``'s arguments, defaults and state; ``step(closure)`` is
    required. One param group. Rules: :mod:`optimlab.algorithms.lbfgs` (runs eagerly: the
    closure-driven search has no element-wise part to fuse)."""

    def __init__(self, params: Params, lr: float | Tensor = 1, max_iter: int = 20, max_eval: int | None = None,
                 tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9, history_size: int = 100,
                 line_search_fn: str | None = None) -> None:
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        defaults = {"lr": lr, "max_iter": max_iter, "max_eval": max_eval, "tolerance_grad": tolerance_grad,
                    "tolerance_change": tolerance_change, "history_size": history_size,
                    "line_search_fn": line_search_fn}
        lbfgs.validate(defaults)
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups): allowed is one group")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        try:
            lbfgs.validate(self.param_groups[-1])
        except (ValueError, TypeError):
            self.param_groups.pop()
            raise

    def _flat(self, tensors: Iterable[Tensor | None]) -> Tensor:
        params = self.param_groups[0]["params"]
        views = []
        for p, t in zip(params, tensors):
            t = torch.zeros_like(p) if t is None else t.to_dense() if t.is_sparse else t
            views.append((torch.view_as_real(t) if t.is_complex() else t).reshape(-1))
        return torch.cat(views)

    def _write(self, x: Tensor) -> None:
        offset = 0
        for p in self.param_groups[0]["params"]:
            target = torch.view_as_real(p) if p.is_complex() else p
            target.copy_(x[offset:offset + target.numel()].view_as(target))
            offset += target.numel()

    @torch.no_grad()
    def step(self, closure: Callable[[], Any]) -> Any:  # type: ignore[override]
        """Run up to ``max_iter`` L-BFGS iterations; return the loss ``closure()`` gave first."""
        group = self.param_groups[0]
        lbfgs.validate(group)
        closure = torch.enable_grad()(closure)
        params = group["params"]

        def evaluate(x: Tensor) -> tuple[float, Tensor]:
            self._write(x)
            loss = float(closure())
            return loss, self._flat(p.grad for p in params)

        first = closure()
        x = self._flat(p.detach() for p in params)
        lr = group["lr"].reshape(()) if isinstance(group["lr"], Tensor) else group["lr"]
        state = self.state[params[0]]
        options = {k: group[k] for k in ("max_iter", "max_eval", "tolerance_grad", "tolerance_change",
                                         "history_size", "line_search_fn")}
        out = lbfgs.lbfgs(x, float(first), self._flat(p.grad for p in params), evaluate, dict(state), lr=lr,
                          **options)
        self._write(out.pop("param"))
        state.update(out)
        return first


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD, "adagrad": Adagrad, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW, "nadam": NAdam}
