"""The benchmark protocol's search spaces and default hyperparameters, read from the catalogue.

:func:`search_space` is the one place the protocol reads a space from: the catalogue entry's
``tune`` field (:mod:`optimlab.catalogue`), either whole (``"full"``) or restricted to the learning
rate (``"lr"``, the protocol's default). Tuning the learning rate alone, the other hyperparameters
at their library defaults, is the fair protocol at a budget of a few trials per study (Schmidt et
al. 2021, "Descending through a Crowded Valley", tune only the learning rate at their small budget):
a 4-dimensional space with 4 trials is not searched, it is sampled.

Points are in Optuna's parameter form (``catalogue.tune_names``: ``lr``, ``momentum``,
``one_minus_beta1``, ...), so an enqueued point is drawn back through ``catalogue.suggest``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .. import catalogue

SPACES = ("lr", "full")


def search_space(name: str, space: str = "lr") -> dict[str, Any]:
    """The search space of optimizer ``name``: ``{rule argument: catalogue.Range | catalogue.Choice}``."""
    tune = catalogue.get(name).tune
    if space == "lr":
        return {"lr": tune["lr"]}
    if space == "full":
        return dict(tune)
    raise ValueError(f"space must be one of {', '.join(SPACES)}, got {space!r}")


def point(space: dict[str, Any], unit) -> dict[str, Any]:
    """A unit-cube point (one coordinate per argument, sorted by name) mapped into ``space``, in
    Optuna's parameter form (``one_minus_NAME`` for a complement range)."""
    out: dict[str, Any] = {}
    for u, name in zip(unit, sorted(space)):
        r = space[name]
        if isinstance(r, catalogue.Choice):
            out[name] = r.options[min(int(u * len(r.options)), len(r.options) - 1)]
            continue
        if r.log:
            x = math.exp(math.log(r.low) + u * (math.log(r.high) - math.log(r.low)))
        else:
            x = r.low + u * (r.high - r.low)
        out[("one_minus_" if r.complement else "") + name] = float(f"{x:.6g}")
    return out


def default_hparams(name: str) -> dict[str, Any]:
    """The library default learning rate of the entry's class (its signature's default)."""
    return {"lr": catalogue.signature_defaults(catalogue.get(name).spec)["lr"]}


def suggest(trial: Any, name: str, space: str = "lr") -> dict[str, Any]:
    """The constructor keyword arguments of ``name`` drawn from ``trial`` over the (restricted) space."""
    entry = catalogue.get(name)
    return catalogue.suggest(trial, dataclasses.replace(entry, tune=search_space(name, space)))


def build(name: str, params, kwargs: dict[str, Any]):
    """Optimizer ``name`` over ``params`` with the constructor keyword arguments ``kwargs``."""
    return catalogue.get(name).cls(params, **kwargs)
