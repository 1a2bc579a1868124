"""The fused CPU step for low-precision state: the generated C kernel of :mod:`.cpu` with the
state buffers stored as :mod:`.precision` defines them (bfloat16, or 8-bit blocks), and the step of
a stochastically rounded bfloat16 parameter (``param_rounding="stochastic"``: the parameter and its
gradient as bfloat16 bits, the parameter rounded like bfloat16 state with the bits of stream
``"param"``; its state float32, bfloat16, or 8-bit: :class:`Int8BF16Source`).

bfloat16 state: each state buffer is declared ``uint16_t``; a load widens it to float32 (exact, a
shift), a store rounds the float32 result stochastically with the same counter-based bits as the
eager path (:data:`.precision.ROUND_BF16_C` next to :func:`.precision.round_bf16`), a block of 256
at a time from a float32 row in L1 (vectorized by hand where the block holds no NaN). Each stored
buffer gets one 64-bit word per segment, passed with the buffer: the stream's key in its high half
and the element index of the segment's first element in its low half, so that element ``i`` of
the tensor draws the same bits whichever thread and chunk runs it. The key is hashed there from
the tensor's :func:`.precision.tensor_key` (a table row written once per seed) and the step (one
word of the table, written each step), as the Triton kernels do: a step makes no per-tensor key
in Python. The element index is 32-bit (a segment is at most ``cpu.CHUNK`` long), so the rounding
runs in 32-bit lanes with one integer multiply per element for the bits.

8-bit state: the loop runs block by block (256 elements, which stay in L1): the block's codes are
decoded into a float32 scratch row, the rule runs over it in place and takes the block's absmax on
the float bits as it stores, then the block's codes are written, all in the same pass over memory;
every loop is a handful of integer and float operations on each element and vectorizes (no table
look-ups).

SGD, which counts no steps, runs here too: where it rounds stochastically the eager path and the
dispatcher keep a ``step`` for the key (:func:`optimlab.kernels._counters`); the step that
creates its momentum buffer (the first) runs eagerly (:attr:`Backend.MAKES_STATE`).

Only the buffer accesses differ from the float32 kernel: the expressions come from the same trace
and op table, so the fused and eager paths compute the same float32 numbers and round them with
the same bits.
"""

from __future__ import annotations

import os
from array import array
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from . import cpu, precision
from .trace import Trace, Unsupported


class BF16Source(cpu.CSource):
    """Buffers ``2 .. n_inputs-1`` (the state) in bfloat16; each stored one with its key word,
    hashed from the tensors' key row ``keys`` of ``ptrs`` (:func:`.precision.tensor_key`), the
    step (the word after that row) and the buffer's stream (``streams``: buffer -> stream id).

    The element loop runs block by block (``block``): the rule's results for a stored buffer go
    to a float32 row ``x<k>`` (L1), with the row's largest ``abs_bits`` kept as they are stored;
    after the block, the row is rounded into the buffer (``round_block_bf16``: sixteen elements
    per AVX2 step where the row holds no NaN, else the one-element C).
    """

    block = precision.BLOCK

    def __init__(self, n_inputs: int, n_buffers: int, streams: dict[int, int],
                 low: set[int] | None = None) -> None:
        super().__init__("float")
        self.low = set(range(2, n_inputs)) if low is None else low  # the buffers kept as bfloat16 bits
        self.rows = streams  # the buffers rounded stochastically, with their stream ids
        self.keys = n_buffers  # the row of ptrs with the tensors' keys; the step at ptrs[(keys + 1) * nt]

    def preamble(self) -> list[str]:
        return [precision.ROUND_BF16_C, precision.STEP_KEY_C]

    def declare(self, buffer: int) -> str:
        if buffer not in self.low:
            return super().declare(buffer)
        key = f"uint64_t r{buffer}, " if buffer in self.rows else ""
        return f"{key}uint16_t *restrict b{buffer}"

    def pointer(self, buffer: int, address: str) -> str:
        if buffer not in self.low:
            return super().pointer(buffer, address)
        key = ""
        if buffer in self.rows:  # this step's key of the tensor's stream in the high half, off in the low
            tensor = f"(uint32_t)(uintptr_t)ptrs[{self.keys} * nt + t]"
            step = f"(uint32_t)(uintptr_t)ptrs[{self.keys + 1} * nt]"
            key = f"((uint64_t)step_key({tensor}, {step}, {self.rows[buffer]:#X}u) << 32) + (uint64_t)off, "
        return f"{key}(uint16_t *){address}"  # the generator adds `+ off` to the buffer pointer

    def load(self, buffer: int) -> str:
        return f"load_bf16(b{buffer}[j])" if buffer in self.low else super().load(buffer)

    def block_begin(self) -> list[str]:
        return [f"    float x{k}[{precision.BLOCK}]; uint32_t top{k} = 0;  /* buffer {k}'s new values, their largest bits */"
                for k in self.rows]

    def store(self, buffer: int, value: str) -> str:
        if buffer not in self.low:
            return super().store(buffer, value)
        return (f"x{buffer}[j - q] = {value}; "
                f"top{buffer} = abs_bits({value}) > top{buffer} ? abs_bits({value}) : top{buffer};")

    def block_end(self) -> list[str]:
        # the key in r's high half, the segment's first element index in its low half
        return [f"    round_block_bf16(x{k}, b{k} + q, (uint32_t)(r{k} >> 32), (uint32_t)r{k} + (uint32_t)q, m, top{k});"
                for k in self.rows]


class Int8Source(cpu.CSource):
    """Buffers ``2 .. n_inputs-1`` (the state) as 8-bit codes with a float32 scale per block.

    Segments start on block boundaries (``align``) and the element loop runs block by block
    (``block``): before a block, its codes are decoded into a scratch row ``x<k>`` (code value
    times absmax); the rule reads and writes the scratch row, and keeps the block's new absmax
    (the largest ``|x|`` on the float bits) as it stores; after the block, the absmax and the
    codes are written (:func:`.precision.codec_c`). A whole block's codes are decoded, and encoded,
    in one loop over all the buffers (AVX2: eight codes of each buffer per decoding step, 32 per
    encoding step); the segment's last, partial block buffer by buffer.
    """

    align = block = precision.BLOCK

    def __init__(self, n_inputs: int, n_buffers: int, stored: Sequence[int], signed: Sequence[bool]) -> None:
        super().__init__("float")
        self.low = set(range(2, n_inputs))
        self.tag = {k: "s" if signed[k - 2] else "u" for k in self.low}
        self.stored = list(stored)
        self.rows = {k: n_buffers + i for i, k in enumerate(sorted(self.low))}  # scale rows of ptrs

    def preamble(self) -> list[str]:
        return [precision.BLOCK_C] + [precision.codec_c(tag == "s") for tag in sorted(set(self.tag.values()))]

    def declare(self, buffer: int) -> str:
        if buffer not in self.low:
            return super().declare(buffer)
        return f"float *restrict a{buffer}, uint8_t *restrict b{buffer}"

    def pointer(self, buffer: int, address: str) -> str:
        if buffer not in self.low:
            return super().pointer(buffer, address)
        # a segment starts on a block boundary: its first block's scale is off / BLOCK
        return f"(float *)ptrs[{self.rows[buffer]} * nt + t] + off / {precision.BLOCK}, (uint8_t *){address}"

    def block_begin(self) -> list[str]:
        size, low = precision.BLOCK, sorted(self.low)
        lines = [f"    float x{k}[{size}];  /* buffer {k}'s block in float32 */" for k in low]
        # a whole block: one loop over every buffer's codes, eight at a time (more independent work
        # per iteration than a loop per buffer); the segment's last block, or no AVX2: per buffer
        lines += ["#ifdef __AVX2__",
                  f"    if (m == {size}) {{",
                  *(f"      const __m256 s{k} = _mm256_set1_ps(a{k}[q / {size}]);" for k in low),
                  f"      for (int64_t i = 0; i < {size}; i += 8) {{",
                  *(f"        decode8_{self.tag[k]}_at(b{k} + q + i, x{k} + i, s{k});" for k in low),
                  "      }",
                  "    } else",
                  "#endif",
                  "    {",
                  *(f"      decode_block_{self.tag[k]}(b{k} + q, x{k}, a{k}[q / {size}], m);" for k in low),
                  "    }"]
        lines += [f"    uint32_t top{k} = 0;  /* the largest |x| of buffer {k}'s new block, on the bits */"
                  for k in self.stored]
        return lines

    def load(self, buffer: int) -> str:
        return f"x{buffer}[j - q]" if buffer in self.low else super().load(buffer)

    def store(self, buffer: int, value: str) -> str:
        if buffer not in self.low:
            return super().store(buffer, value)
        # the absmax is taken as the values are stored (a vectorized max over the loop), not in a
        # pass of its own over the block
        return (f"x{buffer}[j - q] = {value}; "
                f"top{buffer} = abs_bits({value}) > top{buffer} ? abs_bits({value}) : top{buffer};")

    def block_end(self) -> list[str]:
        size, stored, lines = precision.BLOCK, self.stored, []
        for k in stored:  # the absmax (a NaN wins: its bits are the largest), then the codes
            lines += [f"    const float amax{k} = float_of(top{k});",
                      f"    a{k}[q / {size}] = amax{k};",
                      f"    const float inverse{k} = 1.0f / (amax{k} > 0.0f ? amax{k} : 1.0f);"]
        lines += ["#ifdef __AVX2__",
                  f"    if (m == {size}) {{",
                  *(f"      const __m256 v{k} = _mm256_set1_ps(inverse{k});" for k in stored),
                  f"      for (int64_t i = 0; i < {size}; i += 32) {{",
                  *(f"        encode32_{self.tag[k]}(x{k} + i, b{k} + q + i, v{k});" for k in stored),
                  "      }",
                  "    } else",
                  "#endif",
                  "    {",
                  *(f"      encode_block_{self.tag[k]}(x{k}, b{k} + q, inverse{k}, m);" for k in stored),
                  "    }"]
        return lines


class Int8BF16Source(Int8Source):
    """8-bit state (:class:`Int8Source`) of a stochastically rounded bfloat16 parameter: buffers 0
    (the parameter) and 1 (its gradient) are bfloat16 bits, accessed as :class:`BF16Source` does,
    the parameter rounded with its key word (the tensors' key row after the scale rows)."""

    def __init__(self, n_inputs: int, n_buffers: int, stored: Sequence[int], signed: Sequence[bool]) -> None:
        super().__init__(n_inputs, n_buffers, stored, signed)
        self.param = BF16Source(n_inputs, n_buffers + len(self.rows), {0: precision.stream_id("param")}, {0, 1})

    def preamble(self) -> list[str]:  # BF16Source's helpers less the bit helpers BLOCK_C holds too
        return super().preamble() + [precision.ROUND_BF16_C.replace(precision.BITS_C, "", 1), precision.STEP_KEY_C]

    def declare(self, buffer: int) -> str:
        return self.param.declare(buffer) if buffer < 2 else super().declare(buffer)

    def pointer(self, buffer: int, address: str) -> str:
        return self.param.pointer(buffer, address) if buffer < 2 else super().pointer(buffer, address)

    def load(self, buffer: int) -> str:
        return self.param.load(buffer) if buffer < 2 else super().load(buffer)

    def store(self, buffer: int, value: str) -> str:
        return self.param.store(buffer, value) if buffer < 2 else super().store(buffer, value)

    def block_begin(self) -> list[str]:
        return super().block_begin() + self.param.block_begin()

    def block_end(self) -> list[str]:
        return super().block_end() + self.param.block_end()


class Backend:
    """A backend of :func:`optimlab.kernels.step_group` for one storage kind (``"bf16"``, ``"int8"``)."""

    #: a step that creates state (SGD's first, which makes the momentum buffer) runs eagerly: the
    #: eager path stores the new buffer in its storage; the dispatcher plans the next step again
    MAKES_STATE = False
    #: :meth:`launch` reads the gradients at the addresses the dispatcher wrote (as :mod:`.cpu`)
    GRADS_BY_ADDRESS = True

    def __init__(self, storage: str) -> None:
        self.storage = storage

    def __repr__(self) -> str:
        return f"precision_cpu.Backend({self.storage!r})"

    def takes(self, p: Tensor, group: dict[str, Any], rule: Any) -> bool:
        """CPU parameters (:func:`kept`): float32 ones with low-precision state, or stochastically
        rounded bfloat16 ones with float32, bfloat16 or 8-bit state. The rounding keys on the parameter's
        ``step``, which a rule that counts no steps (SGD) keeps for it too
        (``Optimizer.param_state``; the dispatcher advances it)."""
        return p.device.type == "cpu" and kept(self.storage, p, group)

    def state_ok(self, t: Any, p: Tensor) -> bool:
        dtype = {"bf16": torch.bfloat16, "int8": torch.uint8, "f32": torch.float32}[self.storage]
        return (isinstance(t, Tensor) and t.dtype == dtype and t.device == p.device
                and t.layout == torch.strided and t.is_contiguous() and t.shape == p.shape)

    def prepare(self, bucket: Any, optimizer: Any, group: dict[str, Any]) -> None:
        """Remember what keys the rounding: the parameters' positions and the group's seed."""
        index = {id(p): i for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"])}
        bucket.cache["positions"] = np.array([index[id(p)] for p in bucket.params], dtype=np.int64)
        bucket.cache["group"] = group
        bucket.cache["tensor_keys"] = (None, None)  # (seed, precision.tensor_key of the positions)
        if self.storage == "int8":  # the block scales, updated in place by both paths: stable addresses
            scales = array("q")
            for name in bucket.names:
                scales.extend(state[name + precision.SCALE_SUFFIX].data_ptr() for state in bucket.dicts)
            bucket.cache["scales"] = scales

    def kernel_for(self, trace: Trace, outputs: Sequence[tuple[int, int]], n_inputs: int,
                   dtype: torch.dtype, structure: tuple) -> cpu.Kernel:
        n_buffers, stored, signed = layout(self.storage, outputs, n_inputs, structure)
        if self.storage == "int8":  # a bfloat16 parameter here is rounded stochastically
            kind = Int8BF16Source if dtype == torch.bfloat16 else Int8Source
            source: cpu.CSource = kind(n_inputs, n_buffers, stored, signed)
            keyed = [0] if dtype == torch.bfloat16 else []
        else:  # bfloat16 state and / or a stochastically rounded bfloat16 parameter (buffer 0, its
            # gradient buffer 1); float32 state (storage "f32") is plain float
            low = set(range(2, n_inputs)) if self.storage == "bf16" else set()
            if dtype == torch.bfloat16:
                low |= {0, 1}
                stored = [0] + [k for k in stored if k in low]
            names = structure[-1]
            streams = {k: precision.stream_id(names[k - 2] if k else "param") for k in stored}
            source = BF16Source(n_inputs, n_buffers, streams, low)
            keyed = stored
        kernel = cpu.kernel_for(trace, outputs, n_inputs, torch.float32, (self.storage, *structure), source)
        kernel.keyed = keyed  # the buffers rounded stochastically (their keys hashed in the kernel)
        return kernel

    def tensor_base(self, bucket: Any) -> np.ndarray:
        """Every tensor's :func:`.precision.tensor_key` (uint32 values)."""
        seed = bucket.cache["group"].get("rounding_seed", 0)
        cached_seed, base = bucket.cache["tensor_keys"]
        if cached_seed != seed:  # once per seed: the per-step part is two hashes on a small array
            base = precision.tensor_key(seed, bucket.cache["positions"])
            bucket.cache["tensor_keys"] = (seed, base)
        return base

    def tensor_keys(self, bucket: Any) -> tuple[np.ndarray, int]:
        """Every tensor's :func:`.precision.tensor_key` (uint32 values) and this step's count."""
        return self.tensor_base(bucket), int(bucket.scalars["step"][0].item())  # already advanced: as eager

    def launch(self, kernel: cpu.Kernel, bucket: Any, columns: Sequence[list[Tensor]], scalars: Any) -> None:
        """As :func:`.cpu.launch` (one scalar set: this backend has no ``SCALAR_SETS``). The table
        ``bucket.static_ptrs`` (parameters, gradients and state, as the dispatcher checked them
        and wrote the gradients' addresses this step; ``columns[1]`` may be None) is extended on
        the first launch with the block scales' rows (8-bit state) and, where the kernel rounds
        stochastically (bfloat16 state, a bfloat16 parameter), a row of the tensors' keys
        (rewritten when the group's seed changes) and the step's word (each step): the kernel
        hashes each buffer's key from them (:data:`.precision.STEP_KEY_C`)."""
        table, n = bucket.static_ptrs, len(bucket.params)
        at = bucket.cache.get("keys_at")
        if at is None:  # the first launch: the rows that follow the dispatcher's
            if self.storage == "int8":
                table.extend(bucket.cache["scales"])
            at = bucket.cache["keys_at"] = len(table)
            if kernel.keyed:
                table.frombytes(bytes(8 * (n + 1)))
        if kernel.keyed:
            base, step = self.tensor_keys(bucket)
            if bucket.cache.get("keys_written") is not base:  # the first launch, or a new seed
                table[at:at + n] = array("q", base.tolist())
                bucket.cache["keys_written"] = base
            table[at + n] = step & 0xFFFFFFFF  # (the step's low 32 bits, as step_key's)
        kernel(bucket.sizes, table, array("d", scalars or [0.0]), bucket.offsets)  # one set: the trace's scalars


def layout(storage: str, outputs: Sequence[tuple[int, int]], n_inputs: int,
           structure: tuple) -> tuple[int, list[int], list[bool]]:
    """A low-precision kernel's buffers: their count, the stored state buffers (the order of their
    key rows) and, per state buffer, whether its 8-bit code is signed. Unsupported where the step
    creates state or (8-bit) leaves a state buffer unwritten."""
    if any(buffer >= n_inputs for buffer, _ in outputs):
        raise Unsupported("state created by the step (kept eagerly in low precision)")
    stored = sorted(b for b, _ in outputs if b >= 2)
    if storage == "int8" and stored != list(range(2, n_inputs)):
        raise Unsupported("8-bit state the step does not rewrite")
    signed = [name not in precision.NONNEGATIVE for name in structure[-1]]
    return max([n_inputs - 1] + [b for b, _ in outputs]) + 1, stored, signed


def storage_of(p: Tensor, group: dict[str, Any]) -> str:
    """The low-precision backends' key for ``p``: its state's storage ("bf16", "int8"), or "f32"
    for the float32 state of a stochastically rounded bfloat16 parameter ("" otherwise)."""
    return precision.kind(p, group) or ("f32" if precision.rounds_param(p, group) else "")


def kept(storage: str, p: Tensor, group: dict[str, Any]) -> bool:
    """Whether a fused low-precision kernel keeps ``p`` with ``storage``: float32 parameters with
    bfloat16 or 8-bit state, stochastically rounded bfloat16 ones with float32, bfloat16 or 8-bit
    state."""
    if precision.rounds_param(p, group):
        return storage in ("f32", "bf16", "int8")
    return p.dtype == torch.float32 and storage in ("bf16", "int8")


#: by storage; "f32": the float32 state of a stochastically rounded bfloat16 parameter
BACKENDS = {"bf16": Backend("bf16"), "int8": Backend("int8"), "f32": Backend("f32")}


def backend_for(p: Tensor, group: dict[str, Any], rule: Any) -> Backend | None:
    """The backend for ``p``'s low-precision state, or None (the eager path): this module's on the
    CPU, :mod:`.precision_triton`'s on CUDA (and where Triton's interpreter is forced)."""
    if p.device.type != "cpu" or os.environ.get("OPTIMLAB_BACKEND", "").strip().lower() == "triton":
        from . import precision_triton  # imports triton only when a GPU step needs it
        return precision_triton.backend_for(p, group, rule)
    backend = BACKENDS.get(storage_of(p, group))
    return backend if backend is not None and backend.takes(p, group, rule) else None
