"""An independent NumPy emulation of optimlab's low-precision storage (bfloat16 stochastic rounding,
8-bit dynamic tree block quantization), written from the description in
``optimlab.kernels.precision``'s docstring, not from its code: the map is decoded from the bit
layout of every byte, rounding is an arg-min over the map, the hash works on ``np.uint32``.
"""

from __future__ import annotations

import zlib

import numpy as np

BLOCK = 256


def hash32(x):
    """lowbias32 on uint32 (wrapping multiplication)."""
    x = np.asarray(x, dtype=np.uint32)
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint32(16))
        x = x * np.uint32(0x7FEB352D)
        x = x ^ (x >> np.uint32(15))
        x = x * np.uint32(0x846CA68B)
        x = x ^ (x >> np.uint32(16))
    return x


def key(seed: int, step: int, tensor: int, name: str) -> np.uint32:
    k = hash32(np.uint32(seed) ^ hash32(np.uint32(tensor)))
    k = hash32(k ^ np.uint32(step))
    return hash32(k ^ np.uint32(zlib.crc32(name.encode())))


def stochastic_bf16(x: np.ndarray, k) -> np.ndarray:
    """float32 -> float32 holding a bfloat16 value: add 16 random bits below the kept ones, truncate."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    r = hash32(np.arange(x.size, dtype=np.uint32).reshape(x.shape) ^ np.uint32(k)) & np.uint32(0xFFFF)
    with np.errstate(over="ignore"):
        bits = (x.view(np.uint32) + r) & np.uint32(0xFFFF0000)
    return np.where(np.isnan(x), x, bits.view(np.float32))


def nearest_bf16(x: np.ndarray) -> np.ndarray:
    """Round to nearest even, finite inputs."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32)


def decode_byte(byte: int, signed: bool) -> float:
    """The value of one byte of the dynamic tree code (Dettmers et al., 2022)."""
    sign = 1.0
    width = 8
    if signed:
        sign = -1.0 if byte & 0x80 else 1.0
        width = 7
    rest = byte & ((1 << width) - 1)
    if rest == 0:
        return 0.0
    zeros = width - rest.bit_length()           # leading zero bits: the decimal exponent
    fraction_bits = width - zeros - 1            # after the indicator bit
    j = rest & ((1 << fraction_bits) - 1)
    return sign * 10.0 ** -zeros * (0.1 + 0.9 * (j + 1) / 2 ** fraction_bits)


def code_map(signed: bool) -> np.ndarray:
    """Sorted distinct float32 values of all 256 bytes."""
    values = np.array([decode_byte(b, signed) for b in range(256)], dtype=np.float32)
    values[values == 0] = 0.0  # one zero, +0.0
    return np.unique(values)


def quantize(x: np.ndarray, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Nearest map entry (ties to the lower one) of x / absmax per block; a positive value of the
    unsigned map never becomes 0."""
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    table = code_map(signed).astype(np.float64)
    n_blocks = -(-flat.size // BLOCK)
    codes = np.empty(flat.size, dtype=np.uint8)
    absmax = np.empty(n_blocks, dtype=np.float32)
    for b in range(n_blocks):
        block = flat[b * BLOCK:(b + 1) * BLOCK]
        amax = np.float32(np.max(np.abs(block)))
        absmax[b] = amax
        normed = block / (amax if amax > 0 else np.float32(1))  # float32 division
        distance = np.abs(normed.astype(np.float64)[:, None] - table[None, :])
        c = np.argmin(distance, axis=1)  # first (lower) index on a tie
        if not signed:
            c = np.where((normed > 0) & (c == 0), 1, c)
        codes[b * BLOCK:(b + 1) * BLOCK] = c
    return codes.reshape(np.shape(x)), absmax


def dequantize(codes: np.ndarray, absmax: np.ndarray, signed: bool) -> np.ndarray:
    table = code_map(signed)
    scale = np.repeat(absmax, BLOCK)[: codes.size]
    return (table[codes.reshape(-1)] * scale).astype(np.float32).reshape(codes.shape)


def adam_step(p, g, m, v, step, lr, b1, b2, eps):
    """torch.optim.Adam's float32 arithmetic (lerp form of the EWMA), as optimlab's rule orders it."""
    f = np.float32
    m = m + f(1 - b1) * (g - m)
    v = v + f(1 - b2) * (g * g - v)
    step_size = lr / (1 - b1 ** step)
    denom = np.sqrt(v) / f((1 - b2 ** step) ** 0.5) + f(eps)
    return p - f(step_size) * (m / denom), m, v
