#pragma once
#include "../core/module.hpp"

// The scalar attention code: detail::attn::scalar_row, the flash loop for one query row and head
// that AttentionPath::scalar and builds without SIMD run (fp32, online softmax), and
// attention_reference, the plain double-precision reference with an explicit softmax that the tests
// compare every path against.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

#include "../core/error.hpp"
#include "../core/math.hpp"
#include "../core/view.hpp"
#include "attention_common.hpp"
#include "kv_view.hpp"

namespace hystack::kernels {

namespace detail::attn {

// Scalar flash loop (builds without SIMD): one query row, one head, keys in segments.
inline void scalar_row(const float* q, std::size_t pos, std::size_t g, const KVView& kv, const AttentionDims& dims, float* out,
                       float* acc /*[head_dim]*/) {
    const std::size_t d = dims.head_dim;
    const float scale = dims.effective_scale();
    std::size_t lo, hi;
    visible_range(pos, pos, dims.window, lo, hi);
    float m = neg_inf, l = 0.0f;
    std::fill(acc, acc + d, 0.0f);
    for (std::size_t s = 0; s < kv.count; ++s) {
        const KVSegment& sg = kv.seg[s];
        const std::size_t a = std::max(sg.pos, lo), b = std::min(sg.pos + sg.n, hi);
        const std::size_t ks = sg.key_dim_stride();
        for (std::size_t j = a; j < b; ++j) {
            const float* kr = sg.key(j - sg.pos, g, d);
            const float* vr = sg.value(j - sg.pos, g, d);
            float sc = 0.0f;
            for (std::size_t t = 0; t < d; ++t) sc += q[t] * kr[t * ks];
            sc *= scale;
            // m' = max(m, s); O' = O e^(m - m') + e^(s - m') v
            const float mn = std::max(m, sc);
            const float alpha = math::exp(m - mn), p = math::exp(sc - mn);
            l = l * alpha + p;
            for (std::size_t t = 0; t < d; ++t) acc[t] = acc[t] * alpha + p * vr[t];
            m = mn;
        }
    }
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    for (std::size_t t = 0; t < d; ++t) out[t] = acc[t] * inv;
}

}  // namespace detail::attn

/// Plain reference in double with an explicit softmax: q [L, H * d] at positions past.., keys/values
/// k, v [n_keys, n_kv * d] at positions kpos0 .. kpos0 + n_keys - 1; out [L, H * d].
inline void attention_reference(MatrixView<const float> q, std::size_t past, MatrixView<const float> k, MatrixView<const float> v,
                                std::size_t kpos0, MatrixView<float> out, const AttentionDims& dims) {
    dims.validate("attention_reference");
    const std::size_t H = dims.n_heads, d = dims.head_dim, G = dims.group();
    check_shape("attention_reference: q", q, any, H * d);
    check_shape("attention_reference: k", k, any, dims.n_kv_heads * d);
    check_shape("attention_reference: v", v, k.rows, k.cols);
    check_shape("attention_reference: out", out, q.rows, H * d);
    const double scale = dims.effective_scale();
    std::vector<double> s(k.rows);
    for (std::size_t i = 0; i < q.rows; ++i)
        for (std::size_t h = 0; h < H; ++h) {
            const std::size_t P = past + i, g = h / G;
            // s_j = scale q.k_j for visible j; p = softmax(s); out = sum_j p_j v_j
            double mx = -std::numeric_limits<double>::infinity();
            for (std::size_t j = 0; j < k.rows; ++j) {
                const std::size_t J = kpos0 + j;
                const bool vis = J <= P && (dims.window == 0 || P - J < dims.window);
                if (!vis) {
                    s[j] = -std::numeric_limits<double>::infinity();
                    continue;
                }
                double acc = 0;
                for (std::size_t t = 0; t < d; ++t) acc += double(q(i, h * d + t)) * double(k(j, g * d + t));
                s[j] = acc * scale;
                mx = std::max(mx, s[j]);
            }
            double sum = 0;
            for (std::size_t j = 0; j < k.rows; ++j) {
                s[j] = std::isinf(s[j]) && s[j] < 0 ? 0.0 : std::exp(s[j] - mx);
                sum += s[j];
            }
            for (std::size_t t = 0; t < d; ++t) {
                double o = 0;
                for (std::size_t j = 0; j < k.rows; ++j)
                    if (s[j] != 0.0) o += s[j] * double(v(j, g * d + t));
                out(i, h * d + t) = sum > 0 ? float(o / sum) : 0.0f;
            }
        }
}

}  // namespace hystack::kernels
