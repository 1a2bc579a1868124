"""Real training for optimlab's optimizers: small tasks, gradient-descent modes, LR schedules, the
LR range test, per-layer diagnostics and an optimizer benchmark (``optimlab train | lr-find | bench``).
"""

from .bench import BenchResult, lr_grid, run_bench
from .diagnostics import LayerDiagnostics
from .loop import RunResult, make_optimizer, train
from .lr_finder import LRFinderResult, find_lr, lr_range_test
from .modes import MODES, Mode
from .schedules import SCHEDULES, make_schedule
from .tasks import TASKS, Task, get_task

__all__ = ["TASKS", "Task", "get_task", "Mode", "MODES", "SCHEDULES", "make_schedule",
           "make_optimizer", "train", "RunResult", "lr_range_test", "find_lr", "LRFinderResult",
           "LayerDiagnostics", "lr_grid", "run_bench", "BenchResult"]
