#pragma once
#include "module.hpp"

// IEEE half precision (binary16), the scale of GGUF's quantised blocks. Narrowing rounds to nearest,
// ties to even, as x86's F16C (and so ggml's GGML_FP32_TO_FP16) does: values from 65520 up become
// infinity, values below 2^-25 become zero, NaN stays a quiet NaN. Widening is exact.

#include <cstdint>
#include <cstring>

namespace hystack {

/// Bits of the half nearest to f (ties to even).
inline std::uint16_t fp16_bits(float f) {
    std::uint32_t x;
    std::memcpy(&x, &f, 4);
    const std::uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return std::uint16_t(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));  // NaN, quieted
    if (ax >= 0x47800000u) return std::uint16_t(sign | 0x7c00u);                          // >= 2^16: inf
    if (ax < 0x38800000u) {
        // below 2^-14: a subnormal half, mantissa (1.m) * 2^(e - 127) / 2^-24, rounded to nearest even
        if (ax < 0x33000000u) return std::uint16_t(sign);  // <= 2^-25 (the tie rounds to even: 0)
        const std::uint32_t mant = (ax & 0x7fffffu) | 0x800000u, shift = 126u - (ax >> 23);
        std::uint32_t r = mant >> shift;
        const std::uint32_t rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (r & 1u))) ++r;
        return std::uint16_t(sign | r);
    }
    // normal: rebias the exponent (127 -> 15), drop 13 mantissa bits, round to nearest even (a carry
    // into the exponent is the right result, up to infinity)
    std::uint32_t r = (ax - 0x38000000u) >> 13;
    const std::uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;
    return std::uint16_t(sign | r);
}

/// The float a half's bits hold (exact).
inline float fp16_to_float(std::uint16_t h) {
    const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    std::uint32_t x;
    if (e == 0x1f) {
        x = sign | 0x7f800000u | (m << 13);  // inf / NaN
    } else if (e != 0) {
        x = sign | ((e + 112u) << 23) | (m << 13);
    } else {
        if (m == 0) {
            x = sign;
        } else {
            // subnormal: m * 2^-24, normalised
            float f = float(m) * 5.9604644775390625e-8f;  // 2^-24, exact
            std::memcpy(&x, &f, 4);
            x |= sign;
        }
    }
    float f;
    std::memcpy(&f, &x, 4);
    return f;
}

}  // namespace hystack
