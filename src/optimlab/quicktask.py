"""A small built-in training task: an MLP with dropout on generated regression data.

It needs no download and trains in well under a second, so it serves ``optimlab tune`` (the
default objective) and ``optimlab quicktrain`` (training with checkpoints that can be killed and
resumed). The data come from their own seeded generator; mini-batches and dropout draw from
torch's global RNG, which the checkpoint saves, so a resumed run repeats an uninterrupted one
bit for bit.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from . import checkpoint
from . import catalogue, quicktask_cli, schedules



def make_data(seed: int = 0, n: int = 256, features: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """``y = sin(x @ w) + 0.1 * noise`` with ``x, w ~ N(0, 1)``: smooth, nonlinear, learnable."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    x = torch.randn(n, features, generator=gen)
    w = torch.randn(features, 1, generator=gen) / math.sqrt(features)
    y = torch.sin(3 * x @ w) + 0.1 * torch.randn(n, 1, generator=gen)
    return x, y


def make_model(seed: int = 0, features: int = 8, hidden: int = 32, dropout: float = 0.1) -> nn.Module:
    gen_state = torch.get_rng_state()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(features, hidden), nn.Tanh(), nn.Dropout(dropout), nn.Linear(hidden, 1))
    torch.set_rng_state(gen_state)
    return model


def validation_loss(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> float:
    model.eval()
    with torch.no_grad():
        loss = nn.functional.mse_loss(model(data[0]), data[1]).item()
    model.train()
    return loss


def train(make_optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer], *, steps: int = 100,
          batch_size: int = 32, seed: int = 0, schedule: str = "cosine",
          checkpoint_path: str | os.PathLike | None = None, checkpoint_every: int = 0,
          report: Callable[[int, float], None] | None = None, pause: float = 0.0,
          on_resume: Callable[[int], None] | None = None) -> tuple[nn.Module, float]:
    """Train the task's MLP for ``steps`` mini-batch steps; return ``(model, validation loss)``.

    With ``checkpoint_path`` the run resumes from that file when it exists, and writes it every
    ``checkpoint_every`` steps (atomically). ``report(step, loss)`` is called after each step,
    ``on_resume(step)`` once when a checkpoint was loaded.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be >= 0, got {checkpoint_every}")
    x, y = make_data(seed)
    val = make_data(seed + 1, n=128)
    model = make_model(seed)
    optimizer = make_optimizer(model.parameters())
    scheduler = schedules.build(schedule, optimizer, steps)
    start = 0
    torch.manual_seed(seed)
    if checkpoint_path is not None and Path(checkpoint_path).exists():
        start = checkpoint.load(checkpoint_path, model=model, optimizer=optimizer, scheduler=scheduler)["step"]
        if on_resume is not None:
            on_resume(start)
    for step in range(start, steps):
        idx = torch.randint(0, x.shape[0], (batch_size,))
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x[idx]), y[idx])
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if checkpoint_path is not None and checkpoint_every and (step + 1) % checkpoint_every == 0:
            checkpoint.save(checkpoint_path, model=model, optimizer=optimizer, scheduler=scheduler, step=step + 1)
        if report is not None:
            report(step + 1, loss.item())
        if pause:
            time.sleep(pause)
    return model, validation_loss(model, val)


def parse_settings(pairs: Iterable[str]) -> dict[str, Any]:
    """``["momentum=0.9", "betas=(0.9, 0.99)"]`` -> ``{"momentum": 0.9, "betas": (0.9, 0.99)}``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"--set must look like NAME=VALUE, got {pair!r}")
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[key] = text
    return out


def optimizer_factory(name: str, settings: dict[str, Any]) -> Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]:
    """The catalogue's optimizer ``name`` (case-insensitive) with ``settings`` as constructor arguments."""
    entry = catalogue.get(name)
    return lambda params: entry.make(params, **settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="optimlab quicktrain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    quicktask_cli.add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    settings = parse_settings(args.set)

    def report(step: int, loss: float) -> None:
        print(f"step {step} loss {loss:.6g}", flush=True)

    model, val = train(optimizer_factory(args.optimizer, settings), steps=args.steps, batch_size=args.batch_size,
                       seed=args.seed, schedule=args.schedule, checkpoint_path=args.checkpoint,
                       checkpoint_every=args.checkpoint_every if args.checkpoint else 0, report=report,
                       pause=args.pause, on_resume=lambda step: print(f"resumed from step {step}", flush=True))
    if args.out is not None:
        checkpoint.save(args.out, model=model, step=args.steps, rng=False)
    print(json.dumps({"validation_loss": val, "steps": args.steps}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
