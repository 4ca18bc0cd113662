#pragma once
#include "../core/module.hpp"

// Depthwise causal conv1d + bias + SiLU: Mamba's short convolution over time, per channel.
//
// Layouts (token-major: what in_proj produces; rows may be strided, e.g. the x half of in_proj's [L, 2*d_inner]):
//   x     [L, d_inner]   input tokens
//   w     [d_inner, K]   depthwise weights (HF conv1d.weight [d_inner, 1, K], flattened); tap K-1 is the current token
//   bias  [d_inner]      or empty
//   state [K-1, d_inner] the K-1 inputs before x, oldest first (zeros for a new sequence); updated in place
//                        to the last K-1 inputs of (state ++ x)
//   out   [L, d_inner]   out[t, d] = silu(bias[d] + sum_k w[d, k] * xs[t - (K-1) + k, d]), xs = state ++ x;
//                        must not alias x or state
// The step is the same computation for one token, so prefill(L1) + steps equals prefill(L1 + S) bit for bit.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/math.hpp"
#include "../core/simd.hpp"
#include "../core/view.hpp"

namespace hystack::kernels {

namespace detail {

inline void conv1d_check(const char* fn, MatrixView<const float> x, MatrixView<const float> w, std::span<const float> bias,
                         MatrixView<float> state, MatrixView<float> out) {
    const std::size_t d = w.rows, K = w.cols;
    check(K >= 1, fn, ": w: expected [d_inner, K] with K >= 1, got [", d, ", 0]");
    check_shape(ArgName{fn, "x"}, x, any, d);
    check(bias.empty() || bias.size() == d, fn, ": bias: expected [", d, "] or empty, got [", bias.size(), "]");
    check_shape(ArgName{fn, "state"}, state, K - 1, d);
    check_shape(ArgName{fn, "out"}, out, x.rows, d);
}

// Scalar path for channels [c0, c1): the same arithmetic as the SIMD body, one channel at a time.
inline void conv1d_scalar_channels(MatrixView<const float> x, MatrixView<const float> w, std::span<const float> bias,
                                   MatrixView<float> state, MatrixView<float> out, std::size_t c0, std::size_t c1) {
    const std::size_t L = x.rows, K = w.cols;
    for (std::size_t c = c0; c < c1; ++c) {
        const float* wc = w.row(c);  // [K]
        for (std::size_t t = 0; t < L; ++t) {
            // out = silu(bias + sum_k w[k] * xs[t - K + 1 + k])
            float acc = bias.empty() ? 0.0f : bias[c];
            for (std::size_t k = 0; k < K; ++k) {
                const std::ptrdiff_t j = std::ptrdiff_t(t + k) - std::ptrdiff_t(K - 1);
                const float xv = j >= 0 ? x(std::size_t(j), c) : state(std::size_t(std::ptrdiff_t(K - 1) + j), c);
                acc = std::fma(wc[k], xv, acc);
            }
            out(t, c) = math::silu(acc);
        }
        // state <- last K-1 of (state ++ x); the source row is never before the destination row.
        for (std::size_t j = 0; j + 1 < K; ++j) {
            const std::ptrdiff_t s = std::ptrdiff_t(L + j) - std::ptrdiff_t(K - 1);
            state(j, c) = s >= 0 ? x(std::size_t(s), c) : state(L + j, c);
        }
    }
}

/// Outputs of at least this many bytes are written with non-temporal stores (measured on Zen 5: L = 4096,
/// d_inner = 2048 goes from 0.6 to ~0.45 ns per element); a mixer's 256-token chunk (2 MB) stays below.
inline constexpr std::size_t conv1d_stream_bytes = std::size_t(8) << 20;

#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
// SIMD path for channels [c0, c1) (c1 - c0 a multiple of the SIMD width). KC = K at compile time (0: run time, K <= 64).
// Channels go in tiles whose transposed weights wt [K, tile] fit a 16 KB stack buffer; per token, the K input rows
// of the tile are in L1, so x is read from memory once, in row order.
template <std::size_t KC, class Arch>
void conv1d_simd_channels(MatrixView<const float> x, MatrixView<const float> w, std::span<const float> bias,
                          MatrixView<float> state, MatrixView<float> out, std::size_t c0, std::size_t c1) {
    using Bt = simd::batch<Arch>;
    constexpr std::size_t VL = simd::width<Arch>;
    constexpr std::size_t kmax = KC ? KC : 64;
    constexpr std::size_t buf = 8192;
    const std::size_t L = x.rows, K = KC ? KC : w.cols;
    const std::size_t tile = std::min<std::size_t>(2048, std::max<std::size_t>(VL, buf / K / VL * VL));
    alignas(64) float wt[buf];  // wt [K, tile]
    // Outputs far larger than the caches go around them (no read-for-ownership of out's lines: a third
    // of the memory traffic); smaller ones stay cached for the projection that reads them next.
    const bool stream = out.rows * out.cols * sizeof(float) >= conv1d_stream_bytes &&
                        reinterpret_cast<std::uintptr_t>(out.data) % (VL * sizeof(float)) == 0 && out.stride % VL == 0 &&
                        c0 % VL == 0;
    for (std::size_t a = c0; a < c1; a += tile) {
        const std::size_t n = std::min(tile, c1 - a);
        for (std::size_t k = 0; k < K; ++k)
            for (std::size_t i = 0; i < n; ++i) wt[k * tile + i] = w(a + i, k);
        const float* rows[kmax];
        for (std::size_t t = 0; t < L; ++t) {
            // Row of xs[t - K + 1 + k]: from the state for the first K-1 tokens, else from x.
            for (std::size_t k = 0; k < K; ++k) {
                const std::ptrdiff_t j = std::ptrdiff_t(t + k) - std::ptrdiff_t(K - 1);
                rows[k] = j >= 0 ? x.row(std::size_t(j)) : state.row(std::size_t(std::ptrdiff_t(K - 1) + j));
            }
            float* o = out.row(t);
            for (std::size_t i = 0; i < n; i += VL) {
                const std::size_t c = a + i;
                // out = silu(bias + sum_k w[k] * xs[t - K + 1 + k])
                Bt acc = bias.empty() ? Bt(0.0f) : simd::load<Arch>(bias.data() + c);
                for (std::size_t k = 0; k < K; ++k)
                    acc = simd::fma<Arch>(simd::load<Arch>(wt + k * tile + i), simd::load<Arch>(rows[k] + c), acc);
                if (stream)
                    simd::store_stream<Arch>(o + c, math::silu<Arch>(acc));
                else
                    simd::store<Arch>(o + c, math::silu<Arch>(acc));
            }
        }
        if (stream) simd::stream_fence();
        // state <- last K-1 of (state ++ x); the source row is never before the destination row.
        for (std::size_t j = 0; j + 1 < K; ++j) {
            const std::ptrdiff_t s = std::ptrdiff_t(L + j) - std::ptrdiff_t(K - 1);
            const float* src = s >= 0 ? x.row(std::size_t(s)) : state.row(L + j);
            float* dst = state.row(j);
            for (std::size_t i = 0; i < n; i += VL) simd::store<Arch>(dst + a + i, simd::load<Arch>(src + a + i));
        }
    }
}
#endif

// Channels [c0, c1): SIMD over whole batches of channels, scalar over the rest.
template <class Arch>
void conv1d_channels(MatrixView<const float> x, MatrixView<const float> w, std::span<const float> bias,
                     MatrixView<float> state, MatrixView<float> out, std::size_t c0, std::size_t c1) {
    std::size_t cv = c0;
#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
    constexpr std::size_t VL = simd::width<Arch>;
    const std::size_t nv = (c1 - c0) / VL * VL;
    if (nv && w.cols == 4) {
        conv1d_simd_channels<4, Arch>(x, w, bias, state, out, c0, c0 + nv);
        cv = c0 + nv;
    } else if (nv && w.cols <= 64) {
        conv1d_simd_channels<0, Arch>(x, w, bias, state, out, c0, c0 + nv);
        cv = c0 + nv;
    }
#endif
    if (cv < c1) conv1d_scalar_channels(x, w, bias, state, out, cv, c1);
}

inline constexpr std::size_t conv1d_block = 16;  // channels per work item: whole SIMD batches at any width up to 512 bits

}  // namespace detail

/// Causal depthwise conv1d + bias + SiLU over L tokens, continuing from `state` and leaving the last K-1 inputs
/// in it (layouts at the top of this file). x [L, d_inner], w [d_inner, K], bias [d_inner] or empty,
/// state [K-1, d_inner] (in/out), out [L, d_inner]. Fast path for K = 4; any K >= 1 works.
/// Threads split channels, so results do not depend on the thread count.
template <Executor Exec, class Arch = simd::default_arch>
void causal_conv1d(MatrixView<const float> x, MatrixView<const float> w, std::span<const float> bias,
                   MatrixView<float> state, MatrixView<float> out, Exec& exec) {
    detail::conv1d_check("causal_conv1d", x, w, bias, state, out);
    const std::size_t d = w.rows;
    if (d == 0) return;
    const std::size_t nb = (d + detail::conv1d_block - 1) / detail::conv1d_block;
    // Enough tokens x channels per chunk to pay for a dispatch (~10 us).
    const std::size_t grain = std::max<std::size_t>(1, (std::size_t(1) << 16) / ((x.rows + 1) * detail::conv1d_block * w.cols));
    exec.parallel_for(nb, grain, [&](std::size_t b0, std::size_t b1) {
        detail::conv1d_channels<Arch>(x, w, bias, state, out, b0 * detail::conv1d_block,
                                      std::min(d, b1 * detail::conv1d_block));
    });
}

inline void causal_conv1d(MatrixView<const float> x, MatrixView<const float> w, std::span<const float> bias,
                          MatrixView<float> state, MatrixView<float> out) {
    SerialExecutor serial;
    causal_conv1d(x, w, bias, state, out, serial);
}

/// One decode step: out[d] = silu(bias[d] + sum_{k<K-1} w[d,k] state[k,d] + w[d,K-1] x[d]), then the state
/// shifts by one and takes x. x [d_inner], w [d_inner, K], bias [d_inner] or empty, state [K-1, d_inner], out [d_inner].
/// No allocation. Bit-identical to causal_conv1d over one token.
template <Executor Exec, class Arch = simd::default_arch>
void causal_conv1d_step(std::span<const float> x, MatrixView<const float> w, std::span<const float> bias,
                        MatrixView<float> state, std::span<float> out, Exec& exec) {
    check_size("causal_conv1d_step: x", x, w.rows);
    check_size("causal_conv1d_step: out", out, w.rows);
    causal_conv1d<Exec, Arch>(MatrixView<const float>(x.data(), 1, x.size()), w, bias, state,
                              MatrixView<float>(out.data(), 1, out.size()), exec);
}

inline void causal_conv1d_step(std::span<const float> x, MatrixView<const float> w, std::span<const float> bias,
                               MatrixView<float> state, std::span<float> out) {
    SerialExecutor serial;
    causal_conv1d_step(x, w, bias, state, out, serial);
}

// GCC 12 turns the state update below into memmove/memcpy calls and, on a path its value ranges
// cannot exclude (K = 0, which conv1d_check refuses), warns of a size of 2^64 - 4 bytes.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#endif
/// Plain scalar reference (double accumulation), same layouts and state semantics as causal_conv1d.
inline void causal_conv1d_reference(MatrixView<const float> x, MatrixView<const float> w, std::span<const float> bias,
                                    MatrixView<float> state, MatrixView<float> out) {
    detail::conv1d_check("causal_conv1d_reference", x, w, bias, state, out);
    const std::size_t L = x.rows, d = w.rows, K = w.cols;
    auto xs = [&](std::ptrdiff_t j, std::size_t c) {  // xs = state ++ x
        return j >= 0 ? double(x(std::size_t(j), c)) : double(state(std::size_t(std::ptrdiff_t(K - 1) + j), c));
    };
    for (std::size_t t = 0; t < L; ++t)
        for (std::size_t c = 0; c < d; ++c) {
            // out = silu(bias + sum_k w[k] * xs[t - K + 1 + k])
            double acc = bias.empty() ? 0.0 : bias[c];
            for (std::size_t k = 0; k < K; ++k) acc += double(w(c, k)) * xs(std::ptrdiff_t(t + k) - std::ptrdiff_t(K - 1), c);
            out(t, c) = float(acc / (1.0 + std::exp(-acc)));
        }
    for (std::size_t j = 0; j + 1 < K; ++j)
        for (std::size_t c = 0; c < d; ++c) state(j, c) = float(xs(std::ptrdiff_t(L + j) - std::ptrdiff_t(K - 1), c));
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

}  // namespace hystack::kernels
