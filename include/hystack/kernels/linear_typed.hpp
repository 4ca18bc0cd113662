#pragma once
#include "../core/module.hpp"

// The projection kernels for bf16 and q8_0 weights: y = x W^T (+ bias) and the fused SwiGLU input
// side, x and y in f32. A dot-product GEMM like linear's: tiles of RM rows of x by RN rows of W, threads
// splitting the output features. What the weight type changes is the tile kernel (dot_bf16.hpp,
// dot_q8_0.hpp) and how x is prepared: the rows of x are packed once per call (rounded to bf16 or
// quantised to q8_0 blocks) into a per-thread scratch that grows and is then reused, so a warm decode
// does not allocate. Every output is computed by its tile kernel's one canonical order whatever the
// tile shape, thread or batch, so a row of a batch equals that row alone and results do not depend on
// the thread count.

#include <algorithm>
#include <cstddef>
#include <span>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/math.hpp"
#include "../core/simd.hpp"
#include "../core/view.hpp"
#include "../core/weight.hpp"
#include "dot_bf16.hpp"
#include "dot_q8_0.hpp"
#include "linear.hpp"

namespace hystack::kernels {
namespace detail {

/// The calling thread's scratch for packed rows of x (slot 0: a projection's input; slot 1: the MoE
/// experts' hidden rows while slot 0 holds the tokens). Grows, never shrinks.
inline Buffer<std::byte>& packed_scratch(int slot) {
    thread_local Buffer<std::byte> s[2];
    return s[slot];
}

/// The M rows of x (xrow(m) -> const float* [K]) as the tile kernel reads them: packed into the
/// calling thread's scratch `slot` when Dot packs, else the rows themselves. prow(m) -> const std::byte*.
template <class Dot, class XRow>
struct PackedRows {
    XRow xrow;
    const std::byte* base = nullptr;
    std::size_t stride = 0;
    const std::byte* operator()(std::size_t m) const {
        if constexpr (Dot::packs)
            return base + m * stride;
        else
            return reinterpret_cast<const std::byte*>(xrow(m));
    }
};
template <class Dot, class XRow>
PackedRows<Dot, XRow> pack_rows(std::size_t M, std::size_t K, XRow xrow, int slot) {
    PackedRows<Dot, XRow> p{xrow};
    if constexpr (Dot::packs) {
        p.stride = Dot::packed_row_bytes(K);
        Buffer<std::byte>& s = packed_scratch(slot);
        if (s.size() < M * p.stride) s.resize(M * p.stride);
        for (std::size_t m = 0; m < M; ++m) Dot::pack(xrow(m), K, s.data() + m * p.stride);
        p.base = s.data();
    }
    return p;
}

/// Tiles [t0, t1) of RN weight rows over M packed rows: wrows(t, wr) fills the RN row pointers of tile
/// t; epi(m0, rm, t, sums [RM][RN]) consumes a finished tile (rows past M repeat row M-1).
template <class Dot, int RM, int RN, class PRow, class WRows, class Epi>
void typed_tiles(std::size_t M, std::size_t K, std::size_t row_bytes, std::size_t t0, std::size_t t1,
                 const PRow& prow, WRows&& wrows, Epi&& epi) {
    // M block: Mc packed rows stay in L2 while the W tiles sweep them
    std::size_t Mc = std::max<std::size_t>(RM, std::min(linear_x_block_bytes / std::max<std::size_t>(row_bytes, 1),
                                                        linear_max_block_rows) / RM * RM);
    Mc = std::min(Mc, (M + RM - 1) / RM * RM);
    alignas(64) float sums[RM * RN];
    const std::byte* wr[RN];
    const std::byte* xr[RM];
    const std::byte* wn[RN];
    for (std::size_t mb = 0; mb < M; mb += Mc) {
        const std::size_t me = std::min(M, mb + Mc);
        for (std::size_t t = t0; t < t1; ++t) {
            wrows(t, wr);
            for (std::size_t m0 = mb; m0 < me; m0 += RM) {
                for (int i = 0; i < RM; ++i) xr[i] = prow(std::min<std::size_t>(m0 + std::size_t(i), M - 1));
                if (M <= 2) {
                    // decode streams W once: the tile hints the next tile's rows into L2 as it goes
                    wrows(t + 1 < t1 ? t + 1 : t, wn);
                    Dot::template tile<RM, RN, true>(xr, wr, K, sums, wn);
                } else {
                    Dot::template tile<RM, RN>(xr, wr, K, sums);
                }
                epi(m0, std::min<std::size_t>(RM, me - m0), t, static_cast<const float*>(sums));
            }
        }
    }
}

/// The calling thread's scratch for W rows widened to f32 (a tile's worth).
inline Buffer<float>& widened_scratch() {
    thread_local Buffer<float> s;
    return s;
}

/// Batches of a widening Dot: linear's f32 tiles over M rows (xrow) with W rows widened a tile at a time
/// into the thread's scratch; wrow(n) gives W's row n, rows_of_tile(t, rows [RN]) which rows tile t holds.
template <class Dot, int RM, int RN, class XRow, class RowsOfTile, class Epi>
void widened_tiles(std::size_t M, std::size_t K, std::size_t t0, std::size_t t1, XRow&& xrow, RowsOfTile&& rows_of_tile,
                   Epi&& epi) {
    Buffer<float>& buf = widened_scratch();
    if (buf.size() < std::size_t(RN) * K) buf.resize(std::size_t(RN) * K);
    auto wrows = [&](std::size_t t, const float** wr) {
        const std::byte* rows[RN];
        rows_of_tile(t, rows);
        for (int j = 0; j < RN; ++j) {
            float* dst = buf.data() + std::size_t(j) * K;
            Dot::widen_row(rows[j], K, dst);
            wr[j] = dst;
        }
    };
    gemm_nt_tiles<simd::default_arch, RM, RN, XRow&, decltype(wrows)&, Epi&, false>(M, K, t0, t1, xrow, wrows, epi);
}

/// The tile loop of the typed kernels over M rows given by xrow(m) -> const float* [K]: tiles_for(RN)
/// tiles of RN weight rows; rows_of_tile(t, RN, rows [RN]) names tile t's W rows; epi(m0, rm, t, RN,
/// sums [RM][RN]) consumes a finished tile. Threads split the tiles. Decode (M <= 2) runs Dot's tile
/// kernel; batches of a widening Dot run linear's f32 tiles over widened rows (the same bits);
/// others pack x and run Dot's tile kernel.
template <class Dot, Executor Exec, class XRow, class TilesFor, class RowsOfTile, class Epi>
void typed_rows(std::size_t M, std::size_t K, TilesFor&& tiles_for, XRow&& xrow, RowsOfTile&& rows_of_tile, Epi&& epi,
                Exec& exec, int slot) {
    if (M == 0) return;
    if constexpr (Dot::widens_for_batches)
        if (M > 2) {
            with_tile_shape<simd::default_arch>(M, [&]<int RM, int RN>() {
                exec.parallel_for(tiles_for(RN), linear_grain(M, K, RN), [&](std::size_t t0, std::size_t t1) {
                    widened_tiles<Dot, RM, RN>(
                        M, K, t0, t1, xrow, [&](std::size_t t, const std::byte** wr) { rows_of_tile(t, RN, wr); },
                        [&](std::size_t m0, std::size_t rm, std::size_t t, const float* s) { epi(m0, rm, t, RN, s); });
                });
            });
            return;
        }
    const auto prow = pack_rows<Dot>(M, K, xrow, slot);
    with_tile_shape<simd::default_arch>(M, [&]<int RM, int RN>() {
        exec.parallel_for(tiles_for(RN), linear_grain(M, K, RN), [&](std::size_t t0, std::size_t t1) {
            typed_tiles<Dot, RM, RN>(
                M, K, Dot::packs ? prow.stride : K * sizeof(float), t0, t1, prow,
                [&](std::size_t t, const std::byte** wr) { rows_of_tile(t, RN, wr); },
                [&](std::size_t m0, std::size_t rm, std::size_t t, const float* s) { epi(m0, rm, t, RN, s); });
        });
    });
}

/// y = x W^T over M rows given by xrow(m): epi(m, n, v) receives each v = x_m . W_n once. W typed as Dot.
template <class Dot, Executor Exec, class XRow, class Epi>
void typed_linear_rows(std::size_t M, XRow&& xrow, const WeightView& W, Epi&& epi, Exec& exec, int slot = 0) {
    const std::size_t N = W.rows;
    if (N == 0) return;
    typed_rows<Dot>(
        M, W.cols, [&](std::size_t RN) { return (N + RN - 1) / RN; }, xrow,
        [&](std::size_t t, std::size_t RN, const std::byte** wr) {
            for (std::size_t j = 0; j < RN; ++j) wr[j] = W.row(std::min(t * RN + j, N - 1));  // past N: row N-1
        },
        [&](std::size_t m0, std::size_t rm, std::size_t t, std::size_t RN, const float* s) {
            const std::size_t n0 = t * RN, rn = std::min<std::size_t>(RN, N - n0);
            for (std::size_t i = 0; i < rm; ++i)
                for (std::size_t j = 0; j < rn; ++j) epi(m0 + i, n0 + j, s[i * RN + j]);
        },
        exec, slot);
}

/// h[m][n] = silu(x_m . Wg_n) * (x_m . Wu_n) over M rows given by xrow(m); Wg, Wu [H, K] typed as Dot.
/// A tile holds RN/2 gate rows and the same RN/2 up rows.
template <class Dot, Executor Exec, class XRow>
void typed_swiglu_rows(std::size_t M, XRow&& xrow, const WeightView& Wg, const WeightView& Wu, MatrixView<float> h,
                       Exec& exec, int slot = 0) {
    const std::size_t H = Wg.rows;
    if (H == 0) return;
    typed_rows<Dot>(
        M, Wg.cols, [&](std::size_t RN) { return (H + RN / 2 - 1) / (RN / 2); }, xrow,
        [&](std::size_t t, std::size_t RN, const std::byte** wr) {
            const std::size_t R = RN / 2;  // hidden units per tile
            for (std::size_t j = 0; j < R; ++j) {
                const std::size_t n = std::min(t * R + j, H - 1);
                wr[j] = Wg.row(n);
                wr[R + j] = Wu.row(n);
            }
        },
        [&](std::size_t m0, std::size_t rm, std::size_t t, std::size_t RN, const float* s) {
            // h = silu(gate) * up
            const std::size_t R = RN / 2, n0 = t * R, rn = std::min<std::size_t>(R, H - n0);
            for (std::size_t i = 0; i < rm; ++i) {
                float* hr = h.row(m0 + i) + n0;  // h [M, H]
                for (std::size_t j = 0; j < rn; ++j) hr[j] = math::silu(s[i * RN + j]) * s[i * RN + R + j];
            }
        },
        exec, slot);
}

/// Calls body.template operator()<Dot>() with the tile kernel of weight type t (bf16 or q8_0).
template <class Arch, class Body>
void with_typed_dot(DType t, const char* who, Body&& body) {
    switch (t) {
        case DType::bf16: return body.template operator()<Bf16Dot<Arch>>();
        case DType::q8_0: return body.template operator()<Q8Dot<Arch>>();
        case DType::f32: break;
    }
    fail(who, ": no typed kernel for ", to_string(t), " weights");
}

}  // namespace detail

/// y = x W^T + bias with W [N, K] bf16 or q8_0, x [L, K], bias [N] or empty, y [L, N] (f32; y must not
/// alias x). q8_0 needs K a multiple of 32 (as the weight's rows). Results do not depend on the thread
/// count, and row m of a batch equals linear_typed of that row alone.
template <Executor Exec, class Arch = simd::default_arch>
void linear_typed(MatrixView<const float> x, const WeightView& W, std::span<const float> bias, MatrixView<float> y,
                  Exec& exec) {
    check_shape("linear_typed: x", x, any, W.cols);
    check_shape("linear_typed: y", y, x.rows, W.rows);
    check(bias.empty() || bias.size() == W.rows, "linear_typed: bias: expected [", W.rows, "] or empty, got [",
          bias.size(), "]");
    if (y.empty()) return;
    detail::with_typed_dot<Arch>(W.type, "linear_typed", [&]<class Dot>() {
        detail::typed_linear_rows<Dot>(
            x.rows, [&](std::size_t m) { return x.row(m); }, W,
            [&](std::size_t m, std::size_t n, float v) { y(m, n) = v + (bias.empty() ? 0.0f : bias[n]); }, exec);
    });
}

/// h = silu(x Wg^T) * (x Wu^T), Wg and Wu [hidden, K] of one type (bf16 or q8_0), x [L, K], h [L, hidden].
template <Executor Exec, class Arch = simd::default_arch>
void swiglu_typed(MatrixView<const float> x, const WeightView& Wg, const WeightView& Wu, MatrixView<float> h,
                  Exec& exec) {
    check(Wg.type == Wu.type, "swiglu_typed: gate is ", to_string(Wg.type), ", up is ", to_string(Wu.type));
    check_shape("swiglu_typed: x", x, any, Wg.cols);
    check(Wu.rows == Wg.rows && Wu.cols == Wg.cols, "swiglu_typed: up weight: expected [", Wg.rows, ", ", Wg.cols,
          "], got [", Wu.rows, ", ", Wu.cols, "]");
    check_shape("swiglu_typed: h", h, x.rows, Wg.rows);
    detail::with_typed_dot<Arch>(Wg.type, "swiglu_typed", [&]<class Dot>() {
        detail::typed_swiglu_rows<Dot>(x.rows, [&](std::size_t m) { return x.row(m); }, Wg, Wu, h, exec);
    });
}

}  // namespace hystack::kernels
