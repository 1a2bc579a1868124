"""optimlab: gradient-descent optimizers for PyTorch, each written once, and a lab for them.

``from optimlab import Adam`` is a drop-in for ``torch.optim.Adam`` (same arguments, defaults,
numbers and ``state_dict``), with the seed documents' forms as named options.
"""

from .ewma import EWMA, ewma_series
from .optim import (ASGD, LBFGS, OPTIMIZERS, SGD, Adadelta, Adafactor, Adagrad, Adam, Adamax, AdamW,
                    AdamWScheduleFree, AdEMAMix, Lion, Muon, NAdam, Optimizer, RAdam, RMSprop, Rprop,
                    SGDScheduleFree, SparseAdam)

__version__ = "0.1.0"

__all__ = ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "NAdam", "Adadelta", "Adamax", "RAdam", "ASGD", "Rprop",
           "SparseAdam", "Adafactor", "Muon", "LBFGS", "Lion", "AdEMAMix", "SGDScheduleFree",
           "AdamWScheduleFree", "Optimizer", "OPTIMIZERS",
           "EWMA", "ewma_series", "__version__"]
