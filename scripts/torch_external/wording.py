"""Each error input of torch's optim_db through optimlab's class: is the error (or warning) of
torch's type, and does its message match torch's regex?

``test_errors`` in torch's test/test_optim.py stops at a class's first mismatch, so it cannot say
whether a failure is only wording. This goes through every error input and prints one line per
input whose message differs, with its type verdict; it exits 1 if any type differs.

    PYTHONPATH=src python scripts/torch_external/wording.py
"""

from __future__ import annotations

import re
import sys
import warnings

import torch
from torch.testing._internal.common_optimizers import OptimizerErrorEnum, optim_db

import optimlab


def outcome(call, expected):
    """(type matched, message) of what ``call`` raised or warned."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - any error is compared with torch's
            return isinstance(exc, expected), f"{type(exc).__name__}: {exc}"
    for w in caught:
        if issubclass(w.category, expected):
            return True, f"{w.category.__name__}: {w.message}"
    return False, "no error" if not caught else f"{caught[0].category.__name__}: {caught[0].message}"


def main() -> int:
    wording, wrong_type, total = [], [], 0
    for dtype in (torch.float32, torch.float64):
        for info in optim_db:
            if info.optim_error_inputs_func is None:
                continue
            cls = getattr(optimlab, info.optim_cls.__name__)
            for error in info.optim_error_inputs_func(device="cpu", dtype=dtype):
                total += 1
                inp = error.optimizer_error_input
                if error.error_on == OptimizerErrorEnum.CONSTRUCTION_ERROR:
                    call = lambda: cls(inp.params, **inp.kwargs)  # noqa: E731
                else:
                    def call():
                        cls(inp.params, **inp.kwargs).step()
                ok, message = outcome(call, error.error_type)
                row = (str(dtype).removeprefix("torch."), info.optim_cls.__name__, inp.desc, error.error_type.__name__,
                       error.error_regex, message)
                if not ok:
                    wrong_type.append(row)
                elif not re.search(error.error_regex, message.split(": ", 1)[1]):
                    wording.append(row)
    print(f"{total} error inputs; wording differs for {len(wording)}, type differs for {len(wrong_type)}")
    for kind, rows in (("WORDING", wording), ("TYPE", wrong_type)):
        for dtype, name, desc, etype, regex, message in rows:
            print(f"{kind} {dtype} {name} [{desc}] torch: {etype} /{regex}/ ; optimlab: {message}")
    return 1 if wrong_type else 0


if __name__ == "__main__":
    sys.exit(main())
