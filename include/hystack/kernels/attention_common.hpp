#pragma once
#include "../core/module.hpp"

// What every attention path shares: AttentionDims (head layout, window, scale), AttentionWorkspace
// (per-call scratch), AttentionPath (which inner loop), and in detail::attn the visibility rule
// (visible_range), the KVView checks and the SIMD register budget of the lane and dot paths.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>

#include "../core/error.hpp"
#include "../core/simd.hpp"
#include "../core/view.hpp"
#include "kv_view.hpp"

namespace hystack::kernels {

/// Head layout and softmax options. q/out rows are [n_heads * head_dim] (head h at h * head_dim);
/// query head h reads kv head h / (n_heads / n_kv_heads).
struct AttentionDims {
    std::size_t n_heads = 0;
    std::size_t n_kv_heads = 0;
    std::size_t head_dim = 0;
    std::size_t window = 0;  // 0 = global causal
    float scale = 0.0f;      // 0 = 1 / sqrt(head_dim)

    float effective_scale() const { return scale != 0.0f ? scale : 1.0f / std::sqrt(float(head_dim)); }
    std::size_t group() const { return n_heads / n_kv_heads; }
    void validate(const char* who) const {
        check(head_dim > 0, who, ": head_dim must be > 0");
        check(n_heads > 0 && n_kv_heads > 0, who, ": n_heads and n_kv_heads must be > 0, got ", n_heads, " and ", n_kv_heads);
        check(n_heads % n_kv_heads == 0, who, ": n_heads (", n_heads, ") must be a multiple of n_kv_heads (", n_kv_heads, ")");
    }
};

/// Scratch for the attention kernels; grows on demand and never shrinks, so decode steps after the
/// first allocate nothing. Not shareable between concurrent calls.
class AttentionWorkspace {
public:
    float* reserve(std::size_t floats) {
        if (floats > buf_.size()) buf_.resize(floats);
        return buf_.data();
    }
    std::size_t bytes() const { return buf_.bytes(); }
    const float* data() const { return buf_.data(); }

private:
    Buffer<float> buf_;
};

namespace detail::attn {

inline constexpr float neg_inf = -std::numeric_limits<float>::infinity();

inline void check_view(const KVView& kv, const AttentionDims& d, const char* who) {
    for (std::size_t i = 0; i < kv.count; ++i) {
        const std::size_t need = kv.seg[i].head_stride ? d.head_dim : d.n_kv_heads * d.head_dim;
        check(kv.seg[i].stride >= need, who, ": k/v row stride ", kv.seg[i].stride, " is smaller than ", need);
        check(kv.seg[i].k && kv.seg[i].v, who, ": null k/v segment");
        check(!kv.seg[i].k_tiled || kv.seg[i].head_stride || d.n_kv_heads == 1, who, ": a tiled K segment needs a head stride");
    }
}

/// Visible key range [lo, hi) for query positions [p_first, p_last].
inline void visible_range(std::size_t p_first, std::size_t p_last, std::size_t window, std::size_t& lo, std::size_t& hi) {
    lo = (window && p_first + 1 > window) ? p_first + 1 - window : 0;
    hi = p_last + 1;
}

#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)

template <class Arch>
inline constexpr std::size_t lanes = simd::width<Arch>;
/// Registers available for accumulators (32 with AVX-512, 16 otherwise).
template <class Arch>
inline constexpr int acc_regs = lanes<Arch> >= 16 ? 32 : 16;

#endif  // SIMD

}  // namespace detail::attn

/// Which inner loop the kernel uses (tests force each; automatic picks by shape).
enum class AttentionPath { automatic, lane, dot, scalar };

}  // namespace hystack::kernels
