"""``optimlab landscapes | compare | sweep | basins | tour``: the lab on the command line.

Every command validates its arguments up front (errors name the argument and the allowed
range; unknown names list the valid ones with a close-match suggestion), computes everything,
and only then writes its figures and results file, each atomically (temp file + ``os.replace``).
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from .._names import unknown_name_error
from .. import catalogue

MAX_STEPS = 100_000
MAX_TRAJECTORIES = 2_000_000


# --- argument types: each error names the range --------------------------------------------------

def int_in(low: int, high: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer in [{low}, {high}], got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an integer in [{low}, {high}], got {value}")
        return value
    return parse


def float_in(low: float, high: float, low_open: bool = True):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        lo = "(" if low_open else "["
        bad = not math.isfinite(value) or (value <= low if low_open else value < low) or value > high
        if bad:
            raise argparse.ArgumentTypeError(f"must be a number in {lo}{low:g}, {high:g}], got {text!r}")
        return value
    return parse


def point(text: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be two numbers 'x,y', got {text!r}") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return x, y


def optimizer_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("must name at least one optimizer")
    try:
        names = [catalogue.lab_entry(n).name for n in names]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"lists an optimizer twice: {text!r}")
    return names


def landscape_name(text: str) -> str:
    from .landscapes import LANDSCAPES

    if text not in LANDSCAPES:
        raise argparse.ArgumentTypeError(str(unknown_name_error("landscape", text, LANDSCAPES)))
    return text


LR_RANGE = (0.0, 100.0)


def lr_spec(text: str) -> Any:
    """``auto``, one number for every optimizer, or ``name=value,...`` (others: auto)."""
    if text == "auto":
        return "auto"
    parse = float_in(*LR_RANGE)
    if "=" not in text:
        return parse(text)
    out: dict[str, float] = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            name = catalogue.lab_entry(name.strip()).name
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        out[name] = parse(value)
    return out


def schedule_spec(text: str) -> str:
    from .. import schedules

    try:
        schedules.parse(text)
        if schedules.parse(text).needs_metric:
            raise ValueError("plateau follows a validation metric: use it with the training tasks")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def noise_spec(text: str):
    from .noise import parse_noise

    try:
        return parse_noise(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


NOISE_HELP = ("noisy gradients: 'sd=S' (additive Gaussian), 'batch=B' (B examples per step on a data landscape: "
              "least_squares, scaled_features), with ',seed=N'; e.g. 'batch=1,seed=0'")


def _command(name: str):
    """The command ``name`` of :mod:`.commands`, imported when it runs (``--help`` imports no torch)."""
    def call(args: argparse.Namespace) -> int:
        from . import commands
        return getattr(commands, name)(args)
    return call


def register(sub: Any) -> None:
    p = sub.add_parser("landscapes", help="list the lab's 2-D landscapes")
    p.add_argument("--plot", metavar="DIR", default=None, help="also write a gallery landscapes.png into DIR")
    p.set_defaults(func=_command("cmd_landscapes"))

    def common(p, steps: int, default_optimizers: str = ",".join(catalogue.main_names())) -> None:
        p.add_argument("--landscape", type=landscape_name, default="rosenbrock", help="landscape name (see `optimlab landscapes`)")
        p.add_argument("--optimizers", type=optimizer_list, default=optimizer_list(default_optimizers),
                       help="comma-separated optimizer names, case-insensitive (`optimlab optimizers` lists them)")
        p.add_argument("--steps", type=int_in(1, MAX_STEPS), default=steps, help=f"steps per trajectory, 1..{MAX_STEPS}")

    p = sub.add_parser("compare", help="run optimizers from one start; contour, 3-D and loss figures, results table")
    common(p, 500)
    p.add_argument("--lr", type=lr_spec, default="auto",
                   help="'auto' (best of a 26-value sweep), one number for all, or name=value,... (range (0, 100])")
    p.add_argument("--start", type=point, default=None, help="start point 'x,y' (default: the landscape's)")
    p.add_argument("--schedule", type=schedule_spec, default=None,
                   help="constant, step:N:GAMMA, cosine, warmup:N or warmup-cosine:N")
    p.add_argument("--tol", type=float_in(0.0, 1e6), default=1e-6, help="tolerance on f - f* for 'steps to tol'")
    p.add_argument("--gif", action="store_true", help="also write an animated trajectories.gif")
    p.add_argument("--noise", type=noise_spec, default=None, help=NOISE_HELP + " ('auto' lrs are picked noise-free)")
    p.add_argument("--out", default="out/compare", help="output folder")
    p.set_defaults(func=_command("cmd_compare"))

    p = sub.add_parser("sweep", help="final loss vs learning rate for many starts, as one batched run per optimizer")
    common(p, 500)
    p.add_argument("--lr-min", type=float_in(0.0, 100.0), default=1e-5, help="smallest learning rate, (0, 100]")
    p.add_argument("--lr-max", type=float_in(0.0, 100.0), default=1.0, help="largest learning rate, (0, 100]")
    p.add_argument("--num-lr", type=int_in(1, 1000), default=20, help="number of learning rates (log-spaced), 1..1000")
    p.add_argument("--starts", type=int_in(1, 100_000), default=100, help="random starts in the window, 1..100000")
    p.add_argument("--start", type=point, default=None, help="one start 'x,y' instead of random ones")
    p.add_argument("--seed", type=int_in(0, 2**31 - 1), default=0, help="seed for the random starts")
    p.add_argument("--schedule", type=schedule_spec, default=None, help="learning-rate schedule (see compare)")
    p.add_argument("--tol", type=float_in(0.0, 1e6), default=1e-6, help="tolerance on f - f*")
    p.add_argument("--noise", type=noise_spec, default=None, help=NOISE_HELP)
    p.add_argument("--out", default="out/sweep", help="output folder")
    p.set_defaults(func=_command("cmd_sweep"))

    p = sub.add_parser("basins", help="which minimum each start on a grid reaches, one panel per optimizer")
    common(p, 300)
    p.set_defaults(landscape="himmelblau")
    p.add_argument("--lr", type=lr_spec, default=None, help="one number for all, or name=value,... (default: each optimizer's default)")
    p.add_argument("--grid", type=int_in(2, 400), default=41, help="starts per axis, 2..400")
    p.add_argument("--out", default="out/basins", help="output folder")
    p.set_defaults(func=_command("cmd_basins"))

    p = sub.add_parser("tour", help="an HTML report that measures each claim of the seed documents")
    p.add_argument("--out", default="out/tour", help="output folder")
    p.add_argument("--full", action="store_true",
                   help="the larger real-task plan (more tasks, seeds and steps: minutes); default: a reduced plan")
    p.add_argument("--no-gif", action="store_true", help="skip the animated GIF")
    p.set_defaults(func=_command("cmd_tour"))
