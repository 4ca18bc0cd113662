#pragma once
#include "../core/module.hpp"

// y = x W^T with W in bf16 and x, y in f32: the scalar reference and the tile kernels the typed GEMM
// (linear_typed.hpp) runs. The default widens each W vector to f32 (exact) and multiplies it by x in
// f32 in linear's canonical order, so a bf16 weight gives the bits its f32 widening gives in linear, and
// batches (prefill) run linear's f32 tiles over W rows widened a tile at a time. The other form
// (Bf16Dot<Arch, true>, where the CPU has AVX512_BF16) rounds x to bf16 once per call (as ggml does
// for bf16 weights) and multiplies 32 pairs per vdpbf16ps: it is not the default, because on the
// Xeon (Sapphire Rapids) this was measured on, vdpbf16ps runs at half the rate of the f32 FMA (a 3 x 8
// tile in L1: 117 vs 171 GFLOP/s), so it loses accuracy for no speed.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>

#include "../core/bf16.hpp"
#include "../core/error.hpp"
#include "../core/simd.hpp"
#include "../core/simd_dot.hpp"
#include "../core/view.hpp"
#include "../core/weight.hpp"
#include "linear.hpp"

namespace hystack::kernels {

/// Scalar reference: y[m][n] = bias[n] + sum_k x'[m][k] W[n][k], W [N, K] bf16, summed in k order in
/// float; x' = x, or x rounded to bf16 when round_x (what Bf16Dot<Arch, true> does).
inline void linear_bf16_reference(MatrixView<const float> x, const WeightView& W, std::span<const float> bias,
                                  MatrixView<float> y, bool round_x = false) {
    check(W.type == DType::bf16, "linear_bf16_reference: weight is ", to_string(W.type), ", expected bf16");
    check_shape("linear_bf16_reference: x", x, any, W.cols);
    check_shape("linear_bf16_reference: y", y, x.rows, W.rows);
    check(bias.empty() || bias.size() == W.rows, "linear_bf16_reference: bias: expected [", W.rows,
          "] or empty, got [", bias.size(), "]");
    for (std::size_t m = 0; m < x.rows; ++m)
        for (std::size_t n = 0; n < W.rows; ++n) {
            const bf16* w = reinterpret_cast<const bf16*>(W.row(n));  // [K]
            // y = sum_k x w
            float s = 0.0f;
            for (std::size_t k = 0; k < W.cols; ++k) {
                const float xv = round_x ? float(bf16(x(m, k))) : x(m, k);
                s += xv * float(w[k]);
            }
            y(m, n) = s + (bias.empty() ? 0.0f : bias[n]);
        }
}

namespace detail {

/// The bf16 tile kernel for linear_typed.hpp's driver: widening (default) or vdpbf16ps (UseDot, only
/// where simd::has_bf16_dot<Arch>).
template <class Arch, bool UseDot = false>
struct Bf16Dot {
#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
    static_assert(!UseDot || simd::has_bf16_dot<Arch>, "Bf16Dot<Arch, true> needs AVX512_BF16");
#endif
    static constexpr DType type = DType::bf16;
    /// Whether x rows are packed (to bf16, zero-padded to whole 32-value steps) before the tiles run.
    static constexpr bool packs = UseDot;
    /// Whether batches (M > 2) run linear's f32 tiles over widened W rows (the same bits as tile()).
    static constexpr bool widens_for_batches = !UseDot && simd::enabled;
    /// W row [K] bf16 -> dst [K] f32.
    static void widen_row(const std::byte* w, std::size_t K, float* dst) {
        widen<Arch>(std::span<const bf16>(reinterpret_cast<const bf16*>(w), K), std::span<float>(dst, K));
    }

    static std::size_t packed_row_bytes(std::size_t K) {
        return (K + 31) / 32 * 32 * sizeof(std::uint16_t);  // whole steps: 64-byte multiples
    }
    /// dst [packed_row_bytes(K)] = x [K] rounded to bf16, zero-padded.
    static void pack(const float* x, std::size_t K, std::byte* dst) {
        bf16* d = reinterpret_cast<bf16*>(dst);
        narrow<Arch>(std::span<const float>(x, K), std::span<bf16>(d, K));
        for (std::size_t k = K; k < (K + 31) / 32 * 32; ++k) d[k] = bf16();
    }

    /// out[i*RN + j] = x_i . w_j over K. xr [RM]: packed rows (packs) or float rows; wr [RN]: bf16 rows.
    /// Every sum in one canonical order, whatever RM and RN: lane sums over k in steps, the lanes by
    /// simd::reduce_add_many's tree, then (widening path) the scalar tail in k order.
    /// PrefetchNext (decode): `next` [RN] are the next tile's W rows, hinted into L2 a tile ahead.
    template <int RM, int RN, bool PrefetchNext = false>
    HYSTACK_LINEAR_NOINLINE static void tile(const std::byte* const* xr, const std::byte* const* wr, std::size_t K,
                                             float* out, const std::byte* const* next = nullptr) {
        const std::uint16_t* wp[RN];  // W rows [RN, K], bf16 bits
        for (int j = 0; j < RN; ++j) wp[j] = reinterpret_cast<const std::uint16_t*>(wr[j]);
#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
        using Vec = simd::batch<Arch>;
        Vec acc[RM * RN];
        for (auto& a : acc) a = Vec(0.0f);
        if constexpr (packs) {
#if defined(__AVX512BF16__)
            const std::uint16_t* xp[RM];  // x rows [RM, K padded], bf16 bits
            for (int i = 0; i < RM; ++i) xp[i] = reinterpret_cast<const std::uint16_t*>(xr[i]);
            // acc[i][j] += pairs of x_i[k..k+32) * w_j[k..k+32)
            const std::size_t Kf = K - K % simd::bf16_dot_step;
            for (std::size_t k = 0; k < Kf; k += simd::bf16_dot_step) {
                simd::bf16x32 xv[RM];
                for (int i = 0; i < RM; ++i) xv[i] = simd::load_bf16x32(xp[i] + k);
                if constexpr (PrefetchNext)
                    for (int j = 0; j < RN; ++j) simd::prefetch_l2(next[j] + 2 * k);
                for (int j = 0; j < RN; ++j) {
                    const simd::bf16x32 wv = simd::load_bf16x32(wp[j] + k);
                    for (int i = 0; i < RM; ++i) acc[i * RN + j] = simd::bf16_dot<Arch>(acc[i * RN + j], xv[i], wv);
                }
            }
            if (Kf < K) {
                // the last step reads only w_j[Kf..K) (x is zero-padded)
                simd::bf16x32 xv[RM];
                for (int i = 0; i < RM; ++i) xv[i] = simd::load_bf16x32(xp[i] + Kf);
                for (int j = 0; j < RN; ++j) {
                    const simd::bf16x32 wv = simd::load_bf16x32(wp[j] + Kf, K - Kf);
                    for (int i = 0; i < RM; ++i) acc[i * RN + j] = simd::bf16_dot<Arch>(acc[i * RN + j], xv[i], wv);
                }
            }
            simd::reduce_add_many<Arch>(acc, out);
            return;
#endif
        } else {
            constexpr std::size_t VL = simd::width<Arch>;
            const float* xp[RM];  // x rows [RM, K]
            for (int i = 0; i < RM; ++i) xp[i] = reinterpret_cast<const float*>(xr[i]);
            const std::size_t Kv = K - K % VL;
            // acc[i][j] += x_i[k..k+VL) * widen(w_j[k..k+VL))
            for (std::size_t k = 0; k < Kv; k += VL) {
                Vec xv[RM];
                for (int i = 0; i < RM; ++i) xv[i] = simd::load<Arch>(xp[i] + k);
                if constexpr (PrefetchNext)
                    if (k % 32 == 0)
                        for (int j = 0; j < RN; ++j) simd::prefetch_l2(next[j] + 2 * k);
                for (int j = 0; j < RN; ++j) {
                    Vec wv = simd::load_bf16<Arch>(wp[j] + k);
                    if constexpr (RM > 1) simd::pin<Arch>(wv);
                    for (int i = 0; i < RM; ++i) acc[i * RN + j] = simd::fma<Arch>(xv[i], wv, acc[i * RN + j]);
                }
            }
            simd::reduce_add_many<Arch>(acc, out);
            add_tail_bf16<RM, RN>(xp, wp, Kv, K, out);
            return;
        }
#else
        (void)next;
        const float* xp[RM];
        for (int i = 0; i < RM; ++i) xp[i] = reinterpret_cast<const float*>(xr[i]);
        for (int i = 0; i < RM * RN; ++i) out[i] = 0.0f;
        add_tail_bf16<RM, RN>(xp, wp, 0, K, out);
#endif
    }

    /// out[i*RN + j] += x_i . w_j over [k0, K), in k order.
    template <int RM, int RN>
    static void add_tail_bf16(const float* const* xp, const std::uint16_t* const* wp, std::size_t k0, std::size_t K,
                              float* out) {
        if (k0 == K) return;
        for (int i = 0; i < RM; ++i)
            for (int j = 0; j < RN; ++j) {
                float t = 0.0f;
                for (std::size_t k = k0; k < K; ++k) t = std::fma(xp[i][k], bf16::to_float(wp[j][k]), t);
                out[i * RN + j] += t;
            }
    }
};

}  // namespace detail
}  // namespace hystack::kernels
