"""The tour's figures, in the seed's colour convention (002, "Contour Plots": yellow / orange =
higher, blue / purple = lower): matplotlib's ``viridis`` runs from dark blue-purple (low) to yellow
(high). Minima are numbered and labelled (global = deep, the others local = shallow), a run that
leaves the window is marked with a cross where it left, and trajectories keep one colour per
optimizer (``optimlab.catalogue.colour``) with a white halo so they read on the map.
"""

from __future__ import annotations

import functools
import math
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from matplotlib import patheffects
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from torch import Tensor

from .. import plots
from ..landscapes import Landscape, get_landscape

_DRAW = [True]


@contextmanager
def disabled() -> Iterator[None]:
    """Within this block the figure functions return None (the numbers only: fast tests)."""
    _DRAW.append(False)
    try:
        yield
    finally:
        _DRAW.pop()


def figure(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Make ``fn`` return None while figures are :func:`disabled`."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs) if _DRAW[-1] else None
    return wrapper


SEED_CMAP = "viridis"  # low = dark blue / purple, high = yellow (the seed's convention)
TWO = ListedColormap(["#000000", "#FF8C00"])  # stayed / escaped: black and bright orange on the map
HALO = [patheffects.withStroke(linewidth=3.2, foreground="white")]


def minimum_labels(land: Landscape) -> list[str]:
    """"1 deep (global)", "2 shallow (local)", ... for the landscape's known minima."""
    n_global = land.global_minima or len(land.minima)
    out = []
    for i in range(len(land.minima)):
        kind = ("deep (global)" if n_global < len(land.minima) else "global") if i < n_global else "shallow (local)"
        out.append(f"{i + 1} {kind}")
    return out


def _height(land: Landscape, Z: np.ndarray) -> tuple[np.ndarray, str]:
    if land.log_plot:
        return np.log10(Z - min(float(np.nanmin(Z)), land.min_value) + 1e-3), "log10(f - min f + 0.001)"
    return Z, "f(x, y)"


def draw_map(ax: Any, land: Landscape, colorbar: bool = True, levels: int = 24) -> None:
    _, _, X, Y, Z = land.evaluate_grid(200)
    H, lab = _height(land, Z.numpy())
    cs = ax.contourf(X.numpy(), Y.numpy(), H, levels=levels, cmap=SEED_CMAP)
    ax.contour(X.numpy(), Y.numpy(), H, levels=levels, colors="k", linewidths=0.3, alpha=0.35)
    if colorbar:
        ax.figure.colorbar(cs, ax=ax, shrink=0.85, label=lab + "  (yellow = high, blue = low)")
    for text, (mx, my) in zip(minimum_labels(land), land.minima):
        ax.plot(mx, my, marker="*", markersize=15, markerfacecolor="white", markeredgecolor="black", zorder=6,
                linestyle="none")
        ax.annotate(text, (mx, my), xytext=(6, 8), textcoords="offset points", fontsize=8, color="black", zorder=7,
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))
    for sx, sy in land.saddles:
        ax.plot(sx, sy, marker="X", markersize=10, markerfacecolor="white", markeredgecolor="black", zorder=6)
        ax.annotate("saddle", (sx, sy), xytext=(6, -12), textcoords="offset points", fontsize=8, zorder=7,
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))
    (x0, x1), (y0, y1) = land.window
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("x")
    ax.set_ylabel("y")


def _legend_below(ax: Any, n: int) -> None:
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.11), ncol=min(n, 3), fontsize=8, frameon=False)


def _inside(land: Landscape, p: np.ndarray) -> tuple[np.ndarray, int | None]:
    """The part of a path before it first leaves the window (or becomes non-finite), and that step."""
    ok = np.isfinite(p).all(axis=1) & land.in_window(torch.as_tensor(np.nan_to_num(p, nan=1e300))).numpy()
    bad = np.nonzero(~ok)[0]
    if len(bad) == 0:
        return p, None
    return p[: bad[0]], int(bad[0])


def draw_paths(ax: Any, land: Landscape, paths: Mapping[str, Tensor], colours: Mapping[str, str]) -> None:
    for i, (name, path) in enumerate(paths.items()):
        p = torch.as_tensor(path).double().numpy()
        q, left = _inside(land, p)
        c = colours[name]
        ls = plots.LINESTYLES[i // 7 % 4]
        lab = name if left is None else f"{name} (left the window at step {left})"
        ax.plot(q[:, 0], q[:, 1], color=c, linestyle=ls, linewidth=1.7, label=lab, zorder=4, path_effects=HALO)
        ax.plot(p[0, 0], p[0, 1], "o", color=c, markeredgecolor="white", markersize=7, zorder=5)
        if len(q):
            end = "X" if left is not None else "s"
            ax.plot(q[-1, 0], q[-1, 1], end, color="#D00000" if left is not None else c, markeredgecolor="white",
                    markersize=10 if left is not None else 7, zorder=5)


@figure
def contour(landscape: str | Landscape, paths: Mapping[str, Tensor], colours: Mapping[str, str], title: str,
            figsize: tuple[float, float] = (8.0, 6.0)) -> Figure:
    """Trajectories on the landscape's contour map (circle = start, square = end, red cross = where
    a run left the window)."""
    land = get_landscape(landscape)
    fig = Figure(figsize=figsize)
    ax = fig.add_subplot()
    draw_map(ax, land)
    draw_paths(ax, land, paths, colours)
    ax.set_title(title, fontsize=10)
    _legend_below(ax, len(paths))
    fig.tight_layout()
    return fig


@figure
def surface(landscape: str | Landscape, paths: Mapping[str, Tensor], colours: Mapping[str, str], title: str) -> Figure:
    """3-D surface (viridis: yellow high, blue low) beside the contour map, trajectories on both."""
    land = get_landscape(landscape)
    _, _, X, Y, Z = land.evaluate_grid(90)
    H, zlab = _height(land, Z.numpy())
    fig = Figure(figsize=(13.0, 5.4))
    ax3 = fig.add_subplot(1, 2, 1, projection="3d")
    ax3.plot_surface(X.numpy(), Y.numpy(), H, cmap=SEED_CMAP, alpha=0.85, linewidth=0, antialiased=True)
    zmin = min(float(Z.min()), land.min_value)
    for name, path in paths.items():
        q, _ = _inside(land, torch.as_tensor(path).double().numpy())
        with torch.no_grad():
            f = land.value(torch.as_tensor(q)).numpy()
        h = np.log10(np.maximum(f - zmin, 0) + 1e-3) if land.log_plot else f
        ax3.plot(q[:, 0], q[:, 1], h, color=colours[name], linewidth=2.2, zorder=10, path_effects=HALO)
    for text, (mx, my) in zip(minimum_labels(land), land.minima):
        with torch.no_grad():
            f = float(land.value(torch.tensor([mx, my], dtype=torch.float64)))
        h = math.log10(max(f - zmin, 0) + 1e-3) if land.log_plot else f
        ax3.scatter([mx], [my], [h], marker="*", s=120, color="white", edgecolor="black", zorder=11)
        ax3.text(mx, my, h, "  " + text, fontsize=8, zorder=12)
    ax3.set_xlabel("x")
    ax3.set_ylabel("y")
    ax3.set_zlabel(zlab)
    ax3.view_init(elev=35, azim=-60)
    ax3.set_title("3-D loss surface", fontsize=10)
    ax = fig.add_subplot(1, 2, 2)
    draw_map(ax, land)
    draw_paths(ax, land, paths, colours)
    _legend_below(ax, len(paths))
    ax.set_title("contour plot (the surface seen from above)", fontsize=10)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


@figure
def heatmap(values: np.ndarray, xs: Sequence[float], ys: Sequence[float], xlabel: str, ylabel: str, title: str,
            cbar: str, centre: float | None = 0.0, fmt: str = "{:.2f}") -> Figure:
    """A map of an effect over a grid of settings ``values[i_y, i_x]``, each cell annotated; a
    diverging colour scale centred on ``centre`` (where the claim's effect changes sign)."""
    v = np.asarray(values, dtype=float)
    fig = Figure(figsize=(1.0 + 0.9 * max(len(xs), 4), 1.6 + 0.55 * max(len(ys), 3)))
    ax = fig.add_subplot()
    if centre is None:
        im = ax.imshow(v, origin="lower", aspect="auto", cmap=SEED_CMAP)
    else:
        span = max(float(np.nanmax(np.abs(v - centre))), 1e-12)
        im = ax.imshow(v, origin="lower", aspect="auto", cmap="PuOr_r", vmin=centre - span, vmax=centre + span)
    for i in range(v.shape[0]):
        for j in range(v.shape[1]):
            ax.text(j, i, fmt.format(v[i, j]), ha="center", va="center", fontsize=8, color="black",
                    bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.6))
    ax.set_xticks(range(len(xs)), [f"{x:.3g}" for x in xs], fontsize=8)
    ax.set_yticks(range(len(ys)), [f"{y:.3g}" for y in ys], fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label=cbar)
    fig.tight_layout()
    return fig


@figure
def start_map(landscape: str | Landscape, starts: Tensor, values: np.ndarray, title: str, cbar: str,
              labels: Sequence[str] | None = None) -> Figure:
    """Start points coloured by a per-start value (e.g. escaped or not), over the contour map."""
    land = get_landscape(landscape)
    values = np.atleast_2d(values)
    k = values.shape[0]
    fig = Figure(figsize=(5.6 * k, 4.6))
    for i in range(k):
        ax = fig.add_subplot(1, k, i + 1)
        draw_map(ax, land, colorbar=False)
        sc = ax.scatter(starts[:, 0].numpy(), starts[:, 1].numpy(), c=values[i], cmap=TWO, vmin=-1, vmax=1,
                        s=22, edgecolors="white", linewidths=0.4, zorder=8)
        ax.set_title(labels[i] if labels else title, fontsize=10)
    fig.colorbar(sc, ax=fig.axes, label=cbar, shrink=0.85)
    fig.suptitle(title)
    return fig


@figure
def lines(xs: Mapping[str, np.ndarray], ys: Mapping[str, np.ndarray], colours: Mapping[str, str], title: str,
          xlabel: str, ylabel: str, logx: bool = False, logy: bool = False,
          bands: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
          styles: Mapping[str, str] | None = None, vline: float | None = None,
          vspan: tuple[float, float] | None = None) -> Figure:
    fig = Figure(figsize=(7.5, 4.6))
    ax = fig.add_subplot()
    if vline is not None:
        ax.axvline(vline, color="grey", linestyle=":")
    if vspan is not None:
        ax.axvspan(*vspan, color="#F0E442", alpha=0.25)
    for i, (k, y) in enumerate(ys.items()):
        x = xs[k]
        ax.plot(x, y, color=colours[k], linestyle=(styles or {}).get(k, plots.LINESTYLES[i // 7 % 4]), label=k,
                marker="o" if len(x) < 30 else None, markersize=4)
        if bands and k in bands:
            ax.fill_between(x, bands[k][0], bands[k][1], color=colours[k], alpha=0.15)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def animate(landscape: str | Landscape, paths: Mapping[str, Tensor], colours: Mapping[str, str], out_path: str,
            title: str, frames: int = 36, fps: int = 8) -> str:
    """A GIF of the trajectories on the seed-coloured map; frames at log-spaced steps (1, 2, 3, 5,
    8, ...), so the fast early motion and the slow late settling both get frames."""
    from matplotlib.animation import PillowWriter
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from .._io import atomic_write

    land = get_landscape(landscape)
    fig = Figure(figsize=(6.0, 4.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    draw_map(ax, land, colorbar=False, levels=16)
    data = {k: torch.as_tensor(v).double().numpy() for k, v in paths.items()}
    trace = {k: ax.plot([], [], color=colours[k], linewidth=1.8, label=k, path_effects=HALO)[0] for k in data}
    heads = {k: ax.plot([], [], "o", color=colours[k], markeredgecolor="white", markersize=7)[0] for k in data}
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    steps = max(len(p) for p in data.values()) - 1
    marks = log_steps(steps, frames)

    def write(tmp: str) -> None:
        writer = PillowWriter(fps=fps)
        with writer.saving(fig, tmp, dpi=70):
            for t in marks:
                for k, p in data.items():
                    q, _ = _inside(land, p[: t + 1])
                    trace[k].set_data(q[:, 0], q[:, 1])
                    heads[k].set_data(q[-1:, 0], q[-1:, 1])
                ax.set_title(f"{title}  (step {t})", fontsize=9)
                writer.grab_frame()

    atomic_write(out_path, write)
    return out_path


def log_steps(steps: int, frames: int) -> list[int]:
    """About ``frames`` distinct steps from 0 to ``steps``, log-spaced (then the last one)."""
    marks = np.unique(np.round(np.geomspace(1, steps + 1, frames)).astype(int) - 1)
    return [int(m) for m in marks] + ([steps] if marks[-1] != steps else [])
