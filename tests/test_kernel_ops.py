"""The op table of the fused paths: a rule using an op it lacks warns once and runs eagerly;
a rule using the table's newer ops (sign, abs, minimum) is fused and equals the eager rule."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

from optimlab import kernels
from optimlab.algorithms._base import Rule, no_state, validator
from optimlab.kernels.ops import OPS
from optimlab.optim import Optimizer


def _accept(name: str, value: Any) -> None:
    pass


def _optimizer(update, name: str) -> type[Optimizer]:
    """A throw-away drop-in optimizer over ``update`` (stateless, no step counter)."""
    rule = Rule(name, update, no_state, lambda group: {"lr": group["lr"]}, validator({"lr": _accept}),
                counts_steps=False)
    return type(name, (Optimizer,), {"rule": rule})


def _softsign_descent(param, grad, *, lr):
    """w = w - lr * tanh(g): ``tanh`` is in no kernel's op table."""
    return {"param": param - lr * torch.tanh(grad)}


def _sign_descent(param, grad, *, lr):
    """signSGD with a clipped magnitude: w = w - lr * sign(g) * min(|g|, 1) + 0 * max(g, -1)."""
    one = grad * 0 + 1
    step = torch.sign(grad) * torch.minimum(grad.abs(), one)
    return {"param": param - lr * step + 0 * torch.maximum(grad, -one)}


def _run(cls, fused: bool, steps: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in [(50,), (3, 4)]]
    opt = cls(params, {"lr": 0.1, "fused": None if fused else False})
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g) * 2
            p.grad.view(-1)[0] = 0.0
        opt.step()
    return [p.detach() for p in params]


def test_rule_with_an_op_the_table_lacks_warns_once_and_runs_eagerly():
    assert "tanh" not in OPS
    cls = _optimizer(_softsign_descent, "throwaway_softsign")
    before = dict(kernels.stats)
    with pytest.warns(RuntimeWarning, match="'tanh'.*'throwaway_softsign'") as record:
        fused = _run(cls, fused=True, steps=3)
    assert len([w for w in record if issubclass(w.category, RuntimeWarning)]) == 1  # once, not per step
    assert kernels.stats["fused_tensors"] == before["fused_tensors"]
    assert kernels.stats["eager_tensors"] - before["eager_tensors"] == 2 * 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second optimizer of the same rule: no new warning
        eager = _run(cls, fused=True, steps=1)
    assert len(eager) == 2
    for a, b in zip(fused, _run(cls, fused=False)):
        assert torch.equal(a, b)


def test_sign_abs_minimum_are_fused_and_equal_eager():
    cls = _optimizer(_sign_descent, "throwaway_signsgd")
    before = dict(kernels.stats)
    fused = _run(cls, fused=True)
    assert kernels.stats["fused_tensors"] - before["fused_tensors"] == 2 * 3
    for a, b in zip(fused, _run(cls, fused=False)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", ["c", "foreach", "triton"])
def test_comparisons_where_clamp_fuse_rprop_exactly(backend, monkeypatch):
    """Rprop (sign, comparisons, where, ones_like, clamp): fused on every backend, equal to eager
    bit for bit (none of its ops rounds differently anywhere)."""
    import test_fused

    if backend == "triton":
        triton_gpu = pytest.importorskip("optimlab.kernels.triton_gpu")
        if triton_gpu.triton is None:
            pytest.skip("triton is not installed")
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        monkeypatch.setattr(triton_gpu, "BLOCK", 128)
        monkeypatch.setattr(triton_gpu, "CHUNK", 128 * triton_gpu.ITERS)
    monkeypatch.setenv("OPTIMLAB_BACKEND", backend)
    monkeypatch.setattr(test_fused, "SHAPES", [(300,), (7,), (2, 3)])
    monkeypatch.setattr(test_fused, "FIRST_GROUP", [0, 1])
    kwargs = {"lr": 0.05, "etas": (0.3, 1.5), "step_sizes": (1e-3, 0.2)}
    before = dict(kernels.stats)
    ours, _ = test_fused.run("Rprop", kwargs, torch.float32, fused=True, steps=4)
    assert kernels.stats["eager_tensors"] == before["eager_tensors"]
    eager, _ = test_fused.run("Rprop", kwargs, torch.float32, fused=False, steps=4)
    for a, b in zip(ours, eager):
        assert torch.equal(a.detach(), b.detach())
