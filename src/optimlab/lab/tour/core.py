"""The pieces every section of the tour shares: the section record, the samples of settings,
per-run metrics the claims use, and the "try it" link into the browser lab."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import quote

import numpy as np
import torch
from torch import Tensor

from ..engine import get_optimizer
from ..landscapes import get_landscape
from ..noise import Noise, parse_noise
from ..verdicts import Claim

#: where ``optimlab web`` serves the browser lab by default
WEB_LAB = "http://127.0.0.1:8000/"
#: the repository's root (``see_also`` paths are relative to it)
REPO = Path(__file__).resolve().parents[4]


@dataclass
class Section:
    """One part of the tour: a seed's sentence, the experiment, figures, and the claims tested."""

    key: str
    title: str
    seed_file: str
    quote: str
    experiment: str
    claims: list[Claim] = field(default_factory=list)
    figures: list[tuple[str, Any]] = field(default_factory=list)  # (file name, Figure or GIF path)
    notes: list[str] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)    # (text, url)
    table: tuple[list[str], list[list[str]]] | None = None        # (header, rows)
    gif: tuple[str, str, dict, dict] | None = None                # (file, landscape, paths, colours)
    see_also: list[tuple[str, str]] = field(default_factory=list)  # (text, path in the repository)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "seed_file": self.seed_file, "quote": self.quote,
                "experiment": self.experiment, "claims": [c.to_json() for c in self.claims],
                "figures": [name for name, _ in self.figures], "try_it": [url for _, url in self.links],
                "see_also": [path for _, path in self.see_also],
                "links": [{"text": text, "url": url, "numbers": link_numbers(url)} for text, url in self.links],
                "notes": self.notes}


def try_it_url(landscape: str, optimizers: Mapping[str, Mapping[str, float]] | Sequence[str],
               lrs: Mapping[str, float] | None = None, start: Sequence[float] | Sequence[Sequence[float]] | None = None,
               steps: int = 200, noise: Noise | str | None = None, schedule: str = "constant",
               base: str = WEB_LAB) -> str:
    """A link that opens the browser lab (``optimlab web``) with these settings.

    The page reads its state from the URL hash (``src/optimlab/web/static/app.js``)::

        #landscape=NAME&start=X,Y[;X,Y...]&steps=N&schedule=SPEC&opt=NAME:lr=LR[,KNOB=V...]...&noise=SPEC

    ``optimizers``: names (each at ``lrs[name]`` if given) or ``{name: {"lr": ..., knob: value}}``;
    ``noise``: a :class:`~optimlab.lab.noise.Noise` or its spec string (``sd=0.5,batch=1,seed=0``),
    written as ``noise=SPEC`` (omitted when there is none).
    """
    land = get_landscape(landscape)
    if start is None:
        start = land.start
    pts = [start] if isinstance(start[0], (int, float)) else list(start)
    parts = [f"landscape={quote(land.name)}",
             "start=" + ";".join(",".join(f"{float(v):g}" for v in p) for p in pts),
             f"steps={int(steps)}", f"schedule={quote(schedule, safe=':')}"]
    items = optimizers.items() if isinstance(optimizers, Mapping) else [(n, {}) for n in optimizers]
    for name, knobs in items:
        knobs = dict(knobs)
        if "lr" not in knobs and lrs and name in lrs:
            knobs["lr"] = lrs[name]
        name = get_optimizer(name).name
        kv = [f"lr={float(knobs.pop('lr')):g}"] if "lr" in knobs else []
        kv += [f"{k}={float(v):g}" for k, v in knobs.items()]
        parts.append(f"opt={quote(name)}" + (":" + ",".join(kv) if kv else ""))
    nz = parse_noise(noise)
    if nz is not None and nz.active:
        parts.append(f"noise={nz.spec()}")
    return base + "#" + "&".join(parts)


def parse_try_it(url: str) -> dict[str, Any]:
    """The settings of a :func:`try_it_url` link (its hash), as a web lab run request:
    ``{"landscape", "starts", "steps", "schedule", "optimizers": [{"name", "lr"?, knob: value}],
    "noise": {"sd", "batch", "seed"} | None}``. A ValueError names a field that does not parse."""
    from urllib.parse import unquote

    _, _, fragment = url.partition("#")
    if not fragment:
        raise ValueError(f"a try-it link has a '#...' part with the settings, got {url!r}")
    out: dict[str, Any] = {"schedule": "constant", "optimizers": [], "noise": None}
    for part in fragment.split("&"):
        key, sep, value = part.partition("=")
        value = unquote(value)
        if not sep:
            raise ValueError(f"try-it link field {part!r} is not KEY=VALUE")
        if key == "landscape":
            out["landscape"] = get_landscape(value).name
        elif key == "start":
            out["starts"] = [[float(v) for v in p.split(",")] for p in value.split(";") if p]
        elif key == "steps":
            out["steps"] = int(value)
        elif key == "schedule":
            out["schedule"] = value
        elif key == "opt":
            name, _, rest = value.partition(":")
            spec: dict[str, Any] = {"name": get_optimizer(name).name}
            for kv in filter(None, rest.split(",")):
                k, _, v = kv.partition("=")
                spec[k] = float(v)
            out["optimizers"].append(spec)
        elif key == "noise":
            nz = parse_noise(value)
            out["noise"] = None if nz is None else {"sd": nz.sd, "batch": nz.batch, "seed": nz.seed}
        else:
            raise ValueError(f"try-it link has an unknown field {key!r}")
    if "landscape" not in out or not out["optimizers"]:
        raise ValueError(f"a try-it link names a landscape and at least one optimizer, got {url!r}")
    out.setdefault("starts", [list(get_landscape(out["landscape"]).start)])
    out.setdefault("steps", 200)
    return out


#: the loss gap the web lab counts as converged by default (its ``tol``)
LINK_TOL = 1e-6


def link_numbers(url: str) -> list[dict[str, Any]]:
    """What the web lab's table shows for a try-it link, computed by the engine: per optimizer
    (in the link's order) and start, the final loss, steps to ``LINK_TOL``, the nearest minimum,
    whether it diverged and (on a landscape with a saddle) the step it escaped at."""
    return [dict(row) for row in _link_numbers(url)]


@lru_cache(maxsize=256)
def _link_numbers(url: str) -> tuple[dict[str, Any], ...]:
    # the web lab's fast path: engine.run's numbers bit for bit (tests/test_web_fastpath.py),
    # as plain float arithmetic; it runs the engine itself for noisy gradients
    from ...web.fastpath import run
    from ..metrics import rows

    req = parse_try_it(url)
    noise = req["noise"]
    spec = None if noise is None else Noise(noise["sd"], noise["batch"], noise["seed"])
    out = []
    for opt in req["optimizers"]:
        knobs = {k: v for k, v in opt.items() if k not in ("name", "lr")}
        r = run(req["landscape"], opt["name"], req["starts"], req["steps"], lr=opt.get("lr"),
                schedule=req["schedule"], noise=spec, **knobs)
        for row in rows(r, tol=LINK_TOL):
            keep = ["final_loss", "steps_to_tol", "nearest_minimum", "diverged"]
            if r.landscape.saddles:
                keep.append("steps_to_escape")
            out.append({"optimizer": opt["name"], **{k: row[k] for k in keep}})
    return tuple(out)


def numbers_text(numbers: list[dict[str, Any]]) -> str:
    """One line for the tour page: what the web lab will show for a link."""
    parts = []
    for n in numbers:
        text = f"{label(n['optimizer'])}: " + ("diverged" if n["diverged"] else f"final loss {n['final_loss']:.6g}")
        if n["steps_to_tol"] >= 0:
            text += f", f - f* <= {LINK_TOL:g} at step {n['steps_to_tol']}"
        if n.get("steps_to_escape", -1) >= 0:
            text += f", left the saddle at step {n['steps_to_escape']}"
        parts.append(text)
    return "; ".join(parts)


def random_starts(n: int, box: tuple[tuple[float, float], tuple[float, float]], seed: int) -> Tensor:
    """``n`` starts drawn uniformly from ``box`` = ((x0, x1), (y0, y1)) with numpy ``default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    (x0, x1), (y0, y1) = box
    pts = np.stack([rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)], axis=1)
    return torch.from_numpy(pts)


def grid_starts(xs: Sequence[float], ys: Sequence[float]) -> Tensor:
    """Every (x, y) of the grid, x varying fastest within each y row."""
    X, Y = np.meshgrid(np.asarray(xs, float), np.asarray(ys, float), indexing="xy")
    return torch.from_numpy(np.stack([X.ravel(), Y.ravel()], axis=1))


def capped_steps(steps_to_tol: Tensor, budget: int) -> np.ndarray:
    """Steps to tolerance as floats, a run that never got there counted as ``budget + 1``."""
    s = steps_to_tol.double().numpy()
    return np.where(s >= 0, s, budget + 1.0)


def log_gap(gap: Tensor, diverged: Tensor, floor: float = 1e-16, ceiling: float = 1e6) -> np.ndarray:
    """``log10(f - f*)`` clipped to [floor, ceiling]; a diverged run counts as the ceiling."""
    g = gap.double().numpy()
    g = np.where(diverged.numpy() | ~np.isfinite(g), ceiling, np.clip(g, floor, ceiling))
    return np.log10(g)


def crossings(path: Tensor, axis: int, centre: float) -> np.ndarray:
    """How often each trajectory crosses ``coordinate[axis] = centre`` (sign changes of
    ``w_t[axis] - centre``; exact zeros are skipped)."""
    d = (path[:, :, axis] - centre).numpy()
    s = np.sign(d)
    out = np.zeros(d.shape[1])
    last = np.zeros(d.shape[1])
    for row in s:
        out += (row != 0) & (last != 0) & (row != last)
        last = np.where(row != 0, row, last)
    return out


def flip_fraction(path: Tensor, axis: int) -> np.ndarray:
    """The fraction of consecutive steps whose component along ``axis`` changes sign."""
    d = (path[1:, :, axis] - path[:-1, :, axis]).numpy()
    s = np.sign(d)
    flips = (s[1:] * s[:-1]) < 0
    return flips.mean(axis=0)


def tuned_lr(values: np.ndarray, lrs: Sequence[float], lower_is_better: bool = True) -> tuple[int, float]:
    """The index and value of the best learning rate by the median of ``values`` ``(L, S)``."""
    med = np.median(values, axis=1)
    i = int(np.argmin(med) if lower_is_better else np.argmax(med))
    return i, float(lrs[i])


def label(name: str) -> str:
    return get_optimizer(name).label


def colour(name: str) -> str:
    """The optimizer's one colour (the catalogue's)."""
    from ... import catalogue

    return catalogue.colour(name)
