"""The lab: 2-D landscapes, a batched trajectory engine, metrics, figures, a CLI and a tour.

Public entry points::

    from optimlab.lab import LANDSCAPES, register_landscape, get_landscape   # landscapes
    from optimlab.lab import run, sweep                                       # batched engine
    from optimlab import catalogue                                            # the optimizers
    from optimlab.lab import measure                                          # metrics
"""

from .engine import Run, Sweep, get_optimizer, reference_run, run, sweep
from .landscapes import LANDSCAPES, Landscape, get_landscape, register_landscape
from .metrics import measure, rows

__all__ = ["LANDSCAPES", "Landscape", "get_landscape", "register_landscape", 
           "Run", "Sweep", "get_optimizer", "reference_run", "run", "sweep", "measure", "rows"]
