#pragma once
#include "module.hpp"

// The one place that talks to xsimd. Everything SIMD in hystack is templated on an `Arch`
// (default: simd::default_arch, what the compiler flags allow) and goes through these wrappers;
// every xsimd version branch (8.1 on Debian 12 ... 14) lives here and nowhere else.

#include <xsimd/xsimd.hpp>

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace hystack::simd {

/// Cache hint with the __builtin_prefetch locality (3: into L1, 2: into L2); a no-op where the
/// compiler has no prefetch builtin.
template <int Locality>
inline void prefetch_to(const void* p) {
#if defined(__GNUC__) || defined(__clang__)
    __builtin_prefetch(p, 0, Locality);
#else
    (void)p;
#endif
}

/// Cache hint: p will be read soon. Kernels that stream memory the hardware prefetchers miss (many
/// strided rows at once) use it.
inline void prefetch(const void* p) { prefetch_to<3>(p); }

/// Cache hint for data needed a little later: p goes to L2 (not L1), so a long lead does not evict
/// what the kernel is reading now.
inline void prefetch_l2(const void* p) { prefetch_to<2>(p); }

#if defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
inline constexpr bool enabled = false;
struct default_arch {};
#else
inline constexpr bool enabled = true;
using default_arch = xsimd::default_arch;
#endif

#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
template <class Arch = default_arch>
using batch = xsimd::batch<float, Arch>;
template <class Arch = default_arch>
using ibatch = xsimd::batch<std::int32_t, Arch>;

/// Whether Arch is an AVX-512 architecture the compiler flags allow (for the few AVX-512-only wrappers below).
#if defined(__AVX512F__)
template <class Arch>
inline constexpr bool is_avx512 = std::is_base_of_v<xsimd::avx512f, Arch>;
#else
template <class Arch>
inline constexpr bool is_avx512 = false;
#endif

#if defined(__AVX512F__)
/// The AVX-512 instructions the wrappers below issue themselves. GCC 12's unmasked AVX-512 intrinsics
/// (_mm512_max_ps, _mm512_shuffle_f32x4, _mm512_cvttps_epi32, _mm512_srai_epi32, even
/// _mm512_castps512_ps256, ...) pass `_mm512_undefined_ps()`, a local initialised from itself, as the
/// unused pass-through operand, and -Wuninitialized reports it once such an intrinsic is inlined into
/// code outside a system header (~1000 warnings in a build of hystack's tests; clang does not warn).
/// The masked forms with an all-ones mask and an input as pass-through compile to the same unmasked
/// instruction and read nothing undefined. They take and return registers, so GCC's -O0 macro
/// versions of the intrinsics never see an xsimd batch.
namespace avx512 {
inline constexpr __mmask16 all16 = 0xFFFF;
inline __m512 max(__m512 a, __m512 b) { return _mm512_mask_max_ps(a, all16, a, b); }
inline __m512 min(__m512 a, __m512 b) { return _mm512_mask_min_ps(a, all16, a, b); }
/// Round to nearest, ties to even (vrndscaleps with scale 0).
inline __m512 round(__m512 a) { return _mm512_mask_roundscale_ps(a, all16, a, _MM_FROUND_TO_NEAREST_INT); }
/// Zero-extends 16 uint16 lanes to int32 lanes (vpmovzxwd).
inline __m512i widen_u16(__m256i a) { return _mm512_maskz_cvtepu16_epi32(all16, a); }
/// Round toward zero.
inline __m512 trunc(__m512 a) { return _mm512_mask_roundscale_ps(a, all16, a, _MM_FROUND_TO_ZERO); }
/// Float -> int32, truncating.
inline __m512i to_int(__m512 a) { return _mm512_mask_cvttps_epi32(_mm512_castps_si512(a), all16, a); }
template <unsigned N>
inline __m512i shift_left(__m512i a) { return _mm512_mask_slli_epi32(a, all16, a, N); }
/// Arithmetic (sign-filling) shift.
template <unsigned N>
inline __m512i shift_right(__m512i a) { return _mm512_mask_srai_epi32(a, all16, a, N); }
inline __m512 scalef(__m512 x, __m512 n) { return _mm512_mask_scalef_ps(x, all16, x, n); }
/// Lanes of a where m is set, else of b.
inline __m512i blend(__mmask16 m, __m512i a, __m512i b) { return _mm512_mask_blend_epi32(m, b, a); }
/// vshuff32x4: 128-bit blocks 0-1 of the result from a, 2-3 from b, chosen by Imm.
template <int Imm>
inline __m512 shuffle_f32x4(__m512 a, __m512 b) { return _mm512_mask_shuffle_f32x4(a, all16, a, b, Imm); }
/// vshufps: inside each 128-bit block, lanes 0-1 from a and 2-3 from b, chosen by Imm.
template <int Imm>
inline __m512 shuffle_ps(__m512 a, __m512 b) { return _mm512_mask_shuffle_ps(a, all16, a, b, Imm); }
/// Lane l of the result is lane idx[l] of a.
inline __m512 permute(__m512i idx, __m512 a) { return _mm512_mask_permutexvar_ps(a, all16, idx, a); }
/// The lower and upper 256 bits (GCC 12's _mm512_castps512_ps256 is an unmasked extract too).
template <int Half>
inline __m256 half(__m512 a) {
    const __m512d d = _mm512_castps_pd(a);
    return _mm256_castpd_ps(_mm512_mask_extractf64x4_pd(_mm256_setzero_pd(), __mmask8(0xF), d, Half));
}
}  // namespace avx512
#endif

/// Lanes of a float batch on Arch.
template <class Arch = default_arch>
inline constexpr std::size_t width = batch<Arch>::size;

template <class Arch>
inline batch<Arch> load(const float* p) { return batch<Arch>::load_unaligned(p); }
template <class Arch>
inline void store(float* p, const batch<Arch>& v) { v.store_unaligned(p); }
template <class Arch>
inline batch<Arch> load_aligned(const float* p) { return batch<Arch>::load_aligned(p); }
template <class Arch>
inline batch<Arch> splat(float v) { return batch<Arch>(v); }

/// Horizontal sum (xsimd < 9: hadd; >= 9: reduce_add).
template <class Arch>
inline float reduce_add(const batch<Arch>& v) {
#if XSIMD_VERSION_MAJOR < 9
    return xsimd::hadd(v);
#else
    return xsimd::reduce_add(v);
#endif
}

/// out[a] = the lanes of v[a] summed by one fixed halving tree (s_l += s_{l+h} for h = VL/2, ..., 1),
/// for a < N. On AVX-512 sixteen sums share one transposed tree (15 adds, 30 shuffles, no horizontal
/// adds); elsewhere the same tree runs on the stored lanes. Each sum depends only on its own vector,
/// so results do not depend on N or on what else is summed with it (linear's canonical order).
template <class Arch, std::size_t N>
inline void reduce_add_many(const batch<Arch> (&v)[N], float* out) {
    constexpr std::size_t VL = width<Arch>;
#if defined(__AVX512F__)
    if constexpr (is_avx512<Arch>) {
        for (std::size_t g = 0; g < N; g += 16) {
            // level h = 8: r1[i] = [v[2i] lanes l + l+8 | v[2i+1] lanes l + l+8]
            __m512 r1[8];
            for (std::size_t i = 0; i < 8; ++i) {
                const __m512 a = g + 2 * i < N ? __m512(v[g + 2 * i]) : _mm512_setzero_ps();
                const __m512 b = g + 2 * i + 1 < N ? __m512(v[g + 2 * i + 1]) : _mm512_setzero_ps();
                r1[i] = _mm512_add_ps(avx512::shuffle_f32x4<_MM_SHUFFLE(1, 0, 1, 0)>(a, b),
                                      avx512::shuffle_f32x4<_MM_SHUFFLE(3, 2, 3, 2)>(a, b));
            }
            // h = 4: quarter j of r2[i] is v[g + 4i + j] reduced to 4 lanes
            __m512 r2[4];
            for (std::size_t i = 0; i < 4; ++i)
                r2[i] = _mm512_add_ps(avx512::shuffle_f32x4<_MM_SHUFFLE(2, 0, 2, 0)>(r1[2 * i], r1[2 * i + 1]),
                                      avx512::shuffle_f32x4<_MM_SHUFFLE(3, 1, 3, 1)>(r1[2 * i], r1[2 * i + 1]));
            // h = 2, inside 128-bit lanes: quarter j of r3[i] = [v[8i + j] x2 | v[8i + 4 + j] x2]
            __m512 r3[2];
            for (std::size_t i = 0; i < 2; ++i)
                r3[i] = _mm512_add_ps(avx512::shuffle_ps<_MM_SHUFFLE(1, 0, 1, 0)>(r2[2 * i], r2[2 * i + 1]),
                                      avx512::shuffle_ps<_MM_SHUFFLE(3, 2, 3, 2)>(r2[2 * i], r2[2 * i + 1]));
            // h = 1: lane 4j + m holds the sum of v[g + 4m + j]; permute to lane a = v[g + a]
            const __m512 u = _mm512_add_ps(avx512::shuffle_ps<_MM_SHUFFLE(2, 0, 2, 0)>(r3[0], r3[1]),
                                           avx512::shuffle_ps<_MM_SHUFFLE(3, 1, 3, 1)>(r3[0], r3[1]));
            const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
            const __m512 sums = avx512::permute(order, u);
            if (g + 16 <= N)
                _mm512_storeu_ps(out + g, sums);
            else
                _mm512_mask_storeu_ps(out + g, __mmask16((1u << (N - g)) - 1u), sums);
        }
        return;
    }
#endif
    alignas(64) float s[VL];
    for (std::size_t a = 0; a < N; ++a) {
        v[a].store_aligned(s);
        for (std::size_t h = VL / 2; h >= 1; h /= 2)
            for (std::size_t l = 0; l < h; ++l) s[l] += s[l + h];
        out[a] = s[0];
    }
}
/// Horizontal max.
template <class Arch>
inline float reduce_max(const batch<Arch>& v) {
#if defined(__AVX512F__)
    // A shuffle tree, the one of GCC's _mm512_reduce_max_ps (which warns, see avx512 above); the
    // store-and-scan below costs a decode block ~7%. The same tree on every xsimd version.
    if constexpr (is_avx512<Arch>) {
        const __m512 x = v;
        const __m256 h = _mm256_max_ps(avx512::half<1>(x), avx512::half<0>(x));  // lanes l, l + 8
        const __m128 q = _mm_max_ps(_mm256_extractf128_ps(h, 1), _mm256_castps256_ps128(h));  // l, l + 4
        const __m128 p = _mm_max_ps(q, _mm_shuffle_ps(q, q, _MM_SHUFFLE(1, 0, 3, 2)));       // l, l + 2
        return _mm_cvtss_f32(_mm_max_ps(p, _mm_shuffle_ps(p, p, _MM_SHUFFLE(0, 1, 0, 1))));  // l, l + 1
    } else
#endif
    {
#if XSIMD_VERSION_MAJOR < 9
        // xsimd 8 has no reduce_max
        alignas(64) float tmp[batch<Arch>::size];
        v.store_unaligned(tmp);
        float m = tmp[0];
        for (std::size_t i = 1; i < batch<Arch>::size; ++i) m = tmp[i] > m ? tmp[i] : m;
        return m;
#else
        return xsimd::reduce_max(v);
#endif
    }
}

/// Reinterprets float lanes as int32 lanes and back (bitwise_cast's API changed in xsimd 11).
template <class Arch>
inline ibatch<Arch> as_int(const batch<Arch>& v) {
#if XSIMD_VERSION_MAJOR < 11
    return xsimd::bitwise_cast<ibatch<Arch>>(v);
#else
    return xsimd::bitwise_cast<std::int32_t>(v);
#endif
}
template <class Arch>
inline batch<Arch> as_float(const ibatch<Arch>& v) {
#if XSIMD_VERSION_MAJOR < 11
    return xsimd::bitwise_cast<batch<Arch>>(v);
#else
    return xsimd::bitwise_cast<float>(v);
#endif
}
/// Float -> int32 lanes, truncating (not rounding).
template <class Arch>
inline ibatch<Arch> to_int(const batch<Arch>& v) {
#if defined(__AVX512F__)
    if constexpr (is_avx512<Arch>) return ibatch<Arch>(avx512::to_int(v));
    else
#endif
        return xsimd::batch_cast<std::int32_t>(v);
}

/// Converts a float-lane mask to an int32-lane mask (bool_cast became batch_bool_cast in xsimd 9).
template <class Arch>
inline xsimd::batch_bool<std::int32_t, Arch> mask_to_int(const xsimd::batch_bool<float, Arch>& m) {
#if XSIMD_VERSION_MAJOR < 9
    return xsimd::bool_cast(m);
#else
    return xsimd::batch_bool_cast<std::int32_t>(m);
#endif
}

/// Lane-wise a if m else b, for float lanes.
template <class Arch>
inline batch<Arch> select(const xsimd::batch_bool<float, Arch>& m, const batch<Arch>& a, const batch<Arch>& b) {
    return xsimd::select(m, a, b);
}
/// Lane-wise a if m else b, for int32 lanes. On AVX-512 one vpblendmd: xsimd 8.1's integer select
/// there also instantiates its 8- and 16-bit blends, GCC macros at -O0 that cannot take a batch.
template <class Arch>
inline ibatch<Arch> select(const xsimd::batch_bool<std::int32_t, Arch>& m, const ibatch<Arch>& a, const ibatch<Arch>& b) {
#if defined(__AVX512F__)
    if constexpr (is_avx512<Arch>) return ibatch<Arch>(avx512::blend(__mmask16(m), a, b));
    else
#endif
        return xsimd::select(m, a, b);
}
/// Whether every lane of m is set.
template <class Arch>
inline bool all(const xsimd::batch_bool<float, Arch>& m) { return xsimd::all(m); }
/// Lanes that hold a NaN.
template <class Arch>
inline xsimd::batch_bool<float, Arch> isnan(const batch<Arch>& v) { return xsimd::isnan(v); }

/// Lane-wise max(a, b) and min(a, b). On AVX and AVX-512 a lane where a or b is NaN gives b's lane
/// (x86's maxps/minps) whatever the xsimd version (xsimd 14 swapped the operands it passes).
template <class Arch>
inline batch<Arch> max(const batch<Arch>& a, const batch<Arch>& b) {
#if defined(__AVX512F__)
    if constexpr (is_avx512<Arch>) return batch<Arch>(avx512::max(a, b));
    else
#endif
#if defined(__AVX__)
    if constexpr (std::is_base_of_v<xsimd::avx, Arch> && batch<Arch>::size == 8) return batch<Arch>(_mm256_max_ps(a, b));
    else
#endif
        return xsimd::max(a, b);
}
template <class Arch>
inline batch<Arch> min(const batch<Arch>& a, const batch<Arch>& b) {
#if defined(__AVX512F__)
    if constexpr (is_avx512<Arch>) return batch<Arch>(avx512::min(a, b));
    else
#endif
#if defined(__AVX__)
    if constexpr (std::is_base_of_v<xsimd::avx, Arch> && batch<Arch>::size == 8) return batch<Arch>(_mm256_min_ps(a, b));
    else
#endif
        return xsimd::min(a, b);
}
/// |v| (clears the sign bit).
template <class Arch>
inline batch<Arch> abs(const batch<Arch>& v) { return xsimd::abs(v); }

/// Integer shifts of int32 lanes by a constant: left, and arithmetic (sign-filling) right.
template <unsigned N, class Arch>
inline ibatch<Arch> shift_left(const ibatch<Arch>& v) {
#if defined(__AVX512F__)
    if constexpr (is_avx512<Arch>) return ibatch<Arch>(avx512::shift_left<N>(v));
    else
#endif
        return v << int(N);
}
template <unsigned N, class Arch>
inline ibatch<Arch> shift_right(const ibatch<Arch>& v) {
#if defined(__AVX512F__)
    if constexpr (is_avx512<Arch>) return ibatch<Arch>(avx512::shift_right<N>(v));
    else
#endif
        return v >> int(N);
}

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
// xsimd's log1p is a generic algorithm built from xsimd's own AVX-512 kernels, which call the GCC 12
// intrinsics described at `avx512` above; this is the one wrapper that cannot avoid them, so the
// false -Wuninitialized is silenced for what is inlined through it, and `flatten` inlines all of it
// (at -Og xsimd's helpers would otherwise stay out-of-line calls, outside the pragma). Same code at
// -O2, where it is all inlined anyway. It takes its argument by value, so reading an uninitialised
// batch still warns at the caller.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define HYSTACK_SIMD_FLATTEN __attribute__((flatten))
#else
#define HYSTACK_SIMD_FLATTEN
#endif
/// log(1 + v) (xsimd's algorithm).
template <class Arch>
HYSTACK_SIMD_FLATTEN inline batch<Arch> log1p(const batch<Arch> v) { return xsimd::log1p(v); }
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic pop
#endif
#undef HYSTACK_SIMD_FLATTEN

/// Lanes 0, 1, ..., width - 1 (lane indices, e.g. for masks).
template <class Arch>
inline batch<Arch> iota() {
    struct Lanes {
        alignas(64) float v[batch<Arch>::size];
        constexpr Lanes() : v{} {
            for (std::size_t i = 0; i < batch<Arch>::size; ++i) v[i] = float(i);
        }
    };
    static constexpr Lanes lanes{};
    return batch<Arch>::load_aligned(lanes.v);
}

template <class Arch>
inline batch<Arch> fma(const batch<Arch>& a, const batch<Arch>& b, const batch<Arch>& c) { return xsimd::fma(a, b, c); }

/// Keeps v in a register from here on: the compiler may no longer fold the load that produced v into
/// each instruction that uses it (linear's tile: 11 instead of 27 loads per 24 FMAs). A no-op off x86.
template <class Arch>
inline void pin(batch<Arch>& v) {
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    typename batch<Arch>::register_type r = v;
    __asm__("" : "+v"(r));
    v = batch<Arch>(r);
#else
    (void)v;
#endif
}

/// Whether Arch scales by a power of two in one instruction (AVX-512's vscalefps).
template <class Arch>
inline constexpr bool has_scalef = is_avx512<Arch>;

/// x * 2^n for integer-valued n (held as floats), rounded once: exact through the denormal range, 0 or inf
/// past it. Only where has_scalef<Arch>.
template <class Arch>
inline batch<Arch> scalef(const batch<Arch>& x, const batch<Arch>& n) {
    static_assert(has_scalef<Arch>, "simd::scalef needs AVX-512");
#if defined(__AVX512F__)
    return batch<Arch>(avx512::scalef(x, n));
#else
    (void)n;
    return x;
#endif
}
/// Round to nearest, ties to even.
template <class Arch>
inline batch<Arch> round(const batch<Arch>& v) {
#if defined(__AVX512F__)
    if constexpr (is_avx512<Arch>) return batch<Arch>(avx512::round(v));
    else
#endif
        return xsimd::nearbyint(v);
}

/// Round to nearest, ties away from zero (std::roundf), exact for every float.
template <class Arch>
inline batch<Arch> round_half_away(const batch<Arch>& v) {
    // t = trunc(v) exactly (|v| < 2^23; larger floats are integers already), then one step away from
    // zero where the dropped fraction is at least one half
    const batch<Arch> a = abs<Arch>(v);
    const batch<Arch> big(8388608.0f);
#if defined(__AVX512F__)
    batch<Arch> t;
    if constexpr (is_avx512<Arch>)
        t = batch<Arch>(avx512::trunc(a));
    else
        t = xsimd::trunc(a);
#else
    batch<Arch> t = xsimd::trunc(a);
#endif
    t = select<Arch>(a - t >= batch<Arch>(0.5f), t + batch<Arch>(1.0f), t);
    t = select<Arch>(a >= big, a, t);
    return xsimd::copysign(t, v);
}

/// Non-temporal store of v at p (p aligned to the batch size): the line goes to memory without being
/// read first or kept in cache, for outputs too large to stay in cache. A plain aligned store where
/// Arch has none. Call stream_fence() before another thread reads what was stored.
template <class Arch>
inline void store_stream(float* p, const batch<Arch>& v) {
#if defined(__AVX512F__)
    if constexpr (is_avx512<Arch>) {
        _mm512_stream_ps(p, v);
        return;
    }
#endif
#if defined(__AVX__)
    if constexpr (std::is_base_of_v<xsimd::avx, Arch> && batch<Arch>::size == 8) {
        _mm256_stream_ps(p, v);
        return;
    }
#endif
    v.store_aligned(p);
}
/// Orders earlier store_stream()s before any later store (they are weakly ordered on x86).
inline void stream_fence() {
#if defined(__SSE__)
    _mm_sfence();
#endif
}
#endif

}  // namespace hystack::simd
