"""optimlab: gradient-descent optimizers for PyTorch, each written once, and a lab for them.

``from optimlab import Adam`` is a drop-in for ``torch.optim.Adam`` (same arguments, defaults,
numbers and ``state_dict``), with the seed documents' forms as named options. Every optimizer is
declared once in :mod:`optimlab.catalogue`; its class is generated from that declaration.
Attributes are imported on first use, so ``import optimlab`` (and the command line's help) does
not import torch.
"""

from ._lazy import lazy_attributes

__version__ = "0.1.0"


def _generated_class(name: str):
    import importlib  # (not ``from . import``: that asks this __getattr__ again for the submodule)

    catalogue = importlib.import_module(".catalogue", __name__)
    if name in {spec.name for spec in catalogue.algorithms()}:
        return getattr(importlib.import_module(".optim", __name__), name)
    raise AttributeError(f"module 'optimlab' has no attribute {name!r}")


__getattr__, __dir__ = lazy_attributes(__name__, {
    **{n: ".optim" for n in ("SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "NAdam", "Optimizer", "OPTIMIZERS")},
    "EWMA": ".ewma", "ewma_series": ".ewma"}, fallback=_generated_class)

__all__ = ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "NAdam", "Adadelta", "Adamax", "RAdam", "ASGD", "Rprop",
           "SparseAdam", "Adafactor", "Muon", "LBFGS", "Lion", "AdEMAMix", "SGDScheduleFree", "AdamWScheduleFree",
           "Optimizer", "OPTIMIZERS",
           "EWMA", "ewma_series", "__version__"]
