"""Verdicts as measurements: one method for every claim of the tour.

A claim of the seeds is tested as a **pre-declared, quantified hypothesis**:

- a *metric* measured per run (e.g. "ended in the deep minimum", "steps to reach f - f* <= 1e-4"),
- an *effect* that compares it (a mean, a paired difference of means, a fraction, or an exact
  deterministic quantity), and the *direction* the seed's sentence predicts (``">"``, ``"<"`` a
  threshold, or ``"within"`` +-threshold for "behaves like"),
- the *population* of settings the sentence is about (starts, learning rates, betas, seeds), which
  the experiment samples widely.

The effect gets a 95% confidence interval and the verdict follows from the interval alone:

==================  ====================================================================
``holds``           the whole interval lies on the predicted side of the threshold
``does not hold``   the whole interval lies on the other side
``inconclusive``    the interval contains the threshold (a tie is always inconclusive)
==================  ====================================================================

Intervals: the percentile bootstrap of the mean (Efron & Tibshirani, 1993, ch. 13) with a fixed
seed, so the page is deterministic; for a paired comparison the bootstrap resamples the pairs
(the same start / lr / seed run by both optimizers), which keeps the pairing. A single proportion
uses the Wilson score interval (Wilson, 1927). An exact claim (an identity such as "beta = 0 is
plain gradient descent") has no sampling error: its interval is the measured value itself.

:func:`where_holds` gives, for a claim about a range of settings, the fraction of settings
(e.g. cells of an (lr, beta) grid) where the per-setting effect lies on the predicted side.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20251017  # the date of seed 002; any fixed seed makes the page reproducible
VERDICTS = ("holds", "does not hold", "inconclusive")
DIRECTIONS = (">", "<", "within")
MIN_RUNS = 100


def bootstrap_mean(values: Sequence[float] | np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                   seed: int = BOOTSTRAP_SEED, level: float = LEVEL) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` and its percentile-bootstrap interval.

    The resampling indices come from ``numpy.random.default_rng(seed)``, so the same values always
    give the same interval. Non-finite values are refused (decide what a diverged run counts as
    before calling).
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("values must hold at least one number")
    if not np.isfinite(x).all():
        raise ValueError("values must be finite (map diverged or unreached runs to a number first)")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    mean = float(x.mean())
    if x.size == 1 or np.all(x == x[0]):
        return mean, mean, mean
    low, high = _percentile_bootstrap(lambda i: x[i].mean(axis=1), x.size, resamples, seed, level)
    return mean, low, high


def bootstrap_ratio_of_medians(numerator: Sequence[float] | np.ndarray, denominator: Sequence[float] | np.ndarray,
                               resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                               level: float = LEVEL) -> tuple[float, float, float]:
    """``(ratio, low, high)``: ``median(numerator) / median(denominator)`` and its paired
    percentile-bootstrap interval (Efron & Tibshirani, 1993, ch. 13).

    Sample ``i`` of both sides must come from the same round (e.g. the i-th alternating timing of
    two optimizer steps): the bootstrap resamples whole rounds, both sides with the same indices,
    so what the rounds share (the machine's bandwidth at that moment) cancels in the ratio as it
    did in the measurement. Each resample takes ``len`` rounds with replacement; the interval is
    the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled ratios. Vectorised:
    2,000 resamples of 30 rounds take about a millisecond. Values must be finite and the
    denominator's positive (times, bandwidths).
    """
    a = np.asarray(numerator, dtype=np.float64).ravel()
    b = np.asarray(denominator, dtype=np.float64).ravel()
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"numerator and denominator must pair up round by round (the same number >= 1 of "
                         f"samples), got {a.size} and {b.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()) or (b <= 0).any():
        raise ValueError("numerator must be finite and denominator finite and > 0 (times, rates)")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples!r}")
    ratio = float(np.median(a) / np.median(b))
    if a.size == 1 or (np.all(a == a[0]) and np.all(b == b[0])):
        return ratio, ratio, ratio
    low, high = _percentile_bootstrap(lambda i: np.median(a[i], axis=1) / np.median(b[i], axis=1), a.size,
                                      resamples, seed, level)
    return ratio, low, high


def _percentile_bootstrap(statistic, size: int, resamples: int, seed: int, level: float) -> tuple[float, float]:
    """The percentile interval of ``statistic(idx)`` over ``resamples`` rows of indices drawn with
    replacement from ``range(size)`` (``idx`` has shape ``(resamples, size)``; seeded)."""
    idx = np.random.default_rng(seed).integers(0, size, size=(resamples, size))
    alpha = (1 - level) / 2
    low, high = np.quantile(statistic(idx), [alpha, 1 - alpha])
    return float(low), float(high)


def wilson(successes: int, n: int, level: float = LEVEL) -> tuple[float, float, float]:
    """``(p, low, high)``: a proportion and its Wilson score interval."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got successes={successes}, n={n}")
    z = _z(level)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return p, max(0.0, centre - half), min(1.0, centre + half)


def _z(level: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + level / 2)


def decide(low: float, high: float, threshold: float = 0.0, direction: str = ">") -> str:
    """The verdict from an interval: see the module docstring."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ValueError(f"need a finite interval with low <= high, got ({low}, {high})")
    if direction == ">":
        return "holds" if low > threshold else "does not hold" if high < threshold else "inconclusive"
    if direction == "<":
        return "holds" if high < threshold else "does not hold" if low > threshold else "inconclusive"
    t = abs(threshold)
    if -t < low and high < t:
        return "holds"
    return "does not hold" if (low > t or high < -t) else "inconclusive"


def where_holds(effects: Sequence[float] | np.ndarray, threshold: float = 0.0, direction: str = ">") -> dict[str, Any]:
    """Over settings (one effect per setting): how many lie on the predicted side, how many tie."""
    e = np.asarray(effects, dtype=np.float64).ravel()
    if direction == ">":
        yes, tie = e > threshold, e == threshold
    elif direction == "<":
        yes, tie = e < threshold, e == threshold
    else:
        yes, tie = np.abs(e) < abs(threshold), np.abs(e) == abs(threshold)
    return {"settings": int(e.size), "holds_in": int(yes.sum()), "ties": int(tie.sum()),
            "fraction": float(yes.mean()) if e.size else math.nan}


@dataclass
class Claim:
    """One tested hypothesis and its verdict (what ``tour.json`` holds per claim)."""

    key: str
    hypothesis: str
    metric: str
    population: str
    n: int
    effect: float
    low: float
    high: float
    threshold: float
    direction: str
    method: str
    verdict: str = ""
    why_n: str = ""
    where: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.n < MIN_RUNS and not self.why_n:
            raise ValueError(f"claim {self.key!r} has n = {self.n} < {MIN_RUNS} runs: say why fewer suffice (why_n)")
        self.verdict = decide(self.low, self.high, self.threshold, self.direction)

    @property
    def interval_text(self) -> str:
        if self.method.startswith("exact"):
            return f"{_fmt(self.effect)} (exact)"
        return f"{_fmt(self.effect)} [{_fmt(self.low)}, {_fmt(self.high)}]"

    @property
    def rule_text(self) -> str:
        if self.direction == "within":
            return f"holds if the interval lies within +-{_fmt(abs(self.threshold))}"
        return f"holds if the interval lies {'above' if self.direction == '>' else 'below'} {_fmt(self.threshold)}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _fmt(x: float) -> str:
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    return f"{x:.3g}" if 1e-3 <= abs(x) < 1e4 else f"{x:.2e}"


def mean_claim(key: str, values: Sequence[float] | np.ndarray, *, hypothesis: str, metric: str, population: str,
               threshold: float = 0.0, direction: str = ">", why_n: str = "", where: dict | None = None,
               details: dict | None = None, method: str | None = None) -> Claim:
    """A claim about the mean of per-run values (for a paired comparison: the per-pair differences)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    mean, low, high = bootstrap_mean(x)
    return Claim(key, hypothesis, metric, population, int(x.size), mean, low, high, threshold, direction,
                 method or f"percentile bootstrap of the mean, {BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}",
                 why_n=why_n, where=where, details=details or {})


def paired_claim(key: str, a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, **kw: Any) -> Claim:
    """``mean(a_i - b_i)`` over pairs run with the same setting, bootstrap over the pairs."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"a and b must pair up, got {a.size} and {b.size} values")
    kw.setdefault("method", f"paired percentile bootstrap of the mean difference, {BOOTSTRAP_RESAMPLES} resamples, "
                            f"seed {BOOTSTRAP_SEED}")
    return mean_claim(key, a - b, **kw)


def proportion_claim(key: str, hits: Sequence[bool] | np.ndarray, **kw: Any) -> Claim:
    """A claim about one proportion (Wilson score interval)."""
    h = np.asarray(hits, dtype=bool).ravel()
    p, low, high = wilson(int(h.sum()), int(h.size))
    threshold = kw.pop("threshold", 0.5)
    direction = kw.pop("direction", ">")
    return Claim(key, kw.pop("hypothesis"), kw.pop("metric"), kw.pop("population"), int(h.size), p, low, high,
                 threshold, direction, "Wilson score interval", **kw)


def exact_claim(key: str, value: float, **kw: Any) -> Claim:
    """A deterministic quantity (an identity, a count of operations): the interval is the value."""
    value = float(value)
    kw.setdefault("method", "exact: a deterministic computation, no sampling error")
    kw.setdefault("why_n", "deterministic: one computation is the whole population")
    return Claim(key, kw.pop("hypothesis"), kw.pop("metric"), kw.pop("population"), int(kw.pop("n", 1)), value, value,
                 value, kw.pop("threshold", 0.0), kw.pop("direction", ">"), **kw)
