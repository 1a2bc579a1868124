"""CUDA kernels generated from a traced rule: one Triton launch over every tensor of a bucket.

The expression DAG of :mod:`.trace` is printed as a Triton kernel (each node's Triton expression
from the op table, :mod:`.ops`; each buffer access from :class:`TritonSource`), written to the
kernel cache as a Python file and compiled by Triton once per structure: the rule's scalars
(``lr``, bias corrections) are kernel arguments, so a scheduler changing ``lr`` builds nothing.

One launch covers every tensor of a bucket, as torch's multi-tensor-apply does: a device table
holds each buffer's pointer per tensor and each tensor's size; the work is cut into chunks of
``CHUNK`` elements of one tensor, one chunk per program, listed in two small device tables built
once per bucket. Full blocks run unmasked (vectorised loads when every pointer is 16-byte aligned,
checked on the host), the tail of each tensor masked.

Arithmetic: float16 / bfloat16 / float32 parameters compute in float32, float64 in float64; every
operation is IEEE-rounded (``tl.div_rn``, ``tl.sqrt_rn``, no fused multiply-add), and each Python
number is rounded to the compute type where it meets a tensor, as in the C kernels. State of a
low-precision parameter is stored in its dtype, like the parameter (load: widen, store: round).

``capturable``: the step counter (and Nadam's ``mu_product``) stays a 0-dim tensor on the device.
The trace records the rule's arithmetic on it (``1 - beta1 ** step``; :data:`.trace.DEVICE_OPS`)
as nodes, and the kernel reads the counter from memory and computes them in float64 once per
program, before its blocks: a step launches ``step += 1`` and the kernel, makes no host sync, and
can be captured in a CUDA graph.

Under ``TRITON_INTERPRET=1`` the same kernels run on CPU tensors in Triton's interpreter (tests).
"""

from __future__ import annotations

import hashlib
import math
import importlib.util
import os
import tempfile
import threading
from array import array
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

try:
    import triton  # noqa: F401  (the generated modules import it again)
except ImportError:  # pragma: no cover - the dev extra installs it; CPU installs need not
    triton = None

from .ops import OPS
from .trace import DEVICE_OPS, Trace, Unsupported

NUMBERS = {"scalar", "dscalar", "dconst", *DEVICE_OPS}  # nodes computed once per program, before the blocks

STORAGE = {torch.float16: "tl.float16", torch.bfloat16: "tl.bfloat16", torch.float32: "tl.float32",
           torch.float64: "tl.float64"}
BLOCK = int(os.environ.get("OPTIMLAB_TRITON_BLOCK", 1024))  # elements per vector operation
ITERS = int(os.environ.get("OPTIMLAB_TRITON_ITERS", 4))  # blocks per program: CHUNK elements of one tensor
CHUNK = BLOCK * ITERS
NUM_WARPS = 4
SPLIT = os.environ.get("OPTIMLAB_TRITON_SPLIT", "1") == "1"  # one branch per program, not per block
STREAM = os.environ.get("OPTIMLAB_TRITON_STREAM", "0") == "1"  # evict-first loads and stores (off: see docs)
UNROLL = os.environ.get("OPTIMLAB_TRITON_UNROLL", "1") == "1"  # a program's blocks unrolled, or a loop
# Unrolled full chunks: each block's loads issued this many blocks ahead of its arithmetic (0: in
# order, a block's loads after the previous block's stores), so that more bytes are in flight.
PREFETCH = int(os.environ.get("OPTIMLAB_TRITON_PREFETCH", 0))
STAGES = int(os.environ.get("OPTIMLAB_TRITON_STAGES", 0))  # looped blocks: ``tl.range(num_stages=)``; 0: none
PERSIST = int(os.environ.get("OPTIMLAB_TRITON_PERSIST", 0))  # programs per SM walking every chunk; 0: one per chunk
# After a bucket's first launch through Triton's JIT (which compiles and specialises the kernel
# for these arguments: pointer alignment, the tensor count, an int's width; the numbers' values are
# never specialised), launch the compiled kernel directly: Triton's per-call binding costs more
# than a small step. The cache key holds what the specialisation depends on.
FAST_LAUNCH = os.environ.get("OPTIMLAB_TRITON_FAST_LAUNCH", "1") == "1"
_reciprocal = os.environ.get("OPTIMLAB_TRITON_RECIPROCAL")  # "1"/"0" force; unset: as torch on the device
RECIPROCAL = None if _reciprocal is None else _reciprocal == "1"

_lock = threading.Lock()
_programs: dict[tuple, "Program"] = {}
stats = {"compiled": 0}  # kernels written and loaded (not counting Triton's own per-variant builds)


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def accepts(dtype: torch.dtype, device: torch.device, forced: bool = False) -> bool:
    """Triton takes float16/bfloat16/float32/float64 tensors on CUDA (on the CPU in interpreter mode)."""
    if triton is None or dtype not in STORAGE:
        return False
    return device.type == "cuda" or (device.type == "cpu" and forced and interpreting())


def reciprocal_division() -> bool:
    """Whether ``tensor / number`` multiplies by the number's reciprocal, as torch's CUDA ``div``
    does with a host scalar (one rounded reciprocal, then a product); torch's CPU ``div`` divides.
    The kernels follow the eager rule of the device they run for: on CUDA the reciprocal, in the
    interpreter (CPU tensors) the division."""
    return RECIPROCAL if RECIPROCAL is not None else not interpreting()


def interpreted_pow(a: Any, b: Any) -> Any:
    """``libdevice.pow`` (float64) under Triton's interpreter, which runs no external functions:
    NumPy's ``power`` on the values (the C library's ``pow``, as torch's CPU ``pow``)."""
    from triton.runtime.interpreter import TensorHandle

    with np.errstate(all="ignore"):
        data = np.power(a.handle.data, b.handle.data)
    return triton.language.tensor(TensorHandle(data, a.handle.dtype), a.type)


def compute_type(dtype: torch.dtype) -> str:
    return "tl.float64" if dtype == torch.float64 else "tl.float32"


class TritonSource:
    """How the Triton kernel finds, loads and stores its buffers and reads its scalars.

    Every buffer access of the generated code is emitted here, so a subclass can give a buffer
    another storage type (low-precision state) without touching the expression code.
    """

    needs_split = False  # True: the accesses use the per-program layout's ``start``, ``rest``
    reorders = True  # False: the accesses use ``offs`` and ``i`` by name (no prefetched blocks)

    def __init__(self, dtype: torch.dtype, aligned: bool) -> None:
        self.storage, self.compute, self.aligned = STORAGE[dtype], compute_type(dtype), aligned

    def preamble(self) -> list[str]:
        """Module-level code the kernel calls (``@triton.jit`` helpers)."""
        return []

    def setup(self) -> list[str]:
        """Lines run once per program before the buffers' pointers are read."""
        return []

    def arguments(self) -> list[str]:
        """Integer arguments of the kernel after the numbers, never specialised on their values
        (passed by the launch as ``extra_args``)."""
        return []

    stream = False  # loads and stores marked evict-first (each byte is touched once per step)

    def pointer(self, buffer: int, offset: str | None = None) -> list[str]:
        """Buffer ``buffer``'s pointer for this program, moved on by ``offset`` elements if given
        (the chunk's start: a multiple of 16 bytes, so an aligned pointer stays aligned)."""
        address = f"tl.load(PTRS + {buffer} * nt + t).to(tl.pointer_type({self.storage}))"
        lines = [f"b{buffer} = {address}" + (f" + {offset}" if offset else "")]
        if self.aligned:
            lines.append(f"b{buffer} = tl.multiple_of(b{buffer}, 16)")
        return lines

    def _hints(self, masked: bool) -> str:
        return (", mask=mask" if masked else "") + (', eviction_policy="evict_first"' if self.stream else "")

    def load(self, buffer: int, masked: bool, offs: str = "offs") -> str:
        return f"tl.load(b{buffer} + {offs}{self._hints(masked)}).to(CT)"

    def store(self, buffer: int, value: str, masked: bool, offs: str = "offs") -> str:
        return f"tl.store(b{buffer} + {offs}, {value}.to({self.storage}){self._hints(masked)})"

    def scalar(self, slot: int) -> str:
        """A Python number argument: float32 arguments, or float64's bits as an int64."""
        if self.compute == "tl.float64":
            return f"tl.cast(tl.cast(s{slot}, tl.int64), tl.float64, bitcast=True)"
        return f"tl.cast(s{slot}, CT)"



def generate(trace: Trace, outputs: Sequence[tuple[int, int]], n_inputs: int, dtype: torch.dtype,
             aligned: bool, source: TritonSource | None = None, reciprocal: bool = False,
             split: bool = True, stream: bool = False, unroll: bool = True, prefetch: int = 0,
             stages: int = 0, persistent: bool = False, iters: int | None = None,
             interpreted: bool = False) -> tuple[str, list[int], list[int], set[int], list[int]]:
    """Triton source for ``outputs`` (pairs ``(buffer, node)``) of ``trace``.

    Returns the source, the slots of the Python-number arguments in order, the slots of the
    device inputs (0-dim tensors the kernel reads, ``D<slot>`` arguments), the slots whose
    argument is the number's reciprocal (``reciprocal``: every Python-number divisor, see
    :func:`reciprocal_division`), and the slots of the device computation's numbers (float64
    bits, ``k<slot>`` arguments). ``split``: a program whose chunk lies inside its
    tensor runs every block unmasked with no branch between them, the last chunk of a tensor
    masked, with the pointers moved to the chunk and 32-bit offsets within it; otherwise each
    block tests whether it is full (64-bit offsets from the tensor's start). ``stream``: loads
    and stores evict first. ``unroll``: the ``ITERS`` blocks of a program are unrolled
    (``tl.static_range``); otherwise a loop, so that a program can cover a long chunk.
    ``prefetch`` (unrolled full chunks, ``iters`` blocks): each block's loads are issued that
    many blocks before its arithmetic. ``stages``: the looped full chunk is a ``tl.range`` with
    that many pipeline stages. ``persistent``: each program walks chunks ``pid, pid + grid, ...``
    of the ``nc`` chunks (the launch picks the grid), instead of one chunk per program.
    """
    source = source or TritonSource(dtype, aligned)
    source.stream = stream
    split = split or source.needs_split
    prefetch = prefetch if split and unroll and source.reorders else 0
    stages = stages if split and not unroll and source.reorders else 0
    iters = ITERS if iters is None else iters
    live = trace.live(node for _, node in outputs)
    n_buffers = max([n_inputs - 1] + [b for b, _ in outputs]) + 1
    slots = [trace.nodes[i][1] for i in live if trace.nodes[i][0] == "scalar"]
    divisors = {trace.nodes[i][2] for i in live if reciprocal and trace.nodes[i][0] == "div"
                and trace.nodes[trace.nodes[i][2]][0] == "scalar"}
    inverted = {trace.nodes[i][1] for i in divisors}
    device_slots, constants = _device_arguments(trace, live)
    double = source.compute == "tl.float64"
    helpers = {"div": "tl.fdiv" if double else "tl.div_rn", "sqrt": "tl.sqrt" if double else "tl.sqrt_rn",
               "zeros": "tl.full([BLOCK], 0.0, CT)", "ones": "tl.full([BLOCK], 1.0, CT)"}
    args = ["PTRS", "SIZES", "PROGRAM_TENSOR", "PROGRAM_START", "nt"] + (["nc"] if persistent else [])
    args += [f"D{slot}" for slot in device_slots] + [f"s{slot}" for slot in slots]
    args += [f"k{slot}" for slot in constants] + source.arguments()
    scalar_names = [f"s{slot}" for slot in slots] + [f"k{slot}" for slot in constants] + source.arguments()
    lines = _imports(trace, live, interpreted) + source.preamble() + [
             f"@triton.jit(do_not_specialize={scalar_names!r})",
             f"def kernel({', '.join(args)}, BLOCK: tl.constexpr, ITERS: tl.constexpr):",
             f"    CT: tl.constexpr = {source.compute}",
             "    pid = tl.program_id(0)"]
    chunk = "c" if persistent else "pid"
    inner = [f"    t = tl.load(PROGRAM_TENSOR + {chunk}).to(tl.int64)",
             f"    start = tl.load(PROGRAM_START + {chunk})",
             "    n = tl.load(SIZES + t)"]
    inner += ["    " + line for line in source.setup()]
    inner += ["    " + line for k in range(n_buffers) for line in source.pointer(k, "start" if split else None)]
    for i in live:  # the numbers: arguments, and a capturable step's arithmetic on its device counters
        op, *rest = trace.nodes[i]
        if op == "scalar":
            inner.append(f"    t{i} = {source.scalar(rest[0])}")
        else:
            inner += _device_line(trace, i)
    body = [trace, live, outputs, source, helpers, divisors]
    if split:
        offs = " " * 12 + "offs = i * BLOCK + tl.arange(0, BLOCK)"
        loop = "        for i in " + ("tl.static_range(ITERS):" if unroll else
                                      f"tl.range(ITERS, num_stages={stages}):" if stages else "range(ITERS):")
        inner.append("    if start + BLOCK * ITERS <= n:")
        if prefetch:
            inner += _prefetched(body, iters, prefetch)
        else:
            inner += [loop, offs] + _body(*body, masked=False)
        tail = loop if unroll and not stages else "        for i in range((rest + BLOCK - 1) // BLOCK):"
        inner += ["    else:", "        rest = (n - start).to(tl.int32)  # < BLOCK * ITERS here",
                  tail, offs, " " * 12 + "mask = offs < rest"]  # a loop: only blocks that hold elements
        inner += _body(*body, masked=True)
    else:
        offsets = ["lo = start + i * BLOCK",
                   "offs = tl.max_contiguous(tl.multiple_of(lo + tl.arange(0, BLOCK), BLOCK), BLOCK)"]
        inner += ["    for i in tl.static_range(ITERS):"] + [" " * 8 + line for line in offsets]
        inner += ["        if lo + BLOCK <= n:"] + _body(*body, masked=False)
        inner += ["        else:", "            mask = offs < n"] + _body(*body, masked=True)
    if persistent:
        inner = ["    for c in range(pid, nc, tl.num_programs(0)):"] + ["    " + line for line in inner]
    return "\n".join(lines + inner) + "\n", slots, device_slots, inverted, constants


def _imports(trace: Trace, live: list[int], interpreted: bool) -> list[str]:
    lines = ["import triton", "import triton.language as tl"]
    if any(trace.nodes[i][0] == "dpow" for i in live):
        lines.append("from optimlab.kernels.triton_gpu import interpreted_pow as pow64" if interpreted
                     else "from triton.language.extra.libdevice import pow as pow64")
    return lines + ["", ""]


def _device_arguments(trace: Trace, live: list[int]) -> tuple[list[int], list[int]]:
    """The slots of the device inputs (``D<slot>``: 0-dim tensors read) and of the device
    computation's numbers (``k<slot>``: float64 bits) among ``live``, in order."""
    return ([trace.nodes[i][1] for i in live if trace.nodes[i][0] == "dscalar"],
            [trace.nodes[i][1] for i in live if trace.nodes[i][0] == "dconst"])


def _device_line(trace: Trace, i: int) -> list[str]:
    """Node ``i`` of a capturable step's device arithmetic (float64), if it is one."""
    op, *rest = trace.nodes[i]
    if op == "dscalar":
        return [f"    t{i} = tl.load(D{rest[0]}).to(tl.float64)"]
    if op == "dconst":
        return [f"    t{i} = tl.cast(tl.cast(k{rest[0]}, tl.int64), tl.float64, bitcast=True)"]
    if op in DEVICE_OPS:
        return [f"    t{i} = {DEVICE_OPS[op][1].format(**dict(zip('ab', (f't{a}' for a in rest))))}"]
    return []


def _prefetched(body: list, iters: int, depth: int) -> list[str]:
    """A full chunk's ``iters`` blocks unrolled, each block's loads issued ``depth`` blocks ahead
    of its arithmetic and stores (the blocks are disjoint, so no load passes a store to its address)."""
    pad = " " * 8
    lines = [f"{pad}offs_{k} = {k} * BLOCK + tl.arange(0, BLOCK)" for k in range(iters)]
    loads = [_body(*body, masked=False, block=k, part="loads") for k in range(iters)]
    for k in range(min(depth, iters)):
        lines += loads[k]
    for k in range(iters):
        if k + depth < iters:
            lines += loads[k + depth]
        lines += _body(*body, masked=False, block=k, part="rest")
    return [pad + line.lstrip() for line in lines]


def _body(trace: Trace, live: list[int], outputs: Sequence[tuple[int, int]], source: TritonSource,
          helpers: dict[str, str], divisors: set[int], masked: bool, block: int | None = None,
          part: str = "all") -> list[str]:
    """One block's loads, arithmetic and stores (``part``: all, only the loads, or the rest).
    ``block``: the values and offsets are that block's own names (``t3_1``, ``offs_1``), for
    blocks whose work is interleaved; a scalar keeps its one name."""
    pad = " " * 12
    suffix = "" if block is None else f"_{block}"
    where = {} if block is None else {"offs": f"offs{suffix}"}

    def name(node: int) -> str:
        return f"t{node}" if trace.nodes[node][0] in NUMBERS else f"t{node}{suffix}"

    lines = []
    for i in live:
        op, *args = trace.nodes[i]
        if op in NUMBERS or (part == "loads" and op != "in") or (part == "rest" and op == "in"):
            continue
        if op == "in":
            expr = source.load(args[0], masked, **where)
        elif op == "div" and args[1] in divisors:  # the argument is the divisor's reciprocal
            expr = f"({name(args[0])} * {name(args[1])})"
        elif op in OPS:
            expr = OPS[op].emit_triton([name(a) for a in args], helpers)
        else:
            raise Unsupported(f"no Triton for node {op}", op=op)
        lines.append(f"{pad}{name(i)} = {expr}")
    if part != "loads":
        lines += [pad + source.store(buffer, name(node), masked, **where) for buffer, node in outputs]
    return lines


def cache_dir() -> Path:
    from .cpu import cache_dir as kernels_cache
    return kernels_cache() / "triton"


def _load(source: str) -> Any:
    """The ``kernel`` of ``source``, written once to the cache (Triton compiles from a file)."""
    key = hashlib.sha256(source.encode()).hexdigest()[:24]
    path = cache_dir() / f"optimlab_{key}.py"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".py")
        with os.fdopen(fd, "w") as f:
            f.write(source)
        os.replace(tmp, path)  # atomic: a concurrent process sees the whole file or none
    spec = importlib.util.spec_from_file_location(f"optimlab_triton_{key}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    stats["compiled"] += 1
    return module.kernel


class Program:
    """The kernels of one trace structure (aligned and unaligned variants, built on first use)."""

    def __init__(self, trace: Trace, outputs: Sequence[tuple[int, int]], n_inputs: int, dtype: torch.dtype,
                 source: Callable[[torch.dtype, bool], TritonSource] = TritonSource) -> None:
        self.trace, self.outputs, self.n_inputs, self.dtype = trace, list(outputs), n_inputs, dtype
        self.source = source  # makes the buffer accesses for (dtype, aligned): plain, or low-precision state
        self.double = dtype == torch.float64
        self.variants: dict[tuple, tuple[Any, list[int], list[int], set[int], list[int]]] = {}
        self.variant(True)  # generate now: an op without Triton form is refused before any launch

    def variant(self, aligned: bool) -> tuple[Any, list[int], list[int], set[int], list[int]]:
        """The kernel for this pointer alignment (and the module's current code options)."""
        key = (aligned, reciprocal_division(), SPLIT, STREAM, UNROLL or not SPLIT, (PREFETCH, ITERS) if PREFETCH else 0,
               STAGES, PERSIST > 0, interpreting())
        found = self.variants.get(key)
        if found is None:
            with _lock:
                found = self.variants.get(key)
                if found is None:
                    source, *layout = generate(self.trace, self.outputs, self.n_inputs, self.dtype,
                                               aligned, self.source(self.dtype, aligned), reciprocal=key[1],
                                               split=key[2], stream=key[3], unroll=key[4],
                                               prefetch=PREFETCH, stages=STAGES, persistent=key[7], iters=ITERS,
                                               interpreted=key[8])
                    found = self.variants[key] = (_load(source), *layout)
        return found


def kernel_for(trace: Trace, outputs: Sequence[tuple[int, int]], n_inputs: int, dtype: torch.dtype,
               structure: tuple, source: Callable[[torch.dtype, bool], TritonSource] = TritonSource) -> Program:
    """The program of ``structure`` (which must tell ``source``'s kernels apart from others)."""
    program = _programs.get(structure)
    if program is None:
        program = _programs[structure] = Program(trace, outputs, n_inputs, dtype, source)
    return program


_data_ptr = Tensor.data_ptr


class _Tables:
    """A bucket's device tables: buffer pointers per tensor, sizes, and the program -> chunk map."""

    def __init__(self, bucket: Any, device: torch.device) -> None:
        sizes = list(bucket.sizes)
        tensor_of, start_of = array("i"), array("q")
        for t, n in enumerate(sizes):
            for start in range(0, n, CHUNK):
                tensor_of.append(t)
                start_of.append(start)
        self.programs = len(tensor_of)
        self.sizes = torch.tensor(sizes, dtype=torch.int64, device=device)
        self.program_tensor = torch.frombuffer(tensor_of, dtype=torch.int32).to(device) if self.programs else None
        self.program_start = torch.frombuffer(start_of, dtype=torch.int64).to(device) if self.programs else None
        self.device = device
        self.host = array("q")
        self.compiled: dict[tuple, Any] = {}  # Triton's compiled kernel per variant, launched directly
        self.ptrs: Tensor | None = None
        self.aligned = False

    def pointers(self, bucket: Any, columns: Sequence[list[Tensor]], extra: Sequence[int] = ()) -> Tensor:
        """The device table for this step: the plan's parameter and state addresses (checked by
        the dispatcher) and this step's gradients (written there by it); new state read here;
        then ``extra`` rows (a low-precision state's rounding keys or block scales)."""
        host = array("q", bucket.static_ptrs)
        for column in columns[2 + len(bucket.names):]:
            host.extend(map(_data_ptr, column))
        addresses = len(host)
        host.extend(extra)
        if host != self.host:  # new gradients (or new state): one copy; unchanged under graph capture
            self.host = host
            self.aligned = all(address % 16 == 0 for address in host[:addresses])
            table = torch.frombuffer(host, dtype=torch.int64)
            if self.ptrs is None or self.ptrs.numel() != len(host):
                self.ptrs = table.to(self.device)
            else:
                self.ptrs.copy_(table, non_blocking=self.device.type == "cuda")
        return self.ptrs


def _reciprocal(value: float, double: bool) -> float:
    """``1 / value`` as torch's CUDA ``div`` by a number uses it: computed in double, rounded to
    the compute type (float32 for float32 / bfloat16 / float16 parameters). Measured on an H200
    (benchmarks/cuda_step.py, division section): ``x / d`` equals ``x * float32(1 / d)`` on every
    element, where ``float32(1 / float32(d))`` and a true division differ on up to 99%."""
    if not value:
        return math.copysign(math.inf, value)
    inverse = 1.0 / value  # in double, as torch does for every floating type, then rounded
    return inverse if double else array("f", (inverse,))[0]  # nearest float32 (overflow: inf), no NumPy call


def _bits(value: float) -> int:
    return array("q", array("d", [value]).tobytes())[0]


def _raw_stream(index: int) -> int:
    """The current CUDA stream's handle (what Triton's launcher takes), without a Stream object."""
    raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    return raw(index) if raw is not None else torch.cuda.current_stream(index).cuda_stream


_sm_counts: dict[int, int] = {}


def _processors(device: torch.device) -> int:
    """The device's multiprocessors (a persistent grid's unit); 4 for CPU tensors (the interpreter)."""
    if device.type != "cuda":
        return 4
    index = device.index if device.index is not None else torch.cuda.current_device()
    count = _sm_counts.get(index)
    if count is None:
        count = _sm_counts[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return count


def _disable_fast_launch() -> None:
    global FAST_LAUNCH
    FAST_LAUNCH = False


def launch(program: Program, bucket: Any, columns: Sequence[list[Tensor]], scalars: Sequence[Any],
           extra: Sequence[int] = (), extra_args: Sequence[int] = ()) -> None:
    """Run the bucket's step: ``columns[k]`` is buffer k of every tensor; ``scalars`` by slot;
    ``extra``: rows appended to the pointer table (see :meth:`_Tables.pointers`); ``extra_args``:
    the source's :meth:`TritonSource.arguments`."""
    device = columns[0][0].device
    tables = bucket.cache.get("triton")
    if tables is None:
        tables = bucket.cache["triton"] = _Tables(bucket, device)
    if not tables.programs:
        return
    ptrs = tables.pointers(bucket, columns, extra)
    kernel, slots, device_slots, inverted, constants = program.variant(tables.aligned)
    args: list[Any] = [ptrs, tables.sizes, tables.program_tensor, tables.program_start, len(columns[0])]
    grid = tables.programs
    if PERSIST > 0:
        args.append(tables.programs)
        grid = min(grid, PERSIST * _processors(device))
    args += [scalars[k] for k in device_slots]  # 0-dim tensors the kernel reads (capturable counters)
    values = [float(scalars[k]) for k in slots]
    if inverted:
        values = [_reciprocal(v, program.double) if k in inverted else v for k, v in zip(slots, values)]
    args += [_bits(v) for v in values] if program.double else values
    args += [_bits(float(scalars[k])) for k in constants]
    args += extra_args
    if interpreting():
        with np.errstate(all="ignore"):  # masked-off lanes of a tail block compute on zeros
            kernel[(grid,)](*args, BLOCK=BLOCK, ITERS=ITERS)
        return
    key = (id(kernel), BLOCK, ITERS, NUM_WARPS, grid)
    if program.double or constants:  # Triton types an int argument (a float64 number's bits) int32 or int64 by value
        key += tuple(-2 ** 31 <= a < 2 ** 31 for a in args if type(a) is int)
    compiled = tables.compiled.get(key) if FAST_LAUNCH else None
    if compiled is not None:
        stream = _raw_stream(device.index if device.index is not None else torch.cuda.current_device())
        try:
            compiled[(grid, 1, 1)](*args, BLOCK, ITERS, stream=stream)
            return
        except TypeError:  # a Triton whose launcher takes other arguments (checked before launching)
            _disable_fast_launch()
    compiled = kernel[(grid,)](*args, BLOCK=BLOCK, ITERS=ITERS, num_warps=NUM_WARPS,
                                         enable_fp_fusion=False)
    if FAST_LAUNCH and hasattr(compiled, "__getitem__"):
        tables.compiled[key] = compiled


_stores: dict[tuple, Any] = {}


def store_device_value(trace: Trace, index: int, out: Tensor) -> bool:
    """Compute device node ``index`` of ``trace`` (a capturable step's scalar state, Nadam's
    ``mu_product``) with one single-program kernel and write it, rounded to ``out``'s dtype, to
    every element of ``out``: one launch where torch would take one per operation. Launched
    after the step's kernel, which read the old value. False: not on a device Triton takes."""
    if not (out.device.type == "cuda" or (interpreting() and out.device.type == "cpu")) or triton is None:
        return False
    live = trace.live([index])
    device_slots, constants = _device_arguments(trace, live)
    structure = (tuple(trace.nodes[i] for i in live), index, out.dtype, interpreting())
    kernel = _stores.get(structure)
    if kernel is None:
        names = [f"k{slot}" for slot in constants]
        lines = _imports(trace, live, interpreting()) + [
            f"@triton.jit(do_not_specialize={names!r})",
            f"def kernel(OUT, n, {''.join(f'D{slot}, ' for slot in device_slots)}"
            f"{''.join(f'{name}, ' for name in names)}BLOCK: tl.constexpr):"]
        lines += [line for i in live for line in _device_line(trace, i)]
        lines += ["    value = (tl.full([BLOCK], 0.0, tl.float64) + t%d).to(OUT.dtype.element_ty)" % index,
                  "    offs = tl.arange(0, BLOCK)",
                  "    for start in range(0, n, BLOCK):",
                  "        tl.store(OUT + start + offs, value, mask=start + offs < n)"]
        kernel = _stores[structure] = _load("\n".join(lines) + "\n")
    args = [out, out.numel(), *(trace.scalars[slot] for slot in device_slots),
            *(_bits(float(trace.scalars[slot])) for slot in constants)]
    with np.errstate(all="ignore"):
        kernel[(1,)](*args, BLOCK=128)
    return True
