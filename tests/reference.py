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


def ref_adadelta(p0, steps, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False):
    """Zeiler (2012), Algorithm 1, with torch's lr scale and L2 decay."""
    p = p0.astype(np.float64).copy()
    eg2 = np.zeros_like(p)
    edx2 = np.zeros_like(p)
    for t in range(1, steps + 1):
        g = _prepare(p, grad_fn(p, t), weight_decay, maximize)
        eg2 = rho * eg2 + (1 - rho) * g ** 2
        dx = -np.sqrt(edx2 + eps) / np.sqrt(eg2 + eps) * g
        edx2 = rho * edx2 + (1 - rho) * dx ** 2
        p = p + lr * dx
    return p


def ref_adamax(p0, steps, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False):
    """Kingma & Ba (2015), Algorithm 2 (eps inside the max, as torch)."""
    b1, b2 = betas
    p = p0.astype(np.float64).copy()
    m = np.zeros_like(p)
    u = np.zeros_like(p)
    for t in range(1, steps + 1):
        g = _prepare(p, grad_fn(p, t), weight_decay, maximize)
        m = b1 * m + (1 - b1) * g
        u = np.maximum(b2 * u, np.abs(g) + eps)
        p = p - (lr / (1 - b1 ** t)) * m / u
    return p


def ref_radam(p0, steps, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
              decoupled_weight_decay=False, maximize=False):
    """Liu et al. (2020), Algorithm 2."""
    b1, b2 = betas
    rho_inf = 2 / (1 - b2) - 1
    p = p0.astype(np.float64).copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t in range(1, steps + 1):
        p, g = _decay(p, grad_fn(p, t), lr, weight_decay, maximize, decoupled_weight_decay)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        m_hat = m / (1 - b1 ** t)
        rho_t = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
        if rho_t > 5:
            l_t = np.sqrt(1 - b2 ** t) / (np.sqrt(v) + eps)
            r_t = np.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            p = p - lr * m_hat * r_t * l_t
        else:
            p = p - lr * m_hat
    return p


def ref_asgd(p0, steps, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0.0, maximize=False):
    """Returns (parameters, averaged parameters): SGD with decaying step, Polyak averaging after t0."""
    p = p0.astype(np.float64).copy()
    ax = np.zeros_like(p)
    eta, mu = lr, 1.0
    for t in range(1, steps + 1):
        g = _prepare(p, grad_fn(p, t), weight_decay, maximize)
        p = p * (1 - lambd * eta) - eta * g
        ax = p.copy() if mu == 1 else ax + mu * (p - ax)
        eta = lr / (1 + lambd * lr * t) ** alpha
        mu = 1 / max(1, t - t0)
    return p, ax


def ref_rprop(p0, steps, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), maximize=False):
    """Riedmiller & Braun (1993), Rprop without weight backtracking (iRprop-)."""
    eta_minus, eta_plus = etas
    p = p0.astype(np.float64).copy()
    prev = np.zeros_like(p)
    size = np.full_like(p, lr)
    for t in range(1, steps + 1):
        g = grad_fn(p, t)
        g = -g if maximize else g
        prod = g * prev
        size = np.where(prod > 0, np.minimum(size * eta_plus, step_sizes[1]),
                        np.where(prod < 0, np.maximum(size * eta_minus, step_sizes[0]), size))
        g = np.where(prod < 0, 0.0, g)
        p = p - np.sign(g) * size
        prev = g
    return p


def ref_sparse_adam(p0, steps, rows_fn, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, maximize=False):
    """Adam applied only at the rows ``rows_fn(t)`` of a 2-D parameter (lazy Adam)."""
    b1, b2 = betas
    p = p0.astype(np.float64).copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t in range(1, steps + 1):
        rows = rows_fn(t)
        g = grad_fn(p, t)[rows]
        g = -g if maximize else g
        m[rows] = b1 * m[rows] + (1 - b1) * g
        v[rows] = b2 * v[rows] + (1 - b2) * g ** 2
        step = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        p[rows] = p[rows] - step * m[rows] / (np.sqrt(v[rows]) + eps)
    return p


def ref_adafactor(p0, steps, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0,
                  maximize=False):
    """Shazeer & Stern (2018), Algorithms 4/5 with relative step, update clipping, and torch's
    decoupled decay; the factored second moment for a 2-D parameter."""
    eps1 = np.finfo(np.float64).eps if eps[0] is None else eps[0]
    p = p0.astype(np.float64).copy()
    r = np.zeros((p.shape[0], 1)) if p.ndim == 2 else None
    c = np.zeros((1, p.shape[1])) if p.ndim == 2 else None
    v = np.zeros_like(p)
    for t in range(1, steps + 1):
        g = grad_fn(p, t)
        g = -g if maximize else g
        b2 = 1 - t ** beta2_decay
        rho = min(lr, 1 / np.sqrt(t))
        a = max(eps[1], np.sqrt(np.mean(p ** 2))) * rho
        p = p * (1 - lr * weight_decay)
        if p.ndim == 2:
            r = b2 * r + (1 - b2) * np.mean(g ** 2, axis=1, keepdims=True)
            c = b2 * c + (1 - b2) * np.mean(g ** 2, axis=0, keepdims=True)
            v_hat = r @ c / max(np.mean(r), eps1)
        else:
            v = b2 * v + (1 - b2) * g ** 2
            v_hat = v
        u = g / np.sqrt(np.maximum(v_hat, eps1 ** 2))
        p = p - a / max(1.0, np.sqrt(np.mean(u ** 2)) / d) * u
    return p


def _orthogonalise(m, coefficients, steps, eps):
    """The quintic Newton-Schulz iteration of Muon, in float64."""
    a, b, c = coefficients
    x = m.T if m.shape[0] > m.shape[1] else m
    x = x / max(np.linalg.norm(x), eps)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if m.shape[0] > m.shape[1] else x


def ref_muon(p0, steps, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
             ns_coefficients=(3.4445, -4.7750, 2.0315), eps=1e-7, ns_steps=5, adjust_lr_fn=None):
    p = p0.astype(np.float64).copy()
    buf = np.zeros_like(p)
    rows, cols = p.shape
    scale = 0.2 * np.sqrt(max(rows, cols)) if adjust_lr_fn == "match_rms_adamw" else np.sqrt(max(1, rows / cols))
    for t in range(1, steps + 1):
        g = grad_fn(p, t)
        buf = momentum * buf + (1 - momentum) * g
        direction = (1 - momentum) * g + momentum * buf if nesterov else buf
        o = _orthogonalise(direction, ns_coefficients, ns_steps, eps)
        p = p * (1 - lr * weight_decay) - lr * scale * o
    return p


def ref_lion(p0, steps, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, maximize=False):
    """Chen et al. (2023), Algorithm 2."""
    b1, b2 = betas
    p = p0.astype(np.float64).copy()
    m = np.zeros_like(p)
    for t in range(1, steps + 1):
        g = grad_fn(p, t)
        g = -g if maximize else g
        c = b1 * m + (1 - b1) * g
        p = p - lr * (np.sign(c) + weight_decay * p)
        m = b2 * m + (1 - b2) * g
    return p


def ref_ademamix(p0, steps, lr=1e-3, betas=(0.9, 0.999, 0.9999), alpha=2.0, beta3_warmup=None,
                 alpha_warmup=None, eps=1e-8, weight_decay=0.0, maximize=False):
    """Pagliardini et al. (2024), Algorithm 1 with the alpha and beta3 schedulers of its eq. (2)-(3)."""
    b1, b2, b3 = betas
    p = p0.astype(np.float64).copy()
    m1 = np.zeros_like(p)
    m2 = np.zeros_like(p)
    nu = np.zeros_like(p)
    for t in range(1, steps + 1):
        g = grad_fn(p, t)
        g = -g if maximize else g
        a_t = alpha if alpha_warmup is None else min(t * alpha / alpha_warmup, alpha)
        if beta3_warmup is None:
            b3_t = b3
        else:
            s = t / beta3_warmup
            b3_t = min(np.exp(np.log(b1) * np.log(b3) / ((1 - s) * np.log(b3) + s * np.log(b1))), b3)
        m1 = b1 * m1 + (1 - b1) * g
        m2 = b3_t * m2 + (1 - b3_t) * g
        nu = b2 * nu + (1 - b2) * g ** 2
        m1_hat = m1 / (1 - b1 ** t)
        nu_hat = nu / (1 - b2 ** t)
        p = p - lr * ((m1_hat + a_t * m2) / (np.sqrt(nu_hat) + eps) + weight_decay * p)
    return p


def ref_schedule_free(p0, steps, lr, beta, adam=False, beta2=0.999, eps=1e-8, weight_decay=0.0,
                      warmup_steps=0, r=0.0, weight_lr_power=2.0, maximize=False):
    """Defazio et al. (2024), Algorithm 1, with the three sequences x, y, z kept explicitly.
    Returns (y, x): the training point (what the parameters hold) and the averaged point."""
    x = p0.astype(np.float64).copy()
    z = x.copy()
    v = np.zeros_like(x)
    weight_sum = 0.0
    for t in range(1, steps + 1):
        y = (1 - beta) * z + beta * x
        g = grad_fn(y, t)
        g = -g if maximize else g
        lr_t = lr * min(1.0, t / warmup_steps) if warmup_steps > 0 else lr
        if adam:
            v = beta2 * v + (1 - beta2) * g ** 2
            lr_t = lr_t * np.sqrt(1 - beta2 ** t)
            u = g / (np.sqrt(v) + eps) + weight_decay * y
        else:
            u = g + weight_decay * y
        z = z - lr_t * u
        weight = t ** r * lr_t ** weight_lr_power
        weight_sum += weight
        c = weight / weight_sum
        x = (1 - c) * x + c * z
    return (1 - beta) * z + beta * x, x


def ref_lbfgs(p0, loss_grad, iterations, lr=1.0, history_size=100):
    """L-BFGS without line search (Nocedal & Wright, Algorithm 7.4/7.5), one iteration per loop:
    the first step scaled by min(1, 1/|g|_1), then steps of lr along -H g."""
    x = p0.astype(np.float64).ravel().copy()
    _, g = loss_grad(x)
    pairs = []
    d = t = None
    g_prev = None
    gamma = 1.0
    for k in range(iterations):
        if k == 0:
            d = -g
        else:
            y, s = g - g_prev, t * d
            if y @ s > 1e-10:
                pairs = (pairs + [(s, y)])[-history_size:]
                gamma = (y @ s) / (y @ y)
            q = -g
            alphas = []
            for s_i, y_i in reversed(pairs):
                a = (s_i @ q) / (y_i @ s_i)
                alphas.append(a)
                q = q - a * y_i
            r_vec = gamma * q
            for (s_i, y_i), a in zip(pairs, reversed(alphas)):
                b = (y_i @ r_vec) / (y_i @ s_i)
                r_vec = r_vec + (a - b) * s_i
            d = r_vec
        g_prev = g
        t = min(1.0, 1.0 / np.abs(g).sum()) * lr if k == 0 else lr
        x = x + t * d
        _, g = loss_grad(x)
    return x.reshape(p0.shape)
