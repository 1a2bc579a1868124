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

import atexit
import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import warnings
from array import array
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no build lock
    fcntl = None  # type: ignore[assignment]

import torch

from .ops import OPS
from .trace import Trace, Unsupported

CTYPES = {torch.float32: "float", torch.float64: "double"}
CHUNK = 1 << 15  # elements per unit of parallel work
PARALLEL_MIN = 2 * CHUNK  # below two chunks of work one thread does it: a second would have no whole chunk
FLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-ffp-contract=off",
         "-fno-trapping-math", "-fPIC", "-shared", "-std=c99"]

_lock = threading.Lock()
_loaded: dict[str, "Kernel"] = {}
_by_structure: dict[tuple, "Kernel"] = {}
stats = {"built": 0, "loaded": 0, "rejected": 0}  # compiler runs, .so files loaded, cache files refused


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
    #: C type of the element index ``j`` (a segment holds at most ``CHUNK`` elements)
    index = "int64_t"
    #: when set, the element loop runs block by block (``block`` elements from ``q``, ``m`` of them
    #: in a segment's last block), with :meth:`block_begin` / :meth:`block_end` around each block
    block: int | None = None

    def block_begin(self) -> list[str]:  # C lines before a block's element loop
        return []

    def block_end(self) -> list[str]:  # C lines after a block's element loop
        return []

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
    body = []
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
        body.append(f"const T t{i} = {expr};")
    body += [source.store(buffer, f"t{node}") for buffer, node in outputs]
    if source.block is None:
        lines += [f"  for ({source.index} j = 0; j < n; j++) {{", *("    " + b for b in body), "  }"]
    else:
        size = source.block
        lines += [f"  for (int64_t q = 0; q < n; q += {size}) {{",
                  f"    const int64_t m = n - q < {size} ? n - q : {size};", *source.block_begin(),
                  f"    for ({source.index} j = q; j < q + m; j++) {{", *("      " + b for b in body), "    }",
                  *source.block_end(), "  }"]
    lines += source.after_loop()
    lines.append("}")
    call = ", ".join(source.pointer(k, f"ptrs[{k} * nt + t]") + " + off" for k in range(n_buffers))
    lines += [
        "/* ptrs[k * nt + t]: buffer k of tensor t; sizes[t]: its element count; s + sets[t]: its scalars",
        "   (one set per param group and step count: tensors of many groups share one call); SPAN(sizes[t]):",
        "   its room in the index space (whole blocks of `align`: a segment never starts mid-block) */",
        f"#define SPAN(x) (((x) + {source.align - 1}) / {source.align} * {source.align})",
        "void run(int64_t nt, const int64_t *sizes, void *const *ptrs, const double *s, const int64_t *sets,",
        "         int threads) {",
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
        f"        if (last > lo) segment(last - lo, {call}, s + sets[t]);",
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

    def __init__(self, lib: ctypes.CDLL, n_buffers: int) -> None:
        self.lib = lib
        self.fn = self.lib.run
        self.fn.restype = None
        self.fn.argtypes = [ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                            ctypes.c_void_p, ctypes.c_int]
        self.n_buffers = n_buffers

    def __call__(self, sizes: array, ptrs: array, scalars: array, sets: array) -> None:
        """Run over ``len(sizes)`` tensors; tensor ``t`` reads its scalars at ``scalars[sets[t]:]``.

        ``sizes`` and ``sets`` are ``array("q")``, ``ptrs`` is ``array("q")`` laid out buffer-major
        (``ptrs[k * nt + t]``), ``scalars`` is ``array("d")`` (at least one entry). The arrays are
        passed by address (no conversion per call: ctypes passes a Python int as is).
        """
        self.fn(len(sizes), sizes.buffer_info()[0], ptrs.buffer_info()[0], scalars.buffer_info()[0],
                sets.buffer_info()[0], _threads())


def accepts(dtype: torch.dtype, device: torch.device) -> bool:
    return dtype in CTYPES and device.type == "cpu"


#: this backend runs the tensors of many scalar sets (param groups, step counts) in one call
SCALAR_SETS = True
#: :func:`launch` reads the gradients by the addresses the dispatcher wrote, never the tensors
#: (``columns[1]`` may be None): a step need not make their Python objects (``kernels.listing``)
GRADS_BY_ADDRESS = True


def launch(kernel: Kernel, bucket: Any, columns: Sequence[list[torch.Tensor]], scalars: array) -> None:
    """Run ``kernel`` over the bucket: ``columns[k]`` is buffer k of every tensor; ``scalars`` holds
    every set's scalars, tensor ``t``'s from ``bucket.offsets[t]``.

    The addresses come from the plan (``bucket.static_ptrs``: parameters and state, which the
    dispatcher checked this step, and the gradients, which it wrote there this step); only a
    new state's (``columns`` past the stored ones) are read here.
    """
    fresh = columns[2 + len(bucket.names):]
    ptrs = bucket.static_ptrs
    if fresh:
        ptrs = array("q", ptrs)
        for column in fresh:
            ptrs.extend(map(_data_ptr, column))
    kernel(bucket.sizes, ptrs, scalars, bucket.offsets)


_data_ptr = torch.Tensor.data_ptr
_threads = torch.get_num_threads


# ---------------------------------------------------------------------------------------------
# The disk cache. A shared library is machine code run in this process, so nothing is loaded
# that another user could have written or that differs from what this process's compiler made:
#   * the folder must be a real folder (not a symbolic link) owned by the effective user and not
#     writable by group or others, and no folder above it writable by another user (unless sticky),
#     else the kernels are built in a private temporary folder instead;
#   * each ``optimlab_KEY.so`` must be such a file too, and its SHA-256 must equal the digest
#     written next to it (``optimlab_KEY.sha256``) at build time, checked on the bytes that are
#     then loaded (a private copy of them), before ``dlopen`` runs any of its code;
#   * after loading, its exported ``optimlab_kernel_key`` must equal KEY (a kernel copied under
#     another kernel's name is refused);
#   * a file failing any check is deleted and rebuilt once; if that fails too, the step runs
#     eagerly (one warning). An unwritable folder falls back to the private folder, then eager.
# Builds hold a lock file per key (``flock``), so processes starting together compile once.
# ---------------------------------------------------------------------------------------------

KEY_SYMBOL = "optimlab_kernel_key"
_private: list[Path] = []  # this process's private folder, once made
_copies: list[Path] = []  # the kernels it loaded, copied there
_warned: set[str] = set()


class _Rejected(Exception):
    """A cache file that must not be (or could not be) loaded."""


def cache_dir() -> Path:
    """The configured cache folder: ``$OPTIMLAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/optimlab/kernels``
    (``~/.cache/optimlab/kernels``). It is created with mode 0700 and used only if trusted."""
    root = os.environ.get("OPTIMLAB_CACHE_DIR")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "optimlab" / "kernels"


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=6)


def _foreign(st: os.stat_result, what: str) -> str | None:
    """Why a file or folder with status ``st`` is not trusted, or None."""
    if st.st_uid != os.geteuid():
        return f"{what} is owned by uid {st.st_uid}, not by this user ({os.geteuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{what} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def untrusted_folder(folder: Path) -> str | None:
    """Why ``folder`` must not hold kernels, or None when only this user can change what is in it."""
    try:
        st = os.lstat(folder)
    except OSError as exc:
        return f"cannot inspect it ({exc.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a folder"
    reason = _foreign(st, "it")
    if reason:
        return reason
    # a folder above that another user may write to could swap this one for theirs
    parent = Path(os.path.realpath(folder.parent))
    for above in [parent, *parent.parents]:
        try:
            st = os.stat(above)
        except OSError as exc:
            return f"cannot inspect {above} ({exc.strerror})"
        if st.st_uid not in (0, os.geteuid()):
            return f"{above} above it is owned by uid {st.st_uid}"
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
            return f"{above} above it is writable by group or others"
    return None


def _private_folder() -> Path:
    """A folder of this process only (``mkdtemp``: mode 0700), removed at exit."""
    if not _private:
        folder = Path(tempfile.mkdtemp(prefix="optimlab-kernels-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _private.append(folder)
    return _private[0]


def _cache_folder() -> Path:
    """The trusted cache folder, created 0700 if missing; the private folder when it is refused."""
    root = cache_dir()
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(root, 0o700)
        except FileExistsError:
            pass
    except OSError as exc:
        reason: str | None = f"cannot create it ({exc.strerror or exc})"
    else:
        reason = untrusted_folder(root)
    if reason is None:
        return root
    _warn_once(f"optimlab: kernel cache {root} refused: {reason}; building kernels in a private "
               "temporary folder")
    return _private_folder()


def _open_trusted(path: Path) -> int:
    """A descriptor on the regular file ``path`` (no symbolic link followed), if this user owns it
    and nobody else may write it; raises _Rejected otherwise (FileNotFoundError if absent)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        reason = "it is not a regular file" if not stat.S_ISREG(st.st_mode) else _foreign(st, "it")
        if reason:
            raise _Rejected(f"{path.name}: {reason}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _dlopen_copy(data: bytes, key: str) -> tuple[ctypes.CDLL, Path] | None:
    """Load the checked bytes from a copy of this process's own under a name never used before and
    kept until exit (the dynamic loader reuses a library it knows by name or by inode); None where
    the private folder cannot hold or run it (the caller then loads the cache file itself)."""
    try:
        copy = _private_folder() / f"loaded-{len(_copies)}-{key}.so"
        _copies.append(copy)
        fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return ctypes.CDLL(str(copy)), copy
    except OSError:
        return None


def _kernel_of(n_buffers: int) -> Callable[[ctypes.CDLL, Path], Any]:
    return lambda lib, path: Kernel(lib, n_buffers)


def _load(path: Path, key: str, make: Callable[[ctypes.CDLL, Path], Any]) -> Any:
    """Verify and load ``path``: ``make(library, path it was loaded from)``; _Rejected (or
    FileNotFoundError) when it must not be used."""
    try:
        fd = _open_trusted(path.with_suffix(".sha256"))
    except FileNotFoundError:
        if not os.path.lexists(path):
            raise
        raise _Rejected(f"{path.name}: no digest written at build time") from None
    except OSError as exc:
        raise _Rejected(f"{path.name}: digest unreadable ({exc})") from exc
    try:
        expected = _read_all(fd).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    try:
        fd = _open_trusted(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise _Rejected(f"{path.name}: unreadable ({exc})") from exc
    try:
        data = _read_all(fd)
    finally:
        os.close(fd)
    if hashlib.sha256(data).hexdigest() != expected:
        raise _Rejected(f"{path.name}: content does not match its build digest")
    try:
        lib, loaded = _dlopen_copy(data, key) or (ctypes.CDLL(str(path)), path)
    except OSError as exc:
        raise _Rejected(f"{path.name}: cannot be loaded ({exc})") from exc
    try:
        found = (ctypes.c_char * (len(key) + 1)).in_dll(lib, KEY_SYMBOL).value.decode("ascii", "replace")
    except (ValueError, AttributeError, OSError):
        found = None
    if found != key:
        raise _Rejected(f"{path.name}: holds kernel {found!r}, not {key!r}")
    stats["loaded"] += 1
    return make(lib, loaded)


@contextlib.contextmanager
def _build_lock(folder: Path, key: str) -> Iterator[bool]:
    """Hold ``optimlab_KEY.lock`` (flock) while this key is checked or built; yields False when no
    lock file can be made (a read-only cache: it may still be loaded, not written)."""
    try:
        fd = os.open(folder / f"optimlab_{key}.lock",
                     os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError:
        yield False
        return
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)  # releases the lock


def _remove(*paths: Path) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _build(source: str, target: Path, key: str, flags: Sequence[str] = FLAGS) -> None:
    """Compile ``source`` to ``target`` and write its digest beside it (both renamed into place)."""
    cc = compiler()
    if cc is None:
        raise Unsupported("no C compiler found (set CC)")
    folder = target.parent
    for stale in folder.glob(f".build-{key}-*"):  # left by a killed build of this key (we hold its lock)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=folder))
    try:
        src = tmp / "kernel.c"
        src.write_text(source + f'const char {KEY_SYMBOL}[] = "{key}";\n')
        out = tmp / "kernel.so"
        result = subprocess.run([cc, *flags, str(src), "-o", str(out), "-lm"], capture_output=True, text=True)
        if result.returncode != 0:
            raise Unsupported(f"C compiler failed: {result.stderr[-2000:]}")
        os.chmod(out, 0o600)
        digest = tmp / "kernel.sha256"
        digest.write_text(hashlib.sha256(out.read_bytes()).hexdigest() + "\n")
        os.chmod(digest, 0o600)
        os.replace(digest, target.with_suffix(".sha256"))
        os.replace(out, target)  # atomic: a reader without the lock sees the whole file or none
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stats["built"] += 1


def _load_or_build(folder: Path, source: str, key: str, make: Callable[[ctypes.CDLL, Path], Any],
                   flags: Sequence[str]) -> Any:
    path = folder / f"optimlab_{key}.so"
    with _build_lock(folder, key) as locked:
        try:
            return _load(path, key, make)
        except FileNotFoundError:
            pass
        except _Rejected as why:
            if not locked:
                raise OSError(f"kernel cache {folder} is read-only and {why}") from None
            stats["rejected"] += 1
            _remove(path, path.with_suffix(".sha256"))
        if not locked:
            raise OSError(f"cannot write to kernel cache {folder}")
        _build(source, path, key, flags)
        try:
            return _load(path, key, make)
        except (_Rejected, FileNotFoundError) as why:  # a fresh build that cannot be loaded: eager
            _remove(path, path.with_suffix(".sha256"))
            raise Unsupported(f"freshly built kernel refused: {why}") from None


def obtain(source: str, key: str, make: Callable[[ctypes.CDLL, Path], Any], flags: Sequence[str] = FLAGS) -> Any:
    """``make(library, path)`` of the library compiled from ``source`` (with ``flags``), from the
    trusted cache; else from the private folder; else Unsupported (eager). ``key`` must change
    with anything the machine code depends on (source, flags, compiler, machine)."""
    try:
        folder = _cache_folder()
        try:
            return _load_or_build(folder, source, key, make, flags)
        except OSError as exc:
            if _private and folder == _private[0]:
                raise
            _warn_once(f"optimlab: kernel cache {folder} unusable ({exc}); building kernels in a "
                       "private temporary folder")
        return _load_or_build(_private_folder(), source, key, make, flags)
    except Unsupported:
        raise
    except Exception as exc:  # noqa: BLE001 - the cache must never make a step fail
        raise Unsupported(f"no usable kernel cache ({type(exc).__name__}: {exc})") from exc


def kernel_for(trace: Trace, outputs: Sequence[tuple[int, int]], n_inputs: int, dtype: torch.dtype,
               structure: tuple, source: CSource | None = None) -> Kernel:
    """The kernel for this trace structure, from memory, the disk cache, or a fresh build.

    ``source`` (default: plain buffers of ``dtype``) says how buffers are stored; ``structure``
    must tell apart kernels of different sources (it keys the in-memory cache). Raises
    :class:`Unsupported` (the caller then steps eagerly) when no kernel can be had."""
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
            n_buffers = max([n_inputs - 1] + [b for b, _ in outputs]) + 1
            kernel = _loaded[key] = obtain(text, key, _kernel_of(n_buffers))
    _by_structure[structure] = kernel
    return kernel
