#pragma once
#include "../core/module.hpp"

// The "lane" inner loop of attention (prefill, and decode at any head_dim): a task is (block of
// query positions, kv head). Its rows are the (position, query head of the kv group) pairs, up to 4
// SIMD batches of rows held in the SIMD lanes, so the queries of a GQA group share every K/V tile
// load. S^T[key, rows] += K[key, d] * Qt[d, rows] and O^T[d, rows] += V[key, d] * P^T[key, rows] are
// broadcast-FMA micro-kernels on registers; the softmax is purely vertical (no horizontal reductions).
// Keys go in tiles of key_tile; positions are compared as float offsets within a query block's tiles
// (exact below 2^24). The entry points that run it are attention() (attention_prefill.hpp) and
// attention_decode (attention_decode.hpp).

#include <algorithm>
#include <cstddef>
#include <limits>

#include "../core/math.hpp"
#include "../core/simd.hpp"
#include "../core/view.hpp"
#include "attention_common.hpp"
#include "kv_view.hpp"

namespace hystack::kernels {

namespace detail::attn {

#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)

/// Rows per lane task: 4 SIMD batches.
template <class Arch>
inline constexpr std::size_t max_rows = 4 * lanes<Arch>;
/// Keys per tile of the lane path (S^T, K and V tiles stay in L1/L2).
inline constexpr std::size_t key_tile = 64;
/// Keys per QK register block / head dims per PV register block for RB row batches.
template <class Arch, int RB>
inline constexpr int kblock = std::max(1, std::min(8, (acc_regs<Arch> - RB - 2) / RB));
inline constexpr int max_block = 8;

/// Scratch floats per thread of the lane path.
template <class Arch>
inline std::size_t lane_scratch(std::size_t d) {
    return (d + (d + max_block) + (key_tile + max_block) + 3) * max_rows<Arch>;
}

// S^T[k, rows] = sum_d K[k, d] * Qt[d, rows] for keys k < nk of one tile. Qt [d, RS], St [nk (+pad), RS].
// Keys i0 .. i0 + nk - 1 of segment sg, kv head g; DS = sg.key_dim_stride() (1, or kv_tile for a cache's
// transposed K tiles). Keys past nk in the last register block recompute key nk-1 (their rows of St are never read).
template <class Arch, int RB, int D, std::size_t DS>
inline void qk_tile(const float* Qt, const KVSegment& sg, std::size_t i0, std::size_t g, std::size_t nk, std::size_t d_rt, float* St) {
    using Vec = simd::batch<Arch>;
    constexpr std::size_t VL = lanes<Arch>, RS = max_rows<Arch>;
    constexpr int KB = kblock<Arch, RB>;
    const std::size_t d = D ? std::size_t(D) : d_rt;
    for (std::size_t k0 = 0; k0 < nk; k0 += KB) {
        const float* kr[KB];
        for (int kk = 0; kk < KB; ++kk) kr[kk] = sg.key(i0 + std::min(k0 + kk, nk - 1), g, d);
        Vec acc[KB][RB];
        for (int kk = 0; kk < KB; ++kk)
            for (int rb = 0; rb < RB; ++rb) acc[kk][rb] = Vec(0.0f);
        for (std::size_t t = 0; t < d; ++t) {
            Vec qv[RB];
            for (int rb = 0; rb < RB; ++rb) qv[rb] = simd::load_aligned<Arch>(Qt + t * RS + rb * VL);
            for (int kk = 0; kk < KB; ++kk) {
                const Vec kv(kr[kk][t * DS]);
                for (int rb = 0; rb < RB; ++rb) acc[kk][rb] = simd::fma<Arch>(kv, qv[rb], acc[kk][rb]);
            }
        }
        for (int kk = 0; kk < KB; ++kk)
            for (int rb = 0; rb < RB; ++rb) simd::store<Arch>(St + (k0 + kk) * RS + rb * VL, acc[kk][rb]);
    }
}

// O^T[d, rows] += sum_k V[k, d] * P^T[k, rows]. Pt [nk, RS], Ot [d (+pad), RS]. Dims past d in the
// last register block read V[k, d-1] into padding rows of Ot.
template <class Arch, int RB, int D>
inline void pv_tile(const float* Pt, const float* vbase, std::size_t vstride, std::size_t nk, std::size_t d_rt, float* Ot) {
    using Vec = simd::batch<Arch>;
    constexpr std::size_t VL = lanes<Arch>, RS = max_rows<Arch>;
    constexpr int DB = kblock<Arch, RB>;
    const std::size_t d = D ? std::size_t(D) : d_rt;
    for (std::size_t d0 = 0; d0 < d; d0 += DB) {
        std::size_t off[DB];
        for (int dd = 0; dd < DB; ++dd) off[dd] = std::min(d0 + dd, d - 1);
        Vec acc[DB][RB];
        for (int dd = 0; dd < DB; ++dd)
            for (int rb = 0; rb < RB; ++rb) acc[dd][rb] = simd::load_aligned<Arch>(Ot + (d0 + dd) * RS + rb * VL);
        const float* vr = vbase;
        for (std::size_t k = 0; k < nk; ++k, vr += vstride) {
            Vec p[RB];
            for (int rb = 0; rb < RB; ++rb) p[rb] = simd::load_aligned<Arch>(Pt + k * RS + rb * VL);
            for (int dd = 0; dd < DB; ++dd) {
                const Vec vb(vr[off[dd]]);
                for (int rb = 0; rb < RB; ++rb) acc[dd][rb] = simd::fma<Arch>(vb, p[rb], acc[dd][rb]);
            }
        }
        for (int dd = 0; dd < DB; ++dd)
            for (int rb = 0; rb < RB; ++rb) simd::store<Arch>(Ot + (d0 + dd) * RS + rb * VL, acc[dd][rb]);
    }
}

// Online softmax over one tile of St (in place -> P^T), updating m, l and rescaling O^T.
// Masking (only on tiles that cross the causal diagonal or the window edge): key at relative
// position rj is visible to a row at relative position pl iff rj <= pl and pl - rj < window.
template <class Arch, int RB>
inline void softmax_tile(float* St, std::size_t nk, bool mask, double rj0, const float* posv, float window_f, float* m, float* l,
                         float* Ot, std::size_t d) {
    using Vec = simd::batch<Arch>;
    constexpr std::size_t VL = lanes<Arch>, RS = max_rows<Arch>;
    const Vec ninf(neg_inf), zero(0.0f);
    Vec alpha[RB];
    for (int rb = 0; rb < RB; ++rb) {
        const Vec pl = simd::load_aligned<Arch>(posv + rb * VL);
        const Vec m_old = simd::load_aligned<Arch>(m + rb * VL);
        Vec mx = m_old;
        if (mask) {
            const Vec wf(window_f);
            for (std::size_t k = 0; k < nk; ++k) {
                const Vec rj(float(rj0 + double(k)));
                Vec s = simd::load_aligned<Arch>(St + k * RS + rb * VL);
                s = xsimd::select((rj > pl) || ((pl - rj) >= wf), ninf, s);
                simd::store<Arch>(St + k * RS + rb * VL, s);
                mx = simd::max<Arch>(mx, s);
            }
        } else {
            for (std::size_t k = 0; k < nk; ++k) mx = simd::max<Arch>(mx, simd::load_aligned<Arch>(St + k * RS + rb * VL));
        }
        // A row with no visible key so far keeps m = -inf; subtract 0 instead so exp gives 0, not NaN.
        const Vec msafe = xsimd::select(mx == ninf, zero, mx);
        alpha[rb] = math::exp_nonpos<Arch>(m_old - msafe);
        Vec sum(0.0f);
        for (std::size_t k = 0; k < nk; ++k) {
            const Vec p = math::exp_nonpos<Arch>(simd::load_aligned<Arch>(St + k * RS + rb * VL) - msafe);
            simd::store<Arch>(St + k * RS + rb * VL, p);
            sum += p;
        }
        simd::store<Arch>(l + rb * VL, simd::fma<Arch>(simd::load_aligned<Arch>(l + rb * VL), alpha[rb], sum));
        simd::store<Arch>(m + rb * VL, mx);
    }
    for (std::size_t t = 0; t < d; ++t)
        for (int rb = 0; rb < RB; ++rb)
            simd::store<Arch>(Ot + t * RS + rb * VL, simd::load_aligned<Arch>(Ot + t * RS + rb * VL) * alpha[rb]);
}

/// One lane task: query positions past + p0 .. past + p0 + nq - 1, query heads h0 .. h0 + Gc - 1
/// (all reading kv head g). Row r = pl * Gc + hh.
template <class Arch, int RB, int D>
inline void lane_task(MatrixView<const float> q, std::size_t past, std::size_t p0, std::size_t nq, std::size_t g, std::size_t h0,
                      std::size_t Gc, const KVView& kv, MatrixView<float> out, const AttentionDims& dims, float* scratch) {
    constexpr std::size_t RS = max_rows<Arch>;
    const std::size_t d = D ? std::size_t(D) : dims.head_dim;
    const std::size_t R = nq * Gc;
    float* Qt = scratch;                               // [d, RS]
    float* Ot = Qt + d * RS;                           // [d + pad, RS]
    float* St = Ot + (d + max_block) * RS;             // [key_tile + pad, RS]
    float* posv = St + (key_tile + max_block) * RS;    // [RS]
    float* m = posv + RS;                              // [RS]
    float* l = m + RS;                                 // [RS]
    const float scale = dims.effective_scale();
    // Qt[t, r] = q[p0 + pl, (h0 + hh) * d + t] * scale (padding rows 0)
    std::fill(Qt, Qt + d * RS, 0.0f);
    for (std::size_t pl = 0; pl < nq; ++pl)
        for (std::size_t hh = 0; hh < Gc; ++hh) {
            const float* qr = q.row(p0 + pl) + (h0 + hh) * d;
            const std::size_t r = pl * Gc + hh;
            for (std::size_t t = 0; t < d; ++t) Qt[t * RS + r] = qr[t] * scale;
        }
    for (std::size_t r = 0; r < RS; ++r) posv[r] = float(std::min(r / Gc, nq - 1));
    std::fill(m, m + RS, neg_inf);
    std::fill(l, l + RS, 0.0f);
    std::fill(Ot, Ot + (d + max_block) * RS, 0.0f);

    const std::size_t P0 = past + p0, P1 = P0 + nq - 1;
    std::size_t lo, hi;
    visible_range(P0, P1, dims.window, lo, hi);
    const float window_f = dims.window ? float(dims.window) : std::numeric_limits<float>::infinity();
    for (std::size_t s = 0; s < kv.count; ++s) {
        const KVSegment& sg = kv.seg[s];
        const std::size_t a = std::max(sg.pos, lo), b = std::min(sg.pos + sg.n, hi);
        for (std::size_t j0 = a; j0 < b; j0 += key_tile) {
            const std::size_t nk = std::min(key_tile, b - j0);
            const float* vb = sg.value(j0 - sg.pos, g, d);
            if (sg.k_tiled)
                qk_tile<Arch, RB, D, kv_tile>(Qt, sg, j0 - sg.pos, g, nk, d, St);
            else
                qk_tile<Arch, RB, D, 1>(Qt, sg, j0 - sg.pos, g, nk, d, St);
            const bool mask = (j0 + nk - 1 > P0) || (dims.window && P1 - j0 >= dims.window);
            softmax_tile<Arch, RB>(St, nk, mask, double(j0) - double(P0), posv, window_f, m, l, Ot, d);
            pv_tile<Arch, RB, D>(St, vb, sg.stride, nk, d, Ot);
        }
    }
    // out = O / l (rows that saw no key: 0)
    for (std::size_t r = 0; r < R; ++r) {
        const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
        float* orow = out.row(p0 + r / Gc) + (h0 + r % Gc) * d;
        for (std::size_t t = 0; t < d; ++t) orow[t] = Ot[t * RS + r] * inv;
    }
}

template <class Arch, int D>
inline void lane_task_rb(std::size_t RB, MatrixView<const float> q, std::size_t past, std::size_t p0, std::size_t nq, std::size_t g,
                         std::size_t h0, std::size_t Gc, const KVView& kv, MatrixView<float> out, const AttentionDims& dims,
                         float* scratch) {
    switch (RB) {
        case 1: return lane_task<Arch, 1, D>(q, past, p0, nq, g, h0, Gc, kv, out, dims, scratch);
        case 2: return lane_task<Arch, 2, D>(q, past, p0, nq, g, h0, Gc, kv, out, dims, scratch);
        case 3: return lane_task<Arch, 3, D>(q, past, p0, nq, g, h0, Gc, kv, out, dims, scratch);
        default: return lane_task<Arch, 4, D>(q, past, p0, nq, g, h0, Gc, kv, out, dims, scratch);
    }
}

#endif  // SIMD

}  // namespace detail::attn

}  // namespace hystack::kernels
