"""The torch.optim adapter: each optimizer is a ``torch.optim.Optimizer`` driving one pure rule.

Param groups, closures, ``zero_grad``, hooks, ``state_dict`` / ``load_state_dict`` and every
``torch.optim.lr_scheduler`` come from ``torch.optim.Optimizer`` itself; this module adds only the
step: per-parameter state created next to the rule that declares it, and the rule applied to it.
Arguments, defaults and state names are torch.optim's, so a ``state_dict`` saved by
``torch.optim.Adam`` loads into ``optimlab.Adam`` and the other way round.
"""

from __future__ import annotations

import functools
import inspect
from itertools import chain
from typing import Any, Callable, Iterable

import torch
from torch import Tensor
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

from . import faults, kernels
from .kernels import compiled
from ._scalar import scalar_dtype
from .algorithms import lbfgs, schedule_free
from .algorithms._base import Rule
from .kernels import precision

Params = Iterable[Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, Tensor]]
_FUSED_DEVICES = ("cpu", "cuda", "mps", "xpu", "hpu")  # where torch.optim accepts fused=True
_PLAIN_SETTINGS = frozenset({bool, int, float, str, type(None), torch.dtype})


def _settings(group: dict[str, Any]) -> tuple | None:
    """A param group's settings with their types, or None where one is not a plain value (a tensor's
    ``==`` is not a plain comparison)."""
    out = []
    for key, value in group.items():
        if key == "params":
            continue
        kind = type(value)
        if kind is tuple:
            kinds = tuple(map(type, value))
            if not _PLAIN_SETTINGS.issuperset(kinds):
                return None
            out.append((key, kinds, value))
        elif kind in _PLAIN_SETTINGS:
            out.append((key, kind, value))
        else:
            return None
    return tuple(out)


def _hooked(inner: Callable[..., Any]) -> Callable[..., Any]:
    """``inner`` (a ``step``) as torch.optim's ``Optimizer.profile_hook_step`` wraps every
    optimizer's step: the step pre-hooks (global, then the optimizer's; one may return new
    ``(args, kwargs)``), the step, ``_optimizer_step_code`` (the profiler's Python tracer hooks
    it), the post-hooks - inside ``torch.autograd.profiler.record_function("Optimizer.step#<class
    name>.step")`` wherever anything would see it (:func:`.kernels.native.recording`: a profiler
    or other RecordFunction callback, a torch-function or dispatch mode; always while compiling
    and where the C++ build is not used). Where nothing would, that context records nothing, and
    entering it costs ~0.2 ms on a cold cache (measured, benchmarks/step_speed.py layout c: 6% of
    a 2,000-tensor step), so it is left out. Marked ``hooked``: torch does not wrap it again."""

    @functools.wraps(inner)
    def step(*args: Any, **kwargs: Any) -> Any:
        self = args[0]
        if torch.compiler.is_compiling() or kernels.native.recording():
            with torch.autograd.profiler.record_function(f"Optimizer.step#{type(self).__name__}.step"):
                return _with_hooks(self, inner, args, kwargs)
        return _with_hooks(self, inner, args, kwargs)

    step.hooked = True  # type: ignore[attr-defined]
    return step


def _with_hooks(self: torch.optim.Optimizer, inner: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """torch's ``profile_hook_step`` body: pre-hooks, ``inner(*args, **kwargs)``, post-hooks."""
    for pre_hook in chain(_global_optimizer_pre_hooks.values(), self._optimizer_step_pre_hooks.values()):
        result = pre_hook(self, args, kwargs)
        if result is not None:
            if isinstance(result, tuple) and len(result) == 2:
                args, kwargs = result
            else:
                raise RuntimeError(f"{inner} must return None or a tuple of (new_args, new_kwargs), but got {result}.")
    out = inner(*args, **kwargs)
    self._optimizer_step_code()
    for post_hook in chain(self._optimizer_step_post_hooks.values(), _global_optimizer_post_hooks.values()):
        post_hook(self, args, kwargs)
    return out


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
        if defaults.get("fused") and defaults.get("differentiable"):
            raise RuntimeError("fused=True does not support differentiable=True (allowed: at most one True)")
        if defaults.get("fused") and defaults.get("foreach"):
            raise RuntimeError("fused=True and foreach=True cannot both be set (allowed: at most one True)")
        self.rule.validate(defaults)  # the arguments first, as torch.optim checks them before the params
        super().__init__(params, defaults)
        faults.keep_state_dtype_on_load(self)
        compiled.register(self)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group as torch does, then validate it; a bad group is not kept."""
        super().add_param_group(param_group)
        try:
            self.rule.validate(self.param_groups[-1])
            faults.validate(self.param_groups[-1])
            kernels.check_capturable(self.param_groups[-1])
            if self.rule.check_param is not None:
                for p in self.param_groups[-1]["params"]:
                    self.rule.check_param(p)
        except (ValueError, TypeError):
            self.param_groups.pop()
            raise

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        compiled.register(self)  # a copy (deepcopy, pickle) is an optimizer of its own
        faults.keep_state_dtype_on_load(self)  # torch pickles no hooks: the copy's own, as __init__'s
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

    @_hooked
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
            if torch.compiler.is_compiling():  # one custom op in the graph, no break (kernels.compiled)
                compiled.step(self)
            else:
                self._update()
        return loss

    def _update(self) -> None:
        """The update of ``step()``, after the closure."""
        checks = kernels.native.enabled()  # one C loop per group where it could be built
        # where the fused plan's lists still hold, its buckets read their gradients by address
        # (grads None): no gradient's Python object is made or read for them
        listed = kernels.listing(self, checks)
        work, grads = self._gradients(checks, listed)
        if not faults.grads_finite(self, work):  # nonfinite="skip" / "raise"
            return
        self._param_index: dict[int, int] | None = None  # made when an eager step rounds (see key())
        # one-element tensor hyperparameters of any shape act as 0-dim ones (torch's _to_scalar)
        hyperparams = [{k: v.reshape(()) if isinstance(v, Tensor) and v.dim() else v
                        for k, v in self.rule.hyperparams(group).items()} for group, _ in work]
        # the fused kernels take what they can, all groups at once (a differentiable step is never
        # fused); the rest runs the eager reference
        rests = kernels.step(self, work, hyperparams, grads)
        if rests is None:  # the plan's lists did not hold after all (a gradient changed): collect them
            work, grads = self._gradients(checks, None)
            rests = kernels.step(self, work, hyperparams, grads)
        for (group, _), hp, rest in zip(work, hyperparams, rests):
            if not rest:
                continue
            before = kernels.listed_twice_state(self, group, rest)
            for p in rest:
                kernels.hide_state_made_this_step(self, p, before)
                self._apply_rule(p, hp, group)

    def _gradients(self, checks: Any, listed: Any) -> tuple[list[tuple[dict[str, Any], Any]], list[Tensor] | None]:
        """Validate each group and list its parameters with gradients (refusing, before anything
        moves, what the rule does not take): ``(work, grads)``, every group's gradients one after
        another. ``listed``: :func:`kernels.listing`'s answer (the lists, the eager parameters
        among them, the only ones looked at here, and the dtypes), then ``grads`` is None."""
        work = []
        grads: list[Tensor] = []
        for index, group in enumerate(self.param_groups):
            self._validate(group)
            faults.validate(group, None if listed is None else listed[2][index])
            if listed is None:
                params, flags = checks.with_grads(group["params"], not self.rule.complex_ok, grads)
                seen = params
            else:  # the fused ones are float tensors on the CPU with dense gradients (gather_own checks)
                params = listed[0][index]
                seen, flags = checks.with_grads(listed[1][index], not self.rule.complex_ok, [])
            if group.get("fused"):  # checked at step, as torch (Adagrad's state is made in __init__)
                for p in seen:
                    if not (p.device.type in _FUSED_DEVICES and torch.is_floating_point(p)):
                        raise RuntimeError(f"`fused=True` requires all the params to be floating point Tensors of "
                                           f"supported devices: {list(_FUSED_DEVICES)} but {p.dtype} and "
                                           f"{p.device.type}")
            if self.rule.sparse_only or flags:  # a sparse gradient, or a complex param the rule refuses
                for p in seen:  # (a loop over thousands of tensors only when one may be refused)
                    self._check_grad(group, p)
            work.append((group, params))
        return work, grads if listed is None else None

    def _validate(self, group: dict[str, Any]) -> None:
        """``rule.validate(group)``, skipped while the group's settings are the plain values (numbers,
        strings, dtypes, tuples of those; same types) it last passed with: the check is a function of them."""
        settings = _settings(group)
        cache = self.__dict__.setdefault("_validated", {})
        entry = cache.get(id(group))
        if settings is not None and entry is not None and entry[0] is group and entry[1] == settings:
            return
        self.rule.validate(group)
        if settings is not None:
            if len(cache) > 4 * len(self.param_groups) + 16:  # groups removed since: forget them
                cache.clear()
            cache[id(group)] = (group, settings)

    def _check_grad(self, group: dict[str, Any], p: Tensor) -> None:
        """Before any parameter moves: refuse what the rule does not take, as torch.optim does."""
        name = type(self).__name__
        if p.is_complex() and not self.rule.complex_ok:
            raise RuntimeError(f"{name} does not support complex parameters")
        if p.grad.is_sparse:
            faults.check_sparse(self, group, p)
        elif self.rule.sparse_only:
            raise RuntimeError(f"{name} does not support dense gradients, please consider Adam instead")

    def param_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        """``self.state[param]``, created on first use (an empty entry too, as torch.optim does);
        a rule with no state leaves no entry. The fused path and the eager one both get it here."""
        state = self.state.get(param)
        if state:
            if not self.rule.counts_steps and "step" not in state and precision.rounds_stochastically(param, group):
                state["step"] = self._rounding_step(param, group)  # a torch.optim SGD state has none
            return state
        state = {} if state is None else state
        if self.rule.counts_steps:
            state["step"] = 0 if self.rule.int_step else torch.tensor(0.0, dtype=scalar_dtype())
        elif precision.rounds_stochastically(param, group):
            state["step"] = self._rounding_step(param, group)
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

    @staticmethod
    def _rounding_step(param: Tensor, group: dict[str, Any]) -> Tensor:
        """The ``step`` count of a rule that counts none (SGD) where it keys the stochastic rounding
        (:func:`.precision.stream_key`): kept, advanced and saved as a counting rule's is."""
        return torch.tensor(0.0, dtype=scalar_dtype(), device=param.device if group.get("capturable") else None)

    def _apply_rule(self, param: Tensor, hyperparams: dict[str, Any], group: dict[str, Any]) -> None:
        state = self.param_state(param, group)
        dtype = faults.compute_dtype(param, group)  # the param's dtype unless state_dtype asks for more
        storage = precision.kind(param, group)  # None, "bf16" or "int8": how the state is kept
        real = torch.view_as_real if param.is_complex() else (lambda t: t)
        inputs: dict[str, Any] = {}
        for name, value in state.items():
            if name == "step" or precision.is_scale(name, state):
                continue
            inputs[name] = value.item() if name in self.rule.scalar_state else real(precision.load(state, name, dtype))
        stochastic = precision.rounds_stochastically(param, group)
        if "step" in state:
            state["step"] += 1
        if self.rule.counts_steps:
            inputs["step"] = state["step"] if self.rule.int_step else state["step"].item()
        update, grad = self.rule.update, faults.upcast(param.grad, dtype)
        if grad.is_sparse:
            update = self.rule.sparse_update
        else:
            grad = real(grad)
        base = real(faults.upcast(param, dtype))
        out = update(base, grad, **inputs, **hyperparams)
        in_place = storage is None and not stochastic and dtype == param.dtype and not param.is_complex()
        for name, value in list(out.items()):
            target = param if name == "param" else state.get(name)
            if not (isinstance(value, Tensor) and value.is_sparse and isinstance(target, Tensor)
                    and not target.is_sparse):
                continue  # a sparse state kept as such (SGD's sparse momentum buffer) is a value
            if in_place:  # a sparse increment (Rule.sparse_update): O(rows) in place
                target.add_(value)
                del out[name]
            else:
                out[name] = (base if name == "param" else inputs[name]).add(value)

        def key(name: str) -> int:
            if self._param_index is None:  # stochastic rounding keys on the position (its state_dict id)
                self._param_index = {id(p): i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}
            index = self._param_index[id(param)]
            return precision.stream_key(group.get("rounding_seed", 0), int(state["step"]), index,
                                        precision.stream_id(name))

        if "param" in out:
            new_param = out.pop("param")
            if precision.rounds_param(param, group):
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


class ScheduleFreeOptimizer(Optimizer):
    """Schedule-Free (Defazio et al., 2024): the parameters hold ``y`` in training mode; call
    ``optimizer.eval()`` before evaluating or saving the model (parameters become the average
    ``x``) and ``optimizer.train()`` before training again, as the authors' code asks."""

    def __init__(self, params: Params, defaults: dict[str, Any]) -> None:
        Optimizer.__init__(self, params, {**defaults, "train_mode": True})

    @_hooked
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        if not all(group["train_mode"] for group in self.param_groups):
            raise RuntimeError(f"{type(self).__name__}.step() needs training mode: call optimizer.train() first "
                               f"(allowed: step after train(), evaluate after eval())")
        return Optimizer.step.__wrapped__(self, closure)  # (the hooks ran once, around this step)

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


class ClosureOptimizer(torch.optim.Optimizer):
    """Base of L-BFGS: one param group, ``step(closure)`` required, the closure-driven search of
    :mod:`optimlab.algorithms.lbfgs` on the flat vector of all parameters (eager: the search has
    no element-wise part to fuse). ``nonfinite`` / ``state_dtype`` / ``fused`` /
    ``differentiable`` are refused (allowed: their defaults) rather than ignored."""

    def __init__(self, params: Params, defaults: dict[str, Any]) -> None:
        if defaults.get("max_eval") is None:
            defaults["max_eval"] = defaults["max_iter"] * 5 // 4
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
    base: type = Optimizer
    if spec.base is not None:
        import importlib

        module, _, attr = spec.base.partition(":")
        base = getattr(importlib.import_module(module), attr)

    def __init__(self, params: Params, *args: Any, **kwargs: Any) -> None:
        bound = sig.bind(self, params, *args, **kwargs)
        bound.apply_defaults()
        defaults = {k: v for k, v in bound.arguments.items() if k not in ("self", "params")}
        if isinstance(defaults.get("betas"), list):
            defaults["betas"] = tuple(defaults["betas"])
        defaults.update(spec.fixed)
        base.__init__(self, params, defaults)
        if spec.eager_state:  # as torch.optim does for this class
            for group in self.param_groups:
                for p in group["params"]:
                    self.param_state(p, group)

    __init__.__signature__ = sig
    __init__.__doc__ = "Build the optimizer; arguments as in the class docstring."
    cls = type(spec.name, (base,), {
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
