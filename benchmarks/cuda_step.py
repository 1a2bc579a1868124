"""optimlab's generated Triton step on a CUDA GPU against torch.optim's fastest path, in one process.

What it prints, each section on its own so that one failing cell does not hide the others:

1. the GPU, torch, triton; the HBM bandwidth of an in-place triad ``a += s * b`` (12 bytes per
   element read + written, 256M float32), timed with CUDA events;
2. correctness on the GPU: every algorithm and option of ``tests/test_fused.py`` (float32; one per
   algorithm in float64 and bfloat16), Triton step vs optimlab's eager rule, max |difference| (in
   --dry-run bit for bit in float32 and float64: :func:`eager_sqrt`);
3. CUDA-graph capture: ``capturable=True`` steps captured once and replayed with new gradients
   equal the same steps run eagerly (parameters and state);
4. first-step latency (kernel generation + Triton compile, state creation) on layout b, in a
   fresh process with empty kernel caches (cold), then a second optimizer in that process (warm);
5. kernel layout sweep on Adam and NAdam, layout a (branch per program or per block, loop or
   unrolled blocks, block size, blocks per program, warps; captured steps, so the kernels alone;
   run first, and every later section uses the fastest);
6. host work per step: the time ``opt.step()`` takes to return (kernels queued, not waited for)
   on layout a and on layout t (one tensor of 256: nothing but host work), optimlab with its
   per-step checks in C and in Python (``OPTIMLAB_NATIVE=0``) beside torch's path; a step whose
   host time exceeds its kernels' time is bound by the host (issue 14's layout-a regression);
7. low-precision state (bfloat16, int8) through the Triton kernel: bit-equality with the eager
   path on the GPU (and in --dry-run, the eager side's square root made correctly rounded as
   CUDA's is: torch's CPU sqrt is MKL's, one ulp off on ~17% of float32 inputs), and its speed
   beside torch's fastest float32 path (Adam, NAdam, RMSprop, layouts a and b) with the state's
   bytes;
8. the speed table (below), then the same steps captured in CUDA graphs on both sides (the
   kernels alone, no host work). The speed table: for every algorithm and layout (a: 1 x 16M, b: 200 tensors / 16M, c: 2000
   tensors / 2M, as in ``step_speed.py``), torch's fastest path (fused where torch has it on
   CUDA, else foreach) and optimlab's step, timed alternately (5 steps between CUDA events per
   sample, median of the samples), the ratio torch / optimlab with its 95% interval (a paired
   bootstrap over the rounds; a target inside it reads "inconclusive"), the GB/s each step must move and
   its share of the triad's bandwidth, and the targets of issue 14 (>= 1.0x torch fused, >= 3x
   torch foreach on layouts a and b, >= 85% of the triad on layout a).

    python benchmarks/cuda_step.py            # about 1.5 minutes on one H200
    python benchmarks/cuda_step.py --quick    # fewer samples
    python benchmarks/cuda_step.py --dry-run  # no GPU: tiny layouts on CPU tensors through Triton's
                                              # interpreter, to check the script itself runs
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, HERE)
import optimlab  # noqa: E402
from optimlab import kernels  # noqa: E402
from speed_verdicts import ci_text, ratio_ci  # noqa: E402
from step_speed import ALGORITHMS, DEFAULT_ALGORITHMS, LAYOUTS, python_checks  # noqa: E402
from optimlab.lab.verdicts import decide  # noqa: E402

START = time.perf_counter()
DEVICE = "cuda"  # "cpu" in --dry-run (Triton's interpreter)


def torch_path(name: str, flags: dict) -> str:
    """torch's fastest path on CUDA: step_speed's choice, except Adagrad (its fused kernel is CPU-only)."""
    return "fused" if "fused" in flags and name != "adagrad" else "foreach"


def elapsed() -> float:
    return time.perf_counter() - START


def section(title: str) -> None:
    print(f"\n== {title}  [{elapsed():.0f} s]", flush=True)


def cuda_time(fn, repeat: int = 1) -> float:
    """Seconds per call of ``fn``, ``repeat`` calls between two CUDA events (host work included)."""
    if DEVICE == "cpu":
        t = time.perf_counter()
        for _ in range(repeat):
            fn()
        return (time.perf_counter() - t) / repeat
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeat):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / repeat


class Triad:
    n = 256 << 20

    def __init__(self) -> None:
        self.a = torch.rand(self.n, device=DEVICE)
        self.b = torch.rand(self.n, device=DEVICE)

    def __call__(self) -> None:
        self.a.add_(self.b, alpha=0.5)

    def gbs(self, seconds: float) -> float:
        return 12 * self.n / seconds / 1e9


def make_side(shapes, cls, kwargs, dtype=torch.float32, seed=0):
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=g, device=DEVICE, dtype=dtype)) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g, device=DEVICE, dtype=dtype) * 1e-2
    return params, cls(params, **kwargs)


def eager_sqrt(eager: bool = True):
    """The context a side steps in: the fused side and, on the GPU, the eager side none (torch's
    CUDA sqrt is correctly rounded, as the kernel's is); the eager side in --dry-run (CPU
    tensors) a correctly rounded sqrt (``tests/ieee_sqrt.py``), since torch's CPU sqrt is MKL's
    ``vsSqrt``, one ulp off on ~17% of float32 inputs, which the rules behind a square root
    (Adam, AdamW, NAdam, RMSprop, Adagrad) carry into their parameters, a flipped stochastic
    bf16 rounding or 8-bit code, and (RMSprop's momentum buffer, through a cancellation) a later
    step's parameters: 1.76e-5 once. So the dry run asks bit-equality of the float32 and float64
    steps as the GPU run shows it."""
    import contextlib

    if DEVICE == "cuda" or not eager:
        return contextlib.nullcontext()
    from ieee_sqrt import correctly_rounded_sqrt
    return correctly_rounded_sqrt()


def correctness(quick: bool) -> None:
    from test_fused import CASES

    shapes = [(5000,), (7,), (33, 4), (4096,), (1,)] if DEVICE == "cuda" else [(300,), (7,)]
    per_algorithm = {}
    for name, kwargs in CASES:
        per_algorithm.setdefault(name, (name, kwargs))
    runs = [(c, torch.float32, "triton") for c in CASES]
    runs += [(c, torch.float64, "triton") for c in per_algorithm.values()]
    runs += [(c, torch.bfloat16, "triton") for c in per_algorithm.values()]
    runs += [(c, torch.float32, "foreach") for c in per_algorithm.values()]  # the fallback executor
    worst = {}
    for (name, kwargs), dtype, backend in runs:
        os.environ["OPTIMLAB_BACKEND"] = backend if DEVICE == "cuda" else os.environ.get("OPTIMLAB_BACKEND", "")
        try:
            results = []
            before = dict(kernels.stats)
            for fused in (True, False):
                params, opt = make_side(shapes, getattr(optimlab, name), {**kwargs, "fused": None if fused else False},
                                        dtype=dtype)
                sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.9 ** t)
                g = torch.Generator(device=DEVICE).manual_seed(1)
                for _ in range(6):
                    for p in params:
                        p.grad = torch.randn(p.shape, generator=g, device=DEVICE, dtype=dtype)
                    with eager_sqrt(not fused):
                        opt.step()
                    sched.step()
                results.append([p.detach().double() for p in params])
                if fused:
                    fell_back = kernels.stats["eager_tensors"] - before["eager_tensors"]
            diff = max(float((a - b).abs().max()) for a, b in zip(*results))
            scale = max(float(b.abs().max()) for b in results[1])
            tol = {torch.float32: 1e-5, torch.float64: 1e-12, torch.bfloat16: 5e-2}[dtype] * max(scale, 1.0)
            if DEVICE == "cpu" and dtype != torch.bfloat16:  # the dry run: bit for bit (see eager_sqrt)
                tol = 0.0
            verdict = "ok" if diff <= tol and fell_back == 0 else "FAIL"
            key = f"{name} {dtype} {backend}".replace("torch.", "")
            worst[key] = max(worst.get(key, 0.0), diff)
            if verdict != "ok":
                print(f"  {verdict}: {name} {kwargs} {dtype}: max|triton - eager| = {diff:.3g} "
                      f"(tol {tol:.1g}), eager fallbacks {fell_back}", flush=True)
        except Exception:
            print(f"  ERROR {name} {kwargs} {dtype}:\n{traceback.format_exc()}", flush=True)
    if DEVICE == "cuda":
        os.environ.pop("OPTIMLAB_BACKEND", None)
    for key, diff in worst.items():
        print(f"  {key:<30} max|fused - eager| over its cases: {diff:.3g}")


def capture_check() -> None:
    """Capture one capturable step in a CUDA graph, replay it with fresh gradients; compare with
    the same optimizer stepping eagerly (optimlab's eager rule, also in its capturable form, which
    reads the counter with ``.item()`` and computes ``beta ** step`` on the host where the kernel
    computes it with CUDA's ``pow``, and torch.optim's own); count the kernels one captured step
    launches."""
    shapes = [(1000,), (37, 5), (4096,), (3,)]
    cases = [("Adam", {"lr": 1e-2}), ("AdamW", {"lr": 1e-2, "amsgrad": True}), ("NAdam", {"lr": 1e-2}),
             ("RMSprop", {"lr": 1e-2, "momentum": 0.9, "centered": True}),
             ("Adam", {"lr": 1e-2, "state_dtype": "int8"}),  # 8-bit state on the 4096 tensor (torch: none)
             ("Adam", {"lr": 1e-2, "state_dtype": torch.bfloat16})]  # the rounding's step read on the device
    for name, kwargs in cases:
        try:
            pg, og = make_side(shapes, getattr(optimlab, name), {**kwargs, "capturable": True})
            pe, oe = make_side(shapes, getattr(optimlab, name), {**kwargs, "fused": False})
            pc, oc = make_side(shapes, getattr(optimlab, name), {**kwargs, "fused": False, "capturable": True})
            plain = {k: v for k, v in kwargs.items() if k != "state_dtype"}
            pt, ot = make_side(shapes, getattr(torch.optim, name), {**plain, "capturable": True, "foreach": True})
            gen = torch.Generator(device="cuda").manual_seed(7)

            def new_grads():
                grads = [torch.randn(p.shape, generator=gen, device="cuda") for p in pg]
                for side in (pg, pe, pt, pc):
                    for p, g in zip(side, grads):
                        p.grad.copy_(g)

            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):  # warm-up outside the graph: plans, kernels, state
                    new_grads()
                    og.step()
                    oe.step()
                    ot.step()
                    oc.step()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            fused_before = kernels.stats["fused_tensors"]
            with torch.cuda.graph(graph):
                og.step()
            captured = kernels.stats["fused_tensors"] - fused_before
            for _ in range(5):
                new_grads()
                graph.replay()
                oe.step()
                ot.step()
                oc.step()
            torch.cuda.synchronize()
            d_capt = max(float((a - b).abs().max()) for a, b in zip(pg, pc))
            d_eager = max(float((a - b).abs().max()) for a, b in zip(pg, pe))
            d_torch = 0.0 if "state_dtype" in kwargs else max(float((a - b).abs().max()) for a, b in zip(pg, pt))
            sg, se = og.state_dict()["state"], oe.state_dict()["state"]
            d_state = max(float((sg[i][k].double().cpu() - se[i][k].double().cpu()).abs().max())
                          for i in sg for k in sg[i] if torch.is_tensor(sg[i][k]))
            steps = float(sg[0]["step"])
            ok = d_eager < 1e-5 and d_torch < 1e-5 and d_state < 1e-5 and steps == 8 and captured == len(shapes)
            label = name + (f" {kwargs['state_dtype']}" if "state_dtype" in kwargs else "")
            launches = _graph_kernels(og)  # one more step: after every comparison
            print(f"  {label:<10} {'PASS' if ok else 'FAIL'}: 3 eager + 5 replayed steps; max|graph - eager| "
                  f"params {d_eager:.2g}, state {d_state:.2g}; vs eager capturable {d_capt:.2g}; vs torch "
                  f"capturable {d_torch:.2g}; step counter {steps:g} (on {sg[0]['step'].device}); "
                  f"{launches} kernels per captured step", flush=True)
        except Exception:
            print(f"  {name:<8} ERROR:\n{traceback.format_exc()}", flush=True)


def _graph_kernels(opt) -> str:
    """How many kernels one step launches (counted by the profiler over a step, capturable form)."""
    try:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            opt.step()
            torch.cuda.synchronize()
        return str(sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA))
    except Exception as e:  # the profiler is a diagnostic here
        return f"? ({type(e).__name__})"


LATENCY = r"""
import sys, time, torch
sys.path.insert(0, {src!r}); sys.path.insert(0, {here!r})
import optimlab
from step_speed import ALGORITHMS, DEFAULT_ALGORITHMS, LAYOUTS
from cuda_step import make_side
torch.zeros(1, device="cuda"); torch.cuda.synchronize()
shapes = LAYOUTS["b"][1]()
for name, cls, _, kw, _, _ in ALGORITHMS:
    if name not in DEFAULT_ALGORITHMS:
        continue
    out = []
    for _ in range(2):
        params, opt = make_side(shapes, cls, kw)
        torch.cuda.synchronize()
        t = time.perf_counter(); opt.step(); torch.cuda.synchronize(); out.append(time.perf_counter() - t)
        del params, opt
    print(f"  {{name:<13}} cold {{out[0]:6.2f}} s   warm (second optimizer, same process) {{out[1] * 1e3:7.1f}} ms",
          flush=True)
"""


def first_step_latency() -> None:
    code = LATENCY.format(src=os.path.join(HERE, "..", "src"), here=HERE)
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "OPTIMLAB_CACHE_DIR": cache, "TRITON_CACHE_DIR": os.path.join(cache, "triton-cache")}
        try:
            res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=150)
            print(res.stdout, end="")
            if res.returncode:
                print(f"  latency subprocess failed ({res.returncode}):\n{res.stderr[-3000:]}")
        except subprocess.TimeoutExpired as e:
            print(f"  latency subprocess timed out; printed so far:\n{e.stdout}")


def time_pair(topt, oopt, samples: int, per_sample: int = 5) -> tuple[list[float], list[float]]:
    """Seconds per step of each side, one sample per round (``per_sample`` steps between CUDA
    events), the two sides alternating which goes first."""
    for _ in range(3):
        topt.step()
        oopt.step()
    tt, ot = [], []
    for i in range(samples):
        if i % 2:
            ot.append(cuda_time(oopt.step, per_sample))
            tt.append(cuda_time(topt.step, per_sample))
        else:
            tt.append(cuda_time(topt.step, per_sample))
            ot.append(cuda_time(oopt.step, per_sample))
    return tt, ot


def verdict(ratio: tuple[float, float, float], target: float) -> str:
    """A target read from the ratio's 95% interval: met, MISSED, or inconclusive when the interval holds it."""
    outcome = decide(ratio[1], ratio[2], target, ">")
    return "met" if outcome == "holds" else "MISSED" if ratio[2] < target else "inconclusive"


def host_ms(opt, steps: int = 20) -> float:
    """Median milliseconds for ``opt.step()`` to return, the device drained before each (so the
    queue never blocks the host): the step's host work alone."""
    times = []
    for _ in range(steps):
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def host_table(budget: float, names: tuple[str, ...]) -> None:
    """Host milliseconds per step, layouts t and a: torch's path, optimlab (checks in C), optimlab
    (checks in Python), optimlab without the kernel launch, optimlab launching through Triton's
    JIT each step (not the compiled kernel directly), and each side's full step time (host +
    kernels, 5 steps between events); then where one step's host time goes (cProfile over 200
    steps of Adam, layout a)."""
    print(f"{'algorithm':<13} {'layout':<21} {'torch path':<10} {'torch host':>10} {'ours host':>10} "
          f"{'py-checks':>10} {'no launch':>10} {'JIT launch':>10} {'torch step':>10} {'ours step':>10}   (ms)")
    for name, label, lk, path, n, bytes_per, oopt, topt in cells(["t", "a"], budget, names=names):
        try:
            class Python:  # the same optimizer, stepped with the checks in Python
                @staticmethod
                def step():
                    python_checks(oopt.step)
            for opt in (topt, oopt, Python):
                for _ in range(3):
                    opt.step()
            class NoLaunch:  # optimlab's step with the kernel launch (Triton's and ours) left out
                @staticmethod
                def step():
                    from optimlab.kernels import triton_gpu
                    real, triton_gpu.launch = triton_gpu.launch, lambda *args: None
                    try:
                        oopt.step()
                    finally:
                        triton_gpu.launch = real
            class JitLaunch:  # optimlab's step launching through Triton's JIT every time
                @staticmethod
                def step():
                    from optimlab.kernels import triton_gpu
                    triton_gpu.FAST_LAUNCH = False
                    try:
                        oopt.step()
                    finally:
                        triton_gpu.FAST_LAUNCH = True
            sides = (topt, oopt, Python, NoLaunch, JitLaunch)
            hosts = [[] for _ in sides]
            for i in range(5):  # alternate the sides
                for k, opt in (enumerate(sides) if i % 2 == 0 else reversed(list(enumerate(sides)))):
                    hosts[k].append(host_ms(opt, 7))
            th, oh, ph, nh, jh = (statistics.median(h) for h in hosts)
            ts, os_ = cuda_time(topt.step, 5), cuda_time(oopt.step, 5)
            bound = "  host-bound" if oh > 0.9 * os_ else ""
            print(f"{name:<13} {label:<21} {path:<10} {th * 1e3:10.3f} {oh * 1e3:10.3f} {ph * 1e3:10.3f} "
                  f"{nh * 1e3:10.3f} {jh * 1e3:10.3f} {ts * 1e3:10.3f} {os_ * 1e3:10.3f}{bound}",
                  flush=True)
        except Exception:
            print(f"{name:<13} {label:<21} ERROR:\n{traceback.format_exc()}", flush=True)
    host_profile()


def host_profile(steps: int = 200) -> None:
    """cProfile over ``steps`` host-only Adam steps on layout a (the device drained every 20 steps):
    the functions that take the host's time, by their own time (the profiler inflates small calls)."""
    import cProfile
    import pstats

    try:
        shapes = LAYOUTS["a"][1]()
        _, opt = make_side(shapes, optimlab.Adam, {"lr": 1e-3})
        for _ in range(5):
            opt.step()
        profiler = cProfile.Profile()
        for i in range(steps):
            if i % 20 == 0 and DEVICE == "cuda":
                torch.cuda.synchronize()
            profiler.enable()
            opt.step()
            profiler.disable()
        stats = pstats.Stats(profiler)
        total = stats.total_tt / steps
        print(f"  Adam layout a, host: {total * 1e6:.1f} us per step under cProfile; own time per step, top 14:")
        rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:14]
        for (file, line, fn), (_, calls, own, cum, _) in rows:
            print(f"    {own / steps * 1e6:7.2f} us own {cum / steps * 1e6:7.2f} us cum {calls / steps:5.1f} calls  "
                  f"{os.path.basename(file)}:{line} {fn}", flush=True)
    except Exception:
        print(f"  host profile ERROR:\n{traceback.format_exc()}", flush=True)


# A kernel layout: (per-program branch, evict-first, unrolled, BLOCK, blocks per program, warps,
# prefetch depth, tl.range stages, persistent programs per SM); the first is the default.
VARIANTS = [
    (True, False, True, 1024, 4, 4, 0, 0, 0), (True, True, True, 1024, 4, 4, 0, 0, 0),
    # loads issued ahead of the arithmetic of earlier blocks (more bytes in flight per thread)
    (True, False, True, 1024, 4, 4, 1, 0, 0), (True, False, True, 1024, 4, 4, 3, 0, 0),
    (True, False, True, 512, 8, 4, 1, 0, 0), (True, False, True, 512, 8, 4, 2, 0, 0),
    (True, False, True, 1024, 8, 8, 1, 0, 0), (True, False, True, 512, 4, 2, 3, 0, 0),
    (True, True, True, 1024, 4, 4, 1, 0, 0), (True, False, True, 2048, 4, 8, 1, 0, 0),
    # a looped chunk that Triton software-pipelines
    (True, False, False, 1024, 16, 4, 0, 3, 0), (True, False, False, 1024, 16, 4, 0, 2, 0),
    (True, False, False, 2048, 32, 16, 0, 3, 0),  # torch's geometry (512 threads x 4 elements, 64K chunks)
    # a persistent grid: SMs x k programs walking every chunk
    (True, False, True, 1024, 4, 4, 0, 0, 4), (True, False, True, 1024, 4, 4, 1, 0, 8),
    (True, False, False, 1024, 16, 4, 0, 3, 4)]
# Runs 5-8 (docs/performance.md, H200) timed BLOCK 512-4096, 4-32 blocks per program and 2-16 warps,
# unrolled and looped, in order (no prefetch, no stages, no persistent grid): every layout within
# 0.136-0.157 ms for Adam on layout a, none ahead of the default by more than the run-to-run spread.


def _use(split: bool, stream: bool, unroll: bool, block: int, iters: int, warps: int, prefetch: int = 0,
         stages: int = 0, persist: int = 0) -> None:
    from optimlab.kernels import triton_gpu

    triton_gpu.SPLIT, triton_gpu.STREAM, triton_gpu.UNROLL = split, stream, unroll
    triton_gpu.BLOCK, triton_gpu.ITERS, triton_gpu.CHUNK, triton_gpu.NUM_WARPS = block, iters, block * iters, warps
    triton_gpu.PREFETCH, triton_gpu.STAGES, triton_gpu.PERSIST = prefetch, stages, persist


def _describe(variant) -> str:
    split, stream, unroll, block, iters, warps, prefetch, stages, persist = variant
    return (f"{'per-program' if split else 'per-block'}{', evict-first' if stream else ''}, "
            f"{'unrolled' if unroll else 'loop'}{f', prefetch {prefetch}' if prefetch else ''}"
            f"{f', {stages} stages' if stages else ''}{f', persistent {persist}/SM' if persist else ''}, "
            f"{block} x {iters}, {warps} warps")


def _compiled() -> list:
    """The kernels Triton compiled for optimlab's current programs (best effort: Triton's cache
    layout differs between versions; an unreadable one is left out)."""
    from optimlab.kernels import triton_gpu

    found = []
    for program in triton_gpu._programs.values():
        for fn, *_ in program.variants.values():
            try:
                for cache in getattr(fn, "device_caches", {}).values():
                    found += (cache[0] if isinstance(cache, tuple) else cache).values()
            except Exception:
                pass
    return found


def _resources() -> str:
    """Registers and spills of the compiled kernels, as the compiler reports them."""
    found = []
    for compiled in _compiled():
        try:
            found.append(f"{compiled.n_regs} regs/{compiled.n_spills} spills")
        except Exception:
            pass
    return ", ".join(found) if found else "regs ?"


def _dump(label: str, path: str) -> None:
    """The PTX and SASS of the compiled kernels, appended to ``path`` (read offline)."""
    with open(path, "a") as f:
        for compiled in _compiled():
            f.write(f"\n\n######## {label}: {getattr(compiled, 'n_regs', '?')} regs, "
                    f"{getattr(compiled, 'n_spills', '?')} spills\n")
            for kind in ("sass", "ptx"):
                try:
                    f.write(f"#### {kind}\n{compiled.asm[kind]}\n")
                except Exception as e:
                    f.write(f"#### {kind}: unavailable ({e!r})\n")


def captured(opts, samples: int) -> list[float]:
    """Median seconds of a replay of each optimizer's captured step (:func:`captured_samples`)."""
    return [statistics.median(t) for t in captured_samples(opts, samples)]


def captured_samples(opts, samples: int) -> list[list[float]]:
    """Each optimizer's step captured in a CUDA graph; seconds per replay, one sample per round
    (5 replays between CUDA events), the optimizers alternating."""
    graphs = []
    for opt in opts:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                opt.step()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            opt.step()
        graphs.append(graph)
    times: list[list[float]] = [[] for _ in opts]
    for i in range(samples):
        order = range(len(opts)) if i % 2 == 0 else reversed(range(len(opts)))
        for k in order:
            times[k].append(cuda_time(graphs[k].replay, 5))
    return times


def sweep(samples: int) -> None:
    """Kernel layouts on layout a (Adam, NAdam): the per-program or per-block full/tail branch,
    evict-first hints, a program's blocks unrolled or looped, loads issued ahead of earlier
    blocks' arithmetic, a software-pipelined loop, a persistent grid, block size, blocks per
    program, warps. Each step is captured in a CUDA graph (``capturable=True``) and replayed, so
    the kernel alone is timed; torch's fused Adam is timed beside each, so that a drift of the
    machine shows. Keeps the fastest layout by the sum of the two algorithms' medians; with
    ``$OUT`` set, writes the default's and the fastest layout's PTX and SASS to ``$OUT/kernels.txt``."""
    from optimlab.kernels import triton_gpu

    shapes = LAYOUTS["a"][1]()
    n = torch.Size(shapes[0]).numel()
    results = {}
    for variant in VARIANTS:
        try:
            _use(*variant)
            triton_gpu._programs.clear()
            sides = [make_side(shapes, cls, {"lr": 1e-3, "capturable": True}) for cls in (optimlab.Adam, optimlab.NAdam)]
            sides.append(make_side(shapes, torch.optim.Adam, {"lr": 1e-3, "capturable": True, "fused": True}))
            row = captured([opt for _, opt in sides], samples)
            resources = _resources()
            del sides
        except Exception:
            print(f"  {_describe(variant)}: ERROR\n{traceback.format_exc()[-2000:]}", flush=True)
            continue
        results[variant] = row[0] + row[1]
        print(f"  {_describe(variant):<58}: Adam {row[0] * 1e3:.4f} ms ({28 * n / row[0] / 1e9:.0f} GB/s, "
              f"{row[2] / row[0]:.3f}x torch), NAdam {row[1] * 1e3:.4f} ms ({28 * n / row[1] / 1e9:.0f} GB/s); "
              f"torch fused {row[2] * 1e3:.4f} ms; {resources}", flush=True)
    best = min(results, key=results.get) if results else VARIANTS[0]
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "best.txt"), "w") as f:
            f.write(repr(best))
        for label, variant in (("default", VARIANTS[0]), ("fastest", best)):
            _use(*variant)
            triton_gpu._programs.clear()
            sides = [make_side(shapes, cls, {"lr": 1e-3, "capturable": True}) for cls in (optimlab.Adam, optimlab.NAdam)]
            for _, opt in sides:
                opt.step()
            _dump(f"{label}: {_describe(variant)}", os.path.join(out, "kernels.txt"))
            del sides
    _use(*best)
    triton_gpu._programs.clear()
    print(f"  using {_describe(best)}")
    approximate_arithmetic(samples, shapes, n)


def approximate_arithmetic(samples: int, shapes, n: int) -> None:
    """What the correctly rounded divisions and square roots cost: the same captured steps with
    Triton's approximate ``fdiv`` and ``sqrt`` (a diagnostic only: optimlab never ships these,
    they break bit-equality with the eager rule), beside torch's fused Adam."""
    from optimlab.kernels import triton_gpu

    real = triton_gpu.generate

    def approximate(*args, **kwargs):
        source, *rest = real(*args, **kwargs)
        source = source.replace("tl.div_rn(", "tl.fdiv(").replace("tl.sqrt_rn(", "tl.sqrt(")
        return (source, *rest)

    for label, generate in (("IEEE (as shipped)", real), ("approximate div/sqrt", approximate)):
        triton_gpu._programs.clear()
        triton_gpu.generate = generate
        try:
            sides = [make_side(shapes, cls, {"lr": 1e-3, "capturable": True}) for cls in (optimlab.Adam, optimlab.NAdam)]
            sides.append(make_side(shapes, torch.optim.Adam, {"lr": 1e-3, "capturable": True, "fused": True}))
            row = captured([opt for _, opt in sides], samples)
            print(f"  {label:<22} Adam {row[0] * 1e3:.4f} ms ({28 * n / row[0] / 1e9:.0f} GB/s), NAdam "
                  f"{row[1] * 1e3:.4f} ms; torch fused Adam {row[2] * 1e3:.4f} ms ({28 * n / row[2] / 1e9:.0f} GB/s)",
                  flush=True)
            del sides
        except Exception:
            print(f"  {label}: ERROR\n{traceback.format_exc()}", flush=True)
        finally:
            triton_gpu.generate = real
    triton_gpu._programs.clear()


LOW = {"bfloat16": torch.bfloat16, "int8": "int8"}


def low_precision_correctness() -> None:
    """bfloat16 / 8-bit state through the Triton kernel vs the eager path on the GPU (3 steps,
    tensors of 5,000 and 4,100: several programs, tails, a partial 8-bit block): the stored state
    bit for bit (codes, scales, bf16 bits) and the parameters; stochastically rounded bfloat16
    parameters (float32 and 8-bit state); SGD with momentum (its first step, which creates the
    buffer, eager: 4 of 6 tensor steps fused). Every row must be bit-equal, in --dry-run too
    (the eager side's square root correctly rounded there: :func:`eager_sqrt`)."""
    cases = [("Adam", {"lr": 1e-2}), ("AdamW", {"lr": 1e-2, "amsgrad": True}), ("NAdam", {"lr": 1e-2}),
             ("RMSprop", {"lr": 1e-2, "centered": True, "momentum": 0.9}), ("Adagrad", {"lr": 0.1})]
    runs = [(name, kwargs, label, {"state_dtype": d}, torch.float32) for name, kwargs in cases for label, d in LOW.items()]
    runs += [(name, kwargs, "bf16 params", {"param_rounding": "stochastic"}, torch.bfloat16)
             for name, kwargs in cases[:3]]  # stochastically rounded bfloat16 parameters, float32 state
    runs += [("Adam", {"lr": 1e-2}, "bf16p int8", {"param_rounding": "stochastic", "state_dtype": "int8"},
              torch.bfloat16)]
    sgd = {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "weight_decay": 1e-2}
    runs += [("SGD", sgd, label, {"state_dtype": d}, torch.float32) for label, d in LOW.items()]
    runs += [("SGD", sgd, "bf16p bf16", {"param_rounding": "stochastic", "state_dtype": torch.bfloat16},
              torch.bfloat16)]
    for name, kwargs, label, extra, dtype in runs:
        try:
            out = []
            for fused in (True, False):
                before = dict(kernels.stats)
                params, opt = make_side([(5000,), (4100,)], getattr(optimlab, name),
                                        {**kwargs, **extra, "fused": None if fused else False}, dtype=dtype)
                g = torch.Generator(device=DEVICE).manual_seed(1)
                for _ in range(3):
                    for p in params:
                        p.grad = torch.randn(p.shape, generator=g, device=DEVICE, dtype=dtype)
                    with eager_sqrt(not fused):
                        opt.step()
                fused_n = kernels.stats["fused_tensors"] - before["fused_tensors"]
                out.append(([p.detach() for p in params], opt.state_dict()["state"], fused_n))
            (pa, sa, na), (pb, sb, _) = out
            dp = max(float((a - b).abs().max()) for a, b in zip(pa, pb))
            bits = lambda t: t.view({1: torch.uint8, 2: torch.int16, 4: torch.int32}[t.element_size()])
            same = all(torch.equal(bits(sa[i][k]), bits(v)) for i in sb for k, v in sb[i].items() if torch.is_tensor(v))
            expected = 4 if name == "SGD" else 6
            ok = same and dp == 0 and na == expected
            verdict = "PASS" if ok else "FAIL"
            print(f"  {name:<8} {label:<11} {verdict}: state bit for bit {same}, "
                  f"max|params| {dp:.3g}, fused tensors {na} of 6 (expected {expected})", flush=True)
        except Exception:
            print(f"  {name:<8} {label:<11} ERROR:\n{traceback.format_exc()}", flush=True)


def low_precision_table(samples: int, triad: Triad, budget: float) -> None:
    """Adam, NAdam, RMSprop with bfloat16 / 8-bit state against torch's fastest float32 path and
    optimlab's float32 step, all four timed alternately (eager steps); state bytes from the tensors."""
    from optimlab.kernels import precision

    print(f"{'algorithm':<9} {'layout':<21} {'torch':<8} {'torch ms':>9} {'f32 ms':>8} {'bf16 ms':>8} {'int8 ms':>8} "
          f"{'f32 x':>6} {'bf16 x':>6} {'int8 x':>6} {'int8 state%':>11}")
    for name, label, lk, path, n, bytes_per, oopt, topt in cells(["a", "b"], budget,
                                                                  names=("adam", "nadam", "rmsprop")):
        try:
            shapes = LAYOUTS[lk][1]()
            kw = next(k for nm, _, _, k, _, _ in ALGORITHMS if nm == name)
            ocls = next(c for nm, c, _, _, _, _ in ALGORITHMS if nm == name)
            lows = [make_side(shapes, ocls, {**kw, "state_dtype": d})[1] for d in LOW.values()]
            sides = [topt, oopt] + lows
            for opt in sides:
                for _ in range(3):
                    opt.step()
            times = [[] for _ in sides]
            for i in range(samples):
                for k in (range(len(sides)) if i % 2 == 0 else reversed(range(len(sides)))):
                    times[k].append(cuda_time(sides[k].step, 5))
            t, f, b, q = (statistics.median(x) for x in times)
            full = sum(precision.state_bytes(s) for s in oopt.state.values())
            small = sum(precision.state_bytes(s) for s in lows[1].state.values())
            print(f"{name:<9} {label:<21} {path:<8} {t * 1e3:9.3f} {f * 1e3:8.3f} {b * 1e3:8.3f} {q * 1e3:8.3f} "
                  f"{t / f:6.2f} {t / b:6.2f} {t / q:6.2f} {100 * small / full:10.1f}%", flush=True)
            del lows, sides
        except Exception:
            print(f"{name:<9} {label:<21} ERROR:\n{traceback.format_exc()}", flush=True)


def division_rounding() -> None:
    """How torch's CUDA ``tensor / number`` rounds, against the forms a kernel can compute:
    mismatching elements out of 1M per divisor (float32)."""
    import numpy as np

    x = torch.randn(1 << 20, device=DEVICE) * 3
    divisors = [(1 - 0.999 ** k) ** 0.5 for k in (1, 2, 3, 6)] + [1 - 0.9 ** 3, 3.0, 0.1, 7e-3]
    print(f"  {'divisor':>12} {'x*f32(1/f32(d))':>16} {'x*f32(1/d)':>11} {'x/f32(d)':>9} {'f64 then f32':>13}")
    for d in divisors:
        eager = x / d
        f32 = np.float32(d)
        forms = [x * float(np.float32(1.0) / f32), x * float(np.float32(1.0 / d)),
                 x / torch.full_like(x, float(f32)), (x.double() / d).float()]
        counts = [int((eager != f).sum()) for f in forms]
        print(f"  {d:12.6g} " + " ".join(f"{c:>{w}d}" for c, w in zip(counts, (16, 11, 9, 13))), flush=True)
    from optimlab.kernels import triton_gpu

    shapes = [(5000,), (7,), (4096,)]
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        for name in ("Adam", "NAdam"):
            diffs = []
            for reciprocal in (True, False):
                triton_gpu.RECIPROCAL = reciprocal
                results = []
                for fused in (True, False):
                    params, opt = make_side(shapes, getattr(optimlab, name), {"lr": 1e-2, "fused": None if fused else False},
                                            dtype=dtype)
                    g = torch.Generator(device=DEVICE).manual_seed(1)
                    for _ in range(6):
                        for p in params:
                            p.grad = torch.randn(p.shape, generator=g, device=DEVICE, dtype=dtype)
                        opt.step()
                    results.append([p.detach().double() for p in params])
                diffs.append(max(float((a - b).abs().max()) for a, b in zip(*results)))
            triton_gpu.RECIPROCAL = None
            print(f"  {name:<6} {str(dtype):<15} max|triton - eager|: reciprocal {diffs[0]:.3g}, division {diffs[1]:.3g}",
                  flush=True)


def cells(layouts: list[str], budget: float, flags: dict[str, dict] | None = None,
          names: tuple[str, ...] = DEFAULT_ALGORITHMS):
    """Each cell's ``(name, label, layout, torch path, parameters, bytes per parameter, optimlab
    optimizer, torch optimizer)``, both sides on the same values; ``flags`` (per algorithm, both
    sides) also picks the algorithms. A cell past the time budget or failing to build is printed."""
    for name, ocls, tcls, kw, torch_flags, bytes_per in ALGORITHMS:
        if name not in names or (flags is not None and name not in flags):
            continue
        path, extra = torch_path(name, torch_flags), (flags or {}).get(name, {})
        for lk in layouts:
            label, make = LAYOUTS[lk][:2]
            if elapsed() > budget:
                print(f"{name:<13} {label:<21} skipped: the run's time budget ({budget:.0f} s) is spent", flush=True)
                continue
            try:
                shapes = make()
                n = sum(torch.Size(s).numel() for s in shapes)
                _, oopt = make_side(shapes, ocls, {**kw, **extra})
                _, topt = make_side(shapes, tcls, {**kw, path: True, **extra})
            except Exception:
                print(f"{name:<13} {label:<21} ERROR:\n{traceback.format_exc()}", flush=True)
                continue
            yield name, label, lk, path, n, bytes_per, oopt, topt
            del oopt, topt
            torch.cuda.empty_cache()


def _share(gbs: float, bw: float, layout: str) -> str:
    """A step's bandwidth as a share of the triad's, with the >= 85% target on layout a."""
    target = (" (>=85% " + ("met" if gbs / bw >= 0.85 else "MISSED") + ")") if layout == "a" else ""
    return f"{100 * gbs / bw:5.0f}%{target}"


def speed_table(samples: int, triad: Triad, layouts: list[str], budget: float, names: tuple[str, ...]) -> None:
    print(f"{'algorithm':<13} {'layout':<21} {'torch path':<10} {'torch ms':>9} {'optimlab ms':>11} "
          f"{'ratio [95% interval]':>21} {'target':>7} {'':<12} {'GB/s':>6} {'triad':>6} {'%triad':>6}")
    for name, label, lk, path, n, bytes_per, oopt, topt in cells(layouts, budget, names=names):
        try:
            oopt.step()
            before = dict(kernels.stats)
            tt, ot = time_pair(topt, oopt, samples)
            tm, om = statistics.median(tt), statistics.median(ot)
            ratio = ratio_ci(tt, ot)
            eager = kernels.stats["eager_tensors"] - before["eager_tensors"]
            bw = triad.gbs(statistics.median(cuda_time(triad) for _ in range(5)))
            gbs = bytes_per * n / om / 1e9
            target = 1.0 if path == "fused" else 3.0
            met = "" if lk == "c" else verdict(ratio, target)
            share = _share(gbs, bw, lk)
            print(f"{name:<13} {label:<21} {path:<10} {tm * 1e3:9.3f} {om * 1e3:11.3f} {ci_text(ratio):>21} "
                  f"{target:>6.1f}x {met:<12} {gbs:6.0f} {bw:6.0f} {share}"
                  + (f"  ({eager} tensors ran eagerly!)" if eager else ""), flush=True)
        except Exception:
            print(f"{name:<13} {label:<21} ERROR:\n{traceback.format_exc()}", flush=True)


def dry_run() -> None:
    """Tiny layouts on CPU tensors through Triton's interpreter: checks the script, measures nothing."""
    global DEVICE
    DEVICE = "cpu"
    os.environ["TRITON_INTERPRET"] = "1"
    os.environ["OPTIMLAB_BACKEND"] = "triton"
    Triad.n = 1 << 16
    LAYOUTS.update({"a": ("a: 1 x 4096 (dry run)", lambda: [(4096,)], 1),
                    "b": ("b: 6 tensors (dry run)", lambda: [(300,), (7,)] * 3, 1),
                    "c": ("c: 20 x 64 (dry run)", lambda: [(64,)] * 20, 1)})
    print("DRY RUN on CPU tensors through Triton's interpreter: the numbers mean nothing")


def graph_table(samples: int, triad: Triad, budget: float) -> None:
    """Both steps captured in a CUDA graph (``capturable=True``; SGD needs no flag, it keeps no
    counter): the replay has no host work, so this times the kernels alone."""
    flags = {"sgd_momentum": {}, "rmsprop": {"capturable": True}, "adam": {"capturable": True},
             "adamw": {"capturable": True}, "nadam": {"capturable": True}}
    print(f"{'algorithm':<13} {'layout':<21} {'torch path':<10} {'torch ms':>9} {'optimlab ms':>11} "
          f"{'ratio [95% interval]':>21} {'target':>7} {'':<12} {'GB/s':>6} {'%triad':>6}")
    for name, label, lk, path, n, bytes_per, oopt, topt in cells(["a", "b"], budget, flags):
        try:
            tt, ot = captured_samples([topt, oopt], samples)
            tm, om = statistics.median(tt), statistics.median(ot)
            ratio = ratio_ci(tt, ot)
            target = 1.0 if path == "fused" else 3.0
            bw = triad.gbs(statistics.median(cuda_time(triad) for _ in range(5)))
            gbs = bytes_per * n / om / 1e9
            print(f"{name:<13} {label:<21} {path:<10} {tm * 1e3:9.3f} {om * 1e3:11.3f} {ci_text(ratio):>21} "
                  f"{target:>6.1f}x {verdict(ratio, target):<12} {gbs:6.0f} {_share(gbs, bw, lk)}", flush=True)
        except Exception:
            print(f"{name:<13} {label:<21} ERROR:\n{traceback.format_exc()}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer timing samples")
    ap.add_argument("--layouts", default="a,b,c")
    ap.add_argument("--algorithms", default=",".join(DEFAULT_ALGORITHMS),
                    help="speed-table cells (any of step_speed.py's, e.g. rprop,adamax)")
    ap.add_argument("--budget", type=float, default=270.0, help="seconds after which remaining cells are skipped")
    ap.add_argument("--skip", default="", help="sections to skip: sweep,division,correctness,capture,latency,host,lowprec,graphs")
    ap.add_argument("--dry-run", action="store_true", help="no GPU: tiny layouts, CPU tensors, Triton's interpreter")
    args = ap.parse_args()
    skip = set(args.skip.split(","))
    samples = 9 if args.quick else 21
    if args.dry_run:
        dry_run()
        samples, skip = 3, skip | {"capture", "latency", "sweep"}  # the sweep times CUDA graphs
    elif not torch.cuda.is_available():
        print("no CUDA device: nothing to measure (--dry-run checks the script on CPU)")
        return
    import triton

    if DEVICE == "cuda":
        props = torch.cuda.get_device_properties(0)
        print(f"GPU {props.name} ({props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB); "
              f"torch {torch.__version__}, triton {triton.__version__}, CUDA {torch.version.cuda}")
    section("HBM bandwidth: in-place triad a += 0.5 * b on 256M float32 (12 bytes per element)")
    triad = Triad()
    for _ in range(3):
        triad()
    bw = triad.gbs(statistics.median(cuda_time(triad) for _ in range(15)))
    print(f"  {bw:.0f} GB/s")
    if "sweep" not in skip:
        section("kernel layout sweep: Adam and NAdam, layout a (the rest of the run uses the fastest)")
        sweep(samples)
    if "division" not in skip:
        section("torch's CUDA division by a number: mismatches of each candidate rounding (of 1M elements)")
        division_rounding()
    if "correctness" not in skip:
        section("correctness on the GPU: Triton step vs optimlab's eager rule, 6 steps with an lr schedule")
        correctness(args.quick)
    if "capture" not in skip:
        section("CUDA-graph capture: capturable=True, one step captured, replayed with new gradients")
        capture_check()
    if "latency" not in skip:
        section("first step on layout b (200 tensors), fresh process and empty kernel caches")
        first_step_latency()
    if "host" not in skip:
        section("host work per step (opt.step() returning, device drained before each), layouts t and a")
        host_table(args.budget, tuple(args.algorithms.split(",")))
    section(f"speed: median of {samples} samples of 5 steps, alternating; ratio = torch ms / optimlab ms, "
            "95% paired bootstrap over the rounds; a target inside the interval is inconclusive")
    speed_table(samples, triad, args.layouts.split(","), args.budget, tuple(args.algorithms.split(",")))
    if "lowprec" not in skip:
        section("low-precision state (bfloat16, int8) through the Triton kernel: vs eager on the GPU")
        low_precision_correctness()
        section("low-precision state speed: median of samples of 5 eager steps, alternating; x = torch ms / ours")
        low_precision_table(samples, triad, args.budget + 30)
    if "graphs" not in skip and DEVICE == "cuda":
        section("captured steps: both sides in a CUDA graph, replays timed (kernels alone, no host work)")
        graph_table(samples, triad, args.budget + 60)
    section("done")


if __name__ == "__main__":
    main()
