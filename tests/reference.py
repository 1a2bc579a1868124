"""Independent float64 references, written straight from each algorithm's formula in NumPy.

Nothing here imports optimlab: these loops are what optimlab's rules are checked against.
Each ``ref_*`` runs ``steps`` updates from ``p0`` with ``grad_fn(p, t)`` giving the gradient at
step t (1-based) and returns the final parameters.
"""

from __future__ import annotations

import numpy as np


def grad_fn(p: np.ndarray, t: int) -> np.ndarray:
    """A deterministic gradient: an ill-conditioned quadratic plus a step-dependent wobble."""
    scale = np.linspace(0.2, 3.0, p.size).reshape(p.shape)
    idx = np.arange(p.size).reshape(p.shape)
    return scale * p - 0.5 + 0.3 * np.sin(0.7 * t + idx)


def _prepare(p, g, weight_decay, maximize):
    g = -g if maximize else g
    return g + weight_decay * p


def _decay(p, g, lr, weight_decay, maximize, decoupled):
    """Adam/Nadam's weight decay: decoupled (shrink p) or L2 (into the gradient)."""
    g = -g if maximize else g
    if decoupled:
        return p * (1 - lr * weight_decay), g
    return p, g + weight_decay * p


def ref_sgd(p0, steps, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
            maximize=False, momentum_form="torch", lrs=None):
    p = p0.astype(np.float64).copy()
    buf = None
    for t in range(1, steps + 1):
        lr_t = lrs[t - 1] if lrs is not None else lr
        g = _prepare(p, grad_fn(p, t), weight_decay, maximize)
        if momentum == 0:
            p = p - lr_t * g
            continue
        if momentum_form == "torch":
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            d = g + momentum * buf if nesterov else buf
            p = p - lr_t * d
        elif momentum_form == "ewma":
            buf = np.zeros_like(p) if buf is None else buf
            buf = momentum * buf + (1 - momentum) * g
            d = momentum * buf + (1 - momentum) * g if nesterov else buf
            p = p - lr_t * d
        elif momentum_form == "lr_in_velocity":
            buf = np.zeros_like(p) if buf is None else buf
            buf = momentum * buf + lr_t * g
            p = p - (momentum * buf + lr_t * g if nesterov else buf)
    return p


def ref_nag_lookahead(w0, steps, lr, momentum):
    """The seed's NAG: look_ahead = w - b*v; v = b*v + lr*grad(look_ahead); w = w - v.

    Returns the final look-ahead point ``w - b*v``, the variable optimlab's SGD tracks.
    """
    w = w0.astype(np.float64).copy()
    v = np.zeros_like(w)
    for t in range(1, steps + 1):
        look = w - momentum * v
        v = momentum * v + lr * grad_fn(look, t)
        w = w - v
    return w - momentum * v


def ref_adagrad(p0, steps, lr, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                eps=1e-10, maximize=False, eps_inside_sqrt=False):
    p = p0.astype(np.float64).copy()
    acc = np.full_like(p, initial_accumulator_value)
    for t in range(1, steps + 1):
        g = _prepare(p, grad_fn(p, t), weight_decay, maximize)
        acc = acc + g ** 2
        clr = lr / (1 + (t - 1) * lr_decay)
        denom = np.sqrt(acc + eps) if eps_inside_sqrt else np.sqrt(acc) + eps
        p = p - clr * g / denom
    return p


def ref_rmsprop(p0, steps, lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                centered=False, maximize=False, eps_inside_sqrt=False):
    p = p0.astype(np.float64).copy()
    v = np.zeros_like(p)
    gavg = np.zeros_like(p)
    buf = np.zeros_like(p)
    for t in range(1, steps + 1):
        g = _prepare(p, grad_fn(p, t), weight_decay, maximize)
        v = alpha * v + (1 - alpha) * g ** 2
        var = v
        if centered:
            gavg = alpha * gavg + (1 - alpha) * g
            var = v - gavg ** 2
        denom = np.sqrt(var + eps) if eps_inside_sqrt else np.sqrt(var) + eps
        if momentum > 0:
            buf = momentum * buf + g / denom
            p = p - lr * buf
        else:
            p = p - lr * g / denom
    return p


def ref_adam(p0, steps, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
             maximize=False, decoupled_weight_decay=False, bias_correction=True):
    b1, b2 = betas
    p = p0.astype(np.float64).copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    vmax = np.zeros_like(p)
    for t in range(1, steps + 1):
        p, g = _decay(p, grad_fn(p, t), lr, weight_decay, maximize, decoupled_weight_decay)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        vmax = np.maximum(vmax, v)
        v_used = vmax if amsgrad else v
        if bias_correction:
            m_hat = m / (1 - b1 ** t)
            v_hat = v_used / (1 - b2 ** t)
        else:
            m_hat, v_hat = m, v_used
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def ref_nadam(p0, steps, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
              decoupled_weight_decay=False, maximize=False, momentum_schedule=True):
    b1, b2 = betas

    def mu(t):
        return b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay)) if momentum_schedule else b1

    p = p0.astype(np.float64).copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    prod = 1.0
    for t in range(1, steps + 1):
        p, g = _decay(p, grad_fn(p, t), lr, weight_decay, maximize, decoupled_weight_decay)
        prod = prod * mu(t)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        v_hat = v / (1 - b2 ** t)
        m_bar = (1 - mu(t)) * g / (1 - prod) + mu(t + 1) * m / (1 - prod * mu(t + 1))
        p = p - lr * m_bar / (np.sqrt(v_hat) + eps)
    return p
