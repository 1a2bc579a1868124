"""The main job: every optimizer on a real training task, then the lab's tour of the seeds' claims.

``python -m optimlab.demo --out out/demo``

1. trains the same MLP (same initial weights, same mini-batches) on a generated two-spirals task
   with each optimizer at a customary learning rate, prints a results table, and writes
   ``results.csv`` and ``loss_curves.png`` into ``--out``;
2. runs the lab's tour (:mod:`optimlab.lab.tour`) into ``--out/tour``: ``tour.html`` shows each
   claim of the seed documents with a figure and the number measured for it.
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import time

import torch
from torch import nn

from . import catalogue
from . import demo_cli
from ._atomic import atomic_write

#: (catalogue name, learning rate on this task) compared by the demo; labels, options and colours
#: are the catalogue's
CONTENDERS = [("sgd", 0.1), ("momentum-ewma", 0.1), ("momentum", 0.05), ("nesterov", 0.05), ("adagrad", 0.05),
              ("rmsprop", 1e-2), ("adam", 1e-2), ("adam-nobc", 1e-2), ("nadam", 1e-2)]


def two_spirals(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaved noisy spirals in the plane, labels 0 / 1."""
    t = torch.rand(n, generator=generator) * 2 * math.pi + 0.5
    label = torch.randint(0, 2, (n,), generator=generator)
    angle = t + label * math.pi
    x = torch.stack([t * torch.cos(angle), t * torch.sin(angle)], dim=1) / 5
    x = x + 0.05 * torch.randn(x.shape, generator=generator)
    return x, label


def train(entry, lr: float, model, data, epochs: int, batch_size: int, seed: int) -> dict:
    (x_train, y_train), (x_val, y_val) = data
    model = copy.deepcopy(model)
    opt = entry.make(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    losses = []
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(x_train), generator=g)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            opt.zero_grad()
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            loss.backward()
            opt.step()
            losses.append(loss.item())
    seconds = time.perf_counter() - start
    with torch.no_grad():
        logits = model(x_val)
        val_loss = loss_fn(logits, y_val).item()
        accuracy = (logits.argmax(1) == y_val).float().mean().item()
    return {"losses": losses, "val_loss": val_loss, "val_accuracy": accuracy, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    demo_cli.add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    if args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    args.out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    data = (two_spirals(800, gen), two_spirals(400, gen))
    model = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 2))

    results = {}
    entries = {catalogue.get(name).label: (catalogue.get(name), lr) for name, lr in CONTENDERS}
    width = max(len("optimizer"), *map(len, entries))
    print(f"{'optimizer':<{width}} {'final train loss':>16} {'val loss':>9} {'val acc':>8} {'seconds':>8}")
    for label, (entry, lr) in entries.items():
        r = train(entry, lr, model, data, args.epochs, args.batch_size, args.seed)
        results[label] = r
        tail = sum(r["losses"][-25:]) / len(r["losses"][-25:])
        print(f"{label:<{width}} {tail:>16.4f} {r['val_loss']:>9.4f} {r['val_accuracy']:>8.3f} {r['seconds']:>8.2f}")

    def write_csv(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["optimizer", "hyperparameters", "final_train_loss", "val_loss", "val_accuracy", "seconds"])
            for label, (entry, lr) in entries.items():
                r = results[label]
                w.writerow([label, {"lr": lr, **entry.constructor_options()}, f"{sum(r['losses'][-25:]) / 25:.6f}", f"{r['val_loss']:.6f}",
                            f"{r['val_accuracy']:.4f}", f"{r['seconds']:.3f}"])
    atomic_write(args.out / "results.csv", write_csv)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .ewma import ewma_series

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=120)
    styles = ["-", "--", "-.", ":"]
    for i, (label, r) in enumerate(results.items()):
        smooth = ewma_series(r["losses"], beta=0.95).numpy()
        ax.plot(smooth, label=label, color=entries[label][0].colour, linestyle=styles[i % 4], linewidth=1.6)
    ax.set_yscale("log")
    ax.set_xlabel("step (mini-batch of %d)" % args.batch_size)
    ax.set_ylabel("training loss (EWMA, beta=0.95, bias-corrected)")
    ax.set_title("Two spirals, 2-32-32-2 tanh MLP: training loss per optimizer")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    atomic_write(args.out / "loss_curves.png", lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    print(f"wrote {args.out / 'results.csv'} and {args.out / 'loss_curves.png'}")

    if not args.no_tour:
        from .lab import tour

        print("running the lab tour (about two minutes on an idle machine)...")
        page = tour.main(args.out / "tour")
        print(f"open {page} in a browser: every seed claim with its figure and measured number")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
