#pragma once
#include "../core/module.hpp"

// Attention decode: attention_decode runs n_seq sequences of one query each, and
// attention_decode_workspace sizes its scratch. Its own inner loop is "dot" (head_dim 64 or 128, a
// multiple of the SIMD width): rows are the G query heads of a kv head. Keys go in blocks of one K
// tile: a cache stores K transposed in tiles of kv_tile keys ([head_dim, kv_tile]), so
// S[r, keys] += q_r[t] * Kt[t, keys] puts the block's scores in the SIMD lanes with no horizontal
// sums (other segments are transposed into scratch a block at a time); O[row, d] += p * V[key, d]
// with V rows broadcast-FMA'd. One kv head at a time, so a cache's per-head K and V stream
// sequentially; the next block is prefetched while one computes. Long contexts split into key chunks
// (at least 512 keys, at most 64 chunks: a function of the length only) whose partial (m, l, O) merge
// in order, so results never depend on the thread count. Other head sizes take the lane loop
// (attention_lane.hpp), builds without SIMD the scalar one (attention_scalar.hpp).

#include <algorithm>
#include <cstddef>
#include <span>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/math.hpp"
#include "../core/simd.hpp"
#include "../core/view.hpp"
#include "attention_common.hpp"
#include "attention_lane.hpp"
#include "attention_scalar.hpp"
#include "kv_view.hpp"

namespace hystack::kernels {

namespace detail::attn {

#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)

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
inline constexpr int dot_rows = std::max(1, std::min(8, (acc_regs<Arch> - 4) / int(dot_block / lanes<Arch> + 1)));

// S[r, u] = q_r . K[u] for RG rows and the dot_block keys of one block: K as transposed tiles at
// kt + j * tile_stride (tile j [D, kv_tile]); scores land in lanes in key order, no horizontal sums:
//   acc[r][v] += q_r[t] * Kt[t, keys of vector v]     for t < D
// With few accumulators, even and odd t go to two sets (added at the end) so FMA latency is hidden.
// pf (or null): the next block's first tile; its first pf_tiles tiles are prefetched, one line per tile and dim.
template <class Arch, int RG, std::size_t D>
inline void dot_scores(const float* qs /*[RG, D]*/, const float* kt, std::size_t tile_stride, const float* pf, std::size_t pf_tiles,
                       simd::batch<Arch> (*sc)[dot_block / lanes<Arch>]) {
    using Vec = simd::batch<Arch>;
    constexpr std::size_t VL = lanes<Arch>, NV = dot_block / VL, VPT = kv_tile / VL;
    constexpr std::size_t S = RG * NV < 8 ? 2 : 1;
    Vec acc[S][RG][NV];
    for (std::size_t h = 0; h < S; ++h)
        for (int r = 0; r < RG; ++r)
            for (std::size_t v = 0; v < NV; ++v) acc[h][r][v] = Vec(0.0f);
    // acc[h] += q[t] * Kt[t] for t = t0 + h; the prefetching and the plain loop are separate (no branch per t)
    auto step = [&](std::size_t t0) {
        for (std::size_t h = 0; h < S; ++h) {
            const std::size_t t = t0 + h;
            Vec kv[NV];
            for (std::size_t v = 0; v < NV; ++v) {
                kv[v] = simd::load<Arch>(kt + (v / VPT) * tile_stride + t * kv_tile + (v % VPT) * VL);
                if constexpr (RG > 1) simd::pin<Arch>(kv[v]);  // one load for the RG rows
            }
            for (int r = 0; r < RG; ++r) {
                const Vec qb(qs[std::size_t(r) * D + t]);
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
// P [rows, dot_block], V rows at vbase + (k - ka) * vstride, D = DC * VL dims. pf (or null): V row k - ka
// of the next block, prefetched while key k is used for k < pf_keys.
template <class Arch, int RG, std::size_t D>
inline void dot_pv(const float* P, std::size_t r0, const float* alpha, const float* vbase, std::size_t vstride, std::size_t ka,
                   std::size_t kb, const float* pf, std::size_t pf_keys, float* O /*[rows, D]*/) {
    using Vec = simd::batch<Arch>;
    constexpr std::size_t VL = lanes<Arch>, DC = D / VL;
    Vec acc[RG][DC];
    for (int r = 0; r < RG; ++r) {
        const Vec a(alpha[r0 + r]);
        for (std::size_t c = 0; c < DC; ++c) acc[r][c] = simd::load<Arch>(O + (r0 + r) * D + c * VL) * a;
    }
    const float* vr = vbase;
    for (std::size_t k = ka; k < kb; ++k, vr += vstride) {
        if (pf && k < pf_keys)
            for (std::size_t off = 0; off < D; off += 16) prefetch(pf + (k - ka) * vstride + off);
        Vec p[RG];
        for (int r = 0; r < RG; ++r) p[r] = Vec(P[(r0 + r) * dot_block + k]);
        for (std::size_t c = 0; c < DC; ++c) {
            Vec v = simd::load<Arch>(vr + c * VL);
            if constexpr (RG > 1) simd::pin<Arch>(v);  // one load for the RG rows
            for (int r = 0; r < RG; ++r) acc[r][c] = simd::fma<Arch>(p[r], v, acc[r][c]);
        }
    }
    for (int r = 0; r < RG; ++r)
        for (std::size_t c = 0; c < DC; ++c) simd::store<Arch>(O + (r0 + r) * D + c * VL, acc[r][c]);
}

template <class Arch, std::size_t D>
inline constexpr int pv_rows = std::max(1, std::min(8, (acc_regs<Arch> - 6) / int(D / lanes<Arch>)));

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
    using Vec = simd::batch<Arch>;
    constexpr std::size_t VL = lanes<Arch>, NV = dot_block / VL;
    Vec sc[RG][NV];
    dot_scores<Arch, RG, D>(qs + (h0 + r0) * D, kt, tile_stride, pf, pf_tiles, sc);
    if (ka > 0 || kb < dot_block) {
        const Vec lo = Vec(float(ka)), hi = Vec(float(kb)), ninf = Vec(neg_inf);
        for (std::size_t v = 0; v < NV; ++v) {
            const Vec key = simd::iota<Arch>() + Vec(float(v * VL));
            const auto out = (key < lo) || (key >= hi);
            for (int r = 0; r < RG; ++r) sc[r][v] = xsimd::select(out, ninf, sc[r][v]);
        }
    }
    for (int r = 0; r < RG; ++r) {
        const std::size_t h = h0 + r0 + r;
        Vec mx = sc[r][0];
        for (std::size_t v = 1; v < NV; ++v) mx = simd::max<Arch>(mx, sc[r][v]);
        const float mn = std::max(m[h], simd::reduce_max<Arch>(mx));  // finite: the block has a valid key
        Vec sum(0.0f);
        for (std::size_t v = 0; v < NV; ++v) {
            const Vec p = math::exp_nonpos<Arch>(sc[r][v] - Vec(mn));
            simd::store<Arch>(P + (r0 + r) * dot_block + v * VL, p);
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

/// Floats of workspace a decode of n_seq sequences needs on `threads` threads (independent of context).
template <class Arch = simd::default_arch>
inline std::size_t attention_decode_workspace(const AttentionDims& dims, std::size_t n_seq, std::size_t threads) {
    const std::size_t d = dims.head_dim;
#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
    const std::size_t G = dims.group();
    const std::size_t partial = n_seq * detail::attn::max_chunks * dims.n_heads * (d + 2);
    const std::size_t per_thread = std::max(detail::attn::dot_scratch(dims.n_heads, G, d), detail::attn::lane_scratch<Arch>(d));
#else
    const std::size_t partial = 0, per_thread = d;
#endif
    return partial + threads * per_thread + 64;
}

/// Decode: n_seq independent sequences, one query each. Query b (row b of q [n_seq, n_heads * head_dim]) sits at
/// absolute position pos[b] and attends to the visible keys of kv[b]. out [n_seq, n_heads * head_dim].
/// Threads split (sequence, key chunk); chunks depend only on the key count, so results do
/// not depend on the thread count.
template <class Arch = simd::default_arch, Executor Exec>
void attention_decode(MatrixView<const float> q, std::span<const std::size_t> pos, std::span<const KVView> kv, MatrixView<float> out,
                      const AttentionDims& dims, AttentionWorkspace& ws, Exec& exec, AttentionPath path = AttentionPath::automatic) {
    using namespace detail::attn;
    dims.validate("attention_decode");
    const std::size_t n_seq = q.rows, H = dims.n_heads, Hk = dims.n_kv_heads, d = dims.head_dim, G = dims.group();
    check_shape("attention_decode: q", q, any, H * d);
    check_shape("attention_decode: out", out, n_seq, H * d);
    check_size("attention_decode: positions", pos.size(), n_seq);
    check_size("attention_decode: kv views", kv.size(), n_seq);
    for (std::size_t b = 0; b < n_seq; ++b) check_view(kv[b], dims, "attention_decode");
    if (n_seq == 0) return;
    const std::size_t threads = exec.num_threads();
    float* base = ws.reserve(attention_decode_workspace<Arch>(dims, n_seq, threads));
    const float scale = dims.effective_scale();
#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
    constexpr std::size_t VL = lanes<Arch>;
    const bool dot_ok = d % VL == 0 && (d == 64 || d == 128);
    if (path == AttentionPath::automatic) path = dot_ok ? AttentionPath::dot : AttentionPath::lane;
    check(path != AttentionPath::dot || dot_ok, "attention_decode: the dot path needs head_dim 64 or 128");
    if (path == AttentionPath::lane) {
        // One lane task per (sequence, kv head, head chunk of <= max_rows heads).
        const std::size_t nhc = (G + max_rows<Arch> - 1) / max_rows<Arch>, Gc = (G + nhc - 1) / nhc;
        const std::size_t per_thread = lane_scratch<Arch>(d);
        exec.parallel_for(n_seq * Hk * nhc, 1, [&](std::size_t t0, std::size_t t1, std::size_t c) {
            float* scratch = base + c * per_thread;
            for (std::size_t t = t0; t < t1; ++t) {
                const std::size_t b = t / (Hk * nhc), g = (t / nhc) % Hk, hc = t % nhc;
                const std::size_t h0 = g * G + hc * Gc, gc = std::min(Gc, G - hc * Gc);
                const std::size_t RB = (gc + VL - 1) / VL;
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
        float* partial = base;                                // [n_seq, max_chunks, (m [H], l [H], O [H, d])]
        float* scratch0 = base + n_seq * max_chunks * slot;       // per thread: qs [H, d], P [G, dot_block], alpha [G], Kt [dot_block, d]
        const std::size_t per_thread = dot_scratch(H, G, d);
        auto chunks_of = [&](std::size_t b, std::size_t& lo, std::size_t& nchunks, std::size_t& cs) {
            std::size_t hi;
            visible_range(pos[b], pos[b], dims.window, lo, hi);
            const std::size_t n = hi - lo;
            cs = chunk_size(n);
            nchunks = std::max<std::size_t>(1, (n + cs - 1) / cs);
        };
        std::size_t total = 0;
        for (std::size_t b = 0; b < n_seq; ++b) {
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
        for (std::size_t b = 0; b < n_seq; ++b) {
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
    exec.parallel_for(n_seq * H, 1, [&](std::size_t t0, std::size_t t1, std::size_t c) {
        float* acc = base + c * d;
        for (std::size_t t = t0; t < t1; ++t) {
            const std::size_t b = t / H, h = t % H;
            detail::attn::scalar_row(q.row(b) + h * d, pos[b], h / G, kv[b], dims, out.row(b) + h * d, acc);
        }
    });
}

}  // namespace hystack::kernels
