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

/// out[a] = the lanes of v[a] summed by one fixed halving tree (s_l += s_{l+h} for h = W/2, ..., 1),
/// for a < N. On AVX-512 sixteen sums share one transposed tree (15 adds, 30 shuffles, no horizontal
/// adds); elsewhere the same tree runs on the stored lanes. Each sum depends only on its own vector,
/// so results do not depend on N or on what else is summed with it (linear's canonical order).
template <class Arch, std::size_t N>
inline void reduce_add_many(const batch<Arch> (&v)[N], float* out) {
    constexpr std::size_t W = width<Arch>;
#if defined(__AVX512F__)
    if constexpr (is_avx512<Arch>) {
        for (std::size_t g = 0; g < N; g += 16) {
            // level h = 8: r1[i] = [v[2i] lanes l + l+8 | v[2i+1] lanes l + l+8]
            __m512 r1[8];
            for (std::size_t i = 0; i < 8; ++i) {
                const __m512 a = g + 2 * i < N ? __m512(v[g + 2 * i]) : _mm512_setzero_ps();
                const __m512 b = g + 2 * i + 1 < N ? __m512(v[g + 2 * i + 1]) : _mm512_setzero_ps();
                r1[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                                      _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
            }
            // h = 4: quarter j of r2[i] is v[g + 4i + j] reduced to 4 lanes
            __m512 r2[4];
            for (std::size_t i = 0; i < 4; ++i)
                r2[i] = _mm512_add_ps(_mm512_shuffle_f32x4(r1[2 * i], r1[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                                      _mm512_shuffle_f32x4(r1[2 * i], r1[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
            // h = 2, inside 128-bit lanes: quarter j of r3[i] = [v[8i + j] x2 | v[8i + 4 + j] x2]
            __m512 r3[2];
            for (std::size_t i = 0; i < 2; ++i)
                r3[i] = _mm512_add_ps(_mm512_shuffle_ps(r2[2 * i], r2[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                                      _mm512_shuffle_ps(r2[2 * i], r2[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
            // h = 1: lane 4j + m holds the sum of v[g + 4m + j]; permute to lane a = v[g + a]
            const __m512 u = _mm512_add_ps(_mm512_shuffle_ps(r3[0], r3[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                           _mm512_shuffle_ps(r3[0], r3[1], _MM_SHUFFLE(3, 1, 3, 1)));
            const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
            const __m512 sums = _mm512_permutexvar_ps(order, u);
            if (g + 16 <= N)
                _mm512_storeu_ps(out + g, sums);
            else
                _mm512_mask_storeu_ps(out + g, __mmask16((1u << (N - g)) - 1u), sums);
        }
        return;
    }
#endif
    alignas(64) float s[W];
    for (std::size_t a = 0; a < N; ++a) {
        v[a].store_aligned(s);
        for (std::size_t h = W / 2; h >= 1; h /= 2)
            for (std::size_t l = 0; l < h; ++l) s[l] += s[l + h];
        out[a] = s[0];
    }
}
/// Horizontal max.
template <class Arch>
inline float reduce_max(const batch<Arch>& v) {
#if XSIMD_VERSION_MAJOR < 9
    // xsimd 8 has no reduce_max; AVX-512 has a shuffle tree (the store-and-scan below costs a decode block ~7%)
#if defined(__AVX512F__)
    if constexpr (is_avx512<Arch>) return _mm512_reduce_max_ps(v);
#endif
    alignas(64) float tmp[batch<Arch>::size];
    v.store_unaligned(tmp);
    float m = tmp[0];
    for (std::size_t i = 1; i < batch<Arch>::size; ++i) m = tmp[i] > m ? tmp[i] : m;
    return m;
#else
    return xsimd::reduce_max(v);
#endif
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
/// Value conversions (round-to-nearest for float -> int is not implied: truncates).
template <class Arch>
inline ibatch<Arch> to_int(const batch<Arch>& v) { return xsimd::batch_cast<std::int32_t>(v); }
template <class Arch>
inline batch<Arch> to_float(const ibatch<Arch>& v) { return xsimd::batch_cast<float>(v); }

/// Converts a float-lane mask to an int32-lane mask (bool_cast became batch_bool_cast in xsimd 9).
template <class Arch>
inline xsimd::batch_bool<std::int32_t, Arch> mask_to_int(const xsimd::batch_bool<float, Arch>& m) {
#if XSIMD_VERSION_MAJOR < 9
    return xsimd::bool_cast(m);
#else
    return xsimd::batch_bool_cast<std::int32_t>(m);
#endif
}

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
    return batch<Arch>(_mm512_scalef_ps(x, n));
#else
    return x;
#endif
}
template <class Arch>
inline batch<Arch> round(const batch<Arch>& v) { return xsimd::nearbyint(v); }

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

/// A mask with the first n (< width) lanes set, for loop tails.
template <class Arch>
inline xsimd::batch_bool<float, Arch> first_n(std::size_t n) {
    alignas(64) float idx[batch<Arch>::size];
    for (std::size_t i = 0; i < batch<Arch>::size; ++i) idx[i] = float(i);
    return batch<Arch>::load_unaligned(idx) < batch<Arch>(float(n));
}
#endif

}  // namespace hystack::simd
