"""Real training for optimlab's optimizers: small tasks, gradient-descent modes, LR schedules, the
LR range test, per-layer diagnostics and an optimizer benchmark (``optimlab train | lr-find | bench``).
"""

from .._lazy import lazy_attributes

_WHERE = {"BenchResult": ".bench", "lr_grid": ".bench", "run_bench": ".bench", "LayerDiagnostics": ".diagnostics",
          "RunResult": ".loop", "make_optimizer": ".loop", "train": ".loop", "LRFinderResult": ".lr_finder",
          "find_lr": ".lr_finder", "lr_range_test": ".lr_finder", "MODES": ".modes", "Mode": ".modes",
          "TASKS": ".tasks", "Task": ".tasks",
          "get_task": ".tasks"}
__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)
__all__ = list(_WHERE)
