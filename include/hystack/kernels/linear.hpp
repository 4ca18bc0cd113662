#pragma once
#include "../core/module.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/math.hpp"
#include "../core/simd.hpp"
#include "../core/view.hpp"

namespace hystack::kernels {

// The projection kernel of every layer: y = x W^T (+ bias), x [L, in] and W [out, in] both
// contiguous along `in`. It is a dot-product GEMM (as llamafile's tinyBLAS): a tile of RM rows of x
// by RN rows of W keeps RM*RN vector accumulators over `in` and reduces them at the end, so neither
// operand is packed or transposed (a transposed copy of W would cost as much as the product for the
// ~128-token buckets of a MoE expert). The tile is 3 x 8 (1 x 8, 2 x 8 for L = 1, 2: decode streams
// W from memory once). Rows of x are cache-blocked so an M block stays in L2; for in > kc the K blocks
// go outermost so the 8 W rows of a block stay in L1, the tiles' accumulators waiting between blocks.
//
// Every output is computed by one canonical sequence, whatever tile, thread or L computes it: lane l
// of a vector accumulator sums x[k] * W[n][k] over k = l (mod width) of the vector part of `in`, in
// k order; the lanes are combined by one fixed tree (simd::reduce_add_many); then the scalar tail of
// `in` (in % width), in k order; then the bias. So results are bit-identical for any thread count,
// and a row of a batch equals that row computed alone.

/// Scalar reference: y[m][n] = bias[n] + sum_k x[m][k] W[n][k], summed in k order in float.
/// Same shapes as linear().
inline void linear_reference(MatrixView<const float> x, MatrixView<const float> W, std::span<const float> bias,
                             MatrixView<float> y) {
    check_shape("linear_reference: x", x, any, W.cols);
    check_shape("linear_reference: y", y, x.rows, W.rows);
    check(bias.empty() || bias.size() == W.rows, "linear_reference: bias: expected [", W.rows, "] or empty, got [",
          bias.size(), "]");
    for (std::size_t m = 0; m < x.rows; ++m)
        for (std::size_t n = 0; n < W.rows; ++n) {
            // y = sum_k x W
            float s = 0.0f;
            for (std::size_t k = 0; k < W.cols; ++k) s += x(m, k) * W(n, k);
            y(m, n) = s + (bias.empty() ? 0.0f : bias[n]);
        }
}

/// Scalar reference of linear_swiglu: h[m][n] = silu(g) * u with g = sum_k x[m][k] Wg[n][k] and
/// u = sum_k x[m][k] Wu[n][k], summed in k order in float. Same shapes as linear_swiglu().
inline void linear_swiglu_reference(MatrixView<const float> x, MatrixView<const float> Wg,
                                    MatrixView<const float> Wu, MatrixView<float> h) {
    check_shape("linear_swiglu_reference: x", x, any, Wg.cols);
    check_shape("linear_swiglu_reference: up weight", Wu, Wg.rows, Wg.cols);
    check_shape("linear_swiglu_reference: h", h, x.rows, Wg.rows);
    for (std::size_t m = 0; m < x.rows; ++m)
        for (std::size_t n = 0; n < Wg.rows; ++n) {
            // g = sum_k x Wg, u = sum_k x Wu
            float g = 0.0f, u = 0.0f;
            for (std::size_t k = 0; k < Wg.cols; ++k) {
                g += x(m, k) * Wg(n, k);
                u += x(m, k) * Wu(n, k);
            }
            // h = silu(g) * u = g / (1 + e^-g) * u
            h(m, n) = g / (1.0f + std::exp(-g)) * u;
        }
}

namespace detail {

// The micro-kernel stays a call of its own: inlined into the tile loops, GCC runs out of registers
// and spills the accumulators (measured: 2.5x slower).
#if defined(__GNUC__)
#define HYSTACK_LINEAR_NOINLINE __attribute__((noinline))
#else
#define HYSTACK_LINEAR_NOINLINE
#endif

/// K block of the cache blocking: the 8 W rows of a tile over one block (32 KB) stay in L1 while the
/// tile sweeps the x rows of an M block. Only the traversal depends on it, not the results. Measured
/// on Zen 5 (48 KB L1), paired runs: 1024 beats 512, 768 and 2048 by 4-18% (MoE, SwiGLU, 4096-wide).
inline constexpr std::size_t linear_kc = 1024;
/// x rows of one M block (Mc rows x in floats) are kept within this many bytes (L2), and to at most
/// linear_max_block_rows rows (the accumulators of its tiles wait on the stack between K blocks: <= 64 KB).
inline constexpr std::size_t linear_x_block_bytes = 512u << 10;
inline constexpr std::size_t linear_max_block_rows = 128;

/// Vector width used by linear on Arch (1 when SIMD is off: everything is the scalar tail).
template <class Arch>
constexpr std::size_t linear_width() {
#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
    return simd::width<Arch>;
#else
    return 1;
#endif
}

/// The vector part of a row of K floats: [0, Kv) goes through the SIMD lanes, [Kv, K) is the scalar tail.
template <class Arch>
constexpr std::size_t linear_vector_part(std::size_t K) {
    return simd::enabled ? K - K % linear_width<Arch>() : 0;
}

#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
/// One K block of an RM x RN tile: acc[i*RN + j] += x_i[k..k+VL) * w_j[k..k+VL) for k in [k0, k1)
/// (k1 - k0 a multiple of the width). xr [RM] and wr [RN] are row pointers; `state` holds the RM*RN
/// vector accumulators between blocks. First: they start at zero (state not read). Last: they are
/// reduced into out[i*RN + j] (simd::reduce_add_many) instead of being stored back. PrefetchNext
/// (decode): `next` [RN] are the next tile's W rows, hinted into L2 one tile ahead.
template <class Arch, int RM, int RN, bool First, bool Last, bool PrefetchNext = false>
HYSTACK_LINEAR_NOINLINE void dot_tile(const float* const* xr, const float* const* wr, std::size_t k0, std::size_t k1,
                                      simd::batch<Arch>* state, float* out, const float* const* next = nullptr) {
    using Vec = simd::batch<Arch>;
    constexpr std::size_t VL = simd::width<Arch>;
    constexpr std::size_t N = std::size_t(RM * RN);
    Vec acc[N];
    for (std::size_t a = 0; a < N; ++a) acc[a] = First ? Vec(0.0f) : state[a];
    const float* xp[RM];  // x rows [RM, in]
    const float* wp[RN];  // W rows [RN, in]
    for (int i = 0; i < RM; ++i) xp[i] = xr[i];
    for (int j = 0; j < RN; ++j) wp[j] = wr[j];
    for (std::size_t k = k0; k < k1; k += VL) {
        // acc[i][j] += x_i[k..k+VL) * w_j[k..k+VL)
        Vec xv[RM];
        // Rows 0 and RN/2 only: each new W row is a new page for the hardware prefetchers, and two
        // hints per step lift the decode stream by 3-5% (paired runs); hinting all RN rows cost 2-3%.
        if constexpr (PrefetchNext)
            for (int j = 0; j < RN; j += RN / 2) simd::prefetch_l2(next[j] + k);
        for (int i = 0; i < RM; ++i) xv[i] = simd::load<Arch>(xp[i] + k);
        for (int j = 0; j < RN; ++j) {
            Vec wv = simd::load<Arch>(wp[j] + k);
            if constexpr (RM > 1) simd::pin<Arch>(wv);  // one load of w_j for its RM FMAs
            for (int i = 0; i < RM; ++i) acc[i * RN + j] = simd::fma<Arch>(xv[i], wv, acc[i * RN + j]);
        }
    }
    if constexpr (Last)
        simd::reduce_add_many<Arch>(acc, out);  // out = lane sums, every accumulator by the same tree
    else
        for (std::size_t a = 0; a < N; ++a) state[a] = acc[a];
}
#endif

/// out[i*RN + j] += x_i . w_j over the scalar tail [Kv, K), in k order.
template <int RM, int RN>
inline void add_tail(const float* const* xr, const float* const* wr, std::size_t Kv, std::size_t K, float* out) {
    if (Kv == K) return;
    for (int i = 0; i < RM; ++i)
        for (int j = 0; j < RN; ++j) {
            float t = 0.0f;
            for (std::size_t k = Kv; k < K; ++k) t = std::fma(xr[i][k], wr[j][k], t);
            out[i * RN + j] += t;
        }
}

/// Drives the tiles of one thread's share: output features [t0*RN, t1*RN) of M rows, cache-blocked.
/// xrow(m) -> const float* (m < M); wrows(t, const float** wr) fills the RN W row pointers of tile t;
/// epi(m0, rm, t, const float* sums /*[RM][RN]*/) consumes a finished tile (rows m0..m0+rm valid).
/// Rows past M inside a tile repeat row M-1 (their sums are ignored).
///
/// Every sum is x_m . w_n in the canonical order: lane l of a vector accumulator sums x[k] w[k] over
/// k = l (mod width) of the vector part, k ascending; the lanes go through simd::reduce_add_many's tree;
/// then the scalar tail, in k order. The blocking below changes only when each lane's terms are added
/// (the accumulators wait in `state` between K blocks), never their order.
///
/// HintNext = false: wrows is called once per tile and M block and nothing is hinted (for W rows that
/// wrows produces in a scratch, e.g. widened from bf16).
template <class Arch, int RM, int RN, class XRow, class WRows, class Epi, bool HintNext = true>
inline void gemm_nt_tiles(std::size_t M, std::size_t K, std::size_t t0, std::size_t t1, XRow&& xrow, WRows&& wrows,
                          Epi&& epi) {
    constexpr std::size_t VL = linear_width<Arch>();
    constexpr std::size_t N = std::size_t(RM * RN), NP = (N + VL - 1) / VL * VL;  // sums padded to whole vectors
    const std::size_t Kv = linear_vector_part<Arch>(K);
    // M block: Mc rows of x (Mc * K floats) stay in L2 while the W tiles sweep them.
    const std::size_t row_bytes = std::max<std::size_t>(K, 1) * sizeof(float);
    std::size_t Mc = std::max<std::size_t>(RM, std::min(linear_x_block_bytes / row_bytes, linear_max_block_rows) / RM * RM);
    Mc = std::min(Mc, (M + RM - 1) / RM * RM);
    alignas(64) float sums[linear_max_block_rows / RM * NP];  // [tile of the M block][NP]
    std::fill_n(sums, Mc / RM * NP, 0.0f);  // the slots in use (one for decode); their padding stays zero
    const float* wr[RN];
    const float* xr[RM];
    // One pass over K when the tile's W rows are read once anyway (a single x tile: decode streams W)
    // or fit L1 whole; otherwise K blocks go outermost inside an M block.
    const bool blocked = Kv > linear_kc && Mc > std::size_t(RM);
    for (std::size_t mb = 0; mb < M; mb += Mc) {
        const std::size_t me = std::min(M, mb + Mc), nq = (me - mb + RM - 1) / RM;
        for (std::size_t t = t0; t < t1; ++t) {
            wrows(t, wr);
            auto rows_of = [&](std::size_t q) {
                const std::size_t m0 = mb + q * RM;
                for (int i = 0; i < RM; ++i) xr[i] = xrow(std::min<std::size_t>(m0 + std::size_t(i), M - 1));
            };
#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
            if (!blocked) {
                // the first x tile streams the W tile from memory: it hints the next tile's rows
                const float* wn[RN];
                if constexpr (HintNext) wrows(t + 1 < t1 ? t + 1 : t, wn);
                for (std::size_t q = 0; q < nq; ++q) {
                    rows_of(q);
                    if (HintNext && q == 0)
                        dot_tile<Arch, RM, RN, true, true, true>(xr, wr, 0, Kv, nullptr, sums, wn);
                    else
                        dot_tile<Arch, RM, RN, true, true>(xr, wr, 0, Kv, nullptr, sums + q * NP);
                }
            } else {
                simd::batch<Arch> state[linear_max_block_rows / RM * N];  // the accumulators of the M block's tiles
                for (std::size_t k0 = 0; k0 < Kv; k0 += linear_kc) {
                    const std::size_t k1 = std::min(Kv, k0 + linear_kc);
                    for (std::size_t q = 0; q < nq; ++q) {
                        rows_of(q);
                        auto* st = state + q * N;
                        float* out = sums + q * NP;
                        if (k0 == 0)
                            dot_tile<Arch, RM, RN, true, false>(xr, wr, k0, k1, st, out);
                        else if (k1 < Kv)
                            dot_tile<Arch, RM, RN, false, false>(xr, wr, k0, k1, st, out);
                        else
                            dot_tile<Arch, RM, RN, false, true>(xr, wr, k0, k1, st, out);
                    }
                }
            }
#else
            for (std::size_t a = 0; a < nq * NP; ++a) sums[a] = 0.0f;
#endif
            for (std::size_t q = 0; q < nq; ++q) {
                rows_of(q);
                add_tail<RM, RN>(xr, wr, Kv, K, sums + q * NP);  // + the scalar tail of K, in k order
                epi(mb + q * RM, std::min<std::size_t>(RM, me - mb - q * RM), t, static_cast<const float*>(sums + q * NP));
            }
        }
    }
}

/// Grain (in tiles) so that one chunk of a parallel_for carries at least ~64k FMAs.
inline std::size_t linear_grain(std::size_t M, std::size_t K, std::size_t rows_per_tile) {
    const std::size_t per_tile = std::max<std::size_t>(1, M * std::max<std::size_t>(K, 1) * rows_per_tile);
    return std::max<std::size_t>(1, (std::size_t(1) << 16) / per_tile);
}

/// Runs `body` with the tile shape for M rows: RM = min(M, 3) rows of x against RN = 8 rows of W
/// (24 accumulators). The RM x vectors stay in registers and each W vector is loaded once for its RM
/// FMAs (simd::pin: left alone, GCC folds the W load into every FMA, 27 loads per 24 FMAs, and the tile
/// is load bound at ~45% of peak instead of ~65%). Decode (M = 1, 2) streams 8 W rows at a time.
template <class Arch, class Body>
inline void with_tile_shape(std::size_t M, Body&& body) {
    if (M == 1)
        body.template operator()<1, 8>();
    else if (M == 2)
        body.template operator()<2, 8>();
    else
        body.template operator()<3, 8>();
}

}  // namespace detail

namespace detail {

/// Tile loop of linear over M rows given by xrow(m) (e.g. a MoE bucket gathered by index), W [N, K]:
/// epi(m, n, v) receives each finished output v = x_m . W_n exactly once. Threads split output
/// features; epi may write any location owned by (m, n).
template <class Arch, Executor Exec, class XRow, class Epi>
void linear_rows(std::size_t M, XRow&& xrow, MatrixView<const float> W, Epi&& epi, Exec& exec) {
    const std::size_t N = W.rows, K = W.cols;
    if (M == 0 || N == 0) return;
    with_tile_shape<Arch>(M, [&]<int RM, int RN>() {
        const std::size_t tiles = (N + RN - 1) / RN;
        exec.parallel_for(tiles, linear_grain(M, K, RN), [&](std::size_t t0, std::size_t t1) {
            gemm_nt_tiles<Arch, RM, RN>(
                M, K, t0, t1, xrow,
                [&](std::size_t t, const float** wr) {
                    // rows past N repeat row N-1
                    for (int j = 0; j < RN; ++j) wr[j] = W.row(std::min(t * RN + std::size_t(j), N - 1));
                },
                [&](std::size_t m0, std::size_t rm, std::size_t t, const float* s) {
                    const std::size_t n0 = t * RN, rn = std::min<std::size_t>(RN, N - n0);
                    for (std::size_t i = 0; i < rm; ++i)
                        for (std::size_t j = 0; j < rn; ++j) epi(m0 + i, n0 + j, s[i * RN + j]);
                });
        });
    });
}

/// Fused SwiGLU input side over M rows given by xrow(m): h[m][n] = silu(x_m . Wg_n) * (x_m . Wu_n).
/// One tile holds RN/2 gate rows and the same RN/2 up rows, so gate and up are read together
/// (one pass over x, one parallel_for) and never written out. h [M, H] is written row by row.
template <class Arch, Executor Exec, class XRow>
void swiglu_rows(std::size_t M, XRow&& xrow, MatrixView<const float> Wg, MatrixView<const float> Wu,
                 MatrixView<float> h, Exec& exec) {
    const std::size_t H = Wg.rows, K = Wg.cols;
    if (M == 0 || H == 0) return;
    with_tile_shape<Arch>(M, [&]<int RM, int RN>() {
        constexpr std::size_t R = RN / 2;  // hidden units per tile
        constexpr std::size_t VL = linear_width<Arch>();
        constexpr std::size_t NP = (std::size_t(RM * RN) + VL - 1) / VL * VL;
        const std::size_t tiles = (H + R - 1) / R;
        exec.parallel_for(tiles, linear_grain(M, K, RN), [&](std::size_t t0, std::size_t t1) {
            alignas(64) float act[NP];
            gemm_nt_tiles<Arch, RM, RN>(
                M, K, t0, t1, xrow,
                [&](std::size_t t, const float** wr) {
                    for (std::size_t j = 0; j < R; ++j) {
                        const std::size_t n = std::min(t * R + j, H - 1);
                        wr[j] = Wg.row(n);
                        wr[R + j] = Wu.row(n);
                    }
                },
                [&](std::size_t m0, std::size_t rm, std::size_t t, const float* s) {
                    // act = silu(s) over the whole tile (the up lanes are wasted, a vector op is cheaper
                    // than picking the gate lanes), then h = silu(gate) * up
#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
                    for (std::size_t a = 0; a < NP; a += VL)
                        simd::store<Arch>(act + a, math::silu<Arch>(simd::load_aligned<Arch>(s + a)));
#else
                    for (std::size_t a = 0; a < NP; ++a) act[a] = math::silu(s[a]);
#endif
                    const std::size_t n0 = t * R, rn = std::min<std::size_t>(R, H - n0);
                    for (std::size_t i = 0; i < rm; ++i) {
                        float* hr = h.row(m0 + i) + n0;  // h [M, H]
                        for (std::size_t j = 0; j < rn; ++j) hr[j] = act[i * RN + j] * s[i * RN + R + j];
                    }
                });
        });
    });
}

}  // namespace detail

/// y = x W^T + bias, the nn.Linear of every projection (HF weight layout [out, in]).
/// x [L, in], W [out, in], bias [out] or empty, y [L, out]. y must not alias x or W.
/// Threads split the output features (rows of W); every output is computed the same way whatever
/// the split, so results do not depend on the thread count (nor on L: row m of a batch equals
/// linear of that row alone).
template <Executor Exec, class Arch = simd::default_arch>
void linear(MatrixView<const float> x, MatrixView<const float> W, std::span<const float> bias, MatrixView<float> y,
            Exec& exec) {
    check_shape("linear: x", x, any, W.cols);
    check_shape("linear: y", y, x.rows, W.rows);
    check(bias.empty() || bias.size() == W.rows, "linear: bias: expected [", W.rows, "] or empty, got [", bias.size(), "]");
    if (y.empty()) return;
    detail::linear_rows<Arch>(
        x.rows, [&](std::size_t m) { return x.row(m); }, W,
        [&](std::size_t m, std::size_t n, float v) { y(m, n) = v + (bias.empty() ? 0.0f : bias[n]); }, exec);
}

/// Fused SwiGLU input projections: h = silu(x Wg^T) * (x Wu^T). x [L, in], Wg and Wu [hidden, in],
/// h [L, hidden] (must not alias x). Each value equals silu(linear(x, Wg)) * linear(x, Wu)
/// to rounding; threads split the hidden units.
template <Executor Exec, class Arch = simd::default_arch>
void linear_swiglu(MatrixView<const float> x, MatrixView<const float> Wg, MatrixView<const float> Wu, MatrixView<float> h,
                   Exec& exec) {
    check_shape("linear_swiglu: x", x, any, Wg.cols);
    check_shape("linear_swiglu: up weight", Wu, Wg.rows, Wg.cols);
    check_shape("linear_swiglu: h", h, x.rows, Wg.rows);
    detail::swiglu_rows<Arch>(x.rows, [&](std::size_t m) { return x.row(m); }, Wg, Wu, h, exec);
}

inline void linear_swiglu(MatrixView<const float> x, MatrixView<const float> Wg, MatrixView<const float> Wu,
                          MatrixView<float> h) {
    SerialExecutor serial;
    linear_swiglu(x, Wg, Wu, h, serial);
}

inline void linear(MatrixView<const float> x, MatrixView<const float> W, std::span<const float> bias, MatrixView<float> y) {
    SerialExecutor serial;
    linear(x, W, bias, y, serial);
}

}  // namespace hystack::kernels
