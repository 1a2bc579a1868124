"""How optimizer state (and a bfloat16 parameter) is *stored*: float32, bfloat16, or 8-bit blocks.

The update rules never change: a step loads each state tensor into float32, runs the rule, and
stores the result back in the tensor's storage. This module is the one definition of the storage
formats; the eager path (``Optimizer._apply_rule``) calls it and the fused kernels emit the same
arithmetic.

``state_dtype=torch.bfloat16``
    Every state tensor is kept in bfloat16. The float32 result of the rule is rounded
    *stochastically* (Gupta et al., 2015; Zamirai et al., 2020): the 16 bits that bfloat16 drops
    are added to a 16-bit random number and truncated, so a value rounds up with probability equal
    to its distance from the lower neighbour, and the rounding is unbiased. An EWMA whose per-step
    change is below bfloat16's resolution (``beta2 = 0.999``) would stall under round-to-nearest;
    here it keeps moving on average.

``state_dtype="int8"``
    Block-wise 8-bit quantization after Dettmers, Lewis, Shleifer & Zettlemoyer (2022), "8-bit
    Optimizers via Block-wise Quantization" (ICLR): the flattened tensor is cut into blocks of
    ``BLOCK = 256`` elements; each block keeps its absolute maximum as a float32 scale
    (``<name>_absmax``) and each element one byte, the code of ``y = x * (1 / absmax)``. The code
    is a small floating-point number, as FP8 optimizer state is (torchao's ``AdamWFp8``), rather
    than the paper's dynamic-tree map: ``|y|`` is rounded to three fraction bits (to the nearest
    ``2**e * (1 + f / 8)``, ties away from zero), which on the float32 bits is one integer add and
    shift (``(bits + 2**19) >> 20``), so encoding and decoding are a few integer operations per
    element and vectorize, where a map needs a table look-up each way (a gather, which made the
    whole fused step ~3x slower on the CPUs measured). The *signed* code (moments that change sign:
    ``exp_avg``, momentum buffers, RMSprop's ``grad_avg``) is a sign bit and 127 magnitudes
    ``2**-16 * 1.25 .. 1`` (16 binades, relative step 1/8 .. 1/16); the *unsigned* one (second
    moments: ``exp_avg_sq``, ``max_exp_avg_sq``, ``square_avg``, Adagrad's ``sum``) uses all 8 bits
    for 255 magnitudes ``2**-32 * 1.25 .. 1`` (32 binades: ``sqrt(v)`` over 16 binades); code 0 is
    zero. Values below the smallest code round to 0, except that a positive second moment takes the
    smallest code instead: a zero second moment under a non-zero first one would turn
    ``m / (sqrt(v) + eps)`` into ``m / eps`` (the "zero-point problem" of Li, Chen & Zhu, 2023,
    "Memory Efficient Optimizers with 4-bit States"). Compared with the paper's signed dynamic-tree map,
    the relative error is at most 1/16 at every magnitude, where the map's is under 1% near the
    absmax but up to ~14% two and ~28% three decades below it. Tensors of fewer than
    ``MIN_INT8_NUMEL = 4096`` elements (biases, norms' scales, small layers) keep float32 state, as
    bitsandbytes does (its ``min_8bit_size``).

``param_rounding="stochastic"``
    A bfloat16 parameter receives the float32 result of the rule rounded stochastically, the same
    way as bfloat16 state: pure-bfloat16 training without a float32 master copy, where updates
    smaller than half a unit in the last place are no longer always lost.

Random bits are counter-based (no generator state): element ``i`` of a tensor draws the top 16
bits of ``(i ^ key) * 0x9E3779B1`` (mod ``2**32``), with ``key = stream_key(seed, step, tensor,
stream)`` a ``hash32`` chain over the group's ``rounding_seed``, the parameter's step count, its
position in the optimizer (its ``state_dict`` id) and the stored tensor's name. A fresh uniform key
every step makes each element's bits uniform and independent across steps (the rounding is
unbiased), at one multiply per element. The same step from the same state therefore rounds the
same way however it is run (fused or eager, resumed or not).
"""

from __future__ import annotations

import zlib
from functools import lru_cache
from typing import Any, Mapping

import torch
from torch import Tensor

BLOCK = 256
MIN_INT8_NUMEL = 4096
INT8 = "int8"
#: state entries that are never negative: they take the unsigned map
NONNEGATIVE = frozenset({"exp_avg_sq", "max_exp_avg_sq", "square_avg", "sum"})
SCALE_SUFFIX = "_absmax"
_MASK = 0xFFFFFFFF

# ----------------------------------------------------------------------------- random bits


#: hash32's two odd multipliers
_MIX = (0x7FEB352D, 0x846CA68B)


def hash32(x: Any) -> Any:
    """A 32-bit integer mix (C. Wellons' "lowbias32"): Python int or int64 tensor of uint32 values."""
    x = x ^ (x >> 16)
    x = (x * _MIX[0]) & _MASK
    x = x ^ (x >> 15)
    x = (x * _MIX[1]) & _MASK
    return x ^ (x >> 16)


def stream_id(name: str) -> int:
    """A fixed number for a stored tensor's name (``"param"``, ``"exp_avg"``, ...)."""
    return zlib.crc32(name.encode())


def stream_key(seed: int, step: int, tensor: Any, stream: int) -> Any:
    """The per-tensor key of one step: a hash chain over (seed, tensor, step, stream).

    ``tensor`` is the parameter's position: a Python int, or an int64 tensor / array of many."""
    return step_key(tensor_key(seed, tensor), step, stream)


def tensor_key(seed: int, tensor: Any) -> Any:
    """The part of :func:`stream_key` that does not change from step to step."""
    return hash32((seed & _MASK) ^ hash32(tensor & _MASK))


def step_key(base: Any, step: int, stream: int) -> Any:
    """:func:`stream_key` from its :func:`tensor_key` ``base``."""
    return hash32(hash32(base ^ (step & _MASK)) ^ (stream & _MASK))


#: :func:`hash32` and :func:`step_key` in C, on uint32 (whose products wrap as ``& _MASK`` does):
#: the CPU kernels make each tensor's key of the step from its :func:`tensor_key`
STEP_KEY_C = f"""static inline uint32_t hash32(uint32_t x) {{
  x ^= x >> 16; x *= {_MIX[0]:#X}u; x ^= x >> 15; x *= {_MIX[1]:#X}u; return x ^ (x >> 16);
}}
static inline uint32_t step_key(uint32_t base, uint32_t step, uint32_t stream) {{
  return hash32(hash32(base ^ step) ^ stream);
}}"""


#: the odd multiplier of the per-element bits (2**32 / golden ratio, Knuth's multiplicative hashing)
_GOLDEN = 0x9E3779B1


def random_bits(n: int, key: int, device: torch.device | str = "cpu") -> Tensor:
    """The 16 random bits of elements ``i = 0 .. n-1``: the top half of ``(i ^ key) * 0x9E3779B1``
    (mod ``2**32``; int64 tensor). Over the keys of different steps each element's bits are
    uniform (the product of a uniform 32-bit number and an odd one is uniform), and one multiply
    per element keeps the fused kernels' loops as fast as their float32 twins'."""
    i = torch.arange(n, dtype=torch.int64, device=device) & _MASK
    return (((i ^ key) * _GOLDEN) & _MASK) >> 16  # int64 products wrap: their low 32 bits are exact


def round_bf16(x: Tensor, key: int | None) -> Tensor:
    """float32 ``x`` to bfloat16: stochastically with the bits of ``key``, to nearest when None."""
    if key is None:
        return x.to(torch.bfloat16)
    flat = x.detach().to(torch.float32).contiguous().reshape(-1)
    noise = random_bits(flat.numel(), key, flat.device).to(torch.int32)
    bits = flat.view(torch.int32)
    # adding below the kept bits and truncating rounds the magnitude up with the right probability;
    # a NaN gets the quiet NaN's bits or-ed in, so it stays a NaN whatever the addition did (int32
    # addition wraps as uint32's: the same bits as the C)
    quiet = torch.where(torch.isnan(flat), 0x7FC00000, 0).to(torch.int32)
    return (((bits + noise) | quiet) >> 16).to(torch.int16).view(torch.bfloat16).reshape(x.shape)


#: C helpers of the kernels' block loops: ``abs_bits`` (``|x|``'s float bits, which order as the
#: magnitudes do, a NaN above infinity: a block's absmax is their largest, a NaN winning; a block
#: holds no NaN when their largest is at most infinity's, 0x7F800000) and ``float_of`` (a float
#: from its bits)
BITS_C = """static inline uint32_t abs_bits(float x) { uint32_t u; __builtin_memcpy(&u, &x, 4); return u & 0x7FFFFFFFu; }
static inline float float_of(uint32_t u) { float f; __builtin_memcpy(&f, &u, 4); return f; }"""

#: :func:`round_bf16` in C: element ``i`` of a tensor whose stream key is ``key``; and
#: ``round_block_bf16``, the same over a block of ``m`` float32 values whose largest ``abs_bits``
#: is ``top``: where the block holds no NaN (no quiet bits to or in) sixteen elements at a time in
#: AVX2, else (and on other machines) element by element
ROUND_BF16_C = BITS_C + f"""
static inline uint16_t round_bf16(float f, uint32_t key, uint32_t i) {{
  uint32_t u; __builtin_memcpy(&u, &f, 4);
  uint32_t nan = 0u - (((u & 0x7FFFFFFFu) + 0x7FFFFFu) >> 31);  /* all ones for a NaN, on the bits */
  uint32_t r = (u + (((i ^ key) * {_GOLDEN:#X}u) >> 16)) | (nan & 0x7FC00000u);
  return (uint16_t)(r >> 16);
}}
static inline float load_bf16(uint16_t h) {{
  uint32_t u = (uint32_t)h << 16; float f; __builtin_memcpy(&f, &u, 4); return f;
}}
#ifdef __AVX2__
#include <immintrin.h>
static inline __m256i round8_bf16(const float *x, __m256i i, __m256i key) {{  /* x[0..7], no NaN */
  __m256i bits = _mm256_mullo_epi32(_mm256_xor_si256(i, key), _mm256_set1_epi32((int){_GOLDEN:#X}u));
  return _mm256_srli_epi32(_mm256_add_epi32(_mm256_loadu_si256((const __m256i *)x), _mm256_srli_epi32(bits, 16)), 16);
}}
#endif
static inline void round_block_bf16(const float *restrict x, uint16_t *restrict b, uint32_t key, uint32_t i0,
                                    int64_t m, uint32_t top) {{
  int64_t j = 0;
#ifdef __AVX2__
  if (top <= 0x7F800000u) {{
    const __m256i k = _mm256_set1_epi32((int)key), eight = _mm256_set1_epi32(8);
    __m256i i = _mm256_add_epi32(_mm256_set1_epi32((int)i0), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (; j + 16 <= m; j += 16) {{
      __m256i lo = round8_bf16(x + j, i, k), hi = round8_bf16(x + j + 8, _mm256_add_epi32(i, eight), k);
      i = _mm256_add_epi32(i, _mm256_set1_epi32(16));
      _mm256_storeu_si256((__m256i *)(b + j), _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, hi), 0xD8));
    }}
  }}
#endif
  for (; j < m; j++) b[j] = round_bf16(x[j], key, i0 + (uint32_t)j);
}}"""


# ----------------------------------------------------------------------------- 8-bit block codes


#: a code keeps three fraction bits: the float32 bits below them (20) are rounded off
_SHIFT = 20
#: the largest magnitude code of each map (signed: 7 bits after the sign bit; unsigned: all 8)
_TOP = {True: 127, False: 255}
#: magnitude code ``k > 0`` stands for the float32 whose bits are ``(k + offset) << 20``; the
#: largest one for 1.0 (bits 0x3F800000): signed 889 (codes 2**-16 * 1.25 .. 1), unsigned 761
#: (2**-32 * 1.25 .. 1)
_OFFSET = {signed: (0x3F800000 >> _SHIFT) - top for signed, top in _TOP.items()}


@lru_cache(maxsize=None)
def code_values(signed: bool) -> Tensor:
    """The float32 value (a fraction of the block's absmax) of each of the 256 bytes.

    Signed map: bit 7 is the sign, bits 0-6 the magnitude code ``k``; unsigned map: all 8 bits
    are ``k``. ``k = 0`` is zero; otherwise the value has the float32 bits ``(k + offset) << 20``:
    a float with three fraction bits, the largest code 1.0.
    """
    byte = torch.arange(256, dtype=torch.int64)
    k = byte & 127 if signed else byte
    bits = torch.where(k > 0, (k + _OFFSET[signed]) << _SHIFT, 0)
    if signed:
        bits = bits | ((byte & 128) << 24)
    return torch.where(bits >= 2**31, bits - 2**32, bits).to(torch.int32).view(torch.float32)


def _encode(y: Tensor, signed: bool) -> Tensor:
    """float32 ``y`` (``x / absmax``: ``|y| <= 1``) -> uint8 codes, exactly as the C ``encode_*``."""
    u = y.view(torch.int32).to(torch.int64) & _MASK  # the uint32 bits
    magnitude = u & 0x7FFFFFFF if signed else u  # unsigned map: a negative y gives 0 below anyway
    k = ((magnitude + (1 << (_SHIFT - 1))) >> _SHIFT) - _OFFSET[signed]  # nearest, ties away from 0
    if signed:
        return (k.clamp(0, _TOP[True]) | ((u >> 24) & 128)).to(torch.uint8)
    return torch.where(y > 0, k.clamp(1, _TOP[False]), 0).to(torch.uint8)  # the zero-point guard


def _blocks(x: Tensor) -> Tensor:
    """``x`` flattened and zero-padded to whole blocks, shape ``(n_blocks, BLOCK)``."""
    flat = x.reshape(-1)
    pad = (-flat.numel()) % BLOCK
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return flat.view(-1, BLOCK)


def n_blocks(numel: int) -> int:
    return (numel + BLOCK - 1) // BLOCK


def quantize(x: Tensor, signed: bool) -> tuple[Tensor, Tensor]:
    """float32 ``x`` -> (uint8 codes of x's shape, float32 absmax per block of ``BLOCK``).

    The absmax is the largest ``|x|`` of the block, taken on the float32 bits (a NaN wins); each
    element is multiplied by the float32 reciprocal of the absmax (1 for an all-zero block) and
    encoded (:func:`code_values`)."""
    x = x.detach().to(torch.float32)
    blocks = _blocks(x.contiguous())
    absmax = (blocks.view(torch.int32) & 0x7FFFFFFF).amax(dim=1).view(torch.float32)
    one = torch.ones_like(absmax)
    inverse = one / torch.where(absmax > 0, absmax, one)
    normed = (blocks * inverse[:, None]).reshape(-1)[: x.numel()]
    return _encode(normed, signed).reshape(x.shape), absmax


def dequantize(codes: Tensor, absmax: Tensor, signed: bool) -> Tensor:
    """uint8 ``codes`` and per-block ``absmax`` -> float32 tensor of the codes' shape."""
    values = code_values(signed).to(codes.device)[codes.reshape(-1).long()]
    scale = absmax.repeat_interleave(BLOCK)[: values.numel()]
    return (values * scale).reshape(codes.shape)


def codec_c(signed: bool) -> str:
    """:func:`quantize`'s encoder and :func:`dequantize`'s decoder in C for one map, on the float's
    bits: ``encode_<s|u>(y)`` (``y = x * (1 / absmax)``) and ``decode_<s|u>(code)`` (multiply by the
    absmax) for one element, a handful of integer operations each and no table; and
    ``decode_block_<s|u>`` / ``encode_block_<s|u>`` over a block, the same results eight or
    thirty-two elements at a time in AVX2 where the compiler targets it (x86-64 since 2013), the one-element
    functions for the rest of the block and on other machines (:data:`BLOCK_C` for the helpers).

    The AVX2 forms take shortcuts that give the same bits (checked against the one-element
    functions on every float32 bit pattern): a zero code decodes to zero by ``_mm256_sign_epi32``
    (the magnitude code's sign zeroes the lane), the signed map's sign bit comes from the code
    sign-extended; an encoder packs its 32-bit codes to 16-bit lanes with signed saturation (the
    unclamped codes lie in -1000 .. 1200), bounds them there on one side and lets the unsigned
    pack to bytes bound the other (signed map: ``<= 127`` in 16-bit lanes, ``>= 0`` by the pack,
    the sign bytes from the float bits packed twice with signed saturation, negative exactly where
    the sign bit is set; unsigned map: ``>= 1`` and zero where ``y > 0`` fails in 32-bit lanes,
    ``<= 255`` by the pack), thirty-two elements per step (``encode32_<s|u>``). ``decode8_<s|u>_at`` and
    ``encode32_<s|u>`` are also the steps of the kernel's loops over all its buffers at once
    (:class:`.precision_cpu.Int8Source`).
    """
    tag, offset, top = ("s" if signed else "u"), _OFFSET[signed], _TOP[signed]
    half = 1 << (_SHIFT - 1)
    bias = half - (offset << _SHIFT)  # (bits + half) >> 20 - offset, as one signed add and shift
    if signed:
        encode = (f"  int32_t k = (int32_t)(((u & 0x7FFFFFFFu) + {half:#x}u) >> {_SHIFT}) - {offset};\n"
                  f"  k = k < 0 ? 0 : k > {top} ? {top} : k;\n"
                  "  return (uint8_t)((uint32_t)k | ((u >> 24) & 0x80u));")
        decode = (f"  uint32_t k = c & 127u, u = k == 0u ? 0u : (k + {offset}u) << {_SHIFT};\n"
                  "  u |= (c & 128u) << 24;")
        # the magnitude codes of |y| (and-ed bits), <= 127 in 16-bit lanes, >= 0 by the unsigned
        # pack; the sign bytes: the bits packed twice with signed saturation stay negative exactly
        # where the float is
        encode32 = ("  const __m256i abs = _mm256_set1_epi32(0x7FFFFFFF);\n"
                    f"  __m256i k0 = _mm256_srai_epi32(_mm256_add_epi32(_mm256_and_si256(u0, abs), bias), {_SHIFT});\n"
                    f"  __m256i k1 = _mm256_srai_epi32(_mm256_add_epi32(_mm256_and_si256(u1, abs), bias), {_SHIFT});\n"
                    f"  __m256i k2 = _mm256_srai_epi32(_mm256_add_epi32(_mm256_and_si256(u2, abs), bias), {_SHIFT});\n"
                    f"  __m256i k3 = _mm256_srai_epi32(_mm256_add_epi32(_mm256_and_si256(u3, abs), bias), {_SHIFT});\n"
                    f"  const __m256i top = _mm256_set1_epi16({top});\n"
                    "  __m256i k = _mm256_packus_epi16(_mm256_min_epi16(_mm256_packs_epi32(k0, k1), top),\n"
                    "                                  _mm256_min_epi16(_mm256_packs_epi32(k2, k3), top));\n"
                    "  __m256i sign = _mm256_packs_epi16(_mm256_packs_epi32(u0, u1), _mm256_packs_epi32(u2, u3));\n"
                    "  k = _mm256_or_si256(k, _mm256_and_si256(sign, _mm256_set1_epi8((char)0x80)));")
        widen = "_mm256_cvtepi8_epi32"  # sign-extended: bit 31 is the code's sign bit
        decode8 = ("  __m256i k = _mm256_and_si256(w, _mm256_set1_epi32(127));\n"
                   f"  __m256i u = _mm256_slli_epi32(_mm256_add_epi32(k, _mm256_set1_epi32({offset})), {_SHIFT});\n"
                   "  u = _mm256_sign_epi32(u, k);  /* k == 0: zero */\n"
                   "  u = _mm256_or_si256(u, _mm256_and_si256(w, _mm256_set1_epi32(INT32_MIN)));")
    else:  # a positive y never becomes 0 (the zero-point guard); y <= 0 (or NaN) is 0
        encode = (f"  int32_t k = (int32_t)((u + {half:#x}u) >> {_SHIFT}) - {offset};\n"
                  f"  k = k < 1 ? 1 : k > {top} ? {top} : k;\n"
                  "  return (uint8_t)(y > 0.0f ? k : 0);")
        decode = f"  uint32_t u = c == 0u ? 0u : (c + {offset}u) << {_SHIFT};"
        # >= 1, and zero where y > 0 fails (NaN too), in 32-bit lanes (no pack of the compare
        # masks); <= 255 by the unsigned pack
        encode32 = ("  const __m256i one = _mm256_set1_epi32(1);\n"
                    + "".join(f"  __m256i k{i} = _mm256_and_si256(_mm256_max_epi32(_mm256_srai_epi32("
                              f"_mm256_add_epi32(u{i}, bias), {_SHIFT}), one), positive8(u{i}));\n" for i in range(4))
                    + "  __m256i k = _mm256_packus_epi16(_mm256_packs_epi32(k0, k1), _mm256_packs_epi32(k2, k3));")
        widen = "_mm256_cvtepu8_epi32"
        decode8 = (f"  __m256i u = _mm256_slli_epi32(_mm256_add_epi32(w, _mm256_set1_epi32({offset})), {_SHIFT});\n"
                   "  u = _mm256_sign_epi32(u, w);  /* code 0: zero */")
    return f"""static inline uint8_t encode_{tag}(float y) {{
  uint32_t u; __builtin_memcpy(&u, &y, 4);
{encode}
}}
static inline float decode_{tag}(uint32_t c) {{
{decode}
  float f; __builtin_memcpy(&f, &u, 4); return f;
}}
#ifdef __AVX2__
/* encode_{tag} of x[0..31] * inverse: 32 codes to c[0..31] */
static inline void encode32_{tag}(const float *restrict x, uint8_t *restrict c, __m256 inverse) {{
  __m256i u0 = _mm256_castps_si256(_mm256_mul_ps(_mm256_loadu_ps(x), inverse));
  __m256i u1 = _mm256_castps_si256(_mm256_mul_ps(_mm256_loadu_ps(x + 8), inverse));
  __m256i u2 = _mm256_castps_si256(_mm256_mul_ps(_mm256_loadu_ps(x + 16), inverse));
  __m256i u3 = _mm256_castps_si256(_mm256_mul_ps(_mm256_loadu_ps(x + 24), inverse));
  const __m256i bias = _mm256_set1_epi32({bias});
{encode32}
  store32(c, k);
}}
static inline __m256 decode8_{tag}(__m256i w) {{  /* decode_{tag} of eight codes, widened by {widen} */
{decode8}
  return _mm256_castsi256_ps(u);
}}
/* decode_{tag} of c[0..7] times the scale s to x[0..7] */
static inline void decode8_{tag}_at(const uint8_t *restrict c, float *restrict x, __m256 s) {{
  _mm256_storeu_ps(x, _mm256_mul_ps(decode8_{tag}({widen}(_mm_loadl_epi64((const __m128i *)c))), s));
}}
#endif
static inline void decode_block_{tag}(const uint8_t *restrict c, float *restrict x, float scale, int64_t m) {{
  int64_t i = 0;
#ifdef __AVX2__
  const __m256 s = _mm256_set1_ps(scale);
  for (; i + 8 <= m; i += 8) decode8_{tag}_at(c + i, x + i, s);
#endif
  for (; i < m; i++) x[i] = decode_{tag}(c[i]) * scale;
}}
static inline void encode_block_{tag}(const float *restrict x, uint8_t *restrict c, float inverse, int64_t m) {{
  int64_t i = 0;
#ifdef __AVX2__
  const __m256 v = _mm256_set1_ps(inverse);
  for (; i + 32 <= m; i += 32) encode32_{tag}(x + i, c + i, v);
#endif
  for (; i < m; i++) c[i] = encode_{tag}(x[i] * inverse);
}}"""


#: C helpers of the 8-bit block loops: :data:`BITS_C` and, under AVX2, ``store32`` (32 codes packed
#: to bytes by two in-lane packs, stored in memory order) and ``positive8`` (all ones where the
#: float whose bits are given is > 0)
BLOCK_C = BITS_C + """
#ifdef __AVX2__
#include <immintrin.h>
static inline void store32(uint8_t *c, __m256i r) {  /* 32 codes packed twice in-lane, to memory order */
  r = _mm256_permutevar8x32_epi32(r, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));  /* undo the lane interleave */
  _mm256_storeu_si256((__m256i *)c, r);
}
static inline __m256i positive8(__m256i u) {
  return _mm256_castps_si256(_mm256_cmp_ps(_mm256_castsi256_ps(u), _mm256_setzero_ps(), _CMP_GT_OQ));
}
#endif"""


# ----------------------------------------------------------------------------- storage of a group


def kind(param: Tensor, group: Mapping[str, Any]) -> str | None:
    """How ``param``'s state is stored: ``"bf16"``, ``"int8"``, or None (plainly, in the compute dtype)."""
    state_dtype = group.get("state_dtype")
    if state_dtype is torch.bfloat16:
        return "bf16"
    if state_dtype == INT8:
        return "int8" if param.numel() >= MIN_INT8_NUMEL else None
    return None


def rounds_param(param: Tensor, group: Mapping[str, Any]) -> bool:
    """True when ``param`` (bfloat16) receives its update rounded stochastically."""
    return group.get("param_rounding") == "stochastic" and param.dtype == torch.bfloat16


def rounds_stochastically(param: Tensor, group: Mapping[str, Any]) -> bool:
    """True when a step of ``param`` draws random bits (bfloat16 state or a stochastically rounded
    bfloat16 parameter); its state then keeps a ``step`` count even for a rule that counts none."""
    return kind(param, group) == "bf16" or rounds_param(param, group)


def low_precision(group: Mapping[str, Any]) -> bool:
    """True when the group stores state in bfloat16 / 8 bits or rounds bf16 parameters stochastically."""
    return group.get("state_dtype") in (torch.bfloat16, INT8) or group.get("param_rounding") == "stochastic"


def is_scale(name: str, state: Mapping[str, Any]) -> bool:
    """True for the block scales of an 8-bit state entry (not an input of the rule)."""
    return name.endswith(SCALE_SUFFIX) and name[: -len(SCALE_SUFFIX)] in state


def load(state: Mapping[str, Any], name: str, dtype: torch.dtype) -> Tensor:
    """The state entry ``name`` as the rule reads it: a tensor in the compute ``dtype``."""
    value = state[name]
    scale = state.get(name + SCALE_SUFFIX)
    if scale is not None and value.dtype == torch.uint8:
        return dequantize(value, scale, name not in NONNEGATIVE).to(dtype)
    return value if value.dtype == dtype else value.to(dtype)


def store(state: dict[str, Any], name: str, value: Tensor, storage: str | None, key: int | None) -> None:
    """Write the rule's result ``value`` for ``name`` into ``state`` in its storage (in place if present)."""
    if storage == "int8":
        codes, absmax = quantize(value, name not in NONNEGATIVE)
        if name in state and state[name].dtype == torch.uint8:
            state[name].copy_(codes)
            state[name + SCALE_SUFFIX].copy_(absmax)
        else:
            state[name], state[name + SCALE_SUFFIX] = codes, absmax
        return
    stored = round_bf16(value, key) if storage == "bf16" else value
    if name in state and state[name].dtype == stored.dtype:
        state[name].copy_(stored)
    else:
        state[name] = stored.clone() if stored is value else stored


def convert_state(param: Tensor, group: Mapping[str, Any], state: Mapping[str, Any],
                  scalar_keys: tuple[str, ...], dtype: torch.dtype) -> dict[str, Any]:
    """A per-parameter state in any storage (float32 from torch.optim, bfloat16, 8-bit) re-stored in
    this group's storage: 8-bit entries are dequantized, float ones quantized or rounded to nearest.

    ``dtype`` is the compute dtype; ``step`` and the rule's 0-dim ``scalar_keys`` are left as they are.
    """
    storage = kind(param, group)
    out: dict[str, Any] = {}
    for name, value in state.items():
        if is_scale(name, state):  # travels with its codes
            continue
        if name == "step" or name in scalar_keys or not torch.is_tensor(value):
            out[name] = value
            continue
        if value.dtype == torch.uint8 and name + SCALE_SUFFIX in state:
            if storage == "int8":  # kept as saved: codes and scales
                out[name] = value.to(param.device, copy=True)
                out[name + SCALE_SUFFIX] = state[name + SCALE_SUFFIX].to(param.device, torch.float32, copy=True)
                continue
            value = dequantize(value, state[name + SCALE_SUFFIX], name not in NONNEGATIVE)
        if not (value.is_floating_point() or value.is_complex()):
            out[name] = value
            continue
        value = value.to(param.device)
        if storage is None:
            out[name] = value.to(dtype, copy=True)
        else:
            store(out, name, value.to(torch.float32), storage, None)  # bfloat16 to nearest, or quantized
    return out


#: the version of the 8-bit format that a ``state_dict`` holding 8-bit state is written in, saved
#: next to the codes of each parameter under :data:`FORMAT_KEY`. Version 2 is the format of this
#: module (blocks of ``BLOCK = 256``, a float32 absmax per block taken on the bits, the codes of
#: :func:`code_values`). An 8-bit state without the tag comes from an older format (version 1:
#: the dynamic-tree map), whose codes this version would decode to other values: it is refused.
INT8_FORMAT = 2
FORMAT_KEY = "int8_format"


def _codes(entry: Mapping[str, Any]) -> list[str]:
    """The names of the 8-bit entries (codes with their block scales) of one parameter's state."""
    return [name for name, value in entry.items()
            if torch.is_tensor(value) and value.dtype == torch.uint8 and name + SCALE_SUFFIX in entry]


def tag_formats(state_dict: dict[str, Any]) -> dict[str, Any]:
    """``state_dict`` (as ``Optimizer.state_dict`` returns it) with ``FORMAT_KEY: INT8_FORMAT`` added
    to each parameter's state that holds 8-bit entries (new dicts: the optimizer's state is
    untouched)."""
    state = {pid: ({**entry, FORMAT_KEY: INT8_FORMAT} if isinstance(entry, Mapping) and _codes(entry) else entry)
             for pid, entry in state_dict["state"].items()}
    return {**state_dict, "state": state}


def check_formats(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """``state_dict`` with the :data:`FORMAT_KEY` tags taken out, after checking that every
    parameter's 8-bit state carries ``FORMAT_KEY == INT8_FORMAT``; ValueError (naming the key and the
    expected version) for 8-bit state without the tag or with another version, before anything is
    loaded."""
    state = {}
    for pid, entry in state_dict.get("state", {}).items():
        if not isinstance(entry, Mapping):
            state[pid] = entry
            continue
        names = _codes(entry)
        if names:
            where = f"state_dict['state'][{pid!r}] holds 8-bit state {names}"
            if FORMAT_KEY not in entry:
                raise ValueError(f"{where} without the format tag {FORMAT_KEY!r} (expected {FORMAT_KEY}="
                                 f"{INT8_FORMAT}): it was saved in an older 8-bit format, whose codes this "
                                 "version would decode to other values; load it with the optimlab that saved "
                                 "it and state_dtype=None (float32 state), then load that here")
            if entry[FORMAT_KEY] != INT8_FORMAT:
                raise ValueError(f"{where} in format {FORMAT_KEY}={entry[FORMAT_KEY]!r}; this version reads "
                                 f"{FORMAT_KEY}={INT8_FORMAT} only")
        state[pid] = {k: v for k, v in entry.items() if k != FORMAT_KEY}
    return {**state_dict, "state": state}


def state_bytes(state: Mapping[str, Any]) -> int:
    """Bytes held by the tensors of one parameter's state (codes, scales, counters)."""
    return sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v))
