"""L-BFGS (Nocedal, 1980; Liu & Nocedal, 1989) with an optional strong-Wolfe line search
(Nocedal & Wright, "Numerical Optimization", 2006, Algorithms 3.5 and 3.6, cubic interpolation
as in Schmidt's minFunc), as torch.optim.LBFGS. One ``step(closure)`` runs up to ``max_iter``
iterations on the flat vector ``x`` of all parameters::

    d_1 = -g                                        first iteration ever
    s   = t * d,  y = g - g_prev                     otherwise: store the pair if y.s > 1e-10,
    H0  = (y.s) / (y.y)                              keeping the newest history_size pairs
    d   = -H g                                       two-loop recursion over the pairs (below)
    t   = min(1, 1 / |g|_1) * lr   on the first iteration ever,  lr  afterwards
    t   = strong_wolfe(x, t, d)                      line_search_fn="strong_wolfe"
    x   = x + t * d

Two-loop recursion: ``q = -g``; newest to oldest ``a_i = rho_i s_i.q; q -= a_i y_i``;
``r = H0 q``; oldest to newest ``b_i = rho_i y_i.r; r += (a_i - b_i) s_i``; ``d = r``
(``rho_i = 1 / y_i.s_i``). Iteration stops at ``max_iter`` iterations, ``max_eval`` closure
calls, ``max|g| <= tolerance_grad``, a step or loss change below ``tolerance_change``, or a
direction that does not descend. State keeps torch's names (``d``, ``t``, ``old_dirs``,
``old_stps``, ``ro``, ``H_diag``, ``prev_flat_grad``, ``prev_loss``, ``al``, ``func_evals``,
``n_iter``), so a ``state_dict`` moves between optimlab and torch.optim.

Nothing here is element-wise (dot products, a closure-driven search): the fused path takes no
part of it.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor

from .._checks import check_nonnegative, check_positive, check_real, one_of

Evaluate = Callable[[Tensor], tuple[float, Tensor]]  # x -> (loss, flat gradient at x)


def cubic_minimum(x1: Any, f1: Any, g1: Any, x2: Any, f2: Any, g2: Any,
                  bounds: tuple[Any, Any] | None = None) -> Any:
    """Minimiser of the cubic through (x1, f1, f'=g1) and (x2, f2, f'=g2), clamped to ``bounds``
    (default: the interval between x1 and x2); the midpoint when the cubic has no minimum."""
    low, high = bounds if bounds is not None else (min(x1, x2), max(x1, x2))
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    disc = d1 ** 2 - g1 * g2
    if disc < 0:
        return (low + high) / 2.0
    d2 = disc.sqrt()
    if x1 <= x2:
        at = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    else:
        at = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    return min(max(at, low), high)


def strong_wolfe(evaluate: Evaluate, x: Tensor, t: Any, d: Tensor, f: float, g: Tensor, gtd: Tensor,
                 c1: float = 1e-4, c2: float = 0.9, tolerance_change: float = 1e-9,
                 max_ls: int = 25) -> tuple[float, Tensor, Any, int]:
    """A step ``t`` along ``d`` from ``x`` meeting the strong Wolfe conditions
    ``f(x + t d) <= f + c1 t g.d`` and ``|g(x + t d).d| <= c2 |g.d|``: bracket, then zoom.
    Returns the loss and gradient there, ``t``, and the number of evaluations."""
    d_norm = d.abs().max()
    g = g.clone()

    def at(step: Any) -> tuple[float, Tensor, Tensor]:
        loss, grad = evaluate(x.add(d, alpha=step))
        return loss, grad, grad.dot(d)

    f_new, g_new, gtd_new = at(t)
    evals, iters = 1, 0
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    # bracketing phase: grow t until an interval holding a Wolfe point is known
    while iters < max_ls:
        if f_new > f + c1 * t * gtd or (iters > 1 and f_new >= f_prev):
            bracket = [[t_prev, f_prev, g_prev, gtd_prev], [t, f_new, g_new.clone(), gtd_new]]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, done = [[t, f_new, g_new, gtd_new]], True
            break
        if gtd_new >= 0:
            bracket = [[t_prev, f_prev, g_prev, gtd_prev], [t, f_new, g_new.clone(), gtd_new]]
            break
        t_next = cubic_minimum(t_prev, f_prev, gtd_prev, t, f_new, gtd_new,
                               bounds=(t + 0.01 * (t - t_prev), t * 10))
        t_prev, f_prev, g_prev, gtd_prev = t, f_new, g_new.clone(), gtd_new
        t = t_next
        f_new, g_new, gtd_new = at(t)
        evals += 1
        iters += 1
    if iters == max_ls:
        bracket = [[0, f, g, None], [t, f_new, g_new, None]]

    # zoom phase: shrink the bracket by cubic interpolation until a Wolfe point is found
    low, high = (0, 1) if bracket[0][1] <= bracket[-1][1] else (1, 0)
    stuck = False
    while not done and iters < max_ls:
        ts = (bracket[0][0], bracket[1][0])
        if abs(ts[1] - ts[0]) * d_norm < tolerance_change:
            break
        t = cubic_minimum(bracket[0][0], bracket[0][1], bracket[0][3], bracket[1][0], bracket[1][1], bracket[1][3])
        # keep t away from the ends: at least a tenth of the interval inside, unless progress allows
        margin = 0.1 * (max(ts) - min(ts))
        if min(max(ts) - t, t - min(ts)) < margin:
            if stuck or t >= max(ts) or t <= min(ts):
                t = max(ts) - margin if abs(t - max(ts)) < abs(t - min(ts)) else min(ts) + margin
                stuck = False
            else:
                stuck = True
        else:
            stuck = False
        f_new, g_new, gtd_new = at(t)
        evals += 1
        iters += 1
        if f_new > f + c1 * t * gtd or f_new >= bracket[low][1]:
            bracket[high] = [t, f_new, g_new.clone(), gtd_new]
            low, high = (0, 1) if bracket[0][1] <= bracket[1][1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high][0] - bracket[low][0]) >= 0:
                bracket[high] = list(bracket[low])
            bracket[low] = [t, f_new, g_new.clone(), gtd_new]
    t, f_new, g_new, _ = bracket[low]
    return f_new, g_new, t, evals


def two_loop_direction(grad: Tensor, old_dirs: list[Tensor], old_stps: list[Tensor], ro: list[Any],
                       h_diag: Any, al: list[Any]) -> Tensor:
    """``-H g`` for the L-BFGS inverse-Hessian approximation ``H`` of the stored pairs;
    ``al`` receives the first loop's coefficients (torch keeps them in the state)."""
    q = grad.neg()
    for i in range(len(old_dirs) - 1, -1, -1):
        al[i] = old_stps[i].dot(q) * ro[i]
        q = q.add(old_dirs[i], alpha=-al[i])
    r = q * h_diag
    for i in range(len(old_dirs)):
        beta_i = old_dirs[i].dot(r) * ro[i]
        r = r.add(old_stps[i], alpha=al[i] - beta_i)
    return r


def lbfgs(x: Tensor, loss: float, grad: Tensor, evaluate: Evaluate, state: dict[str, Any], *, lr: Any = 1,
          max_iter: int = 20, max_eval: int = 25, tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9,
          history_size: int = 100, line_search_fn: str | None = None) -> dict[str, Any]:
    """One L-BFGS ``step``: ``x`` is where ``loss`` and ``grad`` were just evaluated (that
    evaluation is counted here). Returns the new state with the final point under ``"param"``."""
    state = dict(state)
    state["func_evals"] = state.get("func_evals", 0) + 1
    state["n_iter"] = state.get("n_iter", 0)
    if grad.abs().max() <= tolerance_grad:
        return state | {"param": x}
    d, t = state.get("d"), state.get("t")
    old_dirs, old_stps, ro = state.get("old_dirs"), state.get("old_stps"), state.get("ro")
    h_diag, prev_grad, prev_loss = state.get("H_diag"), state.get("prev_flat_grad"), state.get("prev_loss")
    evals = 1
    n_iter = 0
    while n_iter < max_iter:
        n_iter += 1
        state["n_iter"] += 1
        if state["n_iter"] == 1:
            d, old_dirs, old_stps, ro, h_diag = grad.neg(), [], [], [], 1
        else:
            y, s = grad.sub(prev_grad), d.mul(t)
            ys = y.dot(s)
            if ys > 1e-10:  # keep only pairs with positive curvature
                if len(old_dirs) == history_size:
                    old_dirs, old_stps, ro = old_dirs[1:], old_stps[1:], ro[1:]
                old_dirs, old_stps, ro = old_dirs + [y], old_stps + [s], ro + [1.0 / ys]
                h_diag = ys / y.dot(y)
            al = list(state["al"]) if "al" in state else [None] * history_size
            d = two_loop_direction(grad, old_dirs, old_stps, ro, h_diag, al)
            state["al"] = al
        prev_grad = grad.clone()
        prev_loss = loss
        t = min(1.0, 1.0 / grad.abs().sum()) * lr if state["n_iter"] == 1 else lr
        gtd = grad.dot(d)
        if gtd > -tolerance_change:  # not a descent direction
            break
        used = 0
        if line_search_fn == "strong_wolfe":
            loss, grad, t, used = strong_wolfe(evaluate, x, t, d, loss, grad, gtd, max_ls=max_eval - evals)
            x = x.add(d, alpha=t)
            converged = grad.abs().max() <= tolerance_grad
        elif line_search_fn is None:
            x = x.add(d, alpha=t)
            converged = False
            if n_iter != max_iter:
                loss, grad = evaluate(x)
                converged = grad.abs().max() <= tolerance_grad
                used = 1
        else:
            raise RuntimeError(f"line_search_fn must be None or 'strong_wolfe', got {line_search_fn!r}")
        evals += used
        state["func_evals"] += used
        if (n_iter == max_iter or evals >= max_eval or converged or d.mul(t).abs().max() <= tolerance_change
                or abs(loss - prev_loss) < tolerance_change):
            break
    state.update(d=d, t=t, old_dirs=old_dirs, old_stps=old_stps, ro=ro, H_diag=h_diag, prev_flat_grad=prev_grad,
                 prev_loss=prev_loss)
    return state | {"param": x}


def validate(group: dict[str, Any]) -> None:
    check_nonnegative("lr", group["lr"])
    for name in ("max_iter", "max_eval", "history_size"):
        value = group[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r}")
        check_positive(name, value)
    # thresholds, any real as in torch: inf stops at once, a negative or -inf one never stops the run
    check_real("tolerance_grad", group["tolerance_grad"])
    check_real("tolerance_change", group["tolerance_change"])
    one_of("strong_wolfe", None)("line_search_fn", group["line_search_fn"])
    for name, allowed in (("nonfinite", "ignore"), ("state_dtype", None), ("fused", None), ("foreach", None),
                          ("differentiable", False)):
        if group.get(name, allowed) not in (allowed, False):
            raise ValueError(f"{name}={group[name]!r} is not supported by LBFGS (allowed: {allowed!r})")
