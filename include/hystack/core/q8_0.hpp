#pragma once
#include "module.hpp"

// GGUF's Q8_0 block: 32 int8 values q and one half-precision scale d, value = d * q, 34 bytes with no
// padding: the bytes of a Q8_0 tensor in a GGUF file are an array of these, and so is a q8_0 weight
// in memory. Quantising is ggml's reference quantiser, bit for bit: per block d = amax / 127 (stored
// as half), q = roundf(x * (1 / d)) with the unrounded d (0 for an all-zero block). A block holding an
// infinity or NaN (undefined in ggml) becomes d = NaN, q = 0, so that what reads it gives NaN.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>

#include "error.hpp"
#include "fp16.hpp"
#include "simd.hpp"

namespace hystack {

struct block_q8_0 {
    static constexpr std::size_t size = 32;  // values per block
    std::uint16_t d;                         // scale, half-precision bits
    std::int8_t qs[size];                    // quants
};
static_assert(sizeof(block_q8_0) == 34 && alignof(block_q8_0) == 2, "block_q8_0 must match GGUF's 34-byte block");

namespace detail {

/// One block of ggml's rule: q [32] = roundf(x * (1 / d)) with d = amax / 127; returns d unrounded. Where
/// ggml is undefined it gives: a block holding an inf or NaN d = NaN, q = 0; a block so small that
/// 1 / d overflows (amax below ~2^-122) q = 0.
inline float quantize_block_q8_reference(const float* x, std::int8_t* q) {
    // amax = max |x|
    float amax = 0.0f;
    bool finite = true;
    for (std::size_t j = 0; j < block_q8_0::size; ++j) {
        amax = std::max(amax, std::fabs(x[j]));
        finite = finite && std::isfinite(x[j]);
    }
    if (!finite) {
        for (std::size_t j = 0; j < block_q8_0::size; ++j) q[j] = 0;
        return NAN;
    }
    // d = amax / 127, q = round(x / d)
    const float d = amax / 127.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    if (std::isinf(id)) id = 0.0f;
    for (std::size_t j = 0; j < block_q8_0::size; ++j) q[j] = std::int8_t(std::roundf(x[j] * id));
    return d;
}

/// quantize_block_q8_reference with SIMD, bit for bit.
template <class Arch = simd::default_arch>
inline float quantize_block_q8(const float* x, std::int8_t* q) {
#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
    constexpr std::size_t VL = simd::width<Arch>;
    if constexpr (block_q8_0::size % VL == 0) {
        using F = simd::batch<Arch>;
        constexpr std::size_t NV = block_q8_0::size / VL;
        F v[NV];
        F m(0.0f), z(0.0f);
        for (std::size_t i = 0; i < NV; ++i) {
            v[i] = simd::load<Arch>(x + i * VL);
            m = simd::max<Arch>(m, simd::abs<Arch>(v[i]));  // max is exact: any order gives amax
            z = z + v[i] * F(0.0f);                          // NaN iff some x is inf or NaN
        }
        if (std::isnan(simd::reduce_add<Arch>(z))) {
            for (std::size_t j = 0; j < block_q8_0::size; ++j) q[j] = 0;
            return NAN;
        }
        const float d = simd::reduce_max<Arch>(m) / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        if (std::isinf(id)) id = 0.0f;
        alignas(64) std::int32_t qi[block_q8_0::size];
        for (std::size_t i = 0; i < NV; ++i)
            simd::to_int<Arch>(simd::round_half_away<Arch>(v[i] * F(id))).store_aligned(qi + i * VL);
        for (std::size_t j = 0; j < block_q8_0::size; ++j) q[j] = std::int8_t(qi[j]);
        return d;
    }
#endif
    return quantize_block_q8_reference(x, q);
}

inline void check_q8_0_sizes(std::size_t n, std::size_t blocks) {
    check(n % block_q8_0::size == 0, "quantize_q8_0: length ", n, " is not a multiple of 32");
    check(blocks == n / block_q8_0::size, "quantize_q8_0: expected [", n / block_q8_0::size, "] blocks, got [",
          blocks, "]");
}

}  // namespace detail

/// Scalar reference: y [n / 32] = quantised x [n] (n a multiple of 32).
inline void quantize_q8_0_reference(std::span<const float> x, std::span<block_q8_0> y) {
    detail::check_q8_0_sizes(x.size(), y.size());
    for (std::size_t b = 0; b < y.size(); ++b)
        y[b].d = fp16_bits(detail::quantize_block_q8_reference(x.data() + b * block_q8_0::size, y[b].qs));
}

/// y [n / 32] = quantised x [n], bit for bit quantize_q8_0_reference; n a multiple of 32.
template <class Arch = simd::default_arch>
inline void quantize_q8_0(std::span<const float> x, std::span<block_q8_0> y) {
    detail::check_q8_0_sizes(x.size(), y.size());
    for (std::size_t b = 0; b < y.size(); ++b)
        y[b].d = fp16_bits(detail::quantize_block_q8<Arch>(x.data() + b * block_q8_0::size, y[b].qs));
}

/// y [n] = d * q of x [n / 32] (exact).
inline void dequantize_q8_0(std::span<const block_q8_0> x, std::span<float> y) {
    check(y.size() == x.size() * block_q8_0::size, "dequantize_q8_0: expected [", x.size() * block_q8_0::size,
          "] values, got [", y.size(), "]");
    for (std::size_t b = 0; b < x.size(); ++b) {
        const float d = fp16_to_float(x[b].d);
        for (std::size_t j = 0; j < block_q8_0::size; ++j) y[b * block_q8_0::size + j] = d * float(x[b].qs[j]);
    }
}

}  // namespace hystack
