#pragma once
#include "../core/module.hpp"

// y = x W^T with W in q8_0 (GGUF's blocks) and x, y in f32, as ggml's q8_0 x q8_0 dot: each row of x is
// quantised to q8_0 blocks (the weights' own quantiser), each block pair gives an exact int32 dot, scaled
// by d_w * d_x and summed in float. The scalar reference and the tile kernel linear_typed.hpp runs.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "../core/error.hpp"
#include "../core/q8_0.hpp"
#include "../core/simd.hpp"
#include "../core/simd_dot.hpp"
#include "../core/view.hpp"
#include "../core/weight.hpp"
#include "linear.hpp"

namespace hystack::kernels {

/// Scalar reference: y[m][n] = bias[n] + sum over blocks b of (d_w d_x) * sum_i q_w q_x, W [N, K]
/// q8_0, each block of x [M, K] quantised by ggml's rule with its scale d_x kept in f32 (not rounded to
/// half as in a stored block: no overflow for large activations), blocks summed in order in float.
inline void linear_q8_0_reference(MatrixView<const float> x, const WeightView& W, std::span<const float> bias,
                                  MatrixView<float> y) {
    check(W.type == DType::q8_0, "linear_q8_0_reference: weight is ", to_string(W.type), ", expected q8_0");
    check_shape("linear_q8_0_reference: x", x, any, W.cols);
    check_shape("linear_q8_0_reference: y", y, x.rows, W.rows);
    check(bias.empty() || bias.size() == W.rows, "linear_q8_0_reference: bias: expected [", W.rows,
          "] or empty, got [", bias.size(), "]");
    const std::size_t nb = W.cols / block_q8_0::size;
    std::vector<std::int8_t> xq(W.cols);  // [nb, 32]
    std::vector<float> xd(nb);
    for (std::size_t m = 0; m < x.rows; ++m) {
        for (std::size_t b = 0; b < nb; ++b)
            xd[b] = hystack::detail::quantize_block_q8_reference(x.row(m) + b * block_q8_0::size, xq.data() + b * block_q8_0::size);
        for (std::size_t n = 0; n < W.rows; ++n) {
            const block_q8_0* w = reinterpret_cast<const block_q8_0*>(W.row(n));  // [nb]
            // y = sum_b d_w d_x sum_i q_w q_x
            float s = 0.0f;
            for (std::size_t b = 0; b < nb; ++b) {
                std::int32_t q = 0;
                for (std::size_t i = 0; i < block_q8_0::size; ++i)
                    q += std::int32_t(w[b].qs[i]) * xq[b * block_q8_0::size + i];
                s += float(q) * (fp16_to_float(w[b].d) * xd[b]);
            }
            y(m, n) = s + (bias.empty() ? 0.0f : bias[n]);
        }
    }
}

namespace detail {

/// A row of x quantised for the q8_0 tiles: the quants of nb blocks (K bytes), then their scales as
/// float [nb] (unrounded), then the sum of each block's quants [nb] (for the VNNI form).
struct PackedQ8Row {
    const std::int8_t* q;
    const float* d;
    const std::int32_t* sum;

    static std::size_t bytes(std::size_t K) {
        const std::size_t nb = K / block_q8_0::size;
        return (K + nb * (sizeof(float) + sizeof(std::int32_t)) + 63) / 64 * 64;
    }
    static PackedQ8Row at(const std::byte* p, std::size_t K) {
        const std::size_t nb = K / block_q8_0::size;
        return {reinterpret_cast<const std::int8_t*>(p), reinterpret_cast<const float*>(p + K),
                reinterpret_cast<const std::int32_t*>(p + K + nb * sizeof(float))};
    }
};

/// The q8_0 tile kernel for linear_typed.hpp's driver.
template <class Arch>
struct Q8Dot {
    static constexpr DType type = DType::q8_0;
    static constexpr bool packs = true;
    static constexpr bool widens_for_batches = false;
    static void widen_row(const std::byte*, std::size_t, float*) {}

    static std::size_t packed_row_bytes(std::size_t K) { return PackedQ8Row::bytes(K); }
    /// dst = x [K] quantised block by block (ggml's rule, the scale kept in f32).
    static void pack(const float* x, std::size_t K, std::byte* dst) {
        const std::size_t nb = K / block_q8_0::size;
        auto* q = reinterpret_cast<std::int8_t*>(dst);
        auto* d = reinterpret_cast<float*>(dst + K);
        auto* sum = reinterpret_cast<std::int32_t*>(dst + K + nb * sizeof(float));
        for (std::size_t b = 0; b < nb; ++b) {
            std::int8_t* qb = q + b * block_q8_0::size;
            d[b] = hystack::detail::quantize_block_q8<Arch>(x + b * block_q8_0::size, qb);
            std::int32_t s = 0;
            for (std::size_t j = 0; j < block_q8_0::size; ++j) s += qb[j];
            sum[b] = s;
        }
    }

    /// out[i*RN + j] = x_i . w_j over K (whole blocks). xr [RM]: packed rows; wr [RN]: q8_0 rows. Each
    /// sum in one canonical order whatever RM and RN: per block, the int32 lanes of the block dot are
    /// scaled by d_w d_x into 8 float lanes (AVX-512 VNNI: two blocks side by side in 16 lanes), blocks
    /// in order; the lanes by one fixed tree at the end.
    /// PrefetchNext (decode): `next` [RN] are the next tile's W rows, hinted into L2 a tile ahead.
    template <int RM, int RN, bool PrefetchNext = false>
    HYSTACK_LINEAR_NOINLINE static void tile(const std::byte* const* xr, const std::byte* const* wr, std::size_t K,
                                             float* out, const std::byte* const* next = nullptr) {
        const std::size_t nb = K / block_q8_0::size;
        PackedQ8Row xp[RM];
        for (int i = 0; i < RM; ++i) xp[i] = PackedQ8Row::at(xr[i], K);
        const block_q8_0* wp[RN];  // W rows [RN, nb]
        for (int j = 0; j < RN; ++j) wp[j] = reinterpret_cast<const block_q8_0*>(wr[j]);
#if HYSTACK_SIMD_Q8X2
        {
            namespace q8 = simd::q8x2;
            q8::fvec acc[RM * RN];
            for (auto& a : acc) a = q8::zero();
            for (std::size_t b = 0; b < nb; b += 2) {
                // acc[i][j] += (d_w d_x) * lanes of sum q_w q_x over blocks b and b + 1 (the last may be alone)
                const bool two = b + 1 < nb;
                const std::size_t b1 = two ? b + 1 : b;
                q8::ivec xq[RM], seed[RM];
                q8::fvec dx[RM];
                for (int i = 0; i < RM; ++i) {
                    xq[i] = q8::load_x(xp[i].q + b * block_q8_0::size, two);
                    seed[i] = q8::seed(xp[i].sum[b], two ? xp[i].sum[b1] : 0);
                    dx[i] = q8::pair(xp[i].d[b], two ? xp[i].d[b1] : 0.0f);
                }
                if constexpr (PrefetchNext)
                    for (int j = 0; j < RN; ++j) simd::prefetch_l2(next[j] + b * sizeof(block_q8_0));
                for (int j = 0; j < RN; ++j) {
                    const q8::ivec w = q8::load_w(wp[j][b].qs, two ? wp[j][b1].qs : nullptr);
                    const q8::fvec dw = q8::halves(wp[j][b].d, two ? wp[j][b1].d : std::uint16_t(0));
                    for (int i = 0; i < RM; ++i)
                        acc[i * RN + j] = q8::dot_fma(w, xq[i], seed[i], q8::mul(dw, dx[i]), acc[i * RN + j]);
                }
            }
            for (int a = 0; a < RM * RN; ++a) out[a] = q8::reduce(acc[a]);
        }
#elif HYSTACK_SIMD_Q8
        {
            namespace q8 = simd::q8;
            q8::fvec acc[RM * RN];
            for (auto& a : acc) a = q8::zero();
            for (std::size_t b = 0; b < nb; ++b) {
                // acc[i][j] += (d_w d_x) * lanes of sum q_w q_x over block b
                q8::ivec xq[RM], seed[RM];
                q8::fvec dx[RM];
                for (int i = 0; i < RM; ++i) {
                    xq[i] = q8::load(xp[i].q + b * block_q8_0::size);
                    seed[i] = q8::seed(xp[i].sum[b]);
                    dx[i] = q8::splat(xp[i].d[b]);
                }
                if constexpr (PrefetchNext)
                    if (b % 2 == 0)
                        for (int j = 0; j < RN; ++j) simd::prefetch_l2(next[j] + b * sizeof(block_q8_0));
                for (int j = 0; j < RN; ++j) {
                    const q8::ivec w = q8::prep_w(q8::load(wp[j][b].qs));
                    const q8::fvec dw = q8::splat(simd::half_to_float(wp[j][b].d));
                    for (int i = 0; i < RM; ++i)
                        acc[i * RN + j] = q8::fma_lanes(q8::block_dot(w, xq[i], seed[i]), q8::mul(dw, dx[i]), acc[i * RN + j]);
                }
            }
            for (int a = 0; a < RM * RN; ++a) out[a] = q8::reduce(acc[a]);
        }
#else
        (void)next;
        {
            for (int i = 0; i < RM; ++i)
                for (int j = 0; j < RN; ++j) {
                    float s = 0.0f;
                    for (std::size_t b = 0; b < nb; ++b) {
                        std::int32_t q = 0;
                        for (std::size_t k = 0; k < block_q8_0::size; ++k)
                            q += std::int32_t(wp[j][b].qs[k]) * xp[i].q[b * block_q8_0::size + k];
                        s = std::fma(float(q), fp16_to_float(wp[j][b].d) * xp[i].d[b], s);
                    }
                    out[i * RN + j] = s;
                }
        }
#endif
    }
};

}  // namespace detail
}  // namespace hystack::kernels
