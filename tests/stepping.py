"""Running an optimlab class on reference.py's deterministic gradients, for the reference tests."""

import numpy as np
import torch

from reference import grad_fn

STEPS = 60
P0 = np.linspace(-1.5, 2.0, 12).reshape(3, 4)


def run_on_reference_gradients(cls, steps=STEPS, p0=P0, **kwargs):
    """``steps`` steps of ``cls(**kwargs)`` from ``p0`` (float64), gradient ``grad_fn(p, t)``;
    returns the optimizer and its parameter."""
    p = torch.tensor(p0, dtype=torch.float64, requires_grad=True)
    opt = cls([p], **kwargs)
    for t in range(1, steps + 1):
        p.grad = torch.from_numpy(grad_fn(p.detach().numpy(), t))
        opt.step()
    return opt, p


def assert_close(actual, expected, rtol=1e-10, atol=1e-12):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)
    assert not np.allclose(expected, P0), "the run must move the parameters"
