"""An independent NumPy emulation of optimlab's low-precision storage (bfloat16 stochastic rounding,
8-bit block quantization with 3-fraction-bit float codes), written from the description in
``optimlab.kernels.precision``'s docstring, not from its code: code values come from the
exponent and fraction of each byte's number (float64 arithmetic, no bit views), rounding is to
the nearest point of the grid of such numbers (float64), the hashes work on ``np.uint32``.
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
    i = np.arange(x.size, dtype=np.uint64).reshape(x.shape) ^ np.uint64(k)
    r = (((i * np.uint64(0x9E3779B1)) & np.uint64(0xFFFFFFFF)) >> np.uint64(16)).astype(np.uint32)
    with np.errstate(over="ignore"):
        bits = (x.view(np.uint32) + r) & np.uint32(0xFFFF0000)
    return np.where(np.isnan(x), x, bits.view(np.float32))


def nearest_bf16(x: np.ndarray) -> np.ndarray:
    """Round to nearest even, finite inputs."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32)


TOP = {True: 127, False: 255}  # the largest magnitude code: 7 bits after the sign, or all 8


def magnitude(k: int, signed: bool) -> float:
    """Magnitude code k: 0 for k = 0, else the number TOP - k steps below 1.0 on the grid of
    numbers with three fraction bits, 2**e * (1 + f / 8)."""
    if k == 0:
        return 0.0
    e, f = 0, 0  # 1.0 = 2**0 * (1 + 0/8), code TOP
    for _ in range(TOP[signed] - k):
        f -= 1
        if f < 0:
            e, f = e - 1, 7
    return 2.0 ** e * (1 + f / 8)


def decode_byte(byte: int, signed: bool) -> float:
    if signed:
        value = magnitude(byte & 0x7F, True)
        return -value if byte & 0x80 else value
    return magnitude(byte, False)


def code_values(signed: bool) -> np.ndarray:
    """float32 value of each of the 256 bytes."""
    return np.array([decode_byte(b, signed) for b in range(256)], dtype=np.float32)


def _grid_round(a: np.ndarray) -> np.ndarray:
    """Non-negative float64 ``a`` to the nearest number with three fraction bits, ties up."""
    mant, exp = np.frexp(a)  # a = mant * 2**exp, mant in [0.5, 1)
    spacing = np.ldexp(1.0, exp - 4)  # 2**(exp-1) / 8
    return np.where(a > 0, np.floor(a / spacing + 0.5) * spacing, 0.0)


def quantize(x: np.ndarray, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per block: absmax, y = x * float32(1 / absmax), |y| to the nearest 3-fraction-bit number
    (ties away from zero); below the smallest code: 0, except that a positive value of the
    unsigned map takes the smallest code."""
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    values = {decode_byte(b, signed): b for b in range(256) if not (signed and b == 0x80)}
    smallest = magnitude(1, signed)
    n_blocks = -(-flat.size // BLOCK)
    codes = np.empty(flat.size, dtype=np.uint8)
    absmax = np.empty(n_blocks, dtype=np.float32)
    for b in range(n_blocks):
        block = flat[b * BLOCK:(b + 1) * BLOCK]
        amax = np.float32(np.max(np.abs(block)))
        absmax[b] = amax
        y = block * (np.float32(1) / (amax if amax > 0 else np.float32(1)))  # float32 throughout
        r = _grid_round(np.abs(y.astype(np.float64)))
        r = np.where(r < smallest, 0.0 if signed else smallest, r)
        if not signed:
            r = np.where(y > 0, r, 0.0)
        c = np.array([values[v] for v in r], dtype=np.uint8)
        if signed:
            c = np.where(np.signbit(y), c | 0x80, c).astype(np.uint8)
        codes[b * BLOCK:(b + 1) * BLOCK] = c
    return codes.reshape(np.shape(x)), absmax


def dequantize(codes: np.ndarray, absmax: np.ndarray, signed: bool) -> np.ndarray:
    table = code_values(signed)
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
