"""The dtype torch.optim uses for 0-dim state such as ``step`` (float64 under a float64 default)."""

import torch


def scalar_dtype() -> torch.dtype:
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
