#pragma once
#include "../core/module.hpp"

#include <cmath>
#include <cstddef>

#include "../core/simd.hpp"

namespace hystack::kernels {

/// RMSNorm of one row: y = x / sqrt(mean(x^2) + eps) * w (HF LlamaRMSNorm/JambaRMSNorm; the sum of
/// squares in fp32 with SIMD partial sums). x, y [n] may alias; w [n].
template <class Arch = simd::default_arch>
inline void rmsnorm_row(const float* x, const float* w, float* y, std::size_t n, float eps) {
    float ss = 0.0f;
    std::size_t i = 0;
#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
    constexpr std::size_t VL = simd::width<Arch>;
    simd::batch<Arch> acc(0.0f);
    for (; i + VL <= n; i += VL) {
        const auto v = simd::load<Arch>(x + i);
        acc = simd::fma<Arch>(v, v, acc);
    }
    ss = simd::reduce_add<Arch>(acc);
#endif
    for (; i < n; ++i) ss += x[i] * x[i];
    const float inv = 1.0f / std::sqrt(ss / float(n ? n : 1) + eps);
    i = 0;
#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
    for (; i + VL <= n; i += VL)
        simd::store<Arch>(y + i, simd::load<Arch>(x + i) * simd::batch<Arch>(inv) * simd::load<Arch>(w + i));
#endif
    for (; i < n; ++i) y[i] = x[i] * inv * w[i];
}

}  // namespace hystack::kernels
