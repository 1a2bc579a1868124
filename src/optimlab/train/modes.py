"""Gradient-descent modes, as the seeds define them: batch, stochastic and mini-batch.

* **batch** gradient descent: every step uses the whole training set, ``g = (1/N) sum_i grad l_i``;
* **stochastic** gradient descent: every step uses one example, ``g = grad l_i``;
* **mini-batch** gradient descent: every step uses ``n`` examples, ``g = (1/n) sum_{i in B} grad l_i``.

Examples are drawn without replacement: each epoch is a fresh permutation (from the run's own
``torch.Generator``), cut into consecutive batches; the last, short batch of an epoch is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    import torch
    from torch import Tensor

MODES = ("batch", "stochastic", "minibatch")


@dataclass(frozen=True)
class Mode:
    """A gradient-descent mode; ``batch_size`` is the examples per step (only set for mini-batch)."""

    kind: str
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in MODES:
            from .._names import unknown_name_error
            raise unknown_name_error("mode", self.kind, MODES)
        if self.kind == "minibatch":
            if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
                raise ValueError(f"batch_size must be an integer >= 1 for mode 'minibatch', got {self.batch_size!r}")
        elif self.batch_size is not None:
            raise ValueError(f"batch_size applies only to mode 'minibatch' (mode {self.kind!r} fixes it)")

    def size(self, n_train: int) -> int:
        """Examples per step on a training set of ``n_train`` examples."""
        if self.kind == "batch":
            return n_train
        if self.kind == "stochastic":
            return 1
        return min(self.batch_size, n_train)

    def __str__(self) -> str:
        return f"minibatch({self.batch_size})" if self.kind == "minibatch" else self.kind


def batches(mode: Mode, n_train: int, generator: torch.Generator) -> Iterator[Tensor]:
    """An endless stream of index tensors, one per step, in the order ``mode`` prescribes."""
    import torch

    if n_train < 1:
        raise ValueError(f"n_train must be >= 1, got {n_train}")
    size = mode.size(n_train)
    if size == n_train:  # batch mode (or a mini-batch as large as the data): no shuffling needed
        everything = torch.arange(n_train)
        while True:
            yield everything
    while True:
        order = torch.randperm(n_train, generator=generator)
        for start in range(0, n_train, size):
            yield order[start:start + size]
