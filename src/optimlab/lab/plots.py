"""Figures of the lab (matplotlib, object API: no pyplot state, safe in threads and tests).

Every function returns a ``matplotlib.figure.Figure``; save it with
``optimlab.lab._io.save_figure(fig, "name.png")`` (atomic). Colours are the Okabe-Ito palette
(Okabe & Ito, 2008, "Color Universal Design"), distinguishable with the common colour-vision
deficiencies; lines also differ in style where several share a panel. Contour plots draw the
landscape in light greys (low = white) so the coloured trajectories stay readable, with the
known minima as white stars and saddle points as crosses.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg", force=False)

import matplotlib.patches
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from torch import Tensor

from .. import catalogue
from .landscapes import Landscape, get_landscape

OKABE_ITO = ["#000000", "#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442"]
LINESTYLES = ["-", "--", "-.", ":"]
GREYS = ListedColormap(matplotlib.colormaps["Greys"](np.linspace(0.02, 0.55, 256)))


def colors_for(keys: Sequence[str]) -> dict[str, str]:
    """A colour per key: the optimizer's own colour where the key names one, else the next free one."""
    own = catalogue.colours()  # one colour per optimizer, the same in every figure and page
    out, used = {}, set()
    for k in keys:
        if k in own and own[k] not in used:
            out[k] = own[k]
            used.add(out[k])
    free = [c for c in OKABE_ITO if c not in used]
    for k in keys:
        if k not in out:
            out[k] = free.pop(0) if free else OKABE_ITO[len(out) % len(OKABE_ITO)]
    return out


def _grid(land: Landscape, n: int = 240) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    _, _, X, Y, Z = land.evaluate_grid(n)
    return X.numpy(), Y.numpy(), Z.numpy()


def _height(land: Landscape, Z: np.ndarray) -> tuple[np.ndarray, str]:
    """What the contour shows (:meth:`Landscape.plot_height`)."""
    if land.log_plot:
        return land.plot_height(Z), land.height_label
    return Z, "f(x, y)"


def draw_landscape(ax: Any, land: Landscape, levels: int = 30, colorbar: bool = True) -> None:
    X, Y, Z = _grid(land)
    H, label = _height(land, Z)
    cs = ax.contourf(X, Y, H, levels=levels, cmap=GREYS)
    ax.contour(X, Y, H, levels=levels, colors="#808080", linewidths=0.4, alpha=0.6)
    if colorbar:
        ax.figure.colorbar(cs, ax=ax, shrink=0.85, label=label)
    for i, (mx, my) in enumerate(land.minima):
        ax.plot(mx, my, marker="*", markersize=14, markerfacecolor="white", markeredgecolor="black",
                linestyle="none", zorder=5, label="known minimum" if i == 0 else None)
    for i, (sx, sy) in enumerate(land.saddles):
        ax.plot(sx, sy, marker="X", markersize=10, markerfacecolor="white", markeredgecolor="black",
                linestyle="none", zorder=5, label="saddle point" if i == 0 else None)
    (x0, x1), (y0, y1) = land.window
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("x")
    ax.set_ylabel("y")


def _paths(traces: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    return {k: torch.as_tensor(v).detach().double().numpy() for k, v in traces.items()}


def contour(landscape: str | Landscape, paths: Mapping[str, Tensor], title: str | None = None,
            colors: Mapping[str, str] | None = None, figsize: tuple[float, float] = (8.0, 6.2)) -> Figure:
    """Contour plot of a landscape with trajectories ``{label: (T + 1, 2) path}``."""
    land = get_landscape(landscape)
    fig = Figure(figsize=figsize)
    ax = fig.add_subplot()
    draw_landscape(ax, land)
    colors = dict(colors or colors_for(list(paths)))
    for i, (label, p) in enumerate(_paths(paths).items()):
        ls = LINESTYLES[i // 7 % len(LINESTYLES)]
        ax.plot(p[:, 0], p[:, 1], color=colors[label], linestyle=ls, linewidth=1.6, label=label, zorder=3)
        ax.plot(p[0, 0], p[0, 1], "o", color=colors[label], markersize=6, zorder=4)
        last = p[np.isfinite(p).all(axis=1)]
        if len(last):
            ax.plot(last[-1, 0], last[-1, 1], "s", color=colors[label], markeredgecolor="white", markersize=7, zorder=4)
    ax.set_title(title or f"{land.name}: trajectories (circle = start, square = end)")
    ax.legend(loc="best", fontsize=8, framealpha=0.9)
    return fig


def gallery(names: Sequence[str] | None = None) -> Figure:
    """Every landscape's contour in one figure, minima as stars, saddles as crosses, start as a dot."""
    from .landscapes import LANDSCAPES

    names = list(names or LANDSCAPES)
    cols = 4
    rows_ = math.ceil(len(names) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.6 * rows_))
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows_, cols, i + 1)
        land = get_landscape(name)
        draw_landscape(ax, land, levels=25, colorbar=False)
        ax.plot(*land.start, "o", color=OKABE_ITO[5], markersize=7)
        ax.set_title(f"{name}{'  (log scale)' if land.log_plot else ''}", fontsize=10)
    fig.suptitle("optimlab landscapes: known minima (stars), saddles (crosses), default start (dot); light = low")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig


def surface(landscape: str | Landscape, paths: Mapping[str, Tensor], title: str | None = None,
            colors: Mapping[str, str] | None = None) -> Figure:
    """3-D surface of a landscape with trajectories lifted onto it."""
    land = get_landscape(landscape)
    X, Y, Z = _grid(land, 120)
    H, zlabel = _height(land, Z)
    fig = Figure(figsize=(8.0, 6.5))
    ax = fig.add_subplot(projection="3d")
    ax.plot_surface(X, Y, H, cmap="cividis", alpha=0.55, linewidth=0, antialiased=True, rstride=2, cstride=2)
    colors = dict(colors or colors_for(list(paths)))
    for label, p in _paths(paths).items():
        inside = land.in_window(torch.as_tensor(p)).numpy() & np.isfinite(p).all(axis=1)
        q = p[inside]
        if not len(q):
            continue
        with torch.no_grad():
            f = land.value(torch.as_tensor(q)).numpy()
        h = land.plot_height(f)  # the surface's height
        ax.plot(q[:, 0], q[:, 1], h, color=colors[label], linewidth=2.0, label=label, zorder=10)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_zlabel(zlabel)
    ax.view_init(elev=40, azim=-60)
    ax.set_title(title or f"{land.name}: loss surface with trajectories")
    ax.legend(loc="upper left", fontsize=8)
    return fig


def loss_curves(losses: Mapping[str, Tensor], f_star: float = 0.0, title: str = "loss vs step",
                colors: Mapping[str, str] | None = None, ylabel: str | None = None, first_step: int = 0,
                styles: Mapping[str, str] | None = None) -> Figure:
    """``f(w_t) - f*`` against the step ``t = first_step, first_step + 1, ...``, log scale."""
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.add_subplot()
    colors = dict(colors or colors_for(list(losses)))
    for i, (label, loss) in enumerate(losses.items()):
        gap = torch.as_tensor(loss).double().numpy() - f_star
        gap = np.where(np.isfinite(gap), np.maximum(gap, 1e-300), np.nan)
        ls = (styles or {}).get(label, LINESTYLES[i // 7 % 4])
        ax.plot(np.arange(first_step, first_step + len(gap)), gap, color=colors[label], linestyle=ls, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel or ("loss - minimum" if f_star else "loss"))
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def lr_sweep(lrs: Tensor, final: Mapping[str, Tensor], diverged: Mapping[str, Tensor] | None = None,
             title: str = "final loss vs learning rate", ylabel: str = "final loss - minimum (median over starts)",
             colors: Mapping[str, str] | None = None) -> Figure:
    """Final loss against the learning rate (log-log), one curve per optimizer; diverged = x."""
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.add_subplot()
    colors = dict(colors or colors_for(list(final)))
    x = torch.as_tensor(lrs).double().numpy()
    for label, y in final.items():
        y = torch.as_tensor(y).double().numpy()
        ok = np.isfinite(y)
        ax.plot(x[ok], np.maximum(y[ok], 1e-300), "o-", color=colors[label], label=label, markersize=4)
        if diverged is not None:
            d = torch.as_tensor(diverged[label]).numpy().astype(bool)
            if d.any():
                top = np.nanmax(np.where(ok, y, np.nan)) if ok.any() else 1.0
                ax.plot(x[d], np.full(d.sum(), max(top, 1e-300) * 3), "x", color=colors[label], markersize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(ylabel)
    ax.set_title(title + ("  (x = diverged)" if diverged is not None else ""))
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def basin_map(landscape: str | Landscape, reached: Mapping[str, Tensor], xs: Tensor, ys: Tensor,
              title: str | None = None) -> Figure:
    """Panels per optimizer: each start on the ``len(ys) x len(xs)`` grid coloured by the minimum
    it reached (index into ``landscape.minima``; -1 = diverged / none within reach, grey)."""
    land = get_landscape(landscape)
    k = len(reached)
    cols = min(k, 4)
    rows_ = math.ceil(k / cols)
    fig = Figure(figsize=(3.6 * cols + 1.2, 3.4 * rows_ + 0.8))
    m = len(land.minima)
    palette = ["#BBBBBB"] + [OKABE_ITO[1:][i % 7] for i in range(m)]
    cmap = ListedColormap(palette)
    (x0, x1), (y0, y1) = land.window
    axes = [fig.add_subplot(rows_, cols, i + 1) for i in range(k)]
    for ax, (label, idx) in zip(axes, reached.items()):
        img = torch.as_tensor(idx).reshape(len(ys), len(xs)).numpy() + 1
        ax.imshow(img, origin="lower", extent=(float(xs[0]), float(xs[-1]), float(ys[0]), float(ys[-1])),
                  cmap=cmap, vmin=-0.5, vmax=m + 0.5, interpolation="nearest", aspect="auto")
        for i, (mx, my) in enumerate(land.minima):
            ax.plot(mx, my, "*", markersize=12, markerfacecolor=palette[i + 1], markeredgecolor="black")
        ax.set_title(label, fontsize=10)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_xlabel("x start")
        ax.set_ylabel("y start")
    handles = [matplotlib.patches.Patch(color=palette[0], label="diverged / no minimum")]
    handles += [matplotlib.patches.Patch(color=palette[i + 1], label=f"minimum {i}: ({mx:.2f}, {my:.2f})")
                for i, (mx, my) in enumerate(land.minima)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=8)
    fig.suptitle(title or f"{land.name}: which minimum each start reaches")
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    return fig


def effective_lr(series: Mapping[str, Tensor], title: str = "effective per-parameter learning rate",
                 colors: Mapping[str, str] | None = None) -> Figure:
    """``|step_i| / |grad_i|`` per coordinate against the step; ``series`` maps label -> ``(T, 2)``."""
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.add_subplot()
    colors = dict(colors or colors_for(list(series)))
    for label, s in series.items():
        s = torch.as_tensor(s).double().numpy()
        for j, coord in enumerate("xy"):
            ax.plot(np.arange(1, len(s) + 1), s[:, j], color=colors[label], linestyle=LINESTYLES[j],
                    label=f"{label}, {coord}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("|step| / |gradient|  (per coordinate)")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def ewma_figure(series: Tensor, betas: Sequence[float], truth: Tensor | None = None,
                title: str = "EWMA of a noisy series") -> Figure:
    """The EWMA of ``series`` for several betas, with (left) and without (right) bias correction."""
    from ..ewma import ewma_series

    fig = Figure(figsize=(12.0, 4.6))
    first = fig.add_subplot(1, 2, 1)
    axes = [first, fig.add_subplot(1, 2, 2, sharey=first)]
    t = np.arange(1, len(series) + 1)
    colors = OKABE_ITO[1:]
    for ax, corrected in zip(axes, (True, False)):
        ax.plot(t, series.numpy(), ".", color="#999999", markersize=3, label="noisy data")
        if truth is not None:
            ax.plot(t, truth.numpy(), color="black", linewidth=1, linestyle=":", label="true signal")
        for i, beta in enumerate(betas):
            avg = ewma_series(series, beta, bias_correction=corrected).numpy()
            ax.plot(t, avg, color=colors[i % len(colors)], linestyle=LINESTYLES[i % 4], linewidth=1.8,
                    label=f"beta = {beta}")
        ax.set_title("with bias correction  V_t / (1 - beta^t)" if corrected else "without bias correction  V_t")
        ax.set_xlabel("t")
        ax.set_ylabel("value")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def animate(landscape: str | Landscape, paths: Mapping[str, Tensor], out_path: str, frames: int = 40,
            fps: int = 10, title: str | None = None) -> str:
    """An animated GIF of trajectories drawn step by step, written with matplotlib's ``PillowWriter``.

    The landscape is an image (``imshow``) with a few contour lines, and each frame is drawn once
    (``writer.grab_frame()`` in a loop, not ``FuncAnimation``, which draws every frame twice).
    """
    from matplotlib.animation import PillowWriter
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from ._io import atomic_write

    land = get_landscape(landscape)
    fig = Figure(figsize=(6.0, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    X, Y, Z = _grid(land, 160)
    H, _ = _height(land, Z)
    (x0, x1), (y0, y1) = land.window
    ax.imshow(H, origin="lower", extent=(x0, x1, y0, y1), cmap=GREYS, aspect="auto", interpolation="bilinear")
    ax.contour(X, Y, H, levels=12, colors="#808080", linewidths=0.4)
    for mx, my in land.minima:
        ax.plot(mx, my, "*", markersize=12, markerfacecolor="white", markeredgecolor="black")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    data = _paths(paths)
    colors = colors_for(list(data))
    lines = {k: ax.plot([], [], color=colors[k], linewidth=1.8, label=k)[0] for k in data}
    heads = {k: ax.plot([], [], "o", color=colors[k], markersize=6)[0] for k in data}
    ax.legend(loc="best", fontsize=7)
    steps = max(len(p) for p in data.values()) - 1
    marks = np.unique(np.linspace(0, steps, frames).round().astype(int))
    fig.tight_layout()

    def write(tmp: str) -> None:
        writer = PillowWriter(fps=fps)
        with writer.saving(fig, tmp, dpi=72):
            for t in marks:
                for k, p in data.items():
                    q = p[: t + 1]
                    lines[k].set_data(q[:, 0], q[:, 1])
                    heads[k].set_data(q[-1:, 0], q[-1:, 1])
                ax.set_title(f"{title or land.name}  (step {t})")
                writer.grab_frame()

    atomic_write(out_path, write)
    return out_path
