"""CPU kernels generated from a traced rule: one pass over every tensor of a bucket.

The expression DAG of :mod:`.trace` is printed as a C loop (each node's C from the op table,
:mod:`.ops`; each buffer access from :class:`CSource`): one load per input, one store per
output, every intermediate in registers, compiled once by the system C compiler, cached on disk
by a hash of its source, and loaded with :mod:`ctypes`. One call processes a whole list of tensors:
the C side splits the concatenated index space into equal chunks, so two threads share the work
of one large tensor or of two thousand small ones alike, with no per-tensor Python call.

Rounding is kept identical to torch's eager CPU kernels: every operation rounds to the tensor's
dtype (``-ffp-contract=off``: no fused multiply-add), each Python number is rounded to that dtype
where it meets a tensor (as torch does with a wrapped scalar), and no ``-ffast-math``.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from array import array
from pathlib import Path
from typing import Any, Sequence

import torch

from .ops import OPS
from .trace import Trace, Unsupported

CTYPES = {torch.float32: "float", torch.float64: "double"}
CHUNK = 1 << 15  # elements per unit of parallel work
PARALLEL_MIN = 1 << 18  # below this many elements one thread does it: waking a second costs more
FLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-ffp-contract=off",
         "-fno-trapping-math", "-fPIC", "-shared", "-std=c99"]

_lock = threading.Lock()
_loaded: dict[str, "Kernel"] = {}
_by_structure: dict[tuple, "Kernel"] = {}
stats = {"built": 0, "loaded": 0}  # compiler runs, and .so files loaded (from cache or fresh)


def cache_dir() -> Path:
    root = os.environ.get("OPTIMLAB_CACHE_DIR")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "optimlab" / "kernels"


def compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _cpu_id() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() + platform.machine()


class CSource:
    """How the C kernel declares, loads and stores its buffers and reads its scalars.

    Every buffer access of the generated code is emitted here, so a subclass can give a buffer
    another storage type (low-precision state) without touching the expression code.
    """

    def __init__(self, ctype: str) -> None:
        self.ctype = ctype

    def declare(self, buffer: int) -> str:
        return f"T *restrict b{buffer}"

    def pointer(self, buffer: int, address: str) -> str:
        return f"(T *){address}"

    def load(self, buffer: int) -> str:
        return f"b{buffer}[j]"

    def store(self, buffer: int, value: str) -> str:
        return f"b{buffer}[j] = {value};"

    def scalar(self, slot: int) -> str:  # a Python number meeting a tensor is rounded to its dtype
        return f"(T)s[{slot}]"

    def preamble(self) -> list[str]:  # C lines before the kernel: helpers its loads and stores call
        return []

    #: segments start at multiples of this within each tensor (block-wise state: its block size)
    align = 1

    def after_loop(self) -> list[str]:  # C lines ending a segment, after its element loop
        return []


def generate(trace: Trace, outputs: Sequence[tuple[int, int]], n_inputs: int, ctype: str,
             source: CSource | None = None) -> str:
    """C source for ``outputs`` (pairs ``(buffer, node)``) of ``trace`` over buffers of ``ctype``.

    Buffers ``0 .. n_inputs-1`` are the inputs; an output buffer may be an input (in place).
    Each node's expression comes from the op table (:mod:`.ops`); buffer accesses from ``source``.
    """
    source = source or CSource(ctype)
    needed = trace.live(node for _, node in outputs)
    n_buffers = max([n_inputs - 1] + [b for b, _ in outputs]) + 1
    T = ctype
    params = ", ".join(source.declare(k) for k in range(n_buffers))
    lines = ["#include <stdint.h>", "#include <math.h>", f"typedef {T} T;", *source.preamble(),
             f"static void segment(int64_t n, {params}, const double *s) {{"]
    for i in needed:
        if trace.nodes[i][0] == "scalar":
            lines.append(f"  const T t{i} = {source.scalar(trace.nodes[i][1])};")
    lines.append("  for (int64_t j = 0; j < n; j++) {")
    for i in needed:
        op, *args = trace.nodes[i]
        if op == "scalar":
            continue
        if op == "in":
            expr = source.load(args[0])
        elif op in OPS:
            expr = OPS[op].emit_c([f"t{a}" for a in args], T)
        else:
            raise Unsupported(f"no C for node {op}", op=op)
        lines.append(f"    const T t{i} = {expr};")
    for buffer, node in outputs:
        lines.append("    " + source.store(buffer, f"t{node}"))
    lines.append("  }")
    lines += source.after_loop()
    lines.append("}")
    call = ", ".join(source.pointer(k, f"ptrs[{k} * nt + t]") + " + off" for k in range(n_buffers))
    lines += [
        "/* ptrs[k * nt + t]: buffer k of tensor t; sizes[t]: its element count, SPAN of it in the",
        "   index space (rounded up to whole blocks of `align`: a segment never starts mid-block) */",
        f"#define SPAN(x) (((x) + {source.align - 1}) / {source.align} * {source.align})",
        "void run(int64_t nt, const int64_t *sizes, void *const *ptrs, const double *s, int threads) {",
        "  int64_t total = 0;",
        "  for (int64_t t = 0; t < nt; t++) total += SPAN(sizes[t]);",
        f"  const int64_t chunk = {CHUNK};",
        "  const int64_t nchunks = (total + chunk - 1) / chunk;",
        f"  #pragma omp parallel num_threads(threads) if (threads > 1 && total >= {PARALLEL_MIN})",
        "  {",
        "    int64_t t = 0, base = 0;  /* tensor t covers [base, base + sizes[t]) of the whole */",
        "    #pragma omp for schedule(dynamic, 1)  /* a descheduled thread on a busy machine holds no work */",
        "    for (int64_t c = 0; c < nchunks; c++) {",
        "      int64_t lo = c * chunk, hi = lo + chunk < total ? lo + chunk : total;",
        "      if (base > lo) { t = 0; base = 0; }",
        "      while (base + SPAN(sizes[t]) <= lo) { base += SPAN(sizes[t]); t++; }",
        "      while (lo < hi) {",
        "        int64_t off = lo - base, end = base + SPAN(sizes[t]) < hi ? base + SPAN(sizes[t]) : hi;",
        "        int64_t last = base + sizes[t] < end ? base + sizes[t] : end;  /* not the padding */",
        f"        if (last > lo) segment(last - lo, {call}, s);",
        "        lo = end;",
        "        if (lo == base + SPAN(sizes[t])) { base += SPAN(sizes[t]); t++; }",
        "      }",
        "    }",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


class Kernel:
    """A compiled ``run`` over lists of same-dtype contiguous CPU tensors."""

    def __init__(self, path: Path, n_buffers: int) -> None:
        self.lib = ctypes.CDLL(str(path))
        self.fn = self.lib.run
        self.fn.restype = None
        self.fn.argtypes = [ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        self.n_buffers = n_buffers

    def __call__(self, sizes: array, ptrs: array, scalars: Sequence[float]) -> None:
        s = array("d", scalars or [0.0])
        n = len(sizes)
        self.fn(n, sizes.buffer_info()[0], ptrs.buffer_info()[0], s.buffer_info()[0],
                torch.get_num_threads())


def accepts(dtype: torch.dtype, device: torch.device) -> bool:
    return dtype in CTYPES and device.type == "cpu"


def launch(kernel: Kernel, bucket: Any, columns: Sequence[list[torch.Tensor]], scalars: Sequence[float]) -> None:
    """Run ``kernel`` over the bucket: ``columns[k]`` is buffer k of every tensor."""
    ptrs = array("q", map(_data_ptr, columns[0]))
    ptrs.extend(map(_data_ptr, columns[1]))
    ptrs.extend(bucket.state_ptrs)  # the state tensors are the plan's own: their addresses hold
    for column in columns[2 + len(bucket.names):]:
        ptrs.extend(map(_data_ptr, column))
    kernel(bucket.sizes, ptrs, scalars)


_data_ptr = torch.Tensor.data_ptr


def _build(source: str, target: Path) -> None:
    cc = compiler()
    if cc is None:
        raise Unsupported("no C compiler found (set CC)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / "kernel.c"
        src.write_text(source)
        out = Path(tmp) / "kernel.so"
        result = subprocess.run([cc, *FLAGS, str(src), "-o", str(out), "-lm"], capture_output=True, text=True)
        if result.returncode != 0:
            raise Unsupported(f"C compiler failed: {result.stderr[-2000:]}")
        os.replace(out, target)  # atomic: a concurrent process sees the whole file or none
    stats["built"] += 1


def kernel_for(trace: Trace, outputs: Sequence[tuple[int, int]], n_inputs: int, dtype: torch.dtype,
               structure: tuple, source: CSource | None = None) -> Kernel:
    """The kernel for this trace structure, from memory, the disk cache, or a fresh build.

    ``source`` (default: plain buffers of ``dtype``) says how buffers are stored; ``structure``
    must tell apart kernels of different sources (it keys the in-memory cache)."""
    kernel = _by_structure.get(structure)
    if kernel is not None:
        return kernel
    ctype = CTYPES.get(dtype)
    if ctype is None:
        raise Unsupported(f"dtype {dtype}")
    text = generate(trace, outputs, n_inputs, ctype, source)
    key = hashlib.sha256("\0".join([text, " ".join(FLAGS), compiler() or "", _cpu_id(),
                                    sys.platform]).encode()).hexdigest()[:24]
    kernel = _loaded.get(key)
    if kernel is not None:
        _by_structure[structure] = kernel
        return kernel
    with _lock:
        kernel = _loaded.get(key)
        if kernel is None:
            path = cache_dir() / f"optimlab_{key}.so"
            if not path.exists():
                _build(text, path)
            n_buffers = max([n_inputs - 1] + [b for b, _ in outputs]) + 1
            kernel = Kernel(path, n_buffers)
            stats["loaded"] += 1
            _loaded[key] = kernel
    _by_structure[structure] = kernel
    return kernel
