"""The tour's HTML page: one self-contained file (figures embedded as base64, no scripts)."""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any

import torch

from .. import _io
from ..verdicts import LEVEL, MIN_RUNS
from .core import REPO, Section, link_numbers, numbers_text

CSS = """body{font-family:system-ui,sans-serif;max-width:1050px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em} section{border-top:2px solid #ddd;margin-top:2em;padding-top:1em}
blockquote{border-left:4px solid #56B4E9;margin:0;padding:.3em 1em;background:#f4f9fc}
img{max-width:100%;display:block;margin:1em auto} table{border-collapse:collapse;margin:.6em 0;width:100%}
td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;font-size:.88em;vertical-align:top}
.v{color:#fff;padding:.1em .5em;border-radius:4px;white-space:nowrap}
.holds{background:#009E73} .does-not-hold{background:#D55E00} .inconclusive{background:#777}
.setup{color:#444;font-size:.93em} .note{color:#555;font-size:.9em} .src{color:#777;font-size:.85em}"""


def _embed(name: str, fig: Any, out: Path) -> str:
    if isinstance(fig, (str, Path)):
        data, mime = Path(fig).read_bytes(), "image/gif"
    else:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        data, mime = buf.getvalue(), "image/png"
        _io.atomic_write(out / name, lambda tmp: Path(tmp).write_bytes(data))
    return f'<img alt="{html.escape(name)}" src="data:{mime};base64,{base64.b64encode(data).decode()}">'


def badge(verdict: str) -> str:
    return f"<span class='v {verdict.replace(' ', '-')}'>{html.escape(verdict)}</span>"


def _where(c) -> str:
    if not c.where:
        return ""
    w = c.where
    return (f"<br><span class='note'>holds in {w['holds_in']} of {w['settings']} settings ({w['fraction']:.0%}; "
            f"{w['ties']} tied) over {html.escape(str(w.get('over', 'settings')))}</span>")


def render(sections: list[Section], out: Path, seconds: float, plan: str) -> str:
    e = html.escape
    plan_text = "without the real-task section" if plan == "none" else f"{e(plan)} real-task plan"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>optimlab tour</title><style>{CSS}</style>"
             "</head><body>", "<h1>optimlab tour: the seeds' claims, measured</h1>",
             f"<p>Each claim of the seed documents is a pre-declared, quantified hypothesis about a population of "
             f"settings (starts, learning rates, betas, seeds). The lab's batched engine runs that population; the "
             f"effect gets a {LEVEL:.0%} confidence interval (percentile bootstrap with a fixed seed, Wilson for a "
             f"proportion, exact for identities), and the verdict follows from the interval alone: "
             f"{badge('holds')} if it lies wholly on the predicted side, {badge('does not hold')} if wholly on the "
             f"other, {badge('inconclusive')} if it contains the threshold (a tie is inconclusive). Claims rest on "
             f"at least {MIN_RUNS} runs unless they say why fewer suffice. Comparisons between optimizers use each "
             f"one's tuned lr or the same lr grid, as each section declares. Contours and surfaces follow seed 002's "
             f"colours: yellow = high, blue = low. Built in {seconds:.0f} s with torch {e(torch.__version__)} "
             f"({plan_text}). 'Try it' links open the browser lab (<code>optimlab web</code>) with the "
             f"section's settings.</p>",
             "<table><tr><th>section</th><th>claim</th><th>effect [95% CI]</th><th>n</th><th>verdict</th></tr>"]
    for s in sections:
        for c in s.claims:
            parts.append(f"<tr><td><a href='#{s.key}'>{e(s.title)}</a></td><td>{e(c.hypothesis)}</td>"
                         f"<td>{e(c.interval_text)}</td><td>{c.n}</td><td>{badge(c.verdict)}</td></tr>")
    parts.append("</table>")
    for s in sections:
        parts.append(f"<section id='{s.key}'><h2>{e(s.title)}</h2><blockquote>{e(s.quote)}<br>"
                     f"<span class='src'>seed {e(s.seed_file)}</span></blockquote>")
        parts.append(f"<p class='setup'><b>Experiment.</b> {e(s.experiment)}</p>")
        parts += [_embed(name, fig, out) for name, fig in s.figures if fig is not None]
        if s.table:
            header, rows = s.table
            parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in r) + "</tr>" for r in rows]
            parts.append("</table>")
        if s.claims:
            parts.append("<table><tr><th>hypothesis (pre-declared)</th><th>metric; population</th><th>n</th>"
                         "<th>effect [95% CI]; rule</th><th>verdict</th></tr>")
            for c in s.claims:
                why = f"<br><span class='note'>n: {e(c.why_n)}</span>" if c.why_n and c.n < MIN_RUNS else ""
                parts.append(f"<tr><td>{e(c.hypothesis)}</td><td>{e(c.metric)}; <i>{e(c.population)}</i>{why}</td>"
                             f"<td>{c.n}</td><td>{e(c.interval_text)}<br><span class='note'>{e(c.rule_text)}; "
                             f"{e(c.method)}</span>{_where(c)}</td><td>{badge(c.verdict)}</td></tr>")
            parts.append("</table>")
        parts += [f"<p class='note'>{e(n)}</p>" for n in s.notes]
        parts += [f"<p>Try it: <a href='{e(url)}'>{e(text)}</a><br><span class='note'>the lab's table will show: "
                  f"{e(numbers_text(link_numbers(url)))}</span></p>" for text, url in s.links]
        parts += [f"<p>See also: <a href='{e(os.path.relpath(REPO / path, out.resolve()))}'>{e(text)}</a></p>"
                  for text, path in s.see_also]
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def coverage_markdown(summary: dict) -> str:
    """The coverage table of docs/tour.md: every claim -> its section, verdict and interval."""
    lines = ["| seed claim (section) | tested hypothesis | n | effect [95% CI] | verdict |", "|---|---|---|---|---|"]
    for s in summary["sections"]:
        for c in s["claims"]:
            if c["method"].startswith("exact"):
                ci = f"{c['effect']:.3g} (exact)"
            else:
                ci = f"{c['effect']:.3g} [{c['low']:.3g}, {c['high']:.3g}]"
            hyp = c["hypothesis"].replace("|", "/")
            lines.append(f"| {s['title']} (`{s['key']}`) | {hyp} | {c['n']} | {ci} | {c['verdict']} |")
    return "\n".join(lines) + "\n"
