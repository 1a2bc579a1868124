"""The update rules as the web lab shows them: MathML, one block per line of the rule.

Each catalogue :class:`~optimlab.catalogue.Algorithm` names its display function here
(``display="optimlab.display:adam"``); :func:`optimlab.catalogue.rule_display` calls it with an
entry's hyperparameters by the rule's names (``lr``, ``momentum``, ``beta1``, ``eps``, the seed-form
options ``momentum_form``, ``eps_inside_sqrt``, ``bias_correction``, ...), so the form shown is the
form the entry runs: the seed's EWMA momentum, the learning rate inside NAG's velocity, Adam without
bias correction, AdaGrad with eps inside the square root.

Every number is a ``<mn data-knob="NAME">`` element: the page writes the card's current value of
``NAME`` into it as a knob moves. Each line is a ``<math data-line="KIND">`` (``grad``, ``decay``,
``lr``, ``velocity``, ``accumulator``, ``centre``, ``correction``, ``momentum``, ``update``).

``roles`` maps the rule's per-coordinate state names to what the step-through view shows:
``"velocity"`` (the velocity / first moment) and ``"accumulator"`` (the squared-gradient
accumulator).

MathML Core is rendered natively by Chromium (>= 109), Firefox and Safari: nothing is fetched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

MINUS = "\u2212"


@dataclass(frozen=True)
class RuleDisplay:
    lines: tuple[str, ...]
    roles: Mapping[str, str]

    def as_dict(self) -> dict[str, Any]:
        return {"mathml": list(self.lines), "roles": dict(self.roles)}


# --- a tiny MathML writer ------------------------------------------------------------------------

def mi(name: str) -> str:
    return f"<mi>{name}</mi>"


def mo(op: str) -> str:
    return f"<mo>{op}</mo>"


def num(value: Any) -> str:
    return f"{float(value):g}".replace("-", MINUS)


def mn(value: Any, knob: str | None = None) -> str:
    attr = f' data-knob="{knob}"' if knob else ""
    return f"<mn{attr}>{num(value)}</mn>"


def row(*parts: str) -> str:
    return "<mrow>" + "".join(parts) + "</mrow>"


def sub(base: str, index: str) -> str:
    return f"<msub>{base}{index}</msub>"


def sup(base: str, power: str) -> str:
    return f"<msup>{base}{power}</msup>"


def frac(a: str, b: str) -> str:
    return f"<mfrac>{row(a)}{row(b)}</mfrac>"


def sqrt(a: str) -> str:
    return f"<msqrt>{a}</msqrt>"


def hat(a: str) -> str:
    return f'<mover accent="true">{a}<mo>^</mo></mover>'


def paren(*parts: str) -> str:
    return row(mo("("), *parts, mo(")"))


def line(kind: str, *parts: str) -> str:
    return f'<math display="block" data-line="{kind}">{row(*parts)}</math>'


T = mi("t")
T1 = row(mi("t"), mo(MINUS), mn(1))


def at(name: str, index: str = "t") -> str:
    """``name_t`` or ``name_{t-1}``."""
    return sub(mi(name), T if index == "t" else T1)


def knob(values: Mapping[str, Any], name: str) -> str:
    return mn(values[name], name)


def one_minus(values: Mapping[str, Any], name: str) -> str:
    return paren(mn(1), mo(MINUS), knob(values, name))


def gradient(values: Mapping[str, Any], point: str | None = None) -> str:
    """``g_t = grad f(w_{t-1})`` (+ ``wd * w_{t-1}``: L2 weight decay in the gradient)."""
    where = point or at("w", "t-1")
    parts = [at("g"), mo("="), mo("\u2207"), mi("f"), paren(where)]
    wd = float(values.get("weight_decay", 0) or 0)
    if wd and not values.get("decoupled_weight_decay", False):
        parts += [mo("+"), knob(values, "weight_decay"), at("w", "t-1")]
    return line("grad", *parts)


def decoupled(values: Mapping[str, Any]) -> list[str]:
    """AdamW's ``w <- w (1 - lr wd)`` before the step."""
    if not (values.get("decoupled_weight_decay") and float(values.get("weight_decay", 0) or 0)):
        return []
    return [line("decay", at("w", "t-1"), mo("\u2190"), at("w", "t-1"),
                 paren(mn(1), mo(MINUS), knob(values, "lr"), mo("\u00b7"), knob(values, "weight_decay")))]


def update(*step: str) -> str:
    return line("update", at("w"), mo("="), at("w", "t-1"), mo(MINUS), *step)


def sq(x: str) -> str:
    return sup(x, mn(2))


# --- the rules -----------------------------------------------------------------------------------

def sgd(values: Mapping[str, Any], lookahead: bool = False) -> RuleDisplay:
    """GD, Momentum (torch / EWMA / lr-in-velocity forms), Nesterov, and the seed's look-ahead NAG."""
    mu = float(values.get("momentum", 0) or 0)
    lr = knob(values, "lr")
    if not mu:
        return RuleDisplay((gradient(values), update(lr, at("g"))), {})
    m = knob(values, "momentum")
    form = values.get("momentum_form", "torch")
    ahead = row(at("w", "t-1"), mo(MINUS), m, at("v", "t-1")) if lookahead else None
    lines = [gradient(values, ahead)]
    nesterov = bool(values.get("nesterov")) and not lookahead
    if form == "torch":
        damp = float(values.get("dampening", 0) or 0)
        g_term = [paren(mn(1), mo(MINUS), knob(values, "dampening")), at("g")] if damp else [at("g")]
        lines.append(line("velocity", at("v"), mo("="), m, at("v", "t-1"), mo("+"), *g_term,
                          mo(","), mi("\u2003"), sub(mi("v"), mn(1)), mo("="), sub(mi("g"), mn(1))))
        step = [lr, paren(at("g"), mo("+"), m, at("v"))] if nesterov else [lr, at("v")]
    elif form == "ewma":
        lines.append(line("velocity", at("v"), mo("="), m, at("v", "t-1"), mo("+"), one_minus(values, "momentum"),
                          at("g")))
        step = ([lr, paren(m, at("v"), mo("+"), one_minus(values, "momentum"), at("g"))] if nesterov
                else [lr, at("v")])
    else:  # lr_in_velocity: the seed's classical momentum and NAG
        lines.append(line("velocity", at("v"), mo("="), m, at("v", "t-1"), mo("+"), lr, at("g")))
        step = [paren(m, at("v"), mo("+"), lr, at("g"))] if nesterov else [at("v")]
    lines.append(update(*step))
    return RuleDisplay(tuple(lines), {"momentum_buffer": "velocity"})


def nag(values: Mapping[str, Any]) -> RuleDisplay:
    return sgd(values, lookahead=True)


def adagrad(values: Mapping[str, Any]) -> RuleDisplay:
    lines = [gradient(values)]
    lr = knob(values, "lr")
    if float(values.get("lr_decay", 0) or 0):
        lines.append(line("lr", sub(mi("\u03b7"), T), mo("="),
                          frac(lr, row(mn(1), mo("+"), paren(T1), knob(values, "lr_decay")))))
        lr = sub(mi("\u03b7"), T)
    init = float(values.get("initial_accumulator_value", 0) or 0)
    start = [mo(","), mi("\u2003"), sub(mi("V"), mn(0)), mo("="), mn(init, "initial_accumulator_value")] if init else []
    lines.append(line("accumulator", at("V"), mo("="), at("V", "t-1"), mo("+"), sq(at("g")), *start))
    eps = knob(values, "eps")
    denom = sqrt(row(at("V"), mo("+"), eps)) if values.get("eps_inside_sqrt") else row(sqrt(at("V")), mo("+"), eps)
    lines.append(update(lr, frac(at("g"), denom)))
    return RuleDisplay(tuple(lines), {"sum": "accumulator"})


def rmsprop(values: Mapping[str, Any]) -> RuleDisplay:
    lines = [gradient(values)]
    a = knob(values, "alpha")
    lines.append(line("accumulator", at("V"), mo("="), a, at("V", "t-1"), mo("+"), one_minus(values, "alpha"),
                      sq(at("g"))))
    var = at("V")
    roles = {"square_avg": "accumulator"}
    if values.get("centered"):
        lines.append(line("centre", at("G"), mo("="), a, at("G", "t-1"), mo("+"), one_minus(values, "alpha"), at("g")))
        var = row(at("V"), mo(MINUS), sq(at("G")))
        roles["grad_avg"] = "velocity"
    eps = knob(values, "eps")
    denom = sqrt(row(var, mo("+"), eps)) if values.get("eps_inside_sqrt") else row(sqrt(var), mo("+"), eps)
    lr = knob(values, "lr")
    if float(values.get("momentum", 0) or 0):
        lines.append(line("momentum", at("B"), mo("="), knob(values, "momentum"), at("B", "t-1"), mo("+"),
                          frac(at("g"), denom)))
        lines.append(update(lr, at("B")))
        roles["momentum_buffer"] = "velocity"
    else:
        lines.append(update(lr, frac(at("g"), denom)))
    return RuleDisplay(tuple(lines), roles)


def _moments(values: Mapping[str, Any]) -> list[str]:
    return [line("velocity", at("m"), mo("="), knob(values, "beta1"), at("m", "t-1"), mo("+"),
                 one_minus(values, "beta1"), at("g")),
            line("accumulator", at("v"), mo("="), knob(values, "beta2"), at("v", "t-1"), mo("+"),
                 one_minus(values, "beta2"), sq(at("g")))]


def adam(values: Mapping[str, Any]) -> RuleDisplay:
    lines = [*decoupled(values), gradient(values), *_moments(values)]
    roles = {"exp_avg": "velocity", "exp_avg_sq": "accumulator"}
    v = at("v")
    if values.get("amsgrad"):
        lines.append(line("accumulator", sub(mi("v\u0302max"), T), mo("="), mi("max"),
                          paren(sub(mi("v\u0302max"), T1), mo(","), at("v"))))
        v = sub(mi("v\u0302max"), T)
        roles["max_exp_avg_sq"] = "accumulator max"
    eps = knob(values, "eps")
    if values.get("bias_correction", True):
        m_hat, v_hat = hat(at("m")), hat(v if not values.get("amsgrad") else v)
        lines.append(line("correction", m_hat, mo("="), frac(at("m"), row(mn(1), mo(MINUS), sup(knob(values, "beta1"), T))),
                          mo(","), mi("\u2003"), hat(at("v")), mo("="),
                          frac(v, row(mn(1), mo(MINUS), sup(knob(values, "beta2"), T)))))
        lines.append(update(knob(values, "lr"), frac(m_hat, row(sqrt(hat(at("v"))), mo("+"), eps))))
    else:
        lines.append(update(knob(values, "lr"), frac(at("m"), row(sqrt(v), mo("+"), eps))))
    return RuleDisplay(tuple(lines), roles)


def nadam(values: Mapping[str, Any]) -> RuleDisplay:
    b1 = knob(values, "beta1")
    if values.get("momentum_schedule", True):
        mu = line("momentum", sub(mi("\u03bc"), T), mo("="), b1,
                  paren(mn(1), mo(MINUS), mn(0.5), mo("\u00b7"),
                        sup(mn(0.96), row(T, mo("\u00b7"), knob(values, "momentum_decay")))))
    else:
        mu = line("momentum", sub(mi("\u03bc"), T), mo("="), b1)
    prod = line("momentum", sub(mi("\u03a0"), T), mo("="), sub(mi("\u03a0"), T1), sub(mi("\u03bc"), T), mo(","),
                mi("\u2003"), mi("d"), mo("="),
                sqrt(frac(at("v"), row(mn(1), mo(MINUS), sup(knob(values, "beta2"), T)))), mo("+"), knob(values, "eps"))
    lr = knob(values, "lr")
    mu_t, mu_n = sub(mi("\u03bc"), T), sub(mi("\u03bc"), row(T, mo("+"), mn(1)))
    upd = update(lr, frac(row(mn(1), mo(MINUS), mu_t), row(mn(1), mo(MINUS), sub(mi("\u03a0"), T))),
                 frac(at("g"), mi("d")), mo(MINUS), lr,
                 frac(mu_n, row(mn(1), mo(MINUS), sub(mi("\u03a0"), T), mu_n)), frac(at("m"), mi("d")))
    lines = [*decoupled(values), gradient(values), mu, *_moments(values), prod, upd]
    return RuleDisplay(tuple(lines), {"exp_avg": "velocity", "exp_avg_sq": "accumulator"})


def adadelta(values: Mapping[str, Any]) -> RuleDisplay:
    """Adadelta (Zeiler, 2012): the step in the parameter's units, sqrt(U + eps) / sqrt(V + eps) g."""
    rho, eps = knob(values, "rho"), knob(values, "eps")
    dx = at("\u0394x")
    lines = [gradient(values),
             line("accumulator", at("V"), mo("="), rho, at("V", "t-1"), mo("+"), one_minus(values, "rho"), sq(at("g"))),
             line("velocity", dx, mo("="), frac(sqrt(row(at("U", "t-1"), mo("+"), eps)),
                                                  sqrt(row(at("V"), mo("+"), eps))), at("g")),
             line("accumulator", at("U"), mo("="), rho, at("U", "t-1"), mo("+"), one_minus(values, "rho"), sq(dx)),
             update(knob(values, "lr"), mo("\u00b7"), dx)]
    return RuleDisplay(tuple(lines), {"square_avg": "accumulator"})  # acc_delta holds squared steps


def adamax(values: Mapping[str, Any]) -> RuleDisplay:
    """Adamax (Kingma & Ba, 2015, section 7.1): the infinity norm in place of Adam's second moment."""
    lines = [gradient(values), _moments(values)[0],
             line("accumulator", at("u"), mo("="), mi("max"),
                  paren(knob(values, "beta2"), at("u", "t-1"), mo(","), row(mo("|"), at("g"), mo("|")), mo("+"),
                        knob(values, "eps"))),
             update(frac(knob(values, "lr"), row(mn(1), mo(MINUS), sup(knob(values, "beta1"), T))),
                    frac(at("m"), at("u")))]
    return RuleDisplay(tuple(lines), {"exp_avg": "velocity"})  # exp_inf is a max of |g|, not of g²


def rprop(values: Mapping[str, Any]) -> RuleDisplay:
    """Rprop (Riedmiller & Braun, 1993), without weight backtracking: only the gradient's sign."""
    s, size = at("s"), at("\u0394")
    lines = [gradient(values),
             line("lr", s, mo("="), mi("sign"), paren(at("g"), sub(mi("g"), T1))),
             line("velocity", size, mo("="), mi("clip"),
                  paren(at("\u0394", "t-1"), mo("\u00b7"), row(mo("{"), knob(values, "eta_plus"), mi("\u2009if\u2009"),
                        s, mo("&gt;"), mn(0), mo(";"), knob(values, "eta_minus"), mi("\u2009if\u2009"), s,
                        mo("&lt;"), mn(0),
                        mo(";"), mn(1), mo("}")), mo(","), knob(values, "step_size_min"), mo(","),
                        knob(values, "step_size_max")), mo(","), mi("\u2003"), sub(mi("\u0394"), mn(0)), mo("="),
                  knob(values, "lr")),
             update(mi("sign"), paren(at("g")), size, mo(","), mi("\u2003"), at("g"), mo("\u2190"), mn(0),
                    mi("\u2009if\u2009"), s, mo("&lt;"), mn(0))]
    return RuleDisplay(tuple(lines), {})  # per-weight step sizes, not moments of g


def lion(values: Mapping[str, Any]) -> RuleDisplay:
    """Lion (Chen et al., 2023): the sign of an interpolation; every coordinate moves by lr."""
    b1, b2, lr = knob(values, "beta1"), knob(values, "beta2"), knob(values, "lr")
    lines = [gradient({**values, "weight_decay": 0}),
             line("velocity", at("c"), mo("="), b1, at("m", "t-1"), mo("+"), one_minus(values, "beta1"), at("g"))]
    if float(values.get("weight_decay", 0) or 0):
        lines.append(line("decay", at("w", "t-1"), mo("\u2190"), at("w", "t-1"),
                          paren(mn(1), mo(MINUS), lr, mo("\u00b7"), knob(values, "weight_decay"))))
    lines += [update(lr, mi("sign"), paren(at("c"))),
              line("velocity", at("m"), mo("="), b2, at("m", "t-1"), mo("+"), one_minus(values, "beta2"), at("g"))]
    return RuleDisplay(tuple(lines), {"exp_avg": "velocity"})


def radam(values: Mapping[str, Any]) -> RuleDisplay:
    """RAdam (Liu et al., 2020): Adam's step switched on and rectified by r_t once rho_t > 5."""
    b1, b2, lr = knob(values, "beta1"), knob(values, "beta2"), knob(values, "lr")
    rho, rho_inf = at("\u03c1"), sub(mi("\u03c1"), mi("\u221e"))
    lines = [*decoupled(values), gradient(values), *_moments(values),
             line("correction", rho_inf, mo("="), frac(mn(2), row(mn(1), mo(MINUS), b2)), mo(MINUS), mn(1), mo(","),
                  mi("\u2003"), rho, mo("="), rho_inf, mo(MINUS),
                  frac(row(mn(2), T, mo("\u00b7"), sup(b2, T)), row(mn(1), mo(MINUS), sup(b2, T)))),
             line("correction", at("r"), mo("="),
                  sqrt(frac(row(paren(rho, mo(MINUS), mn(4)), paren(rho, mo(MINUS), mn(2)), rho_inf),
                            row(paren(rho_inf, mo(MINUS), mn(4)), paren(rho_inf, mo(MINUS), mn(2)), rho)))),
             update(lr, frac(at("m"), row(mn(1), mo(MINUS), sup(b1, T))), mo("\u00b7"),
                    row(mo("{"), at("r"), frac(sqrt(row(mn(1), mo(MINUS), sup(b2, T))), row(sqrt(at("v")), mo("+"),
                                                                                         knob(values, "eps"))),
                        mi("\u2009if\u2009"), rho, mo("&gt;"), mn(5), mo(";"), mn(1), mi("\u2009otherwise"), mo("}")))]
    return RuleDisplay(tuple(lines), {"exp_avg": "velocity", "exp_avg_sq": "accumulator"})


def asgd(values: Mapping[str, Any]) -> RuleDisplay:
    """Averaged SGD (Polyak & Juditsky, 1992) with Bottou's decaying step, as torch.optim.ASGD."""
    eta, lam = at("\u03b7", "t-1"), knob(values, "lambd")
    lines = [gradient(values),
             line("update", at("w"), mo("="), at("w", "t-1"), paren(mn(1), mo(MINUS), lam, mo("\u00b7"), eta),
                  mo(MINUS), eta,
                  at("g"), mo(","), mi("\u2003"), sub(mi("\u03b7"), mn(0)), mo("="), knob(values, "lr")),
             line("centre", at("a"), mo("="), at("a", "t-1"), mo("+"), at("\u03bc", "t-1"),
                  paren(at("w"), mo(MINUS), at("a", "t-1")), mo(","), mi("\u2003"), at("\u03bc"), mo("="),
                  frac(mn(1), row(mi("max"), paren(mn(1), mo(","), T, mo(MINUS), knob(values, "t0"))))),
             line("lr", at("\u03b7"), mo("="), frac(knob(values, "lr"), sup(paren(mn(1), mo("+"), lam, mo("\u00b7"),
                                                                                 knob(values, "lr"), mo("\u00b7"), T),
                                                                           knob(values, "alpha"))))]
    return RuleDisplay(tuple(lines), {})  # ax averages the iterates: not a moment of g


def ademamix(values: Mapping[str, Any]) -> RuleDisplay:
    """AdEMAMix (Pagliardini et al., 2024): Adam's numerator mixes a fast and a very slow EMA."""
    values = {**values, "decoupled_weight_decay": True}
    b3 = sub(mi("\u03b2"), row(mn(3), mo(","), T)) if values.get("beta3_warmup") else knob(values, "beta3")
    alpha = at("\u03b1") if values.get("alpha_warmup") else knob(values, "alpha")
    m1, m2 = sub(mi("m"), row(mn(1), mo(","), T)), sub(mi("m"), row(mn(2), mo(","), T))
    m1p, m2p = sub(mi("m"), row(mn(1), mo(","), T1)), sub(mi("m"), row(mn(2), mo(","), T1))
    lines = [*decoupled(values), gradient(values),
             line("velocity", m1, mo("="), knob(values, "beta1"), m1p, mo("+"), one_minus(values, "beta1"), at("g")),
             line("velocity", m2, mo("="), b3, m2p, mo("+"), paren(mn(1), mo(MINUS), b3), at("g")),
             _moments(values)[1]]
    if values.get("alpha_warmup"):
        lines.append(line("momentum", at("\u03b1"), mo("="), mi("min"),
                          paren(frac(row(T, knob(values, "alpha")), knob(values, "alpha_warmup")), mo(","),
                                knob(values, "alpha"))))
    if values.get("beta3_warmup"):
        lines.append(line("momentum", b3, mo("\u2191"), knob(values, "beta3"), mi("\u2009over\u2009"),
                          knob(values, "beta3_warmup"), mi("\u2009steps")))
    lines.append(update(knob(values, "lr"),
                        frac(row(frac(m1, row(mn(1), mo(MINUS), sup(knob(values, "beta1"), T))), mo("+"), alpha, m2),
                             row(sqrt(frac(at("v"), row(mn(1), mo(MINUS), sup(knob(values, "beta2"), T)))), mo("+"),
                                 knob(values, "eps")))))
    return RuleDisplay(tuple(lines), {"exp_avg_fast": "velocity", "exp_avg_sq": "accumulator"})
