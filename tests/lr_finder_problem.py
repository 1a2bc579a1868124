"""A small float64 regression problem shared by the distributed LR-finder worker and its test."""

import torch

BATCH = 32


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).double()


def batch(i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The i-th batch of the stream (the same on every rank; each rank takes its share)."""
    g = torch.Generator().manual_seed(1000 + i)
    x = torch.randn(BATCH, 5, generator=g, dtype=torch.float64)
    return x, (x.sum(1, keepdim=True) + 0.1 * torch.randn(BATCH, 1, generator=g, dtype=torch.float64))
