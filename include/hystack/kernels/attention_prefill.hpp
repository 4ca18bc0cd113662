#pragma once
#include "../core/module.hpp"

// Attention over L queries (prefill, chunked prefill, and the serial overload over plain K and V):
// attention() splits (query block, kv head) tasks of the lane loop (attention_lane.hpp) over the
// threads, query blocks in zigzag order so contiguous task ranges carry equal causal work; a single
// query goes to attention_decode, AttentionPath::scalar (and builds without SIMD) to the scalar loop.

#include <algorithm>
#include <cstddef>
#include <span>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/simd.hpp"
#include "../core/view.hpp"
#include "attention_common.hpp"
#include "attention_decode.hpp"
#include "attention_lane.hpp"
#include "attention_scalar.hpp"
#include "kv_view.hpp"

namespace hystack::kernels {

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
        constexpr std::size_t VL = lanes<Arch>, RM = max_rows<Arch>;
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
                const std::size_t RB = (n * gc + VL - 1) / VL;
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

}  // namespace hystack::kernels
