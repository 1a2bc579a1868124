"""Optimizer step speed: optimlab's fused step against torch.optim's fastest path, in one process.

For each algorithm and layout, both sides get identical parameters and gradients (the same work),
are warmed up, then timed alternately (torch, optimlab, optimlab, torch, ...) step by step; the
figures are medians. The machine's memory bandwidth is measured in the same run (in-place triad
``a += s * b`` on 64M float32: 12 bytes per element read + written), and each step's bandwidth
is the bytes the algorithm must move (read p, g and state, write p and state) over its median time.

    python benchmarks/step_speed.py            # full run (>= 20 timed steps per cell)
    python benchmarks/step_speed.py --quick    # a short run
    python benchmarks/step_speed.py --compiled # add torch.compile of torch's step (layouts a, b;
                                               # tens of seconds of compile per cell)
    python benchmarks/step_speed.py --check    # exit status 1 when a target (TARGETS) is MISSED
    python benchmarks/step_speed.py --strict   # --check, and an inconclusive target fails too
    python benchmarks/step_speed.py --algorithms adam --layouts a,b --state-dtypes bfloat16,int8 --repeat 3
                                               # the selection 3 times, each in a fresh process, then
                                               # per target cell: the 3 values, their median and
                                               # range over the runs that were not void (throttled,
                                               # below), how many of those met it and how many runs
                                               # were void (--check: fails when any non-void run
                                               # MISSED it; --strict: or was inconclusive, or every
                                               # run was void)
    python benchmarks/step_speed.py --state-dtypes bfloat16,int8 --algorithms adam,nadam,rmsprop --layouts a,b
                                               # add optimlab with low-precision state, timed in the
                                               # same alternation: ms, ratio to torch's path, and the
                                               # state's bytes (from its tensors) as % of float32's;
                                               # targets (--check): bfloat16 >= 1.3x, int8 >= 1.6x
                                               # torch's path, int8 state <= 27% of float32's

    python benchmarks/step_speed.py --algorithms adam --layouts t,c,d,e --c-checks --python-checks
                                               # add optimlab with its per-step checks in the C build
                                               # (Python's C API only: the fallback) and in Python
                                               # (OPTIMLAB_NATIVE=0), timed in the same alternation
    python benchmarks/step_speed.py --algorithms adam --layouts t,a,c,e --python-checks --threads 1 --cpu-time
                                               # add optimlab with its per-step checks in Python
                                               # (OPTIMLAB_NATIVE=0), timed in the same alternation;
                                               # --cpu-time (one thread) times each step's own work,
                                               # which a saturated shared machine does not distort

Intervals and targets: every ratio (torch's median time over a side's, and %bw, the triad's over
the step's) is a ratio of medians of samples taken in the same rounds of the alternation, printed
with its 95% interval, e.g. ``1.27 [1.22,1.33]``: the percentile bootstrap that resamples whole
rounds (both sides of round i together, so a bandwidth swing that hits both cancels as it does in
the measurement), 2,000 resamples, a fixed seed
(``optimlab.lab.verdicts.bootstrap_ratio_of_medians``; Efron & Tibshirani 1993, ch. 13). A
target (TARGETS) then reads the interval, not the point: "met" when the whole interval lies on
the good side of the bound, "MISSED" when it lies wholly on the bad side, "inconclusive" when
it contains (or touches) the bound. ``--check`` fails on MISSED only, ``--strict`` on
inconclusive too. The state's bytes (``state%``) are counted, not sampled: their interval is the
value. An interval covers the noise within one run only; the bandwidth of this kind of machine
also moves between minutes (22-41 GB/s seen), which ``--repeat N`` samples.

Throttled cells: this (virtual) machine has phases in which every step of 16M parameters takes
~24 ms (or ~36) whatever its bytes (torch's fused float32 Adam, 28 B/param, as long as int8
state's 16) and the triad drops to ~16.5 (or ~11) of ~32-35 GB/s within a second: the time is set
by something other than memory (perhaps a CPU quota, or one of the two threads starved; seen
alone on the machine and under other agents' load), and a ratio measured there
(``1.01 [1.00,1.09]``) says nothing about the kernels, however narrow its interval. Its trace is
the cell's own triad, timed in every round: a round whose triad ran below ``THROTTLED_BELOW``
(0.6) of the run's best is a throttled round. The run's best is the highest of the start's
triad (median of 9), ``--reference-triad GBS`` if given, and every cell's median triad so far,
the cell's own included. The throttled rounds are dropped from every ratio of the cell (the rule
reads the triad only, never a side's time, so which rounds stay cannot favour a side; the line
says how many were dropped); when fewer than half of the rounds stay the cell is **void**: its
line shows its numbers from all rounds with ``<<< VOID, throttled: triad 16.5 of 32.2 GB/s in
30 of 30 rounds``, its sampled targets read "void (machine throttled)" (the counted state bytes
are still decided), counted apart from met / MISSED / inconclusive: ``--check`` never fails on
them, ``--strict`` does (a void target is not met). A void cell is measured once more at the end
of the run (after every other cell, so a phase of seconds may have passed; ``--no-retry`` skips
it; a few seconds for a 16M cell) and the second measurement replaces the first, void or not.
Why 0.6 and half: the phase holds the triad at 0.5-0.55 of an unthrottled one (16.2-17.3 of
31-32 GB/s) or lower, while a noisy cell's rounds spread around their own median (the tests model
+-10% per sample: no such cell is void) and a minute of the machine's slower bandwidth (22 GB/s
seen) stays above 0.6 of a best around 32; half, so that a phase beginning late in a cell costs
only its last rounds. What it cannot see: a run throttled from its start triad to its last cell
has a throttled best, and nothing reads below 0.6 of it. Two ways round that:
``--reference-triad GBS`` (the machine's triad from a quiet run, e.g. 34) starts the run's best
there; and ``--repeat`` hands each run's samples to the parent, which judges every cell of every
run against the best triad of all the runs (start, cells and end of each), says which cells that
voids, and gives the summary's verdict from the non-void runs only. A selection in which no run
saw the machine unthrottled, without ``--reference-triad``, is not caught.

Torch's path per algorithm: fused or foreach (its fastest on the CPU), "only" where torch.optim has
one implementation (Muon, SparseAdam, LBFGS), "rule/fe" for algorithms torch.optim lacks (Lion,
Schedule-Free, AdEMAMix): the same rule as torch._foreach_* calls (class ForeachOf). Bytes per
parameter (for GB/s) count p, g and state read + written once; for LBFGS (one iteration per step)
they are a lower bound; Muon is compute-bound (matrix products).

Layouts: a one 16M tensor; b 200 tensors / 16M (a small transformer); c 2,000 small tensors /
2M; d layout b in 100 param groups (layer-wise lr decay); e 4,000 tensors of 1,024; t one tensor
of 256 (the step is all per-step host work: its time is the overhead; ms printed to the microsecond);
m 4 matrices of 128 x 128 (Muon's own) and s an embedding of 64k x 64 with 1,024 sparse gradient
rows (SparseAdam's own; GB/s counts the rows touched): m and s run only for those two, which run
only there.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
import optimlab  # noqa: E402
from optimlab import kernels  # noqa: E402
from optimlab.faults import STATE_DTYPE_NAMES as STATE_DTYPES  # noqa: E402
from optimlab.kernels import precision  # noqa: E402
from optimlab.lab.verdicts import BOOTSTRAP_RESAMPLES  # noqa: E402
from speed_verdicts import (OUTCOMES, VOID, check_targets, ci_text, failures, ratio_ci,  # noqa: E402
                            summarize_runs, target_outcomes)

try:
    from optimlab.kernels import native  # noqa: E402
except ImportError:  # an optimlab from before the checks moved to C (for before/after runs)
    native = None

M = 1 << 20


class ForeachOf:
    """The peer of an algorithm torch.optim lacks: the same rule run as ``torch._foreach_*`` calls
    (optimlab's foreach backend, forced for this optimizer only), i.e. torch's fastest generic path
    for that arithmetic (one multi-tensor kernel per op, as torch.optim's foreach implementations)."""

    def __init__(self, cls):
        self.cls, self.__name__ = cls, f"foreach({cls.__name__})"

    def __call__(self, params, **kwargs):
        return _ForeachSide(self.cls(params, **kwargs))


class _ForeachSide:
    def __init__(self, opt):
        self.opt, self.state = opt, opt.state

    def step(self, closure=None):
        old = os.environ.get("OPTIMLAB_BACKEND")
        os.environ["OPTIMLAB_BACKEND"] = "foreach"
        try:
            return self.opt.step(closure)
        finally:
            if old is None:
                del os.environ["OPTIMLAB_BACKEND"]
            else:
                os.environ["OPTIMLAB_BACKEND"] = old


class WithClosure:
    """A closure-driven optimizer (L-BFGS) timed one iteration per step: ``step()`` passes a closure
    that returns the loss and leaves the gradients as they are (the same work on both sides)."""

    def __init__(self, cls):
        self.cls, self.__name__ = cls, cls.__name__

    def __call__(self, params, **kwargs):
        return _ClosureSide(self.cls(params, **kwargs))


class _ClosureSide:
    def __init__(self, opt):
        self.opt, self.state, self.loss = opt, opt.state, torch.tensor(1.0)

    def step(self):
        return self.opt.step(lambda: self.loss)


# (name, optimlab class, torch class, kwargs, torch's fastest flags, bytes per float32 parameter)
ALGORITHMS = [
    ("sgd_momentum", optimlab.SGD, torch.optim.SGD, {"lr": 0.01, "momentum": 0.9}, {"fused": True}, 20),
    ("adagrad", optimlab.Adagrad, torch.optim.Adagrad, {"lr": 0.01}, {"fused": True}, 20),
    ("rmsprop", optimlab.RMSprop, torch.optim.RMSprop, {"lr": 0.01}, {"foreach": True}, 20),
    ("adam", optimlab.Adam, torch.optim.Adam, {"lr": 1e-3}, {"fused": True}, 28),
    ("adamw", optimlab.AdamW, torch.optim.AdamW, {"lr": 1e-3}, {"fused": True}, 28),
    ("nadam", optimlab.NAdam, torch.optim.NAdam, {"lr": 2e-3}, {"foreach": True}, 28),
    # the rest of torch.optim and the algorithms beyond it; optional cells, run with --algorithms
    ("adadelta", optimlab.Adadelta, torch.optim.Adadelta, {}, {"foreach": True}, 28),
    ("adamax", optimlab.Adamax, torch.optim.Adamax, {"lr": 2e-3}, {"foreach": True}, 28),
    ("radam", optimlab.RAdam, torch.optim.RAdam, {"lr": 1e-3}, {"foreach": True}, 28),
    ("asgd", optimlab.ASGD, torch.optim.ASGD, {"lr": 1e-2}, {"foreach": True}, 20),
    ("rprop", optimlab.Rprop, torch.optim.Rprop, {"lr": 1e-2}, {"foreach": True}, 28),
    ("adafactor", optimlab.Adafactor, torch.optim.Adafactor, {"lr": 1e-2}, {"foreach": True}, 20),
    # torch has one path for these three (no foreach / fused flag)
    ("muon", optimlab.Muon, torch.optim.Muon, {"lr": 1e-3}, {}, 20),
    ("sparse_adam", optimlab.SparseAdam, torch.optim.SparseAdam, {"lr": 1e-3}, {}, 28),
    ("lbfgs", WithClosure(optimlab.LBFGS), WithClosure(torch.optim.LBFGS), {"lr": 1, "max_iter": 1}, {}, 12),
    # not in torch.optim: the peer is torch's foreach kernels running the same rule (ForeachOf)
    ("lion", optimlab.Lion, ForeachOf(optimlab.Lion), {"lr": 1e-4}, {}, 20),
    ("sgd_sf", optimlab.SGDScheduleFree, ForeachOf(optimlab.SGDScheduleFree), {"lr": 1.0}, {}, 20),
    ("adamw_sf", optimlab.AdamWScheduleFree, ForeachOf(optimlab.AdamWScheduleFree), {}, {}, 28),
    ("ademamix", optimlab.AdEMAMix, ForeachOf(optimlab.AdEMAMix), {}, {}, 36),
]
#: algorithms that take only some parameters: their cells run on their own layout whatever --layouts
#: says (Muon: 2-D matrices; SparseAdam: an embedding with sparse row gradients)
OWN_LAYOUT = {"muon": "m", "sparse_adam": "s"}
DEFAULT_ALGORITHMS = ("sgd_momentum", "adagrad", "rmsprop", "adam", "adamw", "nadam")


def layout_a() -> list[tuple[int, ...]]:
    return [(16 * M,)]


def layout_b() -> list[tuple[int, ...]]:
    """200 tensors, 16M parameters: a 16-layer transformer (d=256, ffn 1024) with embeddings."""
    d, f, shapes = 256, 1024, []
    for _ in range(16):
        shapes += [(3 * d, d), (3 * d,), (d, d), (d,), (d,), (d,), (f, d), (f,), (d, f), (d,), (d,), (d,)]
    shapes += [(512, d), (d,), (d,), (d, d), (d,)]  # positions, final norm, pooler
    used = sum(torch.Size(s).numel() for s in shapes)
    vocab = (16 * M - used) // (2 * d)
    shapes += [(vocab, d), (vocab, d), (vocab,)]  # token embedding, output head and its bias
    return shapes


def layout_c() -> list[tuple[int, ...]]:
    """2,000 small tensors, 2M parameters (sizes from 64 to ~4k, like a wide shallow model's)."""
    g = torch.Generator().manual_seed(0)
    raw = torch.exp(torch.empty(2000).uniform_(0, 4, generator=g)) 
    sizes = (raw / raw.sum() * 2 * M).long().clamp(min=64)
    sizes[-1] += 2 * M - int(sizes.sum())
    return [(int(n),) for n in sizes]


def layout_t() -> list[tuple[int, ...]]:
    """One tensor of 256 parameters: the memory work is nil, the step's time is its host overhead."""
    return [(256,)]


def layout_e() -> list[tuple[int, ...]]:
    """4,000 tensors of 1,024 parameters: where per-tensor overhead, not memory, sets the pace."""
    return [(1024,)] * 4000


# key -> (label, shapes, number of param groups: the tensors split into that many consecutive
# groups, group i with lr * LR_DECAY**i, as layer-wise learning-rate decay in fine-tuning)
def layout_m() -> list[tuple[int, ...]]:
    """4 matrices of 128 x 128 (Muon's parameters; its Newton-Schulz matrix products in bfloat16,
    slow on a CPU, set the pace)."""
    return [(128, 128)] * 4


def layout_s() -> list[tuple[int, ...]]:
    """An embedding of 65,536 x 64 (4M) whose gradient is sparse: 1,024 rows per step."""
    return [(65536, 64)]


LAYOUTS = {"a": ("a: 1 x 16M", layout_a, 1), "b": ("b: 200 tensors, 16M", layout_b, 1),
           "c": ("c: 2000 tensors, 2M", layout_c, 1), "d": ("d: b in 100 groups", layout_b, 100),
           "e": ("e: 4000 x 1024", layout_e, 1), "t": ("t: 1 x 256 (overhead)", layout_t, 1),
           "m": ("m: 4 x 128x128", layout_m, 1), "s": ("s: 64k x 64 sparse", layout_s, 1)}
SPARSE_ROWS = 1024
LR_DECAY = 0.97
# (algorithm or "*", layout or "*", column, bound): the targets the run is checked against at the
# end (``--check`` makes a miss the exit status). A positive bound is the lowest acceptable value,
# a negative one minus the highest. Columns of a low-precision state dtype D (with --state-dtypes)
# are "ratio D" (torch's time over optimlab's with that state) and "state% D" (its state's bytes,
# from the tensors, over float32's); a target on a column the run did not measure is skipped.
LOW_PRECISION = ("adam", "nadam", "rmsprop")  # against torch's fastest path: fused Adam, foreach others
TARGETS = [("adam", "d", "ratio", 1.0), ("adam", "e", "ratio", 5.0), ("*", "c", "%bw", 70.0),
           ("adam", "t", "ratio", 1.0)]
TARGETS += [(name, layout, column, bound) for name in LOW_PRECISION for layout in ("a", "b")
            for column, bound in (("ratio bfloat16", 1.3), ("ratio int8", 1.6), ("state% int8", -27.0))]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class RssSampler:
    """Highest resident set size seen while a block runs (sampled every millisecond)."""

    def __enter__(self):
        self.peak, self.running = rss_mb(), True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while self.running:
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()


class Triad:
    """In-place triad ``a += 0.5 * b`` on 32M float32 (256 MB, far beyond the caches): 12 bytes
    per element read + written. Timed alternately with the optimizers, so each cell's bandwidth
    is measured under the same load as its steps."""

    n = 32 * M

    def __init__(self) -> None:
        self.a, self.b = torch.rand(self.n), torch.rand(self.n)

    def __call__(self) -> None:
        self.a.add_(self.b, alpha=0.5)

    def gbs(self, seconds: float) -> float:
        return 12 * self.n / seconds / 1e9


def bandwidth(triad: Triad, reps: int) -> float:
    return triad.gbs(statistics.median(timed(triad) for _ in range(reps)))


def make_side(shapes, cls, kwargs, seed=0, groups=1, sparse=False):
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    for p in params:
        if sparse:  # SPARSE_ROWS distinct rows (coalesced), as nn.Embedding(sparse=True) gives
            rows = torch.randperm(p.shape[0], generator=g)[:SPARSE_ROWS].sort().values
            values = torch.randn((SPARSE_ROWS, *p.shape[1:]), generator=g) * 1e-2
            p.grad = torch.sparse_coo_tensor(rows[None], values, p.shape).coalesce()
        else:
            p.grad = torch.randn(p.shape, generator=g) * 1e-2
    if groups == 1:
        return params, cls(params, **kwargs)
    bounds = [len(params) * i // groups for i in range(groups + 1)]
    param_groups = [{"params": params[lo:hi], "lr": kwargs["lr"] * LR_DECAY ** i}
                    for i, (lo, hi) in enumerate(zip(bounds, bounds[1:]))]
    return params, cls(param_groups, **kwargs)


FIRST_STEP = """
import sys, time, torch
sys.path.insert(0, {src!r}); sys.path.insert(0, {here!r})
import optimlab
from step_speed import ALGORITHMS, layout_b, make_side
row = [a for a in ALGORITHMS if a[0] == {name!r}][0]
params, opt = make_side(layout_b(), row[1], row[3])
t = time.perf_counter(); opt.step(); print(time.perf_counter() - t)
"""


def first_step_latency(name: str) -> tuple[float, float]:
    """First step of a fresh process on layout (b): kernel cache empty, then warm (seconds)."""
    here = os.path.dirname(os.path.abspath(__file__))
    code = FIRST_STEP.format(src=os.path.join(here, "..", "src"), here=here, name=name)
    out = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "OPTIMLAB_CACHE_DIR": cache}
        for _ in range(2):
            res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            out.append(float(res.stdout.strip().splitlines()[-1]))
    return out[0], out[1]


def checks_where() -> str:
    """Where optimlab's per-step checks run in this process."""
    if native is None:
        return "Python (no kernels.native)"
    return native.kind(native.enabled()) if hasattr(native, "kind") else "C" if native.enabled() is not native.python else "Python"


def python_checks(step) -> None:
    """``step()`` with optimlab's per-step checks run in Python (``OPTIMLAB_NATIVE=0``)."""
    before = os.environ.get("OPTIMLAB_NATIVE")
    os.environ["OPTIMLAB_NATIVE"] = "0"
    try:
        step()
    finally:
        if before is None:
            del os.environ["OPTIMLAB_NATIVE"]
        else:
            os.environ["OPTIMLAB_NATIVE"] = before


def c_checks(module, step) -> None:
    """``step()`` with optimlab's per-step checks in ``module`` (the C build on Python's C API only,
    ``native.build(against_torch=False)``: the fallback where torch's headers cannot be used)."""
    before = list(native._module)
    native._module[:] = [module]
    try:
        step()
    finally:
        native._module[:] = before


CLOCK = [time.perf_counter]  # --cpu-time: time.thread_time


def timed(fn) -> float:
    clock = CLOCK[0]
    t = clock()
    fn()
    return clock() - t


def measure_cell(spec, lk: str, triad: Triad, steps: int, low: list[str], c_module=None,
                 py_checks: bool = False, compiled: bool = False) -> dict:
    """Time one cell (algorithm ``spec`` of :data:`ALGORITHMS` on layout ``lk``): every side and
    the triad in ``steps`` alternating rounds. Returns the raw samples (seconds per call, round i
    at index i of every list) and what :func:`report_cell` prints besides them."""
    name, ocls, tcls, kw, flags, bytes_per = spec
    label, make, n_groups = LAYOUTS[lk]
    shapes = make()
    n = sum(torch.Size(s).numel() for s in shapes)
    sparse = name == "sparse_adam"
    if sparse:
        n = SPARSE_ROWS * shapes[0][1]  # the rows a step touches
    op, oopt = make_side(shapes, ocls, kw, groups=n_groups, sparse=sparse)
    tp, topt = make_side(shapes, tcls, {**kw, **flags}, groups=n_groups, sparse=sparse)
    first = timed(oopt.step)  # first step: state creation + kernel build / cache load
    for _ in range(3):
        oopt.step()
        topt.step()
    lows = [make_side(shapes, ocls, {**kw, "state_dtype": STATE_DTYPES[d]})[1] for d in low
            if name in DEFAULT_ALGORITHMS]
    for lopt in lows:
        for _ in range(4):
            lopt.step()
    sides = [topt.step, oopt.step] + [lopt.step for lopt in lows]
    if c_module is not None:
        cpp, copt_c = make_side(shapes, ocls, kw, groups=n_groups, sparse=sparse)
        for _ in range(4):
            c_checks(c_module, copt_c.step)
        sides.append(lambda: c_checks(c_module, copt_c.step))
    if py_checks:
        pp, popt = make_side(shapes, ocls, kw, groups=n_groups, sparse=sparse)
        for _ in range(4):
            python_checks(popt.step)
        sides.append(lambda: python_checks(popt.step))
    times, bt = [[] for _ in sides], []
    for i in range(steps):
        order = range(len(sides)) if i % 2 == 0 else reversed(range(len(sides)))
        for k in order:  # alternate: no side always runs right after the triad
            times[k].append(timed(sides[k]))
        bt.append(timed(triad))
    with RssSampler() as s_o:
        base_o = s_o.peak
        for _ in range(5):
            oopt.step()
    with RssSampler() as s_t:
        base_t = s_t.peak
        for _ in range(5):
            topt.step()
    fp32_bytes = sum(precision.state_bytes(st) for st in oopt.state.values()) if lows else 0
    state = [100 * sum(precision.state_bytes(st) for st in lopt.state.values()) / fp32_bytes for lopt in lows]
    cell = {"algorithm": name, "layout": lk, "label": label, "n": n, "bytes_per": bytes_per,
            "path": ("fused" if "fused" in flags else "foreach" if "foreach" in flags
                     else "rule/fe" if isinstance(tcls, ForeachOf) else "only"),
            "times": times, "triad": bt, "first": first, "rss": (s_o.peak - base_o, s_t.peak - base_t),
            "low": list(zip(low, state)), "c_checks": c_module is not None, "py_checks": py_checks,
            "compiled": None}
    del lows, sides
    if compiled and lk in ("a", "b") and not isinstance(tcls, (ForeachOf, WithClosure)):
        cp, copt = make_side(shapes, tcls, {**kw, "foreach": True}, groups=n_groups)
        cstep = torch.compile(copt.step)
        ctime = timed(cstep)
        cell["compiled"] = (statistics.median(timed(cstep) for _ in range(steps)), ctime)
    gc.collect()
    return cell


def triad_gbs(seconds: float) -> float:
    """The triad's bandwidth (GB/s) from one call's time (:class:`Triad`: 12 bytes per element)."""
    return 12 * Triad.n / seconds / 1e9


def cell_bandwidth(cell: dict) -> float:
    """The cell's own triad: the bandwidth of its median triad round (GB/s)."""
    return triad_gbs(statistics.median(cell["triad"]))


#: a round whose triad ran below this fraction of the run's best triad is a throttled round
THROTTLED_BELOW = 0.6


def throttled_rounds(triad_seconds: list[float], best_gbs: float) -> tuple[list[int], str | None]:
    """``(kept, reason)``: the rounds of a cell that stand, and why the cell is void (None when it
    stands). See "Throttled cells" in the module docstring: a round whose triad ran below
    :data:`THROTTLED_BELOW` of ``best_gbs`` is dropped; when that leaves fewer than half of the
    rounds, the cell is void and ``kept`` is every round (its numbers are shown, not judged)."""
    gbs = [triad_gbs(t) for t in triad_seconds]
    low = [i for i, g in enumerate(gbs) if g < THROTTLED_BELOW * best_gbs]
    kept = [i for i in range(len(gbs)) if i not in set(low)]
    if 2 * len(kept) >= len(gbs):
        return kept, None
    slow = statistics.median(gbs[i] for i in low)
    return list(range(len(gbs))), (f"throttled: triad {slow:.1f} of {best_gbs:.1f} GB/s in {len(low)} of "
                                   f"{len(gbs)} rounds")


def report_cell(cell: dict, best_gbs: float) -> tuple[str, dict]:
    """The table line and the row (ratios with their intervals, for the targets) of a measured cell
    (:func:`measure_cell`), given the run's best triad so far: throttled rounds dropped
    (:func:`throttled_rounds`), or the cell void, with the mark and the reason on its line."""
    kept, void = throttled_rounds(cell["triad"], best_gbs)
    times = [[t[i] for i in kept] for t in cell["times"]]
    bt = [cell["triad"][i] for i in kept]
    tt, ot = times[0], times[1]
    n, bytes_per = cell["n"], cell["bytes_per"]
    tm, om = statistics.median(tt), statistics.median(ot)
    ratio = ratio_ci(tt, ot)
    # %bw = optimlab's GB/s over the triad's = bytes * median(triad) / (12 B * triad.n * median(step))
    pbw = ratio_ci(bt, ot, 100 * bytes_per * n / (12 * Triad.n))
    line = (f"{cell['algorithm']:<13} {cell['label']:<21} {cell['path']:<10} {tm * 1e3:9.3f} {om * 1e3:11.3f} "
            f"{ci_text(ratio):>{RATIO_W}} {bytes_per * n / om / 1e9:6.1f} {triad_gbs(statistics.median(bt)):5.1f} "
            f"{ci_text(pbw, percent=True):>{PCT_W}} {cell['first']:10.2f} {cell['rss'][0]:8.1f} {cell['rss'][1]:10.1f}")
    row = {"algorithm": cell["algorithm"], "layout": cell["layout"], "ratio": ratio[0], "%bw": pbw[0],
           "ci": {"ratio": ratio[1:], "%bw": pbw[1:]}, "rounds": len(kept), "void": void}
    lows = times[2:2 + len(cell["low"])]
    for (d, state), lt in zip(cell["low"], lows):
        lr = ratio_ci(tt, lt)
        row[f"ratio {d}"], row[f"state% {d}"], row["ci"][f"ratio {d}"] = lr[0], state, lr[1:]
        line += f" {statistics.median(lt) * 1e3:11.3f} {ci_text(lr):>{RATIO_W}} {state:5.1f}%"
    extra = times[2 + len(cell["low"]):]
    if cell["c_checks"]:
        cct = extra.pop(0)
        line += f" {statistics.median(cct) * 1e3:11.3f} {ci_text(ratio_ci(tt, cct)):>{RATIO_W}}"
    if cell["py_checks"]:
        line += f" {statistics.median(extra[0]) * 1e3:12.3f} {ci_text(ratio_ci(tt, extra[0])):>{RATIO_W}}"
    if cell["compiled"] is not None:
        line += f" {cell['compiled'][0] * 1e3:11.2f} {cell['compiled'][1]:9.1f}"
    if void:
        line += f"  <<< VOID, {void}: its targets are void"
    elif len(kept) < len(cell["triad"]):
        line += (f"  ({len(cell['triad']) - len(kept)} of {len(cell['triad'])} rounds dropped: their triad ran "
                 f"below {THROTTLED_BELOW:g} of the run's best, {best_gbs:.1f} GB/s)")
    return line, row


def run_cells(specs: list, measure, best_gbs: float, retry: bool = True) -> tuple[list[dict], list[dict], float]:
    """Measure each ``(spec, layout)`` of ``specs`` with ``measure`` (:func:`measure_cell`), print
    its line (:func:`report_cell`, against the run's best triad so far: ``best_gbs`` at the start,
    then the highest of it and every cell's own), and return the rows. With ``retry``, a cell void
    because the machine was throttled is measured once more at the end (after every other cell,
    which gives the phase time to pass) and the second measurement replaces the first, void or
    not; the reason for voiding reads only the triad, never the ratios, so the retry cannot pick
    a verdict. Returns ``(rows, cells, best)``: the rows, the cells measured (their samples) and
    the run's best triad (GB/s)."""
    rows, cells = [], []
    for spec, lk in specs:
        cell = measure(spec, lk)
        best_gbs = max(best_gbs, cell_bandwidth(cell))
        line, row = report_cell(cell, best_gbs)
        print(line, flush=True)
        rows.append(row)
        cells.append(cell)
    again = [i for i, row in enumerate(rows) if row["void"]]
    if again and retry:
        print(f"re-measuring once, at the end of the run, the {len(again)} cell(s) measured while the machine was "
              f"throttled (the re-measurement replaces the first):", flush=True)
        for i in again:
            cell = measure(*specs[i])
            best_gbs = max(best_gbs, cell_bandwidth(cell))
            line, row = report_cell(cell, best_gbs)
            row["remeasured"] = True
            if row["void"]:
                row["void"] += ", again when re-measured"
            print(line + "  (re-measured)", flush=True)
            rows[i], cells[i] = row, cell
    return rows, cells, best_gbs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer steps (still >= 20 medians) and layouts")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per side and cell (default 30, quick 20)")
    ap.add_argument("--compiled", action="store_true", help="also time torch.compile(torch step) on layouts a, b")
    ap.add_argument("--algorithms", default=",".join(DEFAULT_ALGORITHMS),
                    help=f"any of {', '.join(a[0] for a in ALGORITHMS)}")
    ap.add_argument("--layouts", default=",".join(k for k in LAYOUTS if k not in OWN_LAYOUT.values()),
                    help=f"any of {', '.join(LAYOUTS)}")
    ap.add_argument("--check", action="store_true",
                    help="exit with status 1 when a target is MISSED (its whole 95%% interval on the bad side)")
    ap.add_argument("--strict", action="store_true",
                    help="--check, and an inconclusive target (its interval contains the bound) fails too")
    ap.add_argument("--repeat", type=int, default=None, metavar="N",
                    help="run the whole selection N times, each in a fresh process, then summarise each target "
                         "cell over the runs (with --check: fails when any run MISSED it)")
    ap.add_argument("--rows-json", action="store_true", help=argparse.SUPPRESS)  # a run of --repeat
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (both sides; default torch's)")
    ap.add_argument("--no-latency", action="store_true", help="skip the cold/warm first-step runs (on in --quick)")
    ap.add_argument("--reference-triad", type=float, default=None, metavar="GBS",
                    help="the machine's unthrottled triad bandwidth in GB/s (e.g. from a quiet run): the run's best "
                         "triad starts there, so a run throttled from its start is still seen as throttled")
    ap.add_argument("--no-retry", action="store_true",
                    help="do not re-measure a cell voided as throttled (by default: once, at the end of the run)")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time every side (and the triad) by the CPU time of this thread, not the wall clock: "
                         "on a shared, saturated machine a step's own work, not its waits (use with --threads 1)")
    ap.add_argument("--python-checks", action="store_true",
                    help="also time optimlab with its per-step checks in Python (OPTIMLAB_NATIVE=0)")
    ap.add_argument("--c-checks", action="store_true",
                    help="also time optimlab with its per-step checks in the C build (Python's C API only, no torch "
                         "headers: the fallback, and the path before the C++ build)")
    ap.add_argument("--state-dtypes", default="", metavar="LIST",
                    help=f"also time optimlab with these state_dtype values ({', '.join(STATE_DTYPES)})")
    args = ap.parse_args()
    if args.reference_triad is not None and not 0 < args.reference_triad < float("inf"):
        ap.error(f"--reference-triad must be a bandwidth > 0 in GB/s, got {args.reference_triad}")
    if args.repeat is not None and not args.rows_json:
        if args.repeat < 1:
            ap.error(f"--repeat must be >= 1, got {args.repeat}")
        runs = rejudge(repeat(args.repeat, sys.argv[1:]))
        if summarize_runs(runs, args.strict, TARGETS) and (args.check or args.strict):
            sys.exit(1)
        return
    steps = args.steps or (20 if args.quick else 30)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_time:
        if torch.get_num_threads() != 1:
            ap.error("--cpu-time counts this thread only: give --threads 1")
        CLOCK[0] = time.thread_time
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, float32, median of {steps} alternating steps "
          f"({'CPU time of this thread' if args.cpu_time else 'wall clock'}); "
          f"optimlab fused={kernels.fused_enabled()}, per-step checks in "
          f"{checks_where()}")
    load0 = load_average()
    triad = Triad()
    bw0 = bandwidth(triad, 9)
    print(f"memory bandwidth (in-place triad on 32M float32, read+write): {bw0:.1f} GB/s at the start; "
          f"'bw' below is each cell's own triad, timed alternately with its steps; [95% CI]: percentile "
          f"bootstrap over the {steps} rounds, {BOOTSTRAP_RESAMPLES} resamples, fixed seed")
    print(f"a round whose triad runs below {THROTTLED_BELOW:g} of the run's best (so far: "
          f"{max(bw0, args.reference_triad or 0):.1f} GB/s, "
          f"{'given by --reference-triad' if (args.reference_triad or 0) > bw0 else 'the start'}) is throttled and "
          f"dropped; a cell with fewer than half of its rounds left is void (see the docstring)")
    names = args.algorithms.split(",")
    header = (f"{'algorithm':<13} {'layout':<21} {'torch path':<10} {'torch ms':>9} {'optimlab ms':>11} "
              f"{RATIO:>{RATIO_W}} {'GB/s':>6} {'bw':>5} {'%bw [95% CI]':>{PCT_W}} {'1st step s':>10} {'+RSS MB':>8} "
              f"{'torch +RSS':>10}")
    low = [d for d in args.state_dtypes.split(",") if d]
    for d in low:
        if d not in STATE_DTYPES:
            ap.error(f"--state-dtypes: unknown {d!r} (allowed: {', '.join(STATE_DTYPES)})")
        header += f" {d + ' ms':>11} {RATIO:>{RATIO_W}} {'state%':>6}"
    c_module = None
    if args.c_checks:
        if native is None or not hasattr(native, "build"):
            ap.error("--c-checks: this optimlab has no C build of its checks")
        native.module()  # the default build first, so the swap below has something to restore
        c_module = native.build(against_torch=False)
        header += f" {'c-checks ms':>11} {RATIO:>{RATIO_W}}"
    if args.python_checks:
        header += f" {'py-checks ms':>12} {RATIO:>{RATIO_W}}"
    if args.compiled:
        header += f" {'compiled ms':>11} {'compile s':>9}"
    print(header)
    specs = [(spec, lk) for spec in ALGORITHMS if spec[0] in names
             for lk in ([OWN_LAYOUT[spec[0]]] if spec[0] in OWN_LAYOUT else args.layouts.split(","))]
    def measure(spec, lk):
        return measure_cell(spec, lk, triad, steps, low, c_module, args.python_checks, args.compiled)

    rows, cells, best = run_cells(specs, measure, max(bw0, args.reference_triad or 0), retry=not args.no_retry)
    if not (args.quick or args.no_latency):
        print("first step on layout (b), 200 tensors, in a fresh process (kernel build or cache load, "
              "state creation):")
        for name in names:
            if name in OWN_LAYOUT or name == "lbfgs":  # not layout (b) / a closure-driven step
                continue
            cold, warm = first_step_latency(name)
            print(f"  {name:<13} cold cache {cold:6.2f} s   warm cache {warm:6.2f} s")
    bw1 = bandwidth(triad, 9)
    print(f"memory bandwidth at the end: {bw1:.1f} GB/s; peak RSS of the run: "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; load average "
          f"{load0} at the start, {load_average()} at the end (an interval covers the noise of "
          f"this run's rounds, not a machine whose other load time-slices the steps)")
    counts = check_targets(rows, TARGETS)
    if args.rows_json:  # a run of --repeat: the parent reads the rows and decides
        print(ROWS_TAG + json.dumps({"best": max(best, bw1), "cells": cells}), flush=True)
    elif (args.check or args.strict) and failures(counts, args.strict):
        sys.exit(1)


def load_average() -> str:
    """The machine's 1-, 5- and 15-minute load averages (other processes share the cores)."""
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


RATIO, RATIO_W, PCT_W = "ratio [95% CI]", 17, 13
ROWS_TAG = "step_speed rows (json): "


def repeat(n: int, argv: list[str]) -> list[dict]:
    """Run this script ``n`` times, each in a fresh process with the same arguments (``argv``),
    passing its output through; return what each run measured (read from its :data:`ROWS_TAG`
    line): ``{"best": its best triad in GB/s, "cells": its cells' samples}``."""
    runs = []
    for i in range(n):
        print(f"=== run {i + 1} of {n} (a fresh process) ===", flush=True)
        cmd = [sys.executable, os.path.abspath(__file__), *argv, "--rows-json"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        rows = None
        for line in proc.stdout:
            if line.startswith(ROWS_TAG):
                rows = json.loads(line[len(ROWS_TAG):])
            else:
                print(line, end="", flush=True)
        if proc.wait() != 0 or rows is None:
            raise SystemExit(f"run {i + 1} of {n} failed (exit status {proc.returncode})")
        runs.append(rows)
    return runs


def rejudge(runs: list[dict]) -> list[list[dict]]:
    """Each run's rows (:func:`report_cell`), every cell judged against the best triad of **all**
    the runs (the highest of their own bests): a run throttled from its start to its end has a
    throttled best of its own, and nothing in it reads as throttled against that; against a
    run that saw the machine as it is, it does. Prints the cells this voids or trims."""
    best = max(run["best"] for run in runs)
    out = []
    for i, run in enumerate(runs):
        rows = []
        for cell in run["cells"]:
            row = report_cell(cell, best)[1]
            own = report_cell(cell, run["best"])[1]
            if row["void"] and not own["void"]:
                print(f"run {i + 1}: {cell['algorithm']} on layout {cell['layout']} is void against the best "
                      f"triad of the {len(runs)} runs ({row['void']})")
            elif row["rounds"] < own["rounds"]:
                print(f"run {i + 1}: {cell['algorithm']} on layout {cell['layout']}: {own['rounds'] - row['rounds']} "
                      f"more round(s) dropped against the best triad of the {len(runs)} runs ({best:.1f} GB/s)")
            rows.append(row)
        out.append(rows)
    return out


if __name__ == "__main__":
    main()
