"""The lab: 2-D landscapes, a batched trajectory engine, metrics, figures, a CLI and a tour.

Public entry points (imported on first use)::

    from optimlab.lab import LANDSCAPES, register_landscape, get_landscape   # landscapes
    from optimlab.lab import run, sweep                                       # batched engine
    from optimlab.lab import measure                                          # metrics
    from optimlab import catalogue                                            # the optimizers
"""

from .._lazy import lazy_attributes

_WHERE = {**{n: ".engine" for n in ("Run", "Sweep", "get_optimizer", "run", "sweep")}, "reference_run": ".reference",
          **{n: ".landscapes" for n in ("LANDSCAPES", "Landscape", "get_landscape", "register_landscape")},
          "measure": ".metrics", "rows": ".metrics"}
__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)
__all__ = list(_WHERE)
