"""pytest hook for running PyTorch's own test/test_optim.py against optimlab.

Copied next to the downloaded test file by ``scripts/run_torch_optim_tests.sh`` (never into the
repository's test suite). Before the test module is imported, every ``OptimizerInfo`` in torch's
``optim_db`` gets optimlab's class of the same name as its ``optim_cls``, so each test torch runs
for ``torch.optim.X`` runs for ``optimlab.X`` instead. With ``OPTIMLAB_SWAP=0`` nothing is
swapped: the same file runs against torch's own classes (the baseline that tells a difference of
optimlab's from a test the installed torch fails too, e.g. a test file older than torch's optim_db).
"""

import os

import optimlab
from torch.testing._internal.common_optimizers import optim_db

SWAPPED = []
for _info in optim_db if os.environ.get("OPTIMLAB_SWAP", "1") != "0" else ():
    _name = _info.optim_cls.__name__
    _ours = getattr(optimlab, _name, None)
    if _ours is None:
        raise SystemExit(f"optimlab offers no class named {_name!r} (torch's optim_db lists it)")
    _info.optim_cls = _ours
    SWAPPED.append(_name)


def pytest_report_header(config):
    where = os.path.dirname(optimlab.__file__)
    if not SWAPPED:
        return ["OPTIMLAB_SWAP=0: torch's own classes (baseline)"]
    return [f"optimlab classes swapped into optim_db ({len(SWAPPED)}): {', '.join(SWAPPED)}",
            f"optimlab from {where}"]
