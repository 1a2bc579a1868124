"""Per-layer diagnostics of the optimizer's steps, recorded every ``every`` steps.

For each named parameter tensor ``w`` (a "layer"), with ``g`` its gradient and
``delta = w_after - w_before`` the step the optimizer took:

* ``update_ratio = ||delta|| / ||w_before||``, the relative size of the step (a healthy range is
  often quoted as about 1e-3 per step; far above it the layer is being thrown around, far below it
  barely moves);
* the effective per-element step size ``|delta_i| / |g_i|`` (elements with ``|g_i| > 1e-12``),
  summarized by its quantiles. For plain SGD it is exactly ``lr`` for every element; Adam "adapts
  it PER PARAMETER" (the seed), so its quantiles spread out: ``lr / (sqrt(v_hat_i) + eps)``
  scaled by ``|m_hat_i / g_i|``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from torch import nn

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
COLUMNS = ["step", "layer", "numel", "param_norm", "grad_norm", "update_norm", "update_ratio",
           *[f"step_size_q{int(q * 100):02d}" for q in QUANTILES]]


class LayerDiagnostics:
    """Hooks for :func:`optimlab.train.loop.train`; ``rows`` holds one dict per layer and recorded step."""

    def __init__(self, every: int = 10) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}")
        self.every = every
        self.rows: list[dict[str, float]] = []
        self._before: dict[str, torch.Tensor] | None = None
        self._grads: dict[str, torch.Tensor] | None = None

    def wants(self, step: int) -> bool:
        return step == 1 or step % self.every == 0

    @torch.no_grad()
    def before_step(self, model: nn.Module, step: int) -> None:
        self._before = {n: p.detach().clone() for n, p in model.named_parameters()} if self.wants(step) else None

    @torch.no_grad()
    def after_backward(self, model: nn.Module, step: int) -> None:
        if self._before is not None:
            self._grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int) -> None:
        if self._before is None or self._grads is None:
            return
        q = torch.tensor(QUANTILES, dtype=torch.float64)
        for name, p in model.named_parameters():
            if name not in self._grads:
                continue
            before, g = self._before[name].double(), self._grads[name].double()
            delta = p.detach().double() - before
            param_norm, update_norm = before.norm().item(), delta.norm().item()
            row = {"step": step, "layer": name, "numel": p.numel(), "param_norm": param_norm,
                   "grad_norm": g.norm().item(), "update_norm": update_norm,
                   "update_ratio": update_norm / param_norm if param_norm > 0 else float("nan")}
            mask = g.abs() > 1e-12
            sizes = (delta.abs()[mask] / g.abs()[mask]).flatten()
            values = torch.quantile(sizes, q).tolist() if sizes.numel() else [float("nan")] * len(QUANTILES)
            row.update({c: v for c, v in zip(COLUMNS[7:], values)})
            self.rows.append(row)
        self._before = self._grads = None

    def write_csv(self, path: Path) -> None:
        """Write the rows to ``path`` atomically (temporary file + ``os.replace``)."""
        from .._atomic import atomic_write

        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=COLUMNS)
                w.writeheader()
                for row in self.rows:
                    w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        atomic_write(Path(path), write)
