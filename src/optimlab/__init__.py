"""optimlab: gradient-descent optimizers for PyTorch, each written once, and a lab for them.

``from optimlab import Adam`` is a drop-in for ``torch.optim.Adam`` (same arguments, defaults,
numbers and ``state_dict``), with the seed documents' forms as named options.
"""

from .ewma import EWMA, ewma_series
from .optim import OPTIMIZERS, SGD, Adagrad, Adam, AdamW, NAdam, Optimizer, RMSprop

__version__ = "0.1.0"

__all__ = ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "NAdam", "Optimizer", "OPTIMIZERS",
           "EWMA", "ewma_series", "__version__"]
