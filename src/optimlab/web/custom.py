"""The web lab's formula landscape: a request's ``landscape`` is a built-in name, or ``"custom"``
with a ``formula`` in x and y and a ``window`` (parsed by :mod:`optimlab.lab.formula`; no user
text is evaluated as code).

Two stages, so that a refused formula costs nothing and nothing runs for it:

- :func:`check_reference` (in the request models' validators, on the event loop): the formula is
  tokenized and parsed within its bounds, the window checked; microseconds, no torch;
- :func:`landscape_of` (in a worker thread or process): the landscape is built, checked finite
  over its window grid and its minima found (tenths of a second, cached per formula and window).
"""

from __future__ import annotations

from typing import Any

from ..lab.formula import NAME, FormulaError, check_window, formula_landscape, parse
from ..lab.landscapes import Landscape, Window, get_landscape

#: the window of a formula landscape when the request gives none
DEFAULT_WINDOW: Window = ((-3.0, 3.0), (-3.0, 3.0))


def window_of(window: Any) -> Window:
    return DEFAULT_WINDOW if window is None else check_window(window)


def check_reference(landscape: str, formula: str | None, window: Any) -> Window | None:
    """Validate a request's landscape fields (ValueError naming the problem); the window of a
    formula landscape, or None for a built-in one."""
    if landscape != NAME:
        if formula is not None or window is not None:
            raise ValueError(f"formula and window are only for landscape {NAME!r} (got landscape {landscape!r})")
        return None
    if formula is None:
        raise ValueError(f"landscape {NAME!r} needs a formula in x and y, e.g. \"x^2 + 10 y^2\"")
    win = window_of(window)
    try:
        parse(formula)
    except FormulaError as exc:
        raise FormulaError(f"formula: {exc}") from None
    return win


def check_starts(landscape: str, window: Window | None, starts: list[list[float]]) -> None:
    """Every start inside the landscape's window (``window`` for a formula landscape)."""
    (x0, x1), (y0, y1) = window or get_landscape(landscape).window
    for i, (x, y) in enumerate(starts):
        if not (x0 <= x <= x1 and y0 <= y <= y1):
            raise ValueError(f"start {i} ({x:g}, {y:g}) is outside the {landscape} window "
                             f"x in [{x0:g}, {x1:g}], y in [{y0:g}, {y1:g}]")


def landscape_of(req: Any) -> Landscape:
    """The landscape a validated request names (built and cached for a formula)."""
    if req.landscape == NAME:
        return formula_landscape(req.formula, window_of(req.window))
    return get_landscape(req.landscape)


def formula_info(formula: str, window: Any, resolution: int) -> dict[str, Any]:
    """What the page needs to switch to a formula landscape: its facts, each optimizer's default
    learning rate on it (the catalogue's rule), and its grid (as ``/api/landscape/{name}``)."""
    from .compute import landscape_grid, landscape_info  # noqa: PLC0415 (compute imports the schemas)

    land = formula_landscape(formula, window_of(window))
    return {"landscape": landscape_info(land), "grid": landscape_grid(land, resolution)}


__all__ = ["NAME", "DEFAULT_WINDOW", "FormulaError", "check_reference", "check_starts", "landscape_of", "formula_info",
           "window_of"]
