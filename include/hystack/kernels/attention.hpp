#pragma once
#include "../core/module.hpp"

// Flash-style causal / sliding-window softmax attention with grouped-query heads (GQA/MQA).
//
// One kernel, tiled over keys with the online softmax: per query row it keeps a running max m,
// a running sum l and an unnormalised output O; a key tile updates them as
//   m' = max(m, max_j s_j),  O' = O e^(m - m') + sum_j e^(s_j - m') v_j,  l' = l e^(m - m') + sum_j e^(s_j - m')
// and out = O / l at the end. No L x L score matrix exists; scratch is O(tile) per thread.
// Scores are q.k * scale; the max is subtracted before exp, so scores of +-1e4 stay exact.
// Visibility of key position j to a query at absolute position i:
//   j <= i  and  (window == 0 or i - j < window)        (HF sliding_window, llama.cpp SWA)
// A row that sees no key at all yields zeros (never NaN).
//
// Two inner loops, chosen by shape, both exact to fp32 rounding:
// - "lane" (prefill, any head_dim): a task is (block of query positions, kv head). Its rows are the
//   (position, query head of the kv group) pairs, up to 4 SIMD batches of rows held in the SIMD lanes,
//   so the queries of a GQA group share every K/V tile load. S^T[key, rows] += K[key, d] * Qt[d, rows]
//   and O^T[d, rows] += V[key, d] * P^T[key, rows] are broadcast-FMA micro-kernels on registers;
//   the softmax is purely vertical (no horizontal reductions).
// - "dot" (decode, one query per sequence, head_dim 64 or 128, a multiple of the SIMD width):
//   rows are the G query heads of a kv head; scores are dot products over head_dim, W partial-sum
//   vectors reduced at once by simd::haddp_permuted (two rows share each K load: W/2 keys x 2 rows per
//   reduction), O[row, d] += p * V[key, d] with V rows broadcast-FMA'd. One kv head at a time, so a
//   cache's per-head K and V stream sequentially; the next tile is prefetched while one computes.
//   Long contexts split into key chunks (at least 512 keys, at most 64 chunks: a function of the
//   length only) whose partial (m, l, O) merge in order, so results never depend on the thread count.
//
// Keys come as a KVView: up to 4 segments of consecutive absolute positions (a cache's part(s) and
// the new keys of this call), each with its own pointers and strides (see KVSegment).
//
// Limits: positions are compared as float offsets within a query block's tiles (exact below 2^24).

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/math.hpp"
#include "../core/simd.hpp"
#include "../core/view.hpp"

namespace hystack::kernels {

/// Keys/values at absolute positions pos .. pos + n - 1: key i of kv head g is the head_dim floats at
/// k + i * stride + g * head_stride (same for v). head_stride 0 means head_dim: rows [n, stride] holding
/// all heads side by side (a projection's output); a cache stores each head contiguously instead
/// (stride = head_dim, head_stride = slots * head_dim) so decode streams each head sequentially.
struct KVSegment {
    std::size_t pos = 0;
    std::size_t n = 0;
    const float* k = nullptr;
    const float* v = nullptr;
    std::size_t stride = 0;
    std::size_t head_stride = 0;

    std::size_t head_offset(std::size_t g, std::size_t head_dim) const { return g * (head_stride ? head_stride : head_dim); }
};

/// Up to max_segments key/value segments (e.g. a ring cache's two halves plus this call's new keys).
/// Positions must not repeat across segments; their order does not matter.
struct KVView {
    static constexpr std::size_t max_segments = 4;
    KVSegment seg[max_segments];
    std::size_t count = 0;

    /// Appends a segment (empty ones are dropped).
    void add(const KVSegment& s) {
        if (s.n == 0) return;
        check(count < max_segments, "KVView: more than ", max_segments, " segments");
        seg[count++] = s;
    }
    /// Total keys.
    std::size_t size() const {
        std::size_t n = 0;
        for (std::size_t i = 0; i < count; ++i) n += seg[i].n;
        return n;
    }
    /// K, V [n, stride] at positions pos0...
    static KVView of(MatrixView<const float> k, MatrixView<const float> v, std::size_t pos0 = 0) {
        check_shape("KVView: v", v, k.rows, k.cols);
        check(k.stride == v.stride || k.rows <= 1, "KVView: k and v must share a row stride, got ", k.stride, " and ", v.stride);
        KVView kv;
        kv.add({pos0, k.rows, k.data, v.data, k.stride});
        return kv;
    }
};

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
    }
}

/// Visible key range [lo, hi) for query positions [p_first, p_last].
inline void visible_range(std::size_t p_first, std::size_t p_last, std::size_t window, std::size_t& lo, std::size_t& hi) {
    lo = (window && p_first + 1 > window) ? p_first + 1 - window : 0;
    hi = p_last + 1;
}

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
        for (std::size_t j = a; j < b; ++j) {
            const float* kr = sg.k + (j - sg.pos) * sg.stride + sg.head_offset(g, d);
            const float* vr = sg.v + (j - sg.pos) * sg.stride + sg.head_offset(g, d);
            float sc = 0.0f;
            for (std::size_t t = 0; t < d; ++t) sc += q[t] * kr[t];
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

#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)

template <class Arch>
inline constexpr std::size_t W = simd::width<Arch>;
/// Rows per lane task: 4 SIMD batches.
template <class Arch>
inline constexpr std::size_t max_rows = 4 * W<Arch>;
/// Keys per tile of the lane path (S^T, K and V tiles stay in L1/L2).
inline constexpr std::size_t key_tile = 64;
/// Registers available for accumulators (32 with AVX-512, 16 otherwise).
template <class Arch>
inline constexpr int acc_regs = W<Arch> >= 16 ? 32 : 16;
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
// Keys past nk in the last register block recompute key nk-1 (their rows of St are never read).
template <class Arch, int RB, int D>
inline void qk_tile(const float* Qt, const float* kbase, std::size_t kstride, std::size_t nk, std::size_t d_rt, float* St) {
    using B = simd::batch<Arch>;
    constexpr std::size_t Wd = W<Arch>, RS = max_rows<Arch>;
    constexpr int KB = kblock<Arch, RB>;
    const std::size_t d = D ? std::size_t(D) : d_rt;
    for (std::size_t k0 = 0; k0 < nk; k0 += KB) {
        const float* kr[KB];
        for (int kk = 0; kk < KB; ++kk) kr[kk] = kbase + std::min(k0 + kk, nk - 1) * kstride;
        B acc[KB][RB];
        for (int kk = 0; kk < KB; ++kk)
            for (int rb = 0; rb < RB; ++rb) acc[kk][rb] = B(0.0f);
        for (std::size_t t = 0; t < d; ++t) {
            B qv[RB];
            for (int rb = 0; rb < RB; ++rb) qv[rb] = simd::load_aligned<Arch>(Qt + t * RS + rb * Wd);
            for (int kk = 0; kk < KB; ++kk) {
                const B kv(kr[kk][t]);
                for (int rb = 0; rb < RB; ++rb) acc[kk][rb] = simd::fma<Arch>(kv, qv[rb], acc[kk][rb]);
            }
        }
        for (int kk = 0; kk < KB; ++kk)
            for (int rb = 0; rb < RB; ++rb) simd::store<Arch>(St + (k0 + kk) * RS + rb * Wd, acc[kk][rb]);
    }
}

// O^T[d, rows] += sum_k V[k, d] * P^T[k, rows]. Pt [nk, RS], Ot [d (+pad), RS]. Dims past d in the
// last register block read V[k, d-1] into padding rows of Ot.
template <class Arch, int RB, int D>
inline void pv_tile(const float* Pt, const float* vbase, std::size_t vstride, std::size_t nk, std::size_t d_rt, float* Ot) {
    using B = simd::batch<Arch>;
    constexpr std::size_t Wd = W<Arch>, RS = max_rows<Arch>;
    constexpr int DB = kblock<Arch, RB>;
    const std::size_t d = D ? std::size_t(D) : d_rt;
    for (std::size_t d0 = 0; d0 < d; d0 += DB) {
        std::size_t off[DB];
        for (int dd = 0; dd < DB; ++dd) off[dd] = std::min(d0 + dd, d - 1);
        B acc[DB][RB];
        for (int dd = 0; dd < DB; ++dd)
            for (int rb = 0; rb < RB; ++rb) acc[dd][rb] = simd::load_aligned<Arch>(Ot + (d0 + dd) * RS + rb * Wd);
        const float* vr = vbase;
        for (std::size_t k = 0; k < nk; ++k, vr += vstride) {
            B p[RB];
            for (int rb = 0; rb < RB; ++rb) p[rb] = simd::load_aligned<Arch>(Pt + k * RS + rb * Wd);
            for (int dd = 0; dd < DB; ++dd) {
                const B vb(vr[off[dd]]);
                for (int rb = 0; rb < RB; ++rb) acc[dd][rb] = simd::fma<Arch>(vb, p[rb], acc[dd][rb]);
            }
        }
        for (int dd = 0; dd < DB; ++dd)
            for (int rb = 0; rb < RB; ++rb) simd::store<Arch>(Ot + (d0 + dd) * RS + rb * Wd, acc[dd][rb]);
    }
}

// Online softmax over one tile of St (in place -> P^T), updating m, l and rescaling O^T.
// Masking (only on tiles that cross the causal diagonal or the window edge): key at relative
// position rj is visible to a row at relative position pl iff rj <= pl and pl - rj < window.
template <class Arch, int RB>
inline void softmax_tile(float* St, std::size_t nk, bool mask, double rj0, const float* posv, float window_f, float* m, float* l,
                         float* Ot, std::size_t d) {
    using B = simd::batch<Arch>;
    constexpr std::size_t Wd = W<Arch>, RS = max_rows<Arch>;
    const B ninf(neg_inf), zero(0.0f);
    B alpha[RB];
    for (int rb = 0; rb < RB; ++rb) {
        const B pl = simd::load_aligned<Arch>(posv + rb * Wd);
        const B m_old = simd::load_aligned<Arch>(m + rb * Wd);
        B mx = m_old;
        if (mask) {
            const B wf(window_f);
            for (std::size_t k = 0; k < nk; ++k) {
                const B rj(float(rj0 + double(k)));
                B s = simd::load_aligned<Arch>(St + k * RS + rb * Wd);
                s = xsimd::select((rj > pl) || ((pl - rj) >= wf), ninf, s);
                simd::store<Arch>(St + k * RS + rb * Wd, s);
                mx = xsimd::max(mx, s);
            }
        } else {
            for (std::size_t k = 0; k < nk; ++k) mx = xsimd::max(mx, simd::load_aligned<Arch>(St + k * RS + rb * Wd));
        }
        // A row with no visible key so far keeps m = -inf; subtract 0 instead so exp gives 0, not NaN.
        const B msafe = xsimd::select(mx == ninf, zero, mx);
        alpha[rb] = math::exp<Arch>(m_old - msafe);
        B sum(0.0f);
        for (std::size_t k = 0; k < nk; ++k) {
            const B p = math::exp<Arch>(simd::load_aligned<Arch>(St + k * RS + rb * Wd) - msafe);
            simd::store<Arch>(St + k * RS + rb * Wd, p);
            sum += p;
        }
        simd::store<Arch>(l + rb * Wd, simd::fma<Arch>(simd::load_aligned<Arch>(l + rb * Wd), alpha[rb], sum));
        simd::store<Arch>(m + rb * Wd, mx);
    }
    for (std::size_t t = 0; t < d; ++t)
        for (int rb = 0; rb < RB; ++rb)
            simd::store<Arch>(Ot + t * RS + rb * Wd, simd::load_aligned<Arch>(Ot + t * RS + rb * Wd) * alpha[rb]);
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
            const float* kb = sg.k + (j0 - sg.pos) * sg.stride + sg.head_offset(g, d);
            const float* vb = sg.v + (j0 - sg.pos) * sg.stride + sg.head_offset(g, d);
            qk_tile<Arch, RB, D>(Qt, kb, sg.stride, nk, d, St);
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

// ---- dot path (decode) ----

/// Keys per decode chunk are at least this; at most max_chunks chunks per sequence.
inline constexpr std::size_t min_chunk = 512;
inline constexpr std::size_t max_chunks = 64;

inline std::size_t chunk_size(std::size_t n) {
    return std::max(min_chunk, (n + max_chunks - 1) / max_chunks);
}

/// Keys per decode tile: 4 SIMD batches of scores per row.
template <class Arch>
inline constexpr std::size_t dot_tile = 4 * W<Arch>;

// Decode streams K and V once; without prefetch the loads of a tile wait on DRAM while nothing else
// runs (compute and memory time add up).
using simd::prefetch;

/// Tiles ahead that decode prefetches K and V.
inline constexpr std::size_t prefetch_tiles = 1;

/// Where row r's probabilities sit in the decode scratch S: rows below `paired` were scored in pairs
/// (row pair r/2 at S + (r/2) * 2 * TK, key k at pidx2[r % 2][k]); the others alone (S + r * TK, pidx1[k]).
struct DotPLayout {
    const float* S;
    std::size_t paired;
    const std::size_t* pidx1;
    const std::size_t* pidx2[2];
    std::size_t TK;
    const float* base(std::size_t r) const { return r < paired ? S + (r / 2) * 2 * TK : S + r * TK; }
    const std::size_t* index(std::size_t r) const { return r < paired ? pidx2[r % 2] : pidx1; }
};

// O[r, :] = O[r, :] * alpha_r + sum_k P[r, k] V[k, :] for RG rows r0.., D = DC * W dims, keys k < nk
// at vbase + k * vstride.
template <class Arch, int RG, int DC>
inline void dot_pv(const DotPLayout& P, std::size_t r0, const float* alpha, const float* vbase, std::size_t vstride, std::size_t nk,
                   float* O /*[rows, D]*/, std::size_t npf) {
    using B = simd::batch<Arch>;
    constexpr std::size_t Wd = W<Arch>, Dd = DC * Wd;
    B acc[RG][DC];
    const float* pb[RG];
    const std::size_t* pi[RG];
    for (int r = 0; r < RG; ++r) {
        pb[r] = P.base(r0 + r);
        pi[r] = P.index(r0 + r);
        const B a(alpha[r0 + r]);
        for (int c = 0; c < DC; ++c) acc[r][c] = simd::load<Arch>(O + (r0 + r) * Dd + c * Wd) * a;
    }
    const float* vr = vbase;
    for (std::size_t k = 0; k < nk; ++k, vr += vstride) {
        if (k < npf)  // key k of the next tile
            for (std::size_t off = 0; off < Dd; off += 16) prefetch(vr + prefetch_tiles * P.TK * vstride + off);
        B p[RG];
        for (int r = 0; r < RG; ++r) p[r] = B(pb[r][pi[r][k]]);
        for (int c = 0; c < DC; ++c) {
            B v = simd::load<Arch>(vr + c * Wd);
            if constexpr (RG > 1) simd::pin<Arch>(v);  // one load for the RG rows
            for (int r = 0; r < RG; ++r) acc[r][c] = simd::fma<Arch>(p[r], v, acc[r][c]);
        }
    }
    for (int r = 0; r < RG; ++r)
        for (int c = 0; c < DC; ++c) simd::store<Arch>(O + (r0 + r) * Dd + c * Wd, acc[r][c]);
}

template <class Arch, int DC>
inline constexpr int dot_rows = std::max(1, std::min(8, (acc_regs<Arch> - 6) / DC));

template <class Arch, int DC, int RG = dot_rows<Arch, DC>>
inline void dot_pv_rows(std::size_t r0, std::size_t rows, const DotPLayout& P, const float* alpha, const float* vbase,
                        std::size_t vstride, std::size_t nk, float* O, std::size_t npf) {
    std::size_t r = r0;
    for (; r + RG <= rows; r += RG, npf = 0) dot_pv<Arch, RG, DC>(P, r, alpha, vbase, vstride, nk, O, npf);
    if constexpr (RG > 1) {
        if (r < rows) dot_pv_rows<Arch, DC, RG - 1>(r, rows, P, alpha, vbase, vstride, nk, O, npf);
    }
}

/// Two rows share each K load when their query chunks, W accumulators and one K row fit in registers.
template <class Arch, int DC>
inline constexpr bool dot_pairs = W<Arch> % 2 == 0 && 3 * DC + int(W<Arch>) <= acc_regs<Arch> - 2;

// Scores of R rows (1, or 2 sharing each K load) against the keys of one tile, W/R keys per reduction:
// accumulator R*m + r holds (key m of the batch, row r) and lands in lane slot[R*m + r] of sc[t].
// Keys past nk (tail tile) recompute key nk-1; the caller masks their lanes.
template <class Arch, int DC, int R, bool Tail>
inline void dot_scores(const float* const* q /*[R] rows [D]*/, const float* kbase, std::size_t kstride, std::size_t nk,
                       simd::batch<Arch>* sc, std::size_t npf) {
    using B = simd::batch<Arch>;
    constexpr std::size_t Wd = W<Arch>, KP = Wd / R, NT = dot_tile<Arch> / KP;
    B qv[R][DC];
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < DC; ++c) qv[r][c] = simd::load<Arch>(q[r] + c * Wd);
    for (std::size_t t = 0; t < NT; ++t) {
        if (Tail && t * KP >= nk) {
            sc[t] = B(neg_inf);
            continue;
        }
        B acc[Wd];
        for (std::size_t m = 0; m < KP; ++m) {
            const std::size_t k = Tail ? std::min(t * KP + m, nk - 1) : t * KP + m;
            const float* kr = kbase + k * kstride;
            if (k < npf)  // key k of the next tile
                for (std::size_t off = 0; off < DC * Wd; off += 16) prefetch(kr + prefetch_tiles * dot_tile<Arch> * kstride + off);
            // x_r = q_r . K[k], one load of each K vector for the R rows
            B x[R];
            for (int c = 0; c < DC; ++c) {
                B kc = simd::load<Arch>(kr + c * Wd);
                if constexpr (R > 1) simd::pin<Arch>(kc);
                for (int r = 0; r < R; ++r) x[r] = c == 0 ? qv[r][0] * kc : simd::fma<Arch>(qv[r][c], kc, x[r]);
            }
            for (int r = 0; r < R; ++r) acc[std::size_t(R) * m + std::size_t(r)] = x[r];
        }
        sc[t] = simd::haddp_permuted<Arch>(acc);
    }
}

/// Decode over keys [jlo, jhi) of kv for all heads at one position: updates the running m[H], l[H],
/// O[H, D] (D = DC * W). qs [H, D] holds the scaled queries. One kv head at a time, so each head's K and
/// V (contiguous in a cache) stream sequentially.
template <class Arch, int DC>
inline void dot_keys(const float* qs, std::size_t Hk, std::size_t G, const KVView& kv, std::size_t jlo, std::size_t jhi, float* m,
                     float* l, float* O, float* S /*[G, dot_tile]*/, float* alpha /*[G]*/) {
    using B = simd::batch<Arch>;
    constexpr std::size_t Wd = W<Arch>, D = DC * Wd, TK = dot_tile<Arch>, NT = TK / Wd, KP = Wd / 2, NT2 = TK / KP;
    constexpr bool pairs = dot_pairs<Arch, DC>;
    // haddp puts accumulator i of a batch in lane slot[i]; inv[lane] = the accumulator landing there.
    const std::size_t* slot = simd::haddp_slots<Arch>();
    std::size_t pidx1[TK], pidx2[2][TK];
    alignas(64) float lane_key[Wd], lane_key2[Wd], lane_row2[Wd];
    for (std::size_t k = 0; k < TK; ++k) {
        pidx1[k] = (k / Wd) * Wd + slot[k % Wd];
        for (std::size_t r = 0; r < 2; ++r) pidx2[r][k] = (k / KP) * Wd + slot[(2 * (k % KP) + r) % Wd];
    }
    for (std::size_t i = 0; i < Wd; ++i) {
        lane_key[slot[i]] = float(i);
        lane_key2[slot[i]] = float(i / 2);
        lane_row2[slot[i]] = float(i % 2);
    }
    const B lane_keys = simd::load_aligned<Arch>(lane_key), lane_keys2 = simd::load_aligned<Arch>(lane_key2);
    const auto row0 = simd::load_aligned<Arch>(lane_row2) == B(0.0f);
    const std::size_t paired = pairs ? G & ~std::size_t(1) : 0;
    const DotPLayout P{S, paired, pidx1, {pidx2[0], pidx2[1]}, TK};
    const B ninf(neg_inf), zero(0.0f);
    for (std::size_t g = 0; g < Hk; ++g) {
        for (std::size_t s = 0; s < kv.count; ++s) {
            const KVSegment& sg = kv.seg[s];
            const std::size_t a = std::max(sg.pos, jlo), b = std::min(sg.pos + sg.n, jhi);
            for (std::size_t j0 = a; j0 < b; j0 += TK) {
                const std::size_t nk = std::min(TK, b - j0);
                const float* kb = sg.k + (j0 - sg.pos) * sg.stride + sg.head_offset(g, D);
                const float* vb = sg.v + (j0 - sg.pos) * sg.stride + sg.head_offset(g, D);
                const std::size_t ahead = prefetch_tiles * TK;  // keys of the tile prefetch_tiles ahead
                const std::size_t npf = j0 + ahead < b ? std::min(TK, b - j0 - ahead) : 0;
                // Row pairs: m' = max(m, max s) per row (lanes of row r' selected); p = e^(s - m'); l' = l e^(m - m') + sum p
                for (std::size_t r = 0; r < paired; r += 2) {
                    const std::size_t h = g * G + r;
                    B sc[NT2];
                    const float* qr[2] = {qs + h * D, qs + (h + 1) * D};
                    if (nk == TK) {
                        dot_scores<Arch, DC, 2, false>(qr, kb, sg.stride, nk, sc, r == 0 ? npf : 0);
                    } else {
                        dot_scores<Arch, DC, 2, true>(qr, kb, sg.stride, nk, sc, 0);
                        for (std::size_t t = 0; t < NT2; ++t)
                            sc[t] = xsimd::select(lane_keys2 + B(float(t * KP)) < B(float(nk)), sc[t], ninf);
                    }
                    B mx0 = ninf, mx1 = ninf;
                    for (std::size_t t = 0; t < NT2; ++t) {
                        mx0 = xsimd::max(mx0, xsimd::select(row0, sc[t], ninf));
                        mx1 = xsimd::max(mx1, xsimd::select(row0, ninf, sc[t]));
                    }
                    const float mn0 = std::max(m[h], simd::reduce_max<Arch>(mx0));
                    const float mn1 = std::max(m[h + 1], simd::reduce_max<Arch>(mx1));
                    const B mnv = xsimd::select(row0, B(mn0), B(mn1));
                    B sum0(0.0f), sum1(0.0f);
                    float* Sp = S + (r / 2) * 2 * TK;
                    for (std::size_t t = 0; t < NT2; ++t) {
                        const B p = math::exp<Arch>(sc[t] - mnv);
                        simd::store<Arch>(Sp + t * Wd, p);
                        sum0 += xsimd::select(row0, p, zero);
                        sum1 += xsimd::select(row0, zero, p);
                    }
                    alpha[r] = math::exp(m[h] - mn0);
                    alpha[r + 1] = math::exp(m[h + 1] - mn1);
                    l[h] = l[h] * alpha[r] + simd::reduce_add<Arch>(sum0);
                    l[h + 1] = l[h + 1] * alpha[r + 1] + simd::reduce_add<Arch>(sum1);
                    m[h] = mn0;
                    m[h + 1] = mn1;
                }
                for (std::size_t r = paired; r < G; ++r) {
                    const std::size_t h = g * G + r;
                    B sc[NT];
                    const float* qr[1] = {qs + h * D};
                    if (nk == TK) {
                        dot_scores<Arch, DC, 1, false>(qr, kb, sg.stride, nk, sc, r == 0 ? npf : 0);
                    } else {
                        dot_scores<Arch, DC, 1, true>(qr, kb, sg.stride, nk, sc, 0);
                        for (std::size_t t = 0; t < NT; ++t)
                            sc[t] = xsimd::select(lane_keys + B(float(t * Wd)) < B(float(nk)), sc[t], ninf);
                    }
                    // m' = max(m, max s); p = e^(s - m'); l' = l e^(m - m') + sum p
                    B mx = sc[0];
                    for (std::size_t t = 1; t < NT; ++t) mx = xsimd::max(mx, sc[t]);
                    const float mn = std::max(m[h], simd::reduce_max<Arch>(mx));
                    B sum(0.0f);
                    for (std::size_t t = 0; t < NT; ++t) {
                        const B p = math::exp<Arch>(sc[t] - B(mn));
                        simd::store<Arch>(S + r * TK + t * Wd, p);
                        sum += p;
                    }
                    alpha[r] = math::exp(m[h] - mn);
                    l[h] = l[h] * alpha[r] + simd::reduce_add<Arch>(sum);
                    m[h] = mn;
                }
                dot_pv_rows<Arch, DC>(0, G, P, alpha, vb, sg.stride, nk, O + g * G * D, npf);
            }
        }
    }
}

#endif  // SIMD

}  // namespace detail::attn

/// Which inner loop the kernel uses (tests force each; automatic picks by shape).
enum class AttentionPath { automatic, lane, dot, scalar };

/// Floats of workspace a decode of B sequences needs on `threads` threads (independent of context).
template <class Arch = simd::default_arch>
inline std::size_t attention_decode_workspace(const AttentionDims& dims, std::size_t B, std::size_t threads) {
    const std::size_t d = dims.head_dim;
#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
    const std::size_t G = dims.group();
    const std::size_t partial = B * detail::attn::max_chunks * dims.n_heads * (d + 2);
    const std::size_t per_thread =
        std::max(dims.n_heads * d + G * (detail::attn::dot_tile<Arch> + 1), detail::attn::lane_scratch<Arch>(d));
#else
    const std::size_t partial = 0, per_thread = d;
#endif
    return partial + threads * per_thread + 64;
}

/// Decode: B independent sequences, one query each. Query b (row b of q [B, n_heads * head_dim]) sits at
/// absolute position pos[b] and attends to the visible keys of kv[b]. out [B, n_heads * head_dim].
/// Threads split (sequence, key chunk); chunks depend only on the key count, so results do
/// not depend on the thread count.
template <class Arch = simd::default_arch, Executor Exec>
void attention_decode(MatrixView<const float> q, std::span<const std::size_t> pos, std::span<const KVView> kv, MatrixView<float> out,
                      const AttentionDims& dims, AttentionWorkspace& ws, Exec& exec, AttentionPath path = AttentionPath::automatic) {
    using namespace detail::attn;
    dims.validate("attention_decode");
    const std::size_t B = q.rows, H = dims.n_heads, Hk = dims.n_kv_heads, d = dims.head_dim, G = dims.group();
    check_shape("attention_decode: q", q, any, H * d);
    check_shape("attention_decode: out", out, B, H * d);
    check_size("attention_decode: positions", pos.size(), B);
    check_size("attention_decode: kv views", kv.size(), B);
    for (std::size_t b = 0; b < B; ++b) check_view(kv[b], dims, "attention_decode");
    if (B == 0) return;
    const std::size_t threads = exec.num_threads();
    float* base = ws.reserve(attention_decode_workspace<Arch>(dims, B, threads));
    const float scale = dims.effective_scale();
#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
    constexpr std::size_t Wd = W<Arch>;
    const bool dot_ok = d % Wd == 0 && (d == 64 || d == 128);
    if (path == AttentionPath::automatic) path = dot_ok ? AttentionPath::dot : AttentionPath::lane;
    check(path != AttentionPath::dot || dot_ok, "attention_decode: the dot path needs head_dim 64 or 128");
    if (path == AttentionPath::lane) {
        // One lane task per (sequence, kv head, head chunk of <= max_rows heads).
        const std::size_t nhc = (G + max_rows<Arch> - 1) / max_rows<Arch>, Gc = (G + nhc - 1) / nhc;
        const std::size_t per_thread = lane_scratch<Arch>(d);
        exec.parallel_for(B * Hk * nhc, 1, [&](std::size_t t0, std::size_t t1, std::size_t c) {
            float* scratch = base + c * per_thread;
            for (std::size_t t = t0; t < t1; ++t) {
                const std::size_t b = t / (Hk * nhc), g = (t / nhc) % Hk, hc = t % nhc;
                const std::size_t h0 = g * G + hc * Gc, gc = std::min(Gc, G - hc * Gc);
                const std::size_t RB = (gc + Wd - 1) / Wd;
                // A one-row view at position pos[b] (past = pos[b], p0 = 0).
                MatrixView<const float> qb = q.rows_slice(b, 1);
                MatrixView<float> ob = out.rows_slice(b, 1);
                if (d == 64)
                    lane_task_rb<Arch, 64>(RB, qb, pos[b], 0, 1, g, h0, gc, kv[b], ob, dims, scratch);
                else if (d == 128)
                    lane_task_rb<Arch, 128>(RB, qb, pos[b], 0, 1, g, h0, gc, kv[b], ob, dims, scratch);
                else
                    lane_task_rb<Arch, 0>(RB, qb, pos[b], 0, 1, g, h0, gc, kv[b], ob, dims, scratch);
            }
        });
        return;
    }
    if (path == AttentionPath::dot) {
        // Tasks (b, chunk): chunk c of sequence b covers visible keys [lo + c*cs, lo + (c+1)*cs) for all heads.
        const std::size_t slot = H * (d + 2);
        float* partial = base;                                // [B, max_chunks, (m [H], l [H], O [H, d])]
        float* scratch0 = base + B * max_chunks * slot;       // per thread: qs [H, d], S [G, dot_tile], alpha [G]
        const std::size_t per_thread = H * d + G * (dot_tile<Arch> + 1);
        auto chunks_of = [&](std::size_t b, std::size_t& lo, std::size_t& nchunks, std::size_t& cs) {
            std::size_t hi;
            visible_range(pos[b], pos[b], dims.window, lo, hi);
            const std::size_t n = hi - lo;
            cs = chunk_size(n);
            nchunks = std::max<std::size_t>(1, (n + cs - 1) / cs);
        };
        std::size_t total = 0;
        for (std::size_t b = 0; b < B; ++b) {
            std::size_t lo, nc, cs;
            chunks_of(b, lo, nc, cs);
            total += nc;
        }
        exec.parallel_for(total, 1, [&](std::size_t t0, std::size_t t1, std::size_t c) {
            float* qs = scratch0 + c * per_thread;
            float* S = qs + H * d;
            float* alpha = S + G * dot_tile<Arch>;
            std::size_t b = 0, before = 0, lo = 0, nc = 0, cs = 0;
            chunks_of(0, lo, nc, cs);
            for (std::size_t t = t0; t < t1; ++t) {
                while (t >= before + nc) {
                    before += nc;
                    ++b;
                    chunks_of(b, lo, nc, cs);
                }
                const std::size_t ch = t - before;
                float* part = partial + (b * max_chunks + ch) * slot;
                float* m = part;
                float* l = part + H;
                float* O = part + 2 * H;
                std::fill(m, m + H, neg_inf);
                std::fill(l, l + H, 0.0f);
                std::fill(O, O + H * d, 0.0f);
                const float* qr = q.row(b);
                for (std::size_t i = 0; i < H * d; ++i) qs[i] = qr[i] * scale;
                const std::size_t jlo = lo + ch * cs, jhi = std::min(pos[b] + 1, jlo + cs);
                if (jlo >= jhi) continue;
                if (d == 64)
                    dot_keys<Arch, 64 / Wd>(qs, Hk, G, kv[b], jlo, jhi, m, l, O, S, alpha);
                else
                    dot_keys<Arch, 128 / Wd>(qs, Hk, G, kv[b], jlo, jhi, m, l, O, S, alpha);
            }
        });
        // Merge the chunks of each sequence in order: M = max m_c; out = sum_c e^(m_c - M) O_c / sum_c e^(m_c - M) l_c.
        for (std::size_t b = 0; b < B; ++b) {
            std::size_t lo, nc, cs;
            chunks_of(b, lo, nc, cs);
            const float* p0 = partial + b * max_chunks * slot;
            for (std::size_t h = 0; h < H; ++h) {
                float* o = out.row(b) + h * d;
                std::fill(o, o + d, 0.0f);
                float M = neg_inf;
                for (std::size_t ch = 0; ch < nc; ++ch) M = std::max(M, p0[ch * slot + h]);
                if (M == neg_inf) continue;
                float Lsum = 0.0f;
                for (std::size_t ch = 0; ch < nc; ++ch) {
                    const float* pc = p0 + ch * slot;
                    const float a = math::exp(pc[h] - M);
                    Lsum += a * pc[H + h];
                    const float* Oc = pc + 2 * H + h * d;
                    for (std::size_t i = 0; i < d; ++i) o[i] += a * Oc[i];
                }
                const float inv = Lsum > 0.0f ? 1.0f / Lsum : 0.0f;
                for (std::size_t i = 0; i < d; ++i) o[i] *= inv;
            }
        }
        return;
    }
#endif
    // Scalar path.
    exec.parallel_for(B * H, 1, [&](std::size_t t0, std::size_t t1, std::size_t c) {
        float* acc = base + c * d;
        for (std::size_t t = t0; t < t1; ++t) {
            const std::size_t b = t / H, h = t % H;
            detail::attn::scalar_row(q.row(b) + h * d, pos[b], h / G, kv[b], dims, out.row(b) + h * d, acc);
        }
    });
}

/// Flash attention: L queries q [L, n_heads * head_dim] at absolute positions past .. past + L - 1
/// attend to the visible keys of kv; out [L, n_heads * head_dim] (written, not accumulated; must not
/// alias q). Threads split (query block, kv head); results do not depend on the thread count.
template <class Arch = simd::default_arch, Executor Exec>
void attention(MatrixView<const float> q, std::size_t past, const KVView& kv, MatrixView<float> out, const AttentionDims& dims,
               AttentionWorkspace& ws, Exec& exec, AttentionPath path = AttentionPath::automatic) {
    using namespace detail::attn;
    dims.validate("attention");
    const std::size_t L = q.rows, H = dims.n_heads, Hk = dims.n_kv_heads, d = dims.head_dim, G = dims.group();
    check_shape("attention: q", q, any, H * d);
    check_shape("attention: out", out, L, H * d);
    check_view(kv, dims, "attention");
    if (L == 0) return;
    if (L == 1 && path != AttentionPath::lane) {
        const std::size_t p[1] = {past};
        const KVView v[1] = {kv};
        attention_decode<Arch>(q, std::span<const std::size_t>(p, 1), std::span<const KVView>(v, 1), out, dims, ws, exec, path);
        return;
    }
#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
    if (path != AttentionPath::scalar) {
        constexpr std::size_t Wd = W<Arch>, RM = max_rows<Arch>;
        // Heads of a group split into chunks of <= RM rows; query blocks of RM / Gc positions.
        const std::size_t nhc = (G + RM - 1) / RM, Gc = (G + nhc - 1) / nhc;
        const std::size_t nq = std::max<std::size_t>(1, RM / Gc);
        const std::size_t nqb = (L + nq - 1) / nq;
        const std::size_t per_thread = lane_scratch<Arch>(d);
        float* base = ws.reserve(exec.num_threads() * per_thread + 64);
        // Task t: query blocks in zigzag order (0, N-1, 1, N-2, ...) so contiguous task ranges carry
        // equal causal work; kv heads and head chunks inner.
        exec.parallel_for(nqb * Hk * nhc, 1, [&](std::size_t t0, std::size_t t1, std::size_t c) {
            float* scratch = base + c * per_thread;
            for (std::size_t t = t0; t < t1; ++t) {
                const std::size_t z = t / (Hk * nhc), g = (t / nhc) % Hk, hc = t % nhc;
                const std::size_t qb = (z % 2 == 0) ? z / 2 : nqb - 1 - z / 2;
                const std::size_t p0 = qb * nq, n = std::min(nq, L - p0);
                const std::size_t h0 = g * G + hc * Gc, gc = std::min(Gc, G - hc * Gc);
                const std::size_t RB = (n * gc + Wd - 1) / Wd;
                if (d == 64)
                    lane_task_rb<Arch, 64>(RB, q, past, p0, n, g, h0, gc, kv, out, dims, scratch);
                else if (d == 128)
                    lane_task_rb<Arch, 128>(RB, q, past, p0, n, g, h0, gc, kv, out, dims, scratch);
                else
                    lane_task_rb<Arch, 0>(RB, q, past, p0, n, g, h0, gc, kv, out, dims, scratch);
            }
        });
        return;
    }
#endif
    float* base = ws.reserve(exec.num_threads() * d + 64);
    exec.parallel_for(L * H, 1, [&](std::size_t t0, std::size_t t1, std::size_t c) {
        float* acc = base + c * d;
        for (std::size_t t = t0; t < t1; ++t) {
            const std::size_t i = t / H, h = t % H;
            scalar_row(q.row(i) + h * d, past + i, h / G, kv, dims, out.row(i) + h * d, acc);
        }
    });
}

/// Serial overload with its own workspace: K, V [n_keys, n_kv_heads * head_dim] at positions 0.. and the
/// L queries at the last L positions (past = n_keys - L).
inline void attention(MatrixView<const float> q, MatrixView<const float> k, MatrixView<const float> v, MatrixView<float> out,
                      const AttentionDims& dims) {
    check(k.rows >= q.rows, "attention: expected at least as many keys as queries, got ", k.rows, " keys for ", q.rows, " queries");
    check_shape("attention: k", k, any, dims.n_kv_heads * dims.head_dim);
    check_shape("attention: v", v, k.rows, k.cols);
    AttentionWorkspace ws;
    SerialExecutor serial;
    attention(q, k.rows - q.rows, KVView::of(k, v), out, dims, ws, serial);
}

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
