"""The tour's experiments as presets of the web lab (``GET /api/presets``, the page's preset menu).

Every section of the tour (``optimlab tour``, :mod:`optimlab.lab.tour`) links its experiment into
the lab (``Section.links``, written by :func:`optimlab.lab.tour.core.try_it_url`): a landscape,
start(s), steps, schedule, optimizers with their lr and knobs, and noise, in the page's hash
format. Several links carry numbers the tour computed (a tuned learning rate, a start picked from
a sweep), so the links are outputs of the tour, which takes minutes to build: the server does not
rebuild it. They are generated once from a built ``tour.json`` into the packaged file
``static/tour-presets.json``::

    optimlab tour --out out/tour && python -m optimlab.web.presets out/tour/tour.json

(``tests/test_lab_tour.py`` checks that the packaged file equals what the tour builds now), read
once when the app starts, and served as they are. ``optimlab serve --tour PATH`` serves the links
of another built ``tour.json`` instead.

Each link keeps the numbers the tour reports for it (``numbers``: per optimizer and start, the
final loss, the step it reached ``tol``, the nearest minimum, divergence and the saddle escape
step), so the page and its tests can show that a preset reproduces them.
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

PACKAGED = Path(__file__).parent / "static" / "tour-presets.json"


def from_tour(data: dict[str, Any]) -> dict[str, Any]:
    """The presets of a built tour (the contents of its ``tour.json``)."""
    from ..lab.tour.core import LINK_TOL

    sections = []
    for s in data["sections"]:
        links = [{"text": link["text"], "hash": link["url"].partition("#")[2], "numbers": link["numbers"]}
                 for link in s.get("links", [])]
        sections.append({"key": s["key"], "title": s["title"], "links": links})
    return {"plan": data.get("plan"), "tol": LINK_TOL, "sections": sections}


@lru_cache(maxsize=4)
def load(path: str | None = None) -> dict[str, Any]:
    """The presets: the packaged file, or those of the built ``tour.json`` at ``path``."""
    if path is None:
        return json.loads(PACKAGED.read_text())
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"--tour {path}: cannot read a tour.json ({exc})") from None
    if not isinstance(data, dict) or not all("links" in s for s in data.get("sections", [{}])):
        raise ValueError(f"--tour {path}: not a tour.json written by this version of optimlab tour "
                         "(its sections have no 'links'); rebuild it with optimlab tour")
    return from_tour(data)


def write(tour_json: str | Path, out: str | Path = PACKAGED) -> Path:
    """Write the presets of the built ``tour_json`` to ``out`` (default: the packaged file)."""
    from ..lab import _io

    presets = from_tour(json.loads(Path(tour_json).read_text()))
    return _io.write_text(Path(out), json.dumps(presets, indent=1, sort_keys=False) + "\n")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m optimlab.web.presets TOUR_JSON [OUT]")
    print(write(*sys.argv[1:]))
