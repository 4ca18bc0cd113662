#pragma once
#include "../core/module.hpp"

#include <cmath>
#include <cstddef>
#include <span>

#include "../core/error.hpp"
#include "../core/simd.hpp"
#include "../core/view.hpp"

namespace hystack::kernels {

/// RMSNorm of one row: y = x / sqrt(mean(x^2) + eps) * w (HF LlamaRMSNorm/JambaRMSNorm; the sum of
/// squares in fp32 with SIMD partial sums). x, y [n] may alias; w [n].
template <class Arch = simd::default_arch>
inline void rmsnorm_row(const float* x, const float* w, float* y, std::size_t n, float eps) {
    float ss = 0.0f;
    std::size_t i = 0;
#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
    constexpr std::size_t W = simd::width<Arch>;
    simd::batch<Arch> acc(0.0f);
    for (; i + W <= n; i += W) {
        const auto v = simd::load<Arch>(x + i);
        acc = simd::fma<Arch>(v, v, acc);
    }
    ss = simd::reduce_add<Arch>(acc);
#endif
    for (; i < n; ++i) ss += x[i] * x[i];
    const float inv = 1.0f / std::sqrt(ss / float(n ? n : 1) + eps);
    i = 0;
#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
    for (; i + W <= n; i += W)
        simd::store<Arch>(y + i, simd::load<Arch>(x + i) * simd::batch<Arch>(inv) * simd::load<Arch>(w + i));
#endif
    for (; i < n; ++i) y[i] = x[i] * inv * w[i];
}

/// Row-wise RMSNorm: y[r] = rmsnorm(x[r]) * w. x [L, n], w [n], y [L, n] (may alias x).
inline void rmsnorm(MatrixView<const float> x, std::span<const float> w, MatrixView<float> y, float eps) {
    check_size("rmsnorm: weight", w, x.cols);
    check_shape("rmsnorm: y", y, x.rows, x.cols);
    for (std::size_t r = 0; r < x.rows; ++r) rmsnorm_row(x.row(r), w.data(), y.row(r), x.cols, eps);
}

/// Plain reference: y = x / sqrt(mean(x^2) + eps) * w, in double.
inline void rmsnorm_reference(MatrixView<const float> x, std::span<const float> w, MatrixView<float> y, float eps) {
    for (std::size_t r = 0; r < x.rows; ++r) {
        double ss = 0;
        for (std::size_t c = 0; c < x.cols; ++c) ss += double(x(r, c)) * x(r, c);
        const double inv = 1.0 / std::sqrt(ss / double(x.cols ? x.cols : 1) + eps);
        for (std::size_t c = 0; c < x.cols; ++c) y(r, c) = float(x(r, c) * inv * w[c]);
    }
}

}  // namespace hystack::kernels
