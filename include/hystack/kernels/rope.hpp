#pragma once
#include "../core/module.hpp"

// Rotary position embedding, rotate-half form (HF apply_rotary_pos_emb, Llama/NeoX style):
// for head vector x [head_dim] at absolute position p and i < head_dim/2,
//   f_i = theta^(-2i / head_dim),  a = p f_i
//   x'[i] = x[i] cos a - x[i + d/2] sin a,   x'[i + d/2] = x[i + d/2] cos a + x[i] sin a
// Angles and their sin/cos are computed in double (exact positions for any context length).

#include <cmath>
#include <cstddef>

#include "../core/error.hpp"
#include "../core/view.hpp"

namespace hystack::kernels {

/// Applies RoPE in place to x [L, n_heads * head_dim]; row r sits at absolute position pos0 + r.
/// head_dim must be even.
inline void rope(MatrixView<float> x, std::size_t n_heads, std::size_t head_dim, std::size_t pos0, double theta = 10000.0) {
    check(head_dim % 2 == 0, "rope: head_dim must be even, got ", head_dim);
    check_shape("rope: x", x, any, n_heads * head_dim);
    const std::size_t half = head_dim / 2;
    for (std::size_t r = 0; r < x.rows; ++r) {
        const double p = double(pos0 + r);
        for (std::size_t i = 0; i < half; ++i) {
            const double a = p * std::pow(theta, -2.0 * double(i) / double(head_dim));
            const float c = float(std::cos(a)), s = float(std::sin(a));
            for (std::size_t h = 0; h < n_heads; ++h) {
                float* xh = x.row(r) + h * head_dim;
                const float x1 = xh[i], x2 = xh[i + half];
                xh[i] = x1 * c - x2 * s;
                xh[i + half] = x2 * c + x1 * s;
            }
        }
    }
}

}  // namespace hystack::kernels
