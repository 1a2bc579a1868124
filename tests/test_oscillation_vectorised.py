"""``metrics.oscillation`` (vectorised, no loop over steps) against a plain Python count of sign
changes between consecutive nonzero signs, on random paths with zero and repeated steps."""

from __future__ import annotations

import torch

from optimlab.lab import metrics


def python_count(path: torch.Tensor) -> list[int]:
    axis = metrics.principal_axis(path)
    d = path[1:] - path[:-1]
    proj = torch.nan_to_num(torch.einsum("tni,ni->tn", d, axis), nan=0.0, posinf=0.0, neginf=0.0)
    scale = proj.abs().amax(dim=0, keepdim=True)
    out = []
    for n in range(proj.shape[1]):
        count, last = 0, 0.0
        for v, s in zip(proj[:, n].tolist(), scale[0, n].repeat(proj.shape[0]).tolist()):
            sign = 0.0 if abs(v) <= 1e-12 * s else (1.0 if v > 0 else -1.0)
            if sign != 0 and last != 0 and sign != last:
                count += 1
            if sign != 0:
                last = sign
        out.append(count)
    return out


def test_oscillation_counts_sign_changes_of_nonzero_steps():
    g = torch.Generator().manual_seed(0)
    for trial in range(150):
        steps = int(torch.randint(1, 40, (1,), generator=g))
        n = int(torch.randint(1, 6, (1,), generator=g))
        path = torch.randn(steps + 1, n, 2, generator=g, dtype=torch.float64)
        path[torch.rand(steps + 1, n, 2, generator=g) < 0.3] = 0.0
        if trial % 5 == 0:
            path[2:] = path[1:2]          # a run that stops moving
        if trial % 7 == 0:
            path[steps // 2:, 0] = float("nan")  # a diverged trajectory
        assert metrics.oscillation(path).tolist() == python_count(path), trial
    # a zig-zag along x: one change per step after the first
    zig = torch.tensor([[[0.0, 0.0]], [[1.0, 0.0]], [[0.0, 0.0]], [[1.0, 0.0]], [[0.0, 0.0]]], dtype=torch.float64)
    assert metrics.oscillation(zig).tolist() == [3]
