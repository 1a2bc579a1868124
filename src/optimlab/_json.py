"""JSON for results and web answers: non-finite numbers become ``null`` (JSON has no NaN / Infinity).

One cleaner for every writer (results files, reports, the web API), so a diverged run's ``inf``
reads the same everywhere. Tensors and arrays take a vectorised path (a trajectory array is not
walked float by float in Python).
"""

from __future__ import annotations

import json
import math
from typing import Any


def _array(value: Any) -> list:
    import numpy as np

    a = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
    if a.dtype.kind not in "fc":
        return a.tolist()
    finite = np.isfinite(a)
    if finite.all():
        return a.tolist()
    obj = a.astype(object)
    obj[~finite] = None
    return obj.tolist()


def finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None, recursively (dicts, lists, tuples);
    tensors and NumPy arrays become nested lists, NumPy scalars plain numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if hasattr(value, "detach") or type(value).__name__ == "ndarray":
        return _array(value)
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # NumPy scalars
        return finite(value.tolist())
    return value


def dumps(value: Any, *, clean: bool = True, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`finite` ``(value)`` (``clean=False``: of a payload already clean,
    written as it is); NaN that slipped through is refused, never sent."""
    return json.dumps(finite(value) if clean else value, allow_nan=False, **kwargs)
