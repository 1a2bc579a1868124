"""The foreach executor (the traced DAG run as ``torch._foreach_*`` calls) against the eager rule.

On the CPU each foreach op runs torch's eager kernel per tensor, so the results must equal the
eager path's bit for bit, square roots included, for every algorithm and option.
"""

from __future__ import annotations

import pytest
import torch

from optimlab import kernels
from test_fused import CASES, SHAPES, ids, run


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("case", CASES, ids=ids)
def test_foreach_matches_eager_exactly(case, dtype, monkeypatch):
    monkeypatch.setenv("OPTIMLAB_BACKEND", "foreach")
    name, kwargs = case
    before = dict(kernels.stats)
    ours, our_opt = run(name, kwargs, dtype, fused=True, steps=3)
    assert kernels.stats["eager_tensors"] == before["eager_tensors"]
    assert kernels.stats["fused_tensors"] - before["fused_tensors"] == 3 * len(SHAPES)
    eager, eager_opt = run(name, kwargs, dtype, fused=False, steps=3)
    for a, b in zip(ours, eager):
        assert torch.equal(a.detach(), b.detach())
    ours_state, eager_state = our_opt.state_dict()["state"], eager_opt.state_dict()["state"]
    assert ours_state.keys() == eager_state.keys()
    for i in ours_state:
        assert ours_state[i].keys() == eager_state[i].keys()
        for k in ours_state[i]:
            assert torch.equal(ours_state[i][k], eager_state[i][k])
