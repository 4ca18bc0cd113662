#pragma once
#include "module.hpp"

// The dot-product instructions xsimd does not wrap, for the bf16 and q8_0 weight kernels: AVX512_BF16's
// vdpbf16ps (pairs of bf16 products into f32 lanes), int8 block dots (AVX512-VNNI / AVX-VNNI vpdpbusd,
// AVX2 vpmaddubsw otherwise) and F16C's half -> float. Each is used where the compiler flags allow it
// and has a plain path beside it; kernels see only these names.

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "fp16.hpp"
#include "simd.hpp"

namespace hystack::simd {

/// Half bits -> float (F16C where present).
inline float half_to_float(std::uint16_t h) {
#if defined(__F16C__)
    return _cvtsh_ss(h);
#else
    return fp16_to_float(h);
#endif
}

#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
/// Widens VL bf16 values at p (bits) to a float batch (exact).
template <class Arch>
inline batch<Arch> load_bf16(const std::uint16_t* p) {
#if defined(__AVX512F__)
    if constexpr (is_avx512<Arch>) {
        const __m512i w = avx512::widen_u16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
        return batch<Arch>(_mm512_castsi512_ps(avx512::shift_left<16>(w)));
    } else
#endif
#if defined(__AVX2__)
    if constexpr (std::is_base_of_v<xsimd::avx, Arch> && batch<Arch>::size == 8) {
        const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        return batch<Arch>(_mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
    } else
#endif
    {
        alignas(64) std::uint32_t u[batch<Arch>::size];
        for (std::size_t i = 0; i < batch<Arch>::size; ++i) u[i] = std::uint32_t(p[i]) << 16;
        alignas(64) float f[batch<Arch>::size];
        std::memcpy(f, u, sizeof f);
        return batch<Arch>::load_aligned(f);
    }
}

/// Whether Arch has vdpbf16ps (AVX512_BF16 in the compiler flags and an AVX-512 Arch).
#if defined(__AVX512BF16__)
template <class Arch>
inline constexpr bool has_bf16_dot = is_avx512<Arch>;
#else
template <class Arch>
inline constexpr bool has_bf16_dot = false;
#endif

/// bf16 values per bf16_dot step.
inline constexpr std::size_t bf16_dot_step = 32;

#if defined(__AVX512BF16__)
/// 32 bf16 values in one register (the operand of bf16_dot).
struct bf16x32 {
    __m512i v;
};
/// The 32 bf16 values at p; load_bf16x32(p, n) reads only p[0, n) (n < 32; the rest are zero).
inline bf16x32 load_bf16x32(const std::uint16_t* p) { return {_mm512_loadu_si512(p)}; }
inline bf16x32 load_bf16x32(const std::uint16_t* p, std::size_t n) {
    return {_mm512_maskz_loadu_epi16(__mmask32((std::uint64_t(1) << n) - 1u), p)};
}
/// acc + the pairwise products of x and w, lane l taking elements 2l and 2l + 1 (vdpbf16ps).
template <class Arch>
inline batch<Arch> bf16_dot(const batch<Arch>& acc, bf16x32 x, bf16x32 w) {
    static_assert(has_bf16_dot<Arch>, "bf16_dot needs AVX512_BF16");
    return batch<Arch>(_mm512_dpbf16_ps(acc, __m512bh(x.v), __m512bh(w.v)));
}
#endif
#endif

/// Int8 block dots for q8_0 (32 int8 values per block), 8 int32 lanes per block dot, 8 float lanes of
/// accumulation. Available where AVX2 is.
#if defined(__AVX2__)
#define HYSTACK_SIMD_Q8 1
#else
#define HYSTACK_SIMD_Q8 0
#endif
namespace q8 {
#if HYSTACK_SIMD_Q8
inline constexpr bool enabled = true;
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
inline constexpr bool vnni = true;
#elif defined(__AVXVNNI__)
inline constexpr bool vnni = true;
#else
inline constexpr bool vnni = false;
#endif
using ivec = __m256i;  // 32 int8, or 8 int32
using fvec = __m256;   // 8 float

inline ivec load(const std::int8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
/// The weight side of a block as block_dot takes it (VNNI: w + 128 as unsigned bytes).
inline ivec prep_w(ivec w) {
    if constexpr (vnni) return _mm256_xor_si256(w, _mm256_set1_epi8(char(0x80)));
    return w;
}
/// The activation side's seed: VNNI sums (w + 128) x, so -128 * sum(x) in lane 0 makes it sum w x.
inline ivec seed(std::int32_t sum_x) {
    if constexpr (vnni) return _mm256_setr_epi32(-128 * sum_x, 0, 0, 0, 0, 0, 0, 0);
    return _mm256_setzero_si256();
}
/// Int32 lanes summing to sum_k w[k] x[k] over one block (w from prep_w, s from seed).
inline ivec block_dot(ivec w, ivec x, ivec s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(s, w, x);
#elif defined(__AVXVNNI__)
    return _mm256_dpbusd_avx_epi32(s, w, x);
#else
    // |w| as unsigned times x carrying w's sign (vpmaddubsw: pairs into int16, no overflow as
    // |w|, |x| <= 128 and 2 * 128 * 127 < 2^15), then pairs of int16 into int32
    const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    return _mm256_add_epi32(s, _mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
#endif
}
inline fvec zero() { return _mm256_setzero_ps(); }
inline fvec splat(float v) { return _mm256_set1_ps(v); }
inline fvec mul(fvec a, fvec b) { return _mm256_mul_ps(a, b); }
/// acc + float(lanes) * scale.
inline fvec fma_lanes(ivec lanes, fvec scale, fvec acc) { return _mm256_fmadd_ps(_mm256_cvtepi32_ps(lanes), scale, acc); }
/// Sum of the 8 lanes by one fixed tree (l + 4, then l + 2, then l + 1).
inline float reduce(fvec v) {
    const __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 b = _mm_add_ps(a, _mm_movehl_ps(a, a));
    return _mm_cvtss_f32(_mm_add_ss(b, _mm_movehdup_ps(b)));
}
#else
inline constexpr bool enabled = false;
inline constexpr bool vnni = false;
#endif
}  // namespace q8

/// Two q8_0 blocks per AVX-512 register (lanes 0-7 the first block, 8-15 the second), with VNNI's
/// vpdpbusd: half the instructions per block of q8, for the decode stream.
#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512DQ__)
#define HYSTACK_SIMD_Q8X2 1
namespace q8x2 {
using ivec = __m512i;
using fvec = __m512;
inline constexpr __mmask16 all16 = 0xFFFF;
/// v in the low half, zero above (GCC 12's _mm512_zextsi256_si512 is an unmasked insert, see avx512).
inline __m512i zext(__m256i v) { return _mm512_mask_inserti64x4(_mm512_setzero_si512(), __mmask8(0xFF), _mm512_setzero_si512(), v, 0); }
/// Weight quants of blocks a and b as vpdpbusd's unsigned operand (w + 128); b = nullptr: one block,
/// the other half contributes nothing (0).
inline ivec load_w(const std::int8_t* a, const std::int8_t* b) {
    const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a));
    const __m256i hi = b ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b)) : _mm256_set1_epi8(char(0x80));
    const __m512i v = _mm512_mask_inserti64x4(zext(lo), __mmask8(0xFF), zext(lo), hi, 1);
    return _mm512_xor_si512(v, _mm512_set1_epi8(char(0x80)));
}
/// Activation quants of two consecutive blocks at p (one block: the other half zero).
inline ivec load_x(const std::int8_t* p, bool two) {
    return two ? _mm512_loadu_si512(p) : zext(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
/// The seeds (-128 * sum of x's quants) of the two blocks, in lanes 0 and 8.
inline ivec seed(std::int32_t sum_a, std::int32_t sum_b) {
    return _mm512_setr_epi32(-128 * sum_a, 0, 0, 0, 0, 0, 0, 0, -128 * sum_b, 0, 0, 0, 0, 0, 0, 0);
}
/// [d_a x 8 | d_b x 8] from half bits.
inline fvec halves(std::uint16_t a, std::uint16_t b) {
    return _mm512_maskz_cvtph_ps(all16, _mm256_setr_m128i(_mm_set1_epi16(short(a)), _mm_set1_epi16(short(b))));
}
/// [a x 8 | b x 8].
inline fvec pair(float a, float b) { return _mm512_mask_broadcastss_ps(_mm512_set1_ps(a), __mmask16(0xFF00), _mm_set_ss(b)); }
inline fvec zero() { return _mm512_setzero_ps(); }
inline fvec mul(fvec a, fvec b) { return _mm512_mul_ps(a, b); }
/// acc + float(sum_k w x lanes) * scale, the lanes of both blocks.
inline fvec dot_fma(ivec w, ivec x, ivec s, fvec scale, fvec acc) {
    return _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(all16, _mm512_dpbusd_epi32(s, w, x)), scale, acc);
}
/// Sum of the 16 lanes by one fixed tree (l + 8, then q8::reduce's).
inline float reduce(fvec v) { return q8::reduce(_mm256_add_ps(avx512::half<0>(v), avx512::half<1>(v))); }
}  // namespace q8x2
#else
#define HYSTACK_SIMD_Q8X2 0
#endif

}  // namespace hystack::simd
