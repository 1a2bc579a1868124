"""JSON for results and web answers: non-finite numbers become ``null`` (JSON has no NaN / Infinity).

One cleaner for every writer (results files, reports, the web API), so a diverged run's ``inf``
reads the same everywhere.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None, recursively (dicts, lists, tuples);
    tensors and NumPy arrays / scalars become plain lists and numbers first."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # tensors, arrays, NumPy scalars
        return finite(value.tolist())
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`finite` ``(value)``; refuses NaN should one slip through."""
    return json.dumps(finite(value), allow_nan=False, **kwargs)
