"""The fused CUDA step for low-precision state: the generated Triton kernel of :mod:`.triton_gpu`
with the state buffers stored as :mod:`.precision` defines them (bfloat16, or 8-bit blocks).

A bfloat16 parameter with ``param_rounding="stochastic"`` is stored the way bfloat16 state is
(its float32 result rounded with the bits of stream ``"param"``), its state in float32, bfloat16
or 8-bit blocks (:class:`Int8BF16Source`). SGD, which counts no steps, is fused too: the dispatcher
keeps the ``step`` that keys its rounding; the step that creates its momentum buffer runs eagerly.

Only the buffer accesses differ from the float32 kernel (the expressions come from the same trace
and op table), so the Triton, C and eager paths compute the same float32 numbers and store them
with the same bits:

- bfloat16 state: a load widens the 16 bits to float32 (a shift); a store rounds the float32
  result stochastically, element ``i`` of a tensor adding the top 16 bits of
  ``(i ^ key) * 0x9E3779B1`` (:func:`.precision.round_bf16`), the key of the tensor, step and
  stored buffer hashed in the kernel (:func:`.precision.step_key`) from the tensor's key (a
  static row of the pointer table) and the step (an argument);
- 8-bit state: a load decodes each byte with integer operations and multiplies it by its block's
  float32 absmax (read from the scale row); a store takes the absmax of each block of 256 on the
  float bits (a NaN wins: a max-reduction over a ``(BLOCK // 256, 256)`` view), multiplies by its
  correctly rounded reciprocal and encodes (:func:`.precision.quantize`), writing codes and
  scales in the same pass.

Chunks start on multiples of ``CHUNK`` elements and ``BLOCK`` is a multiple of 256 (else the step
runs eagerly), so an 8-bit block never straddles two blocks of a program or two programs.
A ``capturable`` group is fused too: where it rounds stochastically the kernel reads each
tensor's step count from its 0-dim device counter (``STEPS``, no host sync), so the step can be
captured in a CUDA graph; 8-bit state needs no step.
"""

from __future__ import annotations

import os
from array import array
from typing import Any, Sequence

import torch
from torch import Tensor

from . import precision, precision_cpu, triton_gpu
from .trace import Trace, Unsupported

_O_S, _O_U = precision._OFFSET[True], precision._OFFSET[False]
_HALF, _SHIFT = 1 << (precision._SHIFT - 1), precision._SHIFT
G = precision.BLOCK  # elements per 8-bit block

#: the helpers of both storages, called by the generated kernels
HELPERS = f'''@triton.jit
def load_bf16(h):
    return (h.to(tl.uint32) << 16).to(tl.float32, bitcast=True)


@triton.jit
def mix(x):  # precision.hash32 on uint32
    x = x ^ (x >> 16)
    x = x * {0x7FEB352D:#x}
    x = x ^ (x >> 15)
    x = x * {0x846CA68B:#x}
    return x ^ (x >> 16)


@triton.jit
def round_bf16(x, key, index):
    u = x.to(tl.uint32, bitcast=True)
    noise = ((index ^ key) * {precision._GOLDEN:#x}) >> 16
    nan = ((u & 0x7FFFFFFF) + 0x7FFFFF) >> 31
    return (((u + noise) | (nan * 0x7FC00000)) >> 16).to(tl.uint16)


@triton.jit
def decode(c, scale, SIGNED: tl.constexpr):
    c = c.to(tl.uint32)
    if SIGNED:
        k = c & 127
        u = tl.where(k == 0, 0, (k + {_O_S}) << {_SHIFT}).to(tl.uint32) | ((c & 128) << 24)
    else:
        u = tl.where(c == 0, 0, (c + {_O_U}) << {_SHIFT}).to(tl.uint32)
    return u.to(tl.float32, bitcast=True) * scale


@triton.jit
def larger(a, b):  # tl.max's combine, written here: tl.max is itself jitted (interpreter: import order)
    return tl.maximum(a, b)


@triton.jit
def quant_store(codes, scales, offs, i, x, rest, SIGNED: tl.constexpr, BLOCK: tl.constexpr,
                MASKED: tl.constexpr):
    if MASKED:
        mask = offs < rest
        x = tl.where(mask, x, 0.0)
    bits = x.to(tl.uint32, bitcast=True) & 0x7FFFFFFF
    amax = tl.reduce(tl.reshape(bits, (BLOCK // {G}, {G})), 1, larger).to(tl.float32, bitcast=True)
    inverse = tl.div_rn(tl.full((BLOCK // {G},), 1.0, tl.float32), tl.where(amax > 0, amax, 1.0))
    y = tl.reshape(tl.reshape(x, (BLOCK // {G}, {G})) * inverse[:, None], (BLOCK,))
    u = y.to(tl.uint32, bitcast=True)
    if SIGNED:
        k = (((u & 0x7FFFFFFF) + {_HALF:#x}) >> {_SHIFT}).to(tl.int32) - {_O_S}
        code = tl.minimum(tl.maximum(k, 0), {precision._TOP[True]}).to(tl.uint32) | ((u >> 24) & 128)
    else:
        k = ((u + {_HALF:#x}) >> {_SHIFT}).to(tl.int32) - {_O_U}
        code = tl.where(y > 0, tl.minimum(tl.maximum(k, 1), {precision._TOP[False]}), 0).to(tl.uint32)
    group = i * (BLOCK // {G}) + tl.arange(0, BLOCK // {G})
    if MASKED:
        tl.store(codes + offs, code.to(tl.uint8), mask=mask)
        tl.store(scales + group, amax, mask=group * {G} < rest)
    else:
        tl.store(codes + offs, code.to(tl.uint8))
        tl.store(scales + group, amax)
'''


class _LowSource(triton_gpu.TritonSource):
    """The buffers in ``low`` in a low-precision storage (the subclass's)."""

    needs_split = True  # element indices and 8-bit blocks are counted from the chunk's ``start``
    reorders = False  # its accesses name ``offs`` and ``i``: blocks in order

    def __init__(self, dtype: torch.dtype, aligned: bool, low: set[int]) -> None:
        super().__init__(dtype, aligned)
        self.low = low

    def preamble(self) -> list[str]:
        return [HELPERS, ""]

    def _address(self, buffer: int, storage: str) -> str:
        address = f"tl.load(PTRS + {buffer} * nt + t).to(tl.pointer_type({storage})) + start"
        return f"tl.multiple_of({address}, 16)" if self.aligned else address  # start: a multiple of CHUNK

    def _mask(self, masked: bool) -> str:
        return ", mask=mask" if masked else ""


class BF16Source(_LowSource):
    """Buffers in ``low`` are bfloat16 bits rounded stochastically on store (the state, with
    bfloat16 state; the parameter, with ``param_rounding="stochastic"``); buffers in ``f32`` are
    float32 (the state of a bfloat16 parameter without ``state_dtype``); the rest are the
    parameter's dtype. The rounding key of a stored buffer is computed in the kernel, as
    :func:`.precision.step_key` does, from the tensor's key (one static table row: no copy of the
    table per step), the step (two 16-bit arguments: never a specialised or 64-bit value; with
    ``capturable``, read from the tensor's 0-dim counter on the device, argument ``STEPS``) and
    the buffer's stream id."""

    def __init__(self, dtype: torch.dtype, aligned: bool, row: int, streams: dict[int, int],
                 low: set[int], f32: set[int], capturable: bool = False) -> None:
        super().__init__(dtype, aligned, low)
        self.row, self.streams, self.f32, self.capturable = row, streams, f32, capturable

    def _float32(self, buffer: int) -> triton_gpu.TritonSource | None:
        """The accesses of a float32 buffer (None for the others)."""
        if buffer not in self.f32:
            return None
        plain = triton_gpu.TritonSource(torch.float32, self.aligned)
        plain.stream = self.stream
        return plain

    def arguments(self) -> list[str]:
        return ["STEPS"] if self.capturable else ["STEP_LO", "STEP_HI"]

    def setup(self) -> list[str]:
        # the eager path keys on int(step) & 0xFFFFFFFF: truncated to an integer, its low 32 bits
        step = ("tl.load(STEPS + t).to(tl.int64).to(tl.uint32)" if self.capturable
                else "(STEP_HI.to(tl.uint32) << 16) | STEP_LO.to(tl.uint32)")
        return [f"tkey = tl.load(PTRS + {self.row} * nt + t).to(tl.uint32)", f"step_u32 = {step}"]

    def pointer(self, buffer: int, offset: str | None = None) -> list[str]:
        if (plain := self._float32(buffer)) is not None:
            return plain.pointer(buffer, offset)
        if buffer not in self.low:
            return super().pointer(buffer, offset)
        lines = [f"b{buffer} = {self._address(buffer, 'tl.uint16')}"]
        if buffer in self.streams:  # its rounding key for this step
            lines.append(f"key{buffer} = mix(mix(tkey ^ step_u32) ^ {self.streams[buffer]:#x})")
        return lines

    def load(self, buffer: int, masked: bool) -> str:
        if (plain := self._float32(buffer)) is not None:
            return plain.load(buffer, masked)
        if buffer not in self.low:
            return super().load(buffer, masked)
        return f"load_bf16(tl.load(b{buffer} + offs{self._mask(masked)}))"

    def store(self, buffer: int, value: str, masked: bool) -> str:
        if (plain := self._float32(buffer)) is not None:
            return plain.store(buffer, value, masked)
        if buffer not in self.low:
            return super().store(buffer, value, masked)
        rounded = f"round_bf16({value}, key{buffer}, (start + offs).to(tl.uint32))"
        return f"tl.store(b{buffer} + offs, {rounded}{self._mask(masked)})"


class Int8Source(_LowSource):
    """State buffers ``2 .. n_inputs-1`` as 8-bit codes, their block scales at table ``rows``."""

    def __init__(self, dtype: torch.dtype, aligned: bool, n_inputs: int, rows: dict[int, int],
                 signed: Sequence[bool]) -> None:
        super().__init__(dtype, aligned, set(range(2, n_inputs)))
        self.rows, self.signed = rows, {k: signed[k - 2] for k in range(2, n_inputs)}

    def pointer(self, buffer: int, offset: str | None = None) -> list[str]:
        if buffer not in self.low:
            return super().pointer(buffer, offset)
        scales = f"tl.load(PTRS + {self.rows[buffer]} * nt + t).to(tl.pointer_type(tl.float32)) + start // {G}"
        return [f"b{buffer} = {self._address(buffer, 'tl.uint8')}", f"a{buffer} = {scales}"]

    def load(self, buffer: int, masked: bool) -> str:
        if buffer not in self.low:
            return super().load(buffer, masked)
        mask = self._mask(masked)
        return (f"decode(tl.load(b{buffer} + offs{mask}), tl.load(a{buffer} + offs // {G}{mask}), "
                f"{self.signed[buffer]})")

    def store(self, buffer: int, value: str, masked: bool) -> str:
        if buffer not in self.low:
            return super().store(buffer, value, masked)
        rest = "rest" if masked else "0"
        return (f"quant_store(b{buffer}, a{buffer}, offs, i, {value}, {rest}, {self.signed[buffer]}, BLOCK, "
                f"{masked})")


class Int8BF16Source(Int8Source):
    """8-bit state (:class:`Int8Source`) of a stochastically rounded bfloat16 parameter: buffer 0
    accessed as :class:`BF16Source` does (its tensor keys at table row ``row``, after the scale
    rows; the step as BF16Source takes it), the gradient plain bfloat16."""

    def __init__(self, dtype: torch.dtype, aligned: bool, n_inputs: int, rows: dict[int, int],
                 signed: Sequence[bool], row: int, capturable: bool = False) -> None:
        super().__init__(dtype, aligned, n_inputs, rows, signed)
        self.param = BF16Source(dtype, aligned, row, {0: precision.stream_id("param")}, {0}, set(), capturable)

    def arguments(self) -> list[str]:
        return self.param.arguments()

    def setup(self) -> list[str]:
        return self.param.setup()

    def pointer(self, buffer: int, offset: str | None = None) -> list[str]:
        return self.param.pointer(buffer, offset) if buffer == 0 else super().pointer(buffer, offset)

    def load(self, buffer: int, masked: bool) -> str:
        return self.param.load(buffer, masked) if buffer == 0 else super().load(buffer, masked)

    def store(self, buffer: int, value: str, masked: bool) -> str:
        return self.param.store(buffer, value, masked) if buffer == 0 else super().store(buffer, value, masked)


class Backend(precision_cpu.Backend):
    """The CUDA (and, under ``TRITON_INTERPRET=1`` with ``OPTIMLAB_BACKEND=triton``, the CPU)
    backend for one low-precision storage; ``capturable``: for capturable groups (the rounding's
    step read on the device)."""

    def __init__(self, storage: str, capturable: bool = False) -> None:
        super().__init__(storage)
        self.capturable = capturable

    def __repr__(self) -> str:
        return f"precision_triton.Backend({self.storage!r}, capturable={self.capturable})"

    def takes(self, p: Tensor, group: dict[str, Any], rule: Any) -> bool:
        """float32 parameters with low-precision state, or stochastically rounded bfloat16 ones
        (state float32, bfloat16 or 8-bit); the rounding keys on the parameter's ``step``, which
        SGD keeps for it too (see :meth:`.precision_cpu.Backend.takes`). Not 8-bit state with
        kernel blocks that would split its blocks; capturable groups only on a capturable backend
        (:data:`CAPTURABLE`: the step read on the device)."""
        forced = os.environ.get("OPTIMLAB_BACKEND", "").strip().lower() == "triton"
        return (triton_gpu.accepts(p.dtype, p.device, forced)
                and precision_cpu.kept(self.storage, p, group)
                and bool(group.get("capturable")) == self.capturable
                and (self.storage != "int8" or triton_gpu.BLOCK % G == 0))

    def kernel_for(self, trace: Trace, outputs: Sequence[tuple[int, int]], n_inputs: int,
                   dtype: torch.dtype, structure: tuple) -> triton_gpu.Program:
        n_buffers, stored, signed = precision_cpu.layout(self.storage, outputs, n_inputs, structure)
        if self.storage == "int8":  # a scale row per state buffer, in buffer order (prepare's)
            rows = {k: n_buffers + i for i, k in enumerate(range(2, n_inputs))}

            def source(dtype: torch.dtype, aligned: bool) -> triton_gpu.TritonSource:
                if dtype == torch.bfloat16:  # rounded stochastically: its tensor keys after the scales
                    return Int8BF16Source(dtype, aligned, n_inputs, rows, signed, n_buffers + len(rows),
                                          self.capturable)
                return Int8Source(dtype, aligned, n_inputs, rows, signed)
        else:  # one row of tensor keys; each rounded buffer's stream id in the source
            names, state = structure[-1], set(range(2, n_inputs))
            rounded = dtype == torch.bfloat16  # a bfloat16 parameter here is rounded stochastically
            low = (state if self.storage == "bf16" else set()) | ({0} if rounded else set())
            streams = {k: precision.stream_id(names[k - 2]) for k in stored if k in low}
            if rounded:
                streams[0] = precision.stream_id("param")
            f32 = state if self.storage == "f32" else set()

            def source(dtype: torch.dtype, aligned: bool) -> triton_gpu.TritonSource:
                return BF16Source(dtype, aligned, n_buffers, streams, low, f32, self.capturable)
        program = triton_gpu.kernel_for(trace, outputs, n_inputs, dtype,
                                        ("triton", self.storage, self.capturable, *structure), source)
        program.stored = stored
        return program

    store_device_value = staticmethod(triton_gpu.store_device_value)  # capturable scalar state (Nadam)

    def launch(self, program: triton_gpu.Program, bucket: Any, columns: Sequence[list[Tensor]],
               scalars: Any) -> None:
        if self.storage == "int8" and bucket.dtype != torch.bfloat16:  # nothing rounded stochastically
            triton_gpu.launch(program, bucket, columns, scalars, bucket.cache["scales"])
            return
        rows = array("q", bucket.cache["scales"]) if self.storage == "int8" else array("q")
        rows.extend(self.tensor_base(bucket).tolist())
        if self.capturable:  # the kernel reads each tensor's counter, advanced on the device
            triton_gpu.launch(program, bucket, columns, scalars, rows, (bucket.scalars["step"],))
            return
        step = self.tensor_keys(bucket)[1] & 0xFFFFFFFF
        triton_gpu.launch(program, bucket, columns, scalars, rows, (step & 0xFFFF, step >> 16))


#: by state storage; "f32": float32 state of a stochastically rounded bfloat16 parameter
BACKENDS = {"bf16": Backend("bf16"), "int8": Backend("int8"), "f32": Backend("f32")}
#: the same for capturable groups
CAPTURABLE = {storage: Backend(storage, capturable=True) for storage in BACKENDS}


def backend_for(p: Tensor, group: dict[str, Any], rule: Any) -> Backend | None:
    backend = (CAPTURABLE if group.get("capturable") else BACKENDS).get(precision_cpu.storage_of(p, group))
    return backend if backend is not None and backend.takes(p, group, rule) else None
