#pragma once
#include "module.hpp"

// bfloat16 storage: the top 16 bits of an IEEE float. Narrowing rounds to nearest, ties to even
// (NaN stays NaN, quiet); widening is exact. Arrays convert with SIMD.

#include <cstdint>
#include <cstring>
#include <span>

#include "error.hpp"
#include "simd.hpp"

namespace hystack {

struct bf16 {
    std::uint16_t bits = 0;

    constexpr bf16() = default;
    static constexpr bf16 from_bits(std::uint16_t b) {
        bf16 h;
        h.bits = b;
        return h;
    }
    /// Round-to-nearest-even narrowing.
    explicit bf16(float f) : bits(round_bits(f)) {}
    /// Exact widening.
    explicit operator float() const { return to_float(bits); }

    static std::uint16_t round_bits(float f) {
        std::uint32_t u;
        std::memcpy(&u, &f, 4);
        if ((u & 0x7fffffffu) > 0x7f800000u) return std::uint16_t((u >> 16) | 0x0040u);  // quiet NaN, sign kept
        u += 0x7fffu + ((u >> 16) & 1u);  // ties to even
        return std::uint16_t(u >> 16);
    }
    static float to_float(std::uint16_t b) {
        const std::uint32_t u = std::uint32_t(b) << 16;
        float f;
        std::memcpy(&f, &u, 4);
        return f;
    }
    friend bool operator==(bf16 a, bf16 b) { return a.bits == b.bits; }
};
static_assert(sizeof(bf16) == 2);

/// dst[i] = float(src[i]) (exact). Throws hystack::error when sizes differ.
template <class Arch = simd::default_arch>
inline void widen(std::span<const bf16> src, std::span<float> dst) {
    check(src.size() == dst.size(), "widen: expected output of size [", src.size(), "], got [", dst.size(), "]");
    std::size_t i = 0;
#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
    constexpr std::size_t VL = simd::width<Arch>;
    alignas(64) std::int32_t tmp[VL];
    for (; i + VL <= src.size(); i += VL) {
        for (std::size_t j = 0; j < VL; ++j) tmp[j] = std::int32_t(std::uint32_t(src[i + j].bits) << 16);
        simd::store<Arch>(dst.data() + i, simd::as_float<Arch>(simd::ibatch<Arch>::load_aligned(tmp)));
    }
#endif
    for (; i < src.size(); ++i) dst[i] = float(src[i]);
}

/// dst[i] = bf16(src[i]) (round to nearest even). Throws hystack::error when sizes differ.
template <class Arch = simd::default_arch>
inline void narrow(std::span<const float> src, std::span<bf16> dst) {
    check(src.size() == dst.size(), "narrow: expected output of size [", src.size(), "], got [", dst.size(), "]");
    std::size_t i = 0;
#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
    using I = simd::ibatch<Arch>;
    constexpr std::size_t VL = simd::width<Arch>;
    alignas(64) std::int32_t tmp[VL];
    for (; i + VL <= src.size(); i += VL) {
        const auto x = simd::load<Arch>(src.data() + i);
        const I u = simd::as_int<Arch>(x);
        const I lsb = simd::shift_right<16>(u) & I(1);  // arithmetic shift is fine: we keep only bit 0
        const I rounded = u + I(0x7fff) + lsb;
        const I nan = (u | I(0x00400000));
        const I r = simd::select<Arch>(simd::mask_to_int<Arch>(simd::isnan<Arch>(x)), nan, rounded);
        r.store_aligned(tmp);
        for (std::size_t j = 0; j < VL; ++j) dst[i + j].bits = std::uint16_t(std::uint32_t(tmp[j]) >> 16);
    }
#endif
    for (; i < src.size(); ++i) dst[i] = bf16(src[i]);
}

}  // namespace hystack
