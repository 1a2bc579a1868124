"""Shared by the reliability tests (and the distributed worker script): one setting per algorithm.

Each entry exercises the algorithm's state (momentum buffers, accumulators, moments, amsgrad,
centered RMSprop, NAdam's mu_product) with torch.optim argument names only, so the same keyword
arguments build the torch.optim optimizer of the same name.
"""

import torch

import optimlab

CONFIGS = {
    "sgd": (optimlab.SGD, {"lr": 0.05}),
    "sgd_nesterov": (optimlab.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}),
    "adagrad": (optimlab.Adagrad, {"lr": 0.1, "lr_decay": 1e-3, "weight_decay": 1e-3}),
    "rmsprop": (optimlab.RMSprop, {"lr": 0.01, "momentum": 0.5, "centered": True}),
    "adam": (optimlab.Adam, {"lr": 0.01, "amsgrad": True, "weight_decay": 1e-3}),
    "adamw": (optimlab.AdamW, {"lr": 0.01}),
    "nadam": (optimlab.NAdam, {"lr": 0.01, "decoupled_weight_decay": True, "weight_decay": 1e-2}),
}


def torch_twin(name):
    """The torch.optim class of a config (single-tensor path, the reference implementation)."""
    cls, kwargs = CONFIGS[name]
    return getattr(torch.optim, cls.__name__), {**kwargs, "foreach": False}


def mlp(seed=0, features=6, hidden=8, dtype=torch.float32):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(features, hidden), torch.nn.Tanh(),
                               torch.nn.Linear(hidden, 1)).to(dtype)


def data(seed=1, n=16, features=6, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=gen, dtype=dtype)
    return x, torch.sin(x.sum(1, keepdim=True))
