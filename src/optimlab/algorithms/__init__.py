"""The update rules, one pure function per algorithm family (see ``_base.Rule``)."""

from . import adagrad, adam, nadam, rmsprop, sgd
from ._base import Rule, ewma

RULES: dict[str, Rule] = {m.RULE.name: m.RULE for m in (sgd, adagrad, rmsprop, adam, nadam)}

__all__ = ["RULES", "Rule", "ewma", "sgd", "adagrad", "rmsprop", "adam", "nadam"]
