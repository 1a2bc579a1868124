"""The 8-bit codec's C (:func:`optimlab.kernels.precision.codec_c`) checked densely, compiled here.

The fused kernels encode and decode 8-bit state with the block functions of ``codec_c``: AVX2
(eight elements a decoding step, 32 an encoding step) where the compiler targets it, the
one-element C for a block's tail and on other machines. A small C driver, built at test time with
the kernels' own flags (``kernels.cpu.FLAGS``) twice - for this machine (``-march=native``: AVX2
here) and for baseline x86-64 (no AVX2: the one-element C throughout) - runs them over:

* encode: every float32 bit pattern whose low 12 bits are one of 64 values (all of bits 12-31:
  every sign, exponent and the 11 fraction bits that decide a code, with its rounding boundary
  at bit 19 on both sides; NaN, infinities, zeros and subnormals among them), 67 million
  patterns: the block function (AVX2 where built) equals the one-element function on each, and
  the two builds give the same codes (a checksum over all of them); with scales other than 1 too;
* encode against the references: the codes of 2 million of those patterns equal torch's
  ``precision._encode``; and on every exponent a code can take, both signs, every 3-bit fraction
  and the low bits around the rounding boundary, NumPy's independent emulation
  (``tests/precision_reference.py``);
* decode: all 256 codes of both maps, times scales (one, a random one, zero, a subnormal,
  infinity, NaN), full and partial blocks: block function, one-element function, torch's
  ``precision.dequantize`` and the NumPy emulation agree bit for bit, in both builds.
"""

from __future__ import annotations

import ctypes
import platform
import subprocess

import numpy as np
import pytest
import torch

import precision_reference as ref
from optimlab.kernels import cpu, precision

pytestmark = pytest.mark.skipif(cpu.compiler() is None, reason="no C compiler")

DRIVER = r"""
uint64_t built_avx2(void) {
#ifdef __AVX2__
  return 1;
#else
  return 0;
#endif
}

/* encode every pattern (hi << 12) | lows[k], hi < 2^20: the block function (AVX2 where built) and the
   one-element one; returns the mismatches between them, *sum a checksum of the block codes */
uint64_t sweep_encode(int s, const uint32_t *lows, int64_t nlows, float inverse, uint64_t *sum) {
  uint32_t u[256]; float x[256]; uint8_t c[256];
  uint64_t bad = 0, h = 1469598103934665603ull, n = ((uint64_t)1 << 20) * (uint64_t)nlows;
  for (uint64_t q = 0; q < n; q += 256) {
    for (int i = 0; i < 256; i++) {
      uint64_t k = q + (uint64_t)i;
      u[i] = ((uint32_t)(k / (uint64_t)nlows) << 12) | lows[k % (uint64_t)nlows];
    }
    __builtin_memcpy(x, u, sizeof x);
    if (s) encode_block_s(x, c, inverse, 256); else encode_block_u(x, c, inverse, 256);
    for (int i = 0; i < 256; i++) {
      uint8_t one = s ? encode_s(x[i] * inverse) : encode_u(x[i] * inverse);
      bad += c[i] != one;
      h = (h ^ c[i]) * 1099511628211ull;
    }
  }
  *sum = h;
  return bad;
}

/* the block function over n values, blocks of up to 256 (the last one partial) */
void encode_many(int s, const float *x, uint8_t *c, int64_t n, float inverse) {
  for (int64_t q = 0; q < n; q += 256) {
    int64_t m = n - q < 256 ? n - q : 256;
    if (s) encode_block_s(x + q, c + q, inverse, m); else encode_block_u(x + q, c + q, inverse, m);
  }
}

/* codes c[0..m-1] decoded times scale: by the block function and element by element */
void decode_both(int s, const uint8_t *c, int64_t m, float scale, float *block, float *one) {
  if (s) decode_block_s(c, block, scale, m); else decode_block_u(c, block, scale, m);
  for (int64_t i = 0; i < m; i++) one[i] = (s ? decode_s(c[i]) : decode_u(c[i])) * scale;
}
"""

X86 = platform.machine().lower() in ("x86_64", "amd64")
#: the low 12 bits of the swept patterns: the edges, then random ones
LOWS = np.concatenate([np.array([0, 1, 2, 0x7FF, 0x800, 0x801, 0xFFE, 0xFFF], dtype=np.uint32),
                       np.random.default_rng(0).integers(0, 1 << 12, 56, dtype=np.uint32)])


def _build(folder, name, arch):
    source = folder / f"{name}.c"
    source.write_text("#include <stdint.h>\n" + precision.BLOCK_C + "\n" + precision.codec_c(True) + "\n"
                      + precision.codec_c(False) + "\n" + DRIVER)
    target = folder / f"{name}.so"
    flags = [f for f in cpu.FLAGS if not f.startswith("-march")] + arch
    result = subprocess.run([cpu.compiler(), *flags, str(source), "-o", str(target), "-lm"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    lib = ctypes.CDLL(str(target))
    lib.built_avx2.restype = ctypes.c_uint64
    lib.sweep_encode.restype = ctypes.c_uint64
    lib.sweep_encode.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p]
    lib.encode_many.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_float]
    lib.decode_both.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p,
                                ctypes.c_void_p]
    return lib


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """{"native": this machine's build, "baseline": x86-64 without AVX2} (the one that applies
    elsewhere); the native one is AVX2 where this CPU has it."""
    folder = tmp_path_factory.mktemp("codec")
    out = {"native": _build(folder, "native", ["-march=native"])}
    if X86:
        out["baseline"] = _build(folder, "baseline", ["-march=x86-64"])
        assert out["baseline"].built_avx2() == 0
    return out


def _ptr(a):
    return a.ctypes.data


def _sweep(lib, signed, lows, inverse):
    total = np.zeros(1, dtype=np.uint64)
    bad = lib.sweep_encode(int(signed), _ptr(lows), lows.size, inverse, _ptr(total))
    return bad, int(total[0])


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_block_encode_equals_one_element_encode_over_67m_patterns(builds, signed):
    """AVX2 block encoder == one-element encoder on 2^26 patterns (every value of bits 12-31), and
    the AVX2 build's codes == the baseline build's (one-element C) by checksum; scale 1 and others."""
    lows = np.ascontiguousarray(LOWS)
    sums = {}
    for name, lib in builds.items():
        bad, sums[name] = _sweep(lib, signed, lows, 1.0)
        assert bad == 0, name
        for inverse in (np.float32(1 / 3.7), np.float32(2.0 ** 70), np.float32(1e-30)):  # few lows: quick
            assert _sweep(lib, signed, lows[:4], float(inverse))[0] == 0, (name, inverse)
    assert len(set(sums.values())) == 1, sums


def _patterns(lows):
    """Every value of bits 12-31 with each of ``lows`` below, as float32 (NaNs, infinities included)."""
    hi = np.arange(1 << 20, dtype=np.uint32) << np.uint32(12)
    return (hi[:, None] | lows[None, :]).reshape(-1).view(np.float32)


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_c_encode_equals_torch_encode(builds, signed):
    y = _patterns(np.array([0, 0xFFF], dtype=np.uint32))
    expected = precision._encode(torch.from_numpy(y.copy()), signed).numpy()
    for name, lib in builds.items():
        codes = np.empty(y.size, dtype=np.uint8)
        lib.encode_many(int(signed), _ptr(y), _ptr(codes), y.size, 1.0)
        assert np.array_equal(codes, expected), name


def _boundaries(signed):
    """|y| <= 1 on every exponent (subnormals too), both signs (unsigned: non-negative), every 3-bit
    fraction, the low 20 bits just below, at and above the rounding boundary (bit 19) and at the ends."""
    exponent = np.arange(127, dtype=np.uint32)[:, None, None] << np.uint32(23)
    fraction = np.arange(8, dtype=np.uint32)[None, :, None] << np.uint32(20)
    low = np.array([0, 1, 0x7FFFF, 0x80000, 0x80001, 0xFFFFF, 0x3A5C1, 0xC0F0F], dtype=np.uint32)[None, None, :]
    bits = (exponent | fraction | low).reshape(-1)
    if signed:
        bits = np.concatenate([bits, bits | np.uint32(0x80000000)])
    return bits.view(np.float32)


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_c_encode_equals_the_numpy_emulation_at_every_rounding_boundary(builds, signed):
    """Blocks of 256 led by 1.0 (absmax 1: the emulation encodes the values themselves); a partial last block."""
    y = _boundaries(signed)
    per = precision.BLOCK - 1
    blocks = [np.concatenate([[np.float32(1.0)], y[i:i + per]]) for i in range(0, y.size, per)]
    x = np.ascontiguousarray(np.concatenate(blocks), dtype=np.float32)
    expected, absmax = ref.quantize(x, signed)
    assert np.all(absmax == 1.0)
    for name, lib in builds.items():
        codes = np.empty(x.size, dtype=np.uint8)
        lib.encode_many(int(signed), _ptr(x), _ptr(codes), x.size, 1.0)
        assert np.array_equal(codes, expected), name


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_decode_of_all_256_codes(builds, signed):
    codes = np.arange(256, dtype=np.uint8)
    scales = [1.0, 0.37109375, 3.1e-5, 0.0, 1e-40, np.inf, np.nan]
    for scale in np.array(scales, dtype=np.float32):
        with np.errstate(invalid="ignore"):  # 0 * inf, NaN scales
            expected = ref.dequantize(codes, np.array([scale], dtype=np.float32), signed).view(np.uint32)
        torch_values = precision.dequantize(torch.from_numpy(codes), torch.tensor([scale]), signed)
        assert np.array_equal(torch_values.numpy().view(np.uint32), expected), scale
        for name, lib in builds.items():
            for m in (256, 253):  # a partial block: the one-element tail
                block, one = np.empty(m, dtype=np.float32), np.empty(m, dtype=np.float32)
                lib.decode_both(int(signed), _ptr(codes), m, float(scale), _ptr(block), _ptr(one))
                assert np.array_equal(block.view(np.uint32), expected[:m]), (name, scale, m)
                assert np.array_equal(one.view(np.uint32), expected[:m]), (name, scale, m)


def _adam_run(state_dtype):
    """4 fused Adam steps on two tensors (partial 8-bit blocks) with gradients over 60 binades, zeros,
    infinities and a NaN: the parameters and every state tensor."""
    import optimlab

    gen = torch.Generator().manual_seed(4)
    params = [torch.nn.Parameter(torch.randn(n, generator=gen)) for n in (5000, 4100)]
    opt = optimlab.Adam(params, lr=1e-2, state_dtype=state_dtype)
    for step in range(4):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen) * 10.0 ** torch.randint(-30, 30, p.shape, generator=gen)
            p.grad[:300] = 0.0
        params[0].grad[700] = float("inf") if step == 1 else params[0].grad[700]
        params[1].grad[4099] = float("nan") if step == 2 else params[1].grad[4099]
        opt.step()
    return [p.detach().clone() for p in params] + [
        v.clone() for s in opt.state_dict()["state"].values() for v in s.values() if torch.is_tensor(v)]


@pytest.mark.skipif(not X86, reason="the baseline build is x86-64's")
def test_generated_kernels_built_without_avx2_give_the_avx2_builds_bits(monkeypatch, tmp_path):
    """The generated Adam kernels with 8-bit and with bfloat16 state, built for baseline x86-64
    (the one-element C throughout), store the bits of this machine's build (AVX2 here)."""
    from optimlab import kernels

    native = {s: _adam_run(s) for s in ("int8", torch.bfloat16)}
    monkeypatch.setenv("OPTIMLAB_CACHE_DIR", str(tmp_path))  # kept out of the user's kernel cache
    monkeypatch.setattr(cpu, "_by_structure", {})
    at = cpu.FLAGS.index("-march=native")
    cpu.FLAGS[at] = "-march=x86-64"  # in place: the build's default flags are this list
    try:
        built, fused = cpu.stats["built"], kernels.stats["fused_tensors"]
        baseline = {s: _adam_run(s) for s in ("int8", torch.bfloat16)}
        assert cpu.stats["built"] - built >= 2 and kernels.stats["fused_tensors"] - fused == 2 * 4 * 2
    finally:
        cpu.FLAGS[at] = "-march=native"
    for s in native:
        assert len(native[s]) == len(baseline[s])
        for a, b in zip(native[s], baseline[s]):
            assert a.dtype == b.dtype and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)), s
