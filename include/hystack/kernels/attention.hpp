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
//   rows are the G query heads of a kv head. Keys go in blocks of one K tile: a cache stores K
//   transposed in tiles of kv_tile keys ([head_dim, kv_tile]), so S[r, keys] += q_r[t] * Kt[t, keys]
//   puts the block's scores in the SIMD lanes with no horizontal sums (other segments are transposed
//   into scratch a block at a time); O[row, d] += p * V[key, d] with V rows broadcast-FMA'd. One kv
//   head at a time, so a cache's per-head K and V stream sequentially; the next block is prefetched
//   while one computes. Long contexts split into key chunks (at least 512 keys, at most 64 chunks: a
//   function of the length only) whose partial (m, l, O) merge in order, so results never depend on
//   the thread count.
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

/// Keys per K tile of a cache. A cache stores each kv head's keys as tiles of kv_tile keys, transposed:
/// tile [head_dim, kv_tile], dim t of the tile's keys side by side. Decode then scores kv_tile keys with
/// plain vector FMAs (keys in lanes) instead of one horizontal reduction per key.
inline constexpr std::size_t kv_tile = 16;

/// Keys/values at absolute positions pos .. pos + n - 1. V: value i of kv head g is the head_dim floats at
/// v + i * stride + g * head_stride. head_stride 0 means head_dim: rows [n, stride] holding all heads side
/// by side (a projection's output); a cache stores each head contiguously instead (head_stride = slots *
/// head_dim). K: the same as V, or, with k_tiled, transposed tiles: dim t of key i, kv head g at
///   k + g * head_stride + (u / kv_tile) * kv_tile * head_dim + t * kv_tile + u % kv_tile,  u = k_off + i
/// (u: the key's index in the tile space starting at k; a ring cache's segment may start mid-tile).
struct KVSegment {
    std::size_t pos = 0;
    std::size_t n = 0;
    const float* k = nullptr;
    const float* v = nullptr;
    std::size_t stride = 0;
    std::size_t head_stride = 0;
    bool k_tiled = false;
    std::size_t k_off = 0;

    std::size_t head_offset(std::size_t g, std::size_t head_dim) const { return g * (head_stride ? head_stride : head_dim); }
    /// Dim 0 of key i of kv head g; its dims follow key_dim_stride() floats apart.
    const float* key(std::size_t i, std::size_t g, std::size_t head_dim) const {
        if (!k_tiled) return k + i * stride + head_offset(g, head_dim);
        const std::size_t u = k_off + i;
        return k + g * head_stride + (u / kv_tile) * kv_tile * head_dim + u % kv_tile;
    }
    std::size_t key_dim_stride() const { return k_tiled ? kv_tile : 1; }
    /// Value i of kv head g: head_dim consecutive floats.
    const float* value(std::size_t i, std::size_t g, std::size_t head_dim) const { return v + i * stride + head_offset(g, head_dim); }
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
        check(!kv.seg[i].k_tiled || kv.seg[i].head_stride || d.n_kv_heads == 1, who, ": a tiled K segment needs a head stride");
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
// Keys i0 .. i0 + nk - 1 of segment sg, kv head g; DS = sg.key_dim_stride() (1, or kv_tile for a cache's
// transposed K tiles). Keys past nk in the last register block recompute key nk-1 (their rows of St are never read).
template <class Arch, int RB, int D, std::size_t DS>
inline void qk_tile(const float* Qt, const KVSegment& sg, std::size_t i0, std::size_t g, std::size_t nk, std::size_t d_rt, float* St) {
    using B = simd::batch<Arch>;
    constexpr std::size_t Wd = W<Arch>, RS = max_rows<Arch>;
    constexpr int KB = kblock<Arch, RB>;
    const std::size_t d = D ? std::size_t(D) : d_rt;
    for (std::size_t k0 = 0; k0 < nk; k0 += KB) {
        const float* kr[KB];
        for (int kk = 0; kk < KB; ++kk) kr[kk] = sg.key(i0 + std::min(k0 + kk, nk - 1), g, d);
        B acc[KB][RB];
        for (int kk = 0; kk < KB; ++kk)
            for (int rb = 0; rb < RB; ++rb) acc[kk][rb] = B(0.0f);
        for (std::size_t t = 0; t < d; ++t) {
            B qv[RB];
            for (int rb = 0; rb < RB; ++rb) qv[rb] = simd::load_aligned<Arch>(Qt + t * RS + rb * Wd);
            for (int kk = 0; kk < KB; ++kk) {
                const B kv(kr[kk][t * DS]);
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
                mx = simd::max<Arch>(mx, s);
            }
        } else {
            for (std::size_t k = 0; k < nk; ++k) mx = simd::max<Arch>(mx, simd::load_aligned<Arch>(St + k * RS + rb * Wd));
        }
        // A row with no visible key so far keeps m = -inf; subtract 0 instead so exp gives 0, not NaN.
        const B msafe = xsimd::select(mx == ninf, zero, mx);
        alpha[rb] = math::exp_nonpos<Arch>(m_old - msafe);
        B sum(0.0f);
        for (std::size_t k = 0; k < nk; ++k) {
            const B p = math::exp_nonpos<Arch>(simd::load_aligned<Arch>(St + k * RS + rb * Wd) - msafe);
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

// ---- dot path (decode) ----

/// Keys per decode chunk are at least this; at most max_chunks chunks per sequence.
inline constexpr std::size_t min_chunk = 512;
inline constexpr std::size_t max_chunks = 64;

/// Keys per decode block: one K tile. A block's K and V and the next block's (prefetched) stay in L1;
/// blocks of 4 tiles (32 KB of K and V per block at head_dim 64) streamed 10-15 points of the read
/// bandwidth less, measured side by side.
inline constexpr std::size_t dot_block = kv_tile;
// dot_keys reads a cache's blocks in place: a block of several tiles could reach past a segment's last tile.
static_assert(dot_block == kv_tile, "decode blocks are one K tile");

/// Chunk size for n keys: a multiple of dot_block (a cache's blocks then never straddle two chunks).
inline std::size_t chunk_size(std::size_t n) {
    const std::size_t c = std::max(min_chunk, (n + max_chunks - 1) / max_chunks);
    return (c + dot_block - 1) / dot_block * dot_block;
}

// Decode streams K and V once; without prefetch the loads of a block wait on DRAM while nothing else
// runs (compute and memory time add up).
using simd::prefetch;

/// Scratch floats per thread of the dot path: qs [H, d], P [G, dot_block], alpha [G], Kt [dot_block, d].
inline std::size_t dot_scratch(std::size_t H, std::size_t G, std::size_t d) { return H * d + G * (dot_block + 1) + dot_block * d; }

/// Query rows scored per pass over a K block (their accumulators, the block's K vectors and a broadcast fit in registers).
template <class Arch>
inline constexpr int dot_rows = std::max(1, std::min(8, (acc_regs<Arch> - 4) / int(dot_block / W<Arch> + 1)));

// S[r, u] = q_r . K[u] for RG rows and the dot_block keys of one block: K as transposed tiles at
// kt + j * tile_stride (tile j [D, kv_tile]); scores land in lanes in key order, no horizontal sums:
//   acc[r][v] += q_r[t] * Kt[t, keys of vector v]     for t < D
// With few accumulators, even and odd t go to two sets (added at the end) so FMA latency is hidden.
// pf (or null): the next block's first tile; its first pf_tiles tiles are prefetched, one line per tile and dim.
template <class Arch, int RG, std::size_t D>
inline void dot_scores(const float* qs /*[RG, D]*/, const float* kt, std::size_t tile_stride, const float* pf, std::size_t pf_tiles,
                       simd::batch<Arch> (*sc)[dot_block / W<Arch>]) {
    using B = simd::batch<Arch>;
    constexpr std::size_t Wd = W<Arch>, NV = dot_block / Wd, VPT = kv_tile / Wd;
    constexpr std::size_t S = RG * NV < 8 ? 2 : 1;
    B acc[S][RG][NV];
    for (std::size_t h = 0; h < S; ++h)
        for (int r = 0; r < RG; ++r)
            for (std::size_t v = 0; v < NV; ++v) acc[h][r][v] = B(0.0f);
    // acc[h] += q[t] * Kt[t] for t = t0 + h; the prefetching and the plain loop are separate (no branch per t)
    auto step = [&](std::size_t t0) {
        for (std::size_t h = 0; h < S; ++h) {
            const std::size_t t = t0 + h;
            B kv[NV];
            for (std::size_t v = 0; v < NV; ++v) {
                kv[v] = simd::load<Arch>(kt + (v / VPT) * tile_stride + t * kv_tile + (v % VPT) * Wd);
                if constexpr (RG > 1) simd::pin<Arch>(kv[v]);  // one load for the RG rows
            }
            for (int r = 0; r < RG; ++r) {
                const B qb(qs[std::size_t(r) * D + t]);
                for (std::size_t v = 0; v < NV; ++v) acc[h][r][v] = simd::fma<Arch>(qb, kv[v], acc[h][r][v]);
            }
        }
    };
    if (pf) {
        for (std::size_t t0 = 0; t0 < D; t0 += S) {
            for (std::size_t h = 0; h < S; ++h)
                for (std::size_t j = 0; j < pf_tiles; ++j) prefetch(pf + j * tile_stride + (t0 + h) * kv_tile);
            step(t0);
        }
    } else {
        for (std::size_t t0 = 0; t0 < D; t0 += S) step(t0);
    }
    for (int r = 0; r < RG; ++r)
        for (std::size_t v = 0; v < NV; ++v) sc[r][v] = S == 2 ? acc[0][r][v] + acc[S - 1][r][v] : acc[0][r][v];
}

// O[r, :] = O[r, :] * alpha_r + sum_k P[r, k] V[k, :] for RG rows r0.. and block keys ka <= k < kb;
// P [rows, dot_block], V rows at vbase + (k - ka) * vstride, D = DC * W dims. pf (or null): V row k - ka
// of the next block, prefetched while key k is used for k < pf_keys.
template <class Arch, int RG, std::size_t D>
inline void dot_pv(const float* P, std::size_t r0, const float* alpha, const float* vbase, std::size_t vstride, std::size_t ka,
                   std::size_t kb, const float* pf, std::size_t pf_keys, float* O /*[rows, D]*/) {
    using B = simd::batch<Arch>;
    constexpr std::size_t Wd = W<Arch>, DC = D / Wd;
    B acc[RG][DC];
    for (int r = 0; r < RG; ++r) {
        const B a(alpha[r0 + r]);
        for (std::size_t c = 0; c < DC; ++c) acc[r][c] = simd::load<Arch>(O + (r0 + r) * D + c * Wd) * a;
    }
    const float* vr = vbase;
    for (std::size_t k = ka; k < kb; ++k, vr += vstride) {
        if (pf && k < pf_keys)
            for (std::size_t off = 0; off < D; off += 16) prefetch(pf + (k - ka) * vstride + off);
        B p[RG];
        for (int r = 0; r < RG; ++r) p[r] = B(P[(r0 + r) * dot_block + k]);
        for (std::size_t c = 0; c < DC; ++c) {
            B v = simd::load<Arch>(vr + c * Wd);
            if constexpr (RG > 1) simd::pin<Arch>(v);  // one load for the RG rows
            for (int r = 0; r < RG; ++r) acc[r][c] = simd::fma<Arch>(p[r], v, acc[r][c]);
        }
    }
    for (int r = 0; r < RG; ++r)
        for (std::size_t c = 0; c < DC; ++c) simd::store<Arch>(O + (r0 + r) * D + c * Wd, acc[r][c]);
}

template <class Arch, std::size_t D>
inline constexpr int pv_rows = std::max(1, std::min(8, (acc_regs<Arch> - 6) / int(D / W<Arch>)));

template <class Arch, std::size_t D, int RG = pv_rows<Arch, D>>
inline void dot_pv_rows(std::size_t r0, std::size_t rows, const float* P, const float* alpha, const float* vbase, std::size_t vstride,
                        std::size_t ka, std::size_t kb, const float* pf, std::size_t pf_keys, float* O) {
    std::size_t r = r0;
    for (; r + RG <= rows; r += RG, pf = nullptr) dot_pv<Arch, RG, D>(P, r, alpha, vbase, vstride, ka, kb, pf, pf_keys, O);
    if constexpr (RG > 1) {
        if (r < rows) dot_pv_rows<Arch, D, RG - 1>(r, rows, P, alpha, vbase, vstride, ka, kb, pf, pf_keys, O);
    }
}

// Scores, online softmax and P for rows r0 .. r0 + RG - 1 (query heads h0 + r) over one block whose valid
// keys are ka <= k < kb; writes P [rows, dot_block] and alpha, updates m and l:
//   m' = max(m, max_k s_k);  p_k = e^(s_k - m');  l' = l e^(m - m') + sum_k p_k;  alpha = e^(m - m')
template <class Arch, int RG, std::size_t D>
inline void dot_softmax(const float* qs, std::size_t h0, std::size_t r0, const float* kt, std::size_t tile_stride, const float* pf,
                        std::size_t pf_tiles, std::size_t ka, std::size_t kb, float* m, float* l, float* P, float* alpha) {
    using B = simd::batch<Arch>;
    constexpr std::size_t Wd = W<Arch>, NV = dot_block / Wd;
    B sc[RG][NV];
    dot_scores<Arch, RG, D>(qs + (h0 + r0) * D, kt, tile_stride, pf, pf_tiles, sc);
    if (ka > 0 || kb < dot_block) {
        const B lo = B(float(ka)), hi = B(float(kb)), ninf = B(neg_inf);
        for (std::size_t v = 0; v < NV; ++v) {
            const B key = simd::iota<Arch>() + B(float(v * Wd));
            const auto out = (key < lo) || (key >= hi);
            for (int r = 0; r < RG; ++r) sc[r][v] = xsimd::select(out, ninf, sc[r][v]);
        }
    }
    for (int r = 0; r < RG; ++r) {
        const std::size_t h = h0 + r0 + r;
        B mx = sc[r][0];
        for (std::size_t v = 1; v < NV; ++v) mx = simd::max<Arch>(mx, sc[r][v]);
        const float mn = std::max(m[h], simd::reduce_max<Arch>(mx));  // finite: the block has a valid key
        B sum(0.0f);
        for (std::size_t v = 0; v < NV; ++v) {
            const B p = math::exp_nonpos<Arch>(sc[r][v] - B(mn));
            simd::store<Arch>(P + (r0 + r) * dot_block + v * Wd, p);
            sum += p;
        }
        // alpha = e^(m - m'): 1 while the running max holds (most blocks of a long context)
        alpha[r0 + r] = mn == m[h] ? 1.0f : math::exp(m[h] - mn);
        l[h] = l[h] * alpha[r0 + r] + simd::reduce_add<Arch>(sum);
        m[h] = mn;
    }
}

template <class Arch, std::size_t D, int RG = dot_rows<Arch>>
inline void dot_softmax_rows(const float* qs, std::size_t h0, std::size_t r0, std::size_t rows, const float* kt, std::size_t tile_stride,
                             const float* pf, std::size_t pf_tiles, std::size_t ka, std::size_t kb, float* m, float* l, float* P,
                             float* alpha) {
    std::size_t r = r0;
    for (; r + RG <= rows; r += RG, pf = nullptr)
        dot_softmax<Arch, RG, D>(qs, h0, r, kt, tile_stride, pf, pf_tiles, ka, kb, m, l, P, alpha);
    if constexpr (RG > 1) {
        if (r < rows) dot_softmax_rows<Arch, D, RG - 1>(qs, h0, r, rows, kt, tile_stride, pf, pf_tiles, ka, kb, m, l, P, alpha);
    }
}

/// Decode over keys [jlo, jhi) of kv head g at one position: updates the running m, l, O of its G query
/// heads h = g * G + r (m[h], l[h], O[h, D]); qs [H, D] holds the scaled queries. Keys go in blocks of
/// dot_block aligned to the K tiles; the next block of the segment (past jhi too: the next chunk) is
/// prefetched while one computes. A segment whose K is not tiled is transposed block by block into
/// Kt [dot_block / kv_tile, D, kv_tile].
template <class Arch, std::size_t D>
inline void dot_keys(const float* qs, std::size_t g, std::size_t G, const KVView& kv, std::size_t jlo, std::size_t jhi, float* m,
                     float* l, float* O, float* P /*[G, dot_block]*/, float* alpha /*[G]*/, float* Kt) {
    constexpr std::size_t TS = kv_tile * D;  // floats per K tile
    for (std::size_t s = 0; s < kv.count; ++s) {
        const KVSegment& sg = kv.seg[s];
        const std::size_t a = std::max(sg.pos, jlo), b = std::min(sg.pos + sg.n, jhi);
        if (a >= b) continue;
        // Tile space: key i of the segment is u = off + i; blocks start on a tile.
        const std::size_t off = sg.k_tiled ? sg.k_off : 0, ua = off + (a - sg.pos), ub = off + (b - sg.pos), uend = off + sg.n;
        const float* ktile = sg.k_tiled ? sg.k + g * sg.head_stride : nullptr;  // tile 0 of kv head g
        for (std::size_t u0 = sg.k_tiled ? ua / kv_tile * kv_tile : ua; u0 < ub; u0 += dot_block) {
            const std::size_t ka = std::max(u0, ua) - u0, kb = std::min(u0 + dot_block, ub) - u0;
            // Keys of the next block that exist in the segment (prefetched)
            const std::size_t npf = u0 + dot_block < uend ? std::min(dot_block, uend - u0 - dot_block) : 0;
            const float* kt = Kt;
            if (sg.k_tiled) {
                kt = ktile + u0 / kv_tile * TS;  // a block is one tile: it never reaches past the segment's last tile
            } else {
                // Kt[k / kv_tile, t, k % kv_tile] = K[key u0 + k - off, t]
                for (std::size_t k = ka; k < kb; ++k) {
                    const float* kr = sg.key(u0 + k - off, g, D);
                    float* dst = Kt + (k / kv_tile) * TS + k % kv_tile;
                    for (std::size_t t = 0; t < D; ++t) dst[t * kv_tile] = kr[t];
                }
            }
            const float* kpf = sg.k_tiled && npf ? ktile + (u0 + dot_block) / kv_tile * TS : nullptr;
            const float* vb = sg.value(u0 + ka - off, g, D);
            dot_softmax_rows<Arch, D>(qs, g * G, 0, G, kt, TS, kpf, (npf + kv_tile - 1) / kv_tile, ka, kb, m, l, P, alpha);
            dot_pv_rows<Arch, D>(0, G, P, alpha, vb, sg.stride, ka, kb, npf ? vb + dot_block * sg.stride : nullptr, npf,
                                 O + g * G * D);
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
    const std::size_t per_thread = std::max(detail::attn::dot_scratch(dims.n_heads, G, d), detail::attn::lane_scratch<Arch>(d));
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
        // Chunk c of sequence b covers visible keys [lo + c*cs, lo + (c+1)*cs).
        const std::size_t slot = H * (d + 2);
        float* partial = base;                                // [B, max_chunks, (m [H], l [H], O [H, d])]
        float* scratch0 = base + B * max_chunks * slot;       // per thread: qs [H, d], P [G, dot_block], alpha [G], Kt [dot_block, d]
        const std::size_t per_thread = dot_scratch(H, G, d);
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
        // Tasks (b, kv head g, chunk), chunks innermost: a thread's consecutive tasks continue one head's
        // K and V streams instead of jumping between heads every chunk.
        exec.parallel_for(total * Hk, 1, [&](std::size_t t0, std::size_t t1, std::size_t c) {
            float* qs = scratch0 + c * per_thread;
            float* P = qs + H * d;
            float* alpha = P + G * dot_block;
            float* Kt = alpha + G;
            std::size_t b = 0, before = 0, lo = 0, nc = 0, cs = 0;
            chunks_of(0, lo, nc, cs);
            for (std::size_t t = t0; t < t1; ++t) {
                while (t >= before + nc * Hk) {
                    before += nc * Hk;
                    ++b;
                    chunks_of(b, lo, nc, cs);
                }
                const std::size_t g = (t - before) / nc, ch = (t - before) % nc, h0 = g * G;
                float* part = partial + (b * max_chunks + ch) * slot;
                float* m = part;
                float* l = part + H;
                float* O = part + 2 * H;
                std::fill(m + h0, m + h0 + G, neg_inf);
                std::fill(l + h0, l + h0 + G, 0.0f);
                std::fill(O + h0 * d, O + (h0 + G) * d, 0.0f);
                const float* qr = q.row(b);
                for (std::size_t i = h0 * d; i < (h0 + G) * d; ++i) qs[i] = qr[i] * scale;
                const std::size_t jlo = lo + ch * cs, jhi = std::min(pos[b] + 1, jlo + cs);
                if (jlo >= jhi) continue;
                if (d == 64)
                    dot_keys<Arch, 64>(qs, g, G, kv[b], jlo, jhi, m, l, O, P, alpha, Kt);
                else
                    dot_keys<Arch, 128>(qs, g, G, kv[b], jlo, jhi, m, l, O, P, alpha, Kt);
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
