"""Verdicts of the speed benchmarks: ratios of alternating samples with 95% intervals, and the
targets read from the intervals (met, MISSED, inconclusive, or void where the machine was
throttled while the cell was measured).

A ratio is ``median(numerator) / median(denominator)`` of samples taken in the same rounds of an
alternation; its interval is the paired percentile bootstrap over the rounds
(:func:`optimlab.lab.verdicts.bootstrap_ratio_of_medians`). A target is met only when its whole
interval lies on the good side of the bound, MISSED only when it lies wholly on the bad side
(:func:`optimlab.lab.verdicts.decide`). ``step_speed.py`` (``--check``, ``--strict``, ``--repeat``),
``state_arith.py --ceiling`` and ``fresh_grads.py`` print through these.
"""

from __future__ import annotations

import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
from optimlab.lab.verdicts import bootstrap_ratio_of_medians, decide  # noqa: E402

OUTCOMES = {"holds": "met", "does not hold": "MISSED", "inconclusive": "inconclusive"}
VOID = "void (machine throttled)"


def ratio_ci(numerator: list[float], denominator: list[float], scale: float = 1.0) -> tuple[float, float, float]:
    """``scale * median(numerator) / median(denominator)`` and its 95% interval: sample i of both
    sides is round i of the alternation, and the bootstrap resamples rounds
    (:func:`optimlab.lab.verdicts.bootstrap_ratio_of_medians`)."""
    value, low, high = bootstrap_ratio_of_medians(numerator, denominator)
    return scale * value, scale * low, scale * high


def ci_text(estimate, percent: bool = False) -> str:
    """``1.27 [1.22,1.33]`` (a ratio) or ``75% [72,78]`` (a percentage)."""
    value, low, high = estimate
    return f"{value:.0f}% [{low:.0f},{high:.0f}]" if percent else f"{value:.2f} [{low:.2f},{high:.2f}]"


def target_outcomes(rows: list[dict], targets: list[tuple]) -> list[tuple[dict, str, float, float, float, float, str]]:
    """``(row, column, bound, value, low, high, outcome)`` for each measured cell that has a target
    (``targets``: ``(algorithm, layout, column, bound)``, ``"*"`` for any; a negative bound is an
    upper one).

    The outcome reads the cell's 95% interval (``row["ci"][column]``; a column without one, such
    as the state's bytes, is exact: its interval is its value) through
    :func:`optimlab.lab.verdicts.decide`: "met" when the whole interval lies on the good side of
    the bound, "MISSED" when it lies wholly on the bad side, "inconclusive" when it contains the
    bound (an interval touching the bound included). A sampled column (one with an interval) of a
    cell measured while the machine was throttled (``row["void"]``) reads :data:`VOID` instead; a
    counted one (the state's bytes) is decided as ever."""
    out = []
    for row in rows:
        for algorithm, layout, column, bound in targets:
            if layout not in ("*", row["layout"]) or algorithm not in ("*", row["algorithm"]) or column not in row:
                continue
            value = row[column]
            low, high = row.get("ci", {}).get(column, (value, value))
            if row.get("void") and column in row.get("ci", {}):
                outcome = VOID
            else:
                outcome = OUTCOMES[decide(low, high, abs(bound), ">" if bound >= 0 else "<")]
            out.append((row, column, bound, value, low, high, outcome))
    return out


def check_targets(rows: list[dict], targets: list[tuple]) -> dict[str, int]:
    """Print each measured cell that has a target with its interval and outcome; return the
    number of cells per outcome ("met", "MISSED", "inconclusive", :data:`VOID`)."""
    counts = dict.fromkeys([*OUTCOMES.values(), VOID], 0)
    for row, column, bound, value, low, high, outcome in target_outcomes(rows, targets):
        counts[outcome] += 1
        shown = ci_text((value, low, high)) if column in row.get("ci", {}) else f"{value:.2f} (counted)"
        print(f"target {row['algorithm']} on layout {row['layout']}: {column} {shown} "
              f"({'>=' if bound >= 0 else '<='} {abs(bound):g}) {outcome}"
              + (f": {row['void']}" if outcome == VOID else ""))
    if counts[VOID]:
        print(f"{counts[VOID]} target(s) void: measured while the machine was throttled, neither met nor MISSED")
    return counts


def failures(counts: dict[str, int], strict: bool) -> int:
    """What ``--check`` fails on: the MISSED cells, and with ``--strict`` the inconclusive and the
    void ones too (``--strict`` asks for every target met, and a void one is not)."""
    return counts["MISSED"] + ((counts["inconclusive"] + counts.get(VOID, 0)) if strict else 0)


def summarize_runs(runs: list[list[dict]], strict: bool, targets: list[tuple]) -> int:
    """Per target cell over the runs: each run's value, and over the runs that were not void (not
    measured while the machine was throttled) their median and range and how many met, missed or
    could not decide it (each run by its own interval); the void runs are counted apart. Returns
    the number of cells that ``--check`` fails: a cell MISSED in any non-void run (``strict``: or
    inconclusive in any, or void in every run)."""
    cells: dict[tuple, list] = {}
    for rows in runs:
        for row, column, bound, value, _, _, outcome in target_outcomes(rows, targets):
            cells.setdefault((row["algorithm"], row["layout"], column, bound), []).append((value, outcome))
    print(f"over {len(runs)} runs, each a fresh process (a run's outcome from its own 95% interval; a void run "
          f"was measured while the machine was throttled and is not judged):")
    failed = 0
    for (algorithm, layout, column, bound), results in cells.items():
        judged = [v for v, outcome in results if outcome != VOID]
        counts = {o: sum(outcome == o for _, outcome in results) for o in [*OUTCOMES.values(), VOID]}
        failed += failures({**counts, VOID: 0}, strict) > 0 if judged else strict  # the judged runs decide
        spread = (f"median {statistics.median(judged):.2f}, min-max {min(judged):.2f}-{max(judged):.2f} of the "
                  f"{len(judged)} non-void; " if judged else "no non-void run; ")
        print(f"target {algorithm} on layout {layout}: {column} ({'>=' if bound >= 0 else '<='} {abs(bound):g}): "
              f"runs {', '.join(f'{v:.2f}' + (' (void)' if o == VOID else '') for v, o in results)}; {spread}"
              f"met in {counts['met']} of {len(judged)} (inconclusive {counts['inconclusive']}, MISSED "
              f"{counts['MISSED']}); void {counts[VOID]} of {len(results)}")
    return failed
