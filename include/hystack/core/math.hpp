#pragma once
#include "module.hpp"

// Elementwise math used by every kernel: exp, sigmoid, silu, softplus. Each exists for a float,
// for a SIMD batch (templated on Arch) and over arrays; the scalar and batch versions run the same
// algorithm, so a kernel's loop tail matches its vector body.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>

#include "error.hpp"
#include "simd.hpp"

namespace hystack::math {

namespace detail {
// exp(x) = 2^n * exp(r), n = round(x / ln2), r = x - n ln2 (ln2 split hi/lo, Cody-Waite), |r| <= ln2/2;
// exp(r) = 1 + r + r^2 P(r) with Cephes' degree-5 P. 2^n is applied as two factors 2^(n/2) * 2^(n - n/2)
// so results stay exact through the denormal range and up to x = 88.72 (n = 128).
inline constexpr float log2e = 1.44269504088896341f;
inline constexpr float ln2_hi = 0.693359375f;
inline constexpr float ln2_lo = -2.12194440e-4f;
inline constexpr float p0 = 1.9875691500e-4f, p1 = 1.3981999507e-3f, p2 = 8.3334519073e-3f, p3 = 4.1665795894e-2f,
                       p4 = 1.6666665459e-1f, p5 = 5.0000001201e-1f;
inline constexpr float exp_hi = 88.72283935546875f;  // above: +inf
inline constexpr float exp_lo = -103.972084045410f;  // below: 0
inline constexpr float softplus_threshold = 20.0f;   // above: softplus(x) = x (as PyTorch)

inline float pow2i(std::int32_t n) {
    const std::int32_t bits = (n + 127) << 23;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}
}  // namespace detail

/// exp(x) for one float; max relative error ~1.5e-7 on [-87, 88]; exp(+inf) = inf, exp(-inf) = 0, NaN -> NaN.
inline float exp(float x) {
    using namespace detail;
    if (!(x < exp_hi)) return x != x ? x : std::numeric_limits<float>::infinity();
    if (x < exp_lo) return 0.0f;
    const float n = std::nearbyint(x * log2e);
    float r = std::fma(-n, ln2_hi, x);
    r = std::fma(-n, ln2_lo, r);
    float p = p0;
    p = std::fma(p, r, p1);
    p = std::fma(p, r, p2);
    p = std::fma(p, r, p3);
    p = std::fma(p, r, p4);
    p = std::fma(p, r, p5);
    p = std::fma(p, r * r, r + 1.0f);
    const std::int32_t ni = std::int32_t(n), n1 = ni >> 1, n2 = ni - n1;
    return p * pow2i(n1) * pow2i(n2);
}

/// sigmoid(x) = 1 / (1 + exp(-x))
inline float sigmoid(float x) { return 1.0f / (1.0f + exp(-x)); }
/// silu(x) = x * sigmoid(x)
inline float silu(float x) { return x == -std::numeric_limits<float>::infinity() ? 0.0f : x / (1.0f + exp(-x)); }
/// softplus(x) = log(1 + exp(x)), = x for x > 20 (PyTorch's threshold), computed as max(x,0) + log1p(exp(-|x|)).
inline float softplus(float x) {
    if (x > detail::softplus_threshold) return x;
    if (x != x) return x;
    return std::fmax(x, 0.0f) + std::log1p(exp(-std::fabs(x)));
}

#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
namespace detail {
/// The core of exp on a batch already inside [exp_lo, exp_hi]: n = round(x / ln2) and
/// p = exp(x - n ln2), so that exp(x) = p * 2^n.
template <class Arch>
inline simd::batch<Arch> exp_reduced(const simd::batch<Arch>& xc, simd::batch<Arch>& n) {
    using Vec = simd::batch<Arch>;
    n = simd::round<Arch>(xc * Vec(log2e));
    Vec r = simd::fma<Arch>(-n, Vec(ln2_hi), xc);
    r = simd::fma<Arch>(-n, Vec(ln2_lo), r);
    Vec p(p0);
    p = simd::fma<Arch>(p, r, Vec(p1));
    p = simd::fma<Arch>(p, r, Vec(p2));
    p = simd::fma<Arch>(p, r, Vec(p3));
    p = simd::fma<Arch>(p, r, Vec(p4));
    p = simd::fma<Arch>(p, r, Vec(p5));
    return simd::fma<Arch>(p, r * r, r + Vec(1.0f));
}
}  // namespace detail

/// exp over a batch: the same algorithm as exp(float).
template <class Arch>
inline simd::batch<Arch> exp(const simd::batch<Arch>& x) {
    using namespace detail;
    using Vec = simd::batch<Arch>;
    using I = simd::ibatch<Arch>;
    // Fast path (all lanes give a normal result, 2^n fits one exponent field): one scale, no selects.
    // Lanes that underflow to denormals, overflow, or are NaN take the two-factor path below.
    const bool normal = simd::all<Arch>(x >= Vec(-87.3f) && x <= Vec(88.3f));
    const Vec xc = normal ? x : simd::min<Arch>(simd::max<Arch>(x, Vec(exp_lo)), Vec(exp_hi));
    Vec n;
    const Vec p = exp_reduced<Arch>(xc, n);
    const I ni = simd::to_int<Arch>(n);
    if (normal) return p * simd::as_float<Arch>(simd::shift_left<23>(ni + I(127)));
    const I n1 = simd::shift_right<1>(ni);
    const I n2 = ni - n1;
    Vec y = p * simd::as_float<Arch>(simd::shift_left<23>(n1 + I(127))) *
          simd::as_float<Arch>(simd::shift_left<23>(n2 + I(127)));
    y = simd::select<Arch>(x < Vec(exp_lo), Vec(0.0f), y);
    y = simd::select<Arch>(x >= Vec(exp_hi), Vec(std::numeric_limits<float>::infinity()), y);
    return simd::select<Arch>(simd::isnan<Arch>(x), x, y);
}
/// exp(x) without the NaN and range selects, for the decay exp(dt * A) of the selective scan (A <= 0,
/// dt >= 0: x <= 0). Equals exp(x) for x <= exp_hi (not NaN), except just below exp_lo (-103.97), where it
/// may give the smallest denormal instead of 0. With vscalefps it needs no range check nor branch (the scan
/// runs ~20% faster); elsewhere it is exp.
template <class Arch>
inline simd::batch<Arch> exp_nonpos(const simd::batch<Arch>& x) {
    using namespace detail;
    using Vec = simd::batch<Arch>;
    if constexpr (simd::has_scalef<Arch>) {
        // -inf -> a finite argument whose exp rounds to 0
        const Vec xc = simd::max<Arch>(x, Vec(-127.0f));
        Vec n;
        const Vec p = exp_reduced<Arch>(xc, n);
        return simd::scalef<Arch>(p, n);
    } else {
        return exp<Arch>(x);
    }
}

template <class Arch>
inline simd::batch<Arch> sigmoid(const simd::batch<Arch>& x) {
    using Vec = simd::batch<Arch>;
    return Vec(1.0f) / (Vec(1.0f) + exp<Arch>(-x));
}
template <class Arch>
inline simd::batch<Arch> silu(const simd::batch<Arch>& x) {
    using Vec = simd::batch<Arch>;
    // -inf / (1 + inf) would be NaN; silu(-inf) = 0.
    return simd::select<Arch>(x == Vec(-std::numeric_limits<float>::infinity()), Vec(0.0f), x / (Vec(1.0f) + exp<Arch>(-x)));
}
template <class Arch>
inline simd::batch<Arch> softplus(const simd::batch<Arch>& x) {
    using Vec = simd::batch<Arch>;
    const Vec y = simd::max<Arch>(x, Vec(0.0f)) + simd::log1p<Arch>(exp<Arch>(-simd::abs<Arch>(x)));
    return simd::select<Arch>(x > Vec(detail::softplus_threshold) || simd::isnan<Arch>(x), x, y);
}
#endif

namespace detail {
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 misreads the tail loop below after inlining a known size (a false -Waggressive-loop-optimizations).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Waggressive-loop-optimizations"
#endif
// Applies a batch op over the array body and the scalar op over the tail (in == out is allowed).
template <class Arch, class VecOp, class ScalarOp>
inline void apply(std::span<const float> in, std::span<float> out, const char* what, VecOp vop, ScalarOp sop) {
    hystack::check(in.size() == out.size(), what, ": expected output of size [", in.size(), "], got [", out.size(), "]");
    std::size_t i = 0;
    const std::size_t n = in.size();
    const float* src = in.data();  // x [n]
    float* dst = out.data();       // y [n]
#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
    constexpr std::size_t VL = simd::width<Arch>;
    for (; i + VL <= n; i += VL) simd::store<Arch>(dst + i, vop(simd::load<Arch>(src + i)));
#endif
    for (; i < n; ++i) dst[i] = sop(src[i]);
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
}  // namespace detail

/// y[i] = exp(x[i]); x and y may alias. Throws hystack::error when sizes differ.
template <class Arch = simd::default_arch>
inline void exp(std::span<const float> x, std::span<float> y) {
    detail::apply<Arch>(x, y, "exp", [](auto v) { return exp<Arch>(v); }, [](float v) { return exp(v); });
}
/// y[i] = sigmoid(x[i]); x and y may alias.
template <class Arch = simd::default_arch>
inline void sigmoid(std::span<const float> x, std::span<float> y) {
    detail::apply<Arch>(x, y, "sigmoid", [](auto v) { return sigmoid<Arch>(v); }, [](float v) { return sigmoid(v); });
}
/// y[i] = silu(x[i]); x and y may alias.
template <class Arch = simd::default_arch>
inline void silu(std::span<const float> x, std::span<float> y) {
    detail::apply<Arch>(x, y, "silu", [](auto v) { return silu<Arch>(v); }, [](float v) { return silu(v); });
}
/// y[i] = softplus(x[i]); x and y may alias.
template <class Arch = simd::default_arch>
inline void softplus(std::span<const float> x, std::span<float> y) {
    detail::apply<Arch>(x, y, "softplus", [](auto v) { return softplus<Arch>(v); }, [](float v) { return softplus(v); });
}

}  // namespace hystack::math
