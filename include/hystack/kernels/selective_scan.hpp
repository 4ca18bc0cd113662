#pragma once
#include "../core/module.hpp"

// Mamba-1 selective scan (S6), as state-spaces/mamba's selective_scan_ref with delta_softplus = True.
//
// Per channel d < d_inner, state n < d_state, token t < L:
//   dt = softplus(delta[t,d] + dt_bias[d])
//   h[d,n] = exp(dt * A[d,n]) * h[d,n] + dt * B[t,n] * u[t,d]
//   y[t,d] = sum_n h[d,n] * C[t,n] + D[d] * u[t,d];   out[t,d] = y[t,d] * silu(z[t,d])
//
// Layouts (token-major: what the mixer's projections produce; rows may be strided):
//   u, delta, z, out [L, d_inner]   (z may be empty: no gate)
//   B, C             [L, d_state]
//   A                [d_inner, d_state]  already negative (A = -exp(A_log))
//   D, dt_bias       [d_inner]           (either may be empty: zero)
//   state            [d_inner, d_state]  h, in/out: the state before the first token (zeros for a new sequence),
//                                        replaced by the state after the last
// out must not alias any input. Golden files from state-spaces/mamba are channel-major ([d_inner, L]):
// transpose them first.
//
// Prefill: SIMD across channels. A block of VL channels (VL = SIMD width, 16 with AVX-512) keeps h for all its
// states in registers over the whole token loop (d_state = 16: 16 batches), so per element the work is one
// vector exp and three multiply-adds; threads split channel blocks. d_state = 16 is a compile-time fast path;
// other sizes run the same code with states in groups of at most 16 (h on the stack, y accumulated in out).
// Decode step: SIMD across states, one channel at a time (the state row is contiguous).
// exp(dt*A) <= 1 for A <= 0, dt >= 0, so h stays bounded over any number of tokens.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <string>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/math.hpp"
#include "../core/simd.hpp"
#include "../core/view.hpp"

// Full unrolling of the loop over a compile-time number of states keeps h in registers.
#if defined(__clang__)
#define HYSTACK_SCAN_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define HYSTACK_SCAN_UNROLL _Pragma("GCC unroll 32")
#else
#define HYSTACK_SCAN_UNROLL
#endif

namespace hystack::kernels {

namespace detail {

struct ScanArgs {
    MatrixView<const float> u, delta, A, B, C, z;  // z: rows == 0 when absent
    std::span<const float> D, dt_bias;
    MatrixView<float> state, out;
    bool has_z() const { return z.data != nullptr || z.rows != 0 || z.cols != 0; }
};

inline void scan_check(const char* fn, const ScanArgs& a) {
    const std::size_t d = a.A.rows, n = a.A.cols, L = a.u.rows;
    check_shape(ArgName{fn, "u"}, a.u, any, d);
    check_shape(ArgName{fn, "delta"}, a.delta, L, d);
    check_shape(ArgName{fn, "B"}, a.B, L, n);
    check_shape(ArgName{fn, "C"}, a.C, L, n);
    if (a.has_z()) check_shape(ArgName{fn, "z"}, a.z, L, d);
    check(a.D.empty() || a.D.size() == d, fn, ": D: expected [", d, "] or empty, got [", a.D.size(), "]");
    check(a.dt_bias.empty() || a.dt_bias.size() == d, fn, ": dt_bias: expected [", d, "] or empty, got [",
          a.dt_bias.size(), "]");
    check_shape(ArgName{fn, "state"}, a.state, d, n);
    check_shape(ArgName{fn, "out"}, a.out, L, d);
}

// One channel, all tokens, scalar; h is the channel's state row. Used for channels outside whole SIMD blocks.
inline void scan_scalar_channel(const ScanArgs& a, std::size_t c) {
    const std::size_t L = a.u.rows, N = a.A.cols;
    float* h = a.state.row(c);      // [d_state]
    const float* Ac = a.A.row(c);   // [d_state]
    const float bias = a.dt_bias.empty() ? 0.0f : a.dt_bias[c];
    const float Dc = a.D.empty() ? 0.0f : a.D[c];
    for (std::size_t t = 0; t < L; ++t) {
        // dt = softplus(delta + bias); h = exp(dt*A) h + (dt*u) B; y = h.C + D u; out = y silu(z)
        const float uu = a.u(t, c);
        const float dt = math::softplus(a.delta(t, c) + bias);
        const float dtu = dt * uu;
        const float* Bt = a.B.row(t);  // [d_state]
        const float* Ct = a.C.row(t);  // [d_state]
        float y = 0.0f;
        for (std::size_t n = 0; n < N; ++n) {
            h[n] = std::fma(math::exp(dt * Ac[n]), h[n], dtu * Bt[n]);
            y = std::fma(h[n], Ct[n], y);
        }
        y = std::fma(Dc, uu, y);
        if (a.has_z()) y *= math::silu(a.z(t, c));
        a.out(t, c) = y;
    }
}

using simd::prefetch;
inline constexpr std::size_t scan_prefetch_distance = 8;  // tokens: ~1.5 us of work at d_state 16, past DRAM latency

#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
// One block of VL channels [c, c+VL), states [n0, n0+ng), all tokens. NS > 0: ng == NS at compile time (h in
// registers). first: y starts at 0 (else from out, the previous groups' partial sums); last: apply D and z.
template <std::size_t NS, class Arch>
void scan_block(const ScanArgs& a, std::size_t c, std::size_t n0, std::size_t ng, bool first, bool last) {
    using Bt = simd::batch<Arch>;
    constexpr std::size_t VL = simd::width<Arch>;
    constexpr std::size_t G = NS ? NS : 16;
    if constexpr (NS != 0) ng = NS;
    // Callers pass ng <= G; saying so keeps GCC from seeing At/Ht read past G * VL in the unrolled loops below.
    ng = std::min(ng, G);
    const std::size_t L = a.u.rows;
    // A and h for the block, transposed to [state][channel] so each state is one batch across channels.
    alignas(64) float At[G * VL], Ht[G * VL];
    for (std::size_t i = 0; i < VL; ++i)
        for (std::size_t n = 0; n < ng; ++n) {
            At[n * VL + i] = a.A(c + i, n0 + n);
            Ht[n * VL + i] = a.state(c + i, n0 + n);
        }
    Bt h[G];
    HYSTACK_SCAN_UNROLL
    for (std::size_t n = 0; n < ng; ++n) h[n] = simd::load_aligned<Arch>(Ht + n * VL);
    const Bt bias = a.dt_bias.empty() ? Bt(0.0f) : simd::load<Arch>(a.dt_bias.data() + c);
    const Bt Dv = a.D.empty() ? Bt(0.0f) : simd::load<Arch>(a.D.data() + c);
    const bool has_z = a.has_z();
    for (std::size_t t = 0; t < L; ++t) {
        // A block walks down columns (one cache line per row, a new page per row at d_inner >= 1024), which the
        // hardware prefetchers miss: fetch the rows a few tokens ahead ourselves.
        if (t + scan_prefetch_distance < L) {
            const std::size_t tp = t + scan_prefetch_distance;
            prefetch(a.u.row(tp) + c);
            prefetch(a.delta.row(tp) + c);
            if (has_z) prefetch(a.z.row(tp) + c);
            prefetch(a.out.row(tp) + c);
        }
        // dt = softplus(delta + bias); h = exp(dt*A) h + (dt*u) B; y = h.C + D u; out = y silu(z)
        const Bt uu = simd::load<Arch>(a.u.row(t) + c);
        const Bt dt = math::softplus<Arch>(simd::load<Arch>(a.delta.row(t) + c) + bias);
        const Bt dtu = dt * uu;
        const float* Bp = a.B.row(t) + n0;  // [ng]
        const float* Cp = a.C.row(t) + n0;  // [ng]
        // Two accumulators halve the dependency chain of the sum over states. (No lambda here: h must not escape,
        // or the compiler keeps it in memory.)
        Bt y0(0.0f), y1(0.0f);
        if constexpr (NS != 0 && NS % 2 == 0) {
            HYSTACK_SCAN_UNROLL
            for (std::size_t n = 0; n < NS; n += 2) {
                const Bt dA0 = math::exp_nonpos<Arch>(dt * simd::load_aligned<Arch>(At + n * VL));
                h[n] = simd::fma<Arch>(dA0, h[n], dtu * Bt(Bp[n]));
                y0 = simd::fma<Arch>(h[n], Bt(Cp[n]), y0);
                const Bt dA1 = math::exp_nonpos<Arch>(dt * simd::load_aligned<Arch>(At + (n + 1) * VL));
                h[n + 1] = simd::fma<Arch>(dA1, h[n + 1], dtu * Bt(Bp[n + 1]));
                y1 = simd::fma<Arch>(h[n + 1], Bt(Cp[n + 1]), y1);
            }
        } else {
            for (std::size_t n = 0; n < ng; ++n) {
                const Bt dA = math::exp_nonpos<Arch>(dt * simd::load_aligned<Arch>(At + n * VL));
                h[n] = simd::fma<Arch>(dA, h[n], dtu * Bt(Bp[n]));
                y0 = simd::fma<Arch>(h[n], Bt(Cp[n]), y0);
            }
        }
        Bt y = y0 + y1;
        float* o = a.out.row(t) + c;
        if (!first) y += simd::load<Arch>(o);
        if (last) {
            y = simd::fma<Arch>(Dv, uu, y);
            if (has_z) y *= math::silu<Arch>(simd::load<Arch>(a.z.row(t) + c));
        }
        simd::store<Arch>(o, y);
    }
    HYSTACK_SCAN_UNROLL
    for (std::size_t n = 0; n < ng; ++n) simd::store<Arch>(Ht + n * VL, h[n]);
    for (std::size_t i = 0; i < VL; ++i)
        for (std::size_t n = 0; n < ng; ++n) a.state(c + i, n0 + n) = Ht[n * VL + i];
}

// Prefill of channels [c0, c0 + VL).
template <class Arch>
void scan_block_all_states(const ScanArgs& a, std::size_t c) {
    const std::size_t N = a.A.cols;
    if (N == 16) {
        scan_block<16, Arch>(a, c, 0, 16, true, true);
        return;
    }
    if (N == 0) {  // y = D u only
        scan_block<0, Arch>(a, c, 0, 0, true, true);
        return;
    }
    for (std::size_t n0 = 0; n0 < N; n0 += 16)
        scan_block<0, Arch>(a, c, n0, std::min<std::size_t>(16, N - n0), n0 == 0, n0 + 16 >= N);
}

// Decode step of channels [c, c+VL): SIMD across states (contiguous in the state row), one channel at a time.
template <class Arch>
void scan_step_block(const ScanArgs& a, std::size_t c) {
    using Bt = simd::batch<Arch>;
    constexpr std::size_t VL = simd::width<Arch>;
    const std::size_t N = a.A.cols;
    const float* Bp = a.B.row(0);  // [d_state]
    const float* Cp = a.C.row(0);  // [d_state]
    const Bt uu = simd::load<Arch>(a.u.row(0) + c);
    const Bt bias = a.dt_bias.empty() ? Bt(0.0f) : simd::load<Arch>(a.dt_bias.data() + c);
    const Bt dtv = math::softplus<Arch>(simd::load<Arch>(a.delta.row(0) + c) + bias);
    alignas(64) float dts[VL], dtus[VL], ys[VL];
    simd::store<Arch>(dts, dtv);
    simd::store<Arch>(dtus, dtv * uu);
    for (std::size_t i = 0; i < VL; ++i) {
        float* h = a.state.row(c + i);     // [d_state]
        const float* Ac = a.A.row(c + i);  // [d_state]
        // h = exp(dt*A) h + (dt*u) B; y = h.C
        const Bt dt(dts[i]), dtu(dtus[i]);
        Bt acc(0.0f);
        std::size_t n = 0;
        for (; n + VL <= N; n += VL) {
            const Bt hv = simd::fma<Arch>(math::exp_nonpos<Arch>(dt * simd::load<Arch>(Ac + n)), simd::load<Arch>(h + n),
                                          dtu * simd::load<Arch>(Bp + n));
            simd::store<Arch>(h + n, hv);
            acc = simd::fma<Arch>(hv, simd::load<Arch>(Cp + n), acc);
        }
        float y = n ? simd::reduce_add<Arch>(acc) : 0.0f;
        for (; n < N; ++n) {
            h[n] = std::fma(math::exp(dts[i] * Ac[n]), h[n], dtus[i] * Bp[n]);
            y = std::fma(h[n], Cp[n], y);
        }
        ys[i] = y;
    }
    // out = (y + D u) silu(z)
    const Bt Dv = a.D.empty() ? Bt(0.0f) : simd::load<Arch>(a.D.data() + c);
    Bt y = simd::fma<Arch>(Dv, uu, simd::load_aligned<Arch>(ys));
    if (a.has_z()) y *= math::silu<Arch>(simd::load<Arch>(a.z.row(0) + c));
    simd::store<Arch>(a.out.row(0) + c, y);
}
#endif

inline constexpr std::size_t scan_block_width = 16;  // channels per work item: whole SIMD batches up to 512 bits

// Channels [c0, c1) over all tokens: SIMD blocks, scalar for what is left. step: one token, decode layout.
template <class Arch>
void scan_channels(const ScanArgs& a, std::size_t c0, std::size_t c1, bool step) {
    std::size_t c = c0;
#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
    constexpr std::size_t VL = simd::width<Arch>;
    for (; c + VL <= c1; c += VL) {
        if (step)
            scan_step_block<Arch>(a, c);
        else
            scan_block_all_states<Arch>(a, c);
    }
#endif
    for (; c < c1; ++c) scan_scalar_channel(a, c);
}

template <class Arch, Executor Exec>
void scan_run(const ScanArgs& a, bool step, Exec& exec) {
    const std::size_t d = a.A.rows;
    if (d == 0) return;
    const std::size_t nb = (d + scan_block_width - 1) / scan_block_width;
    // Enough tokens x channels x states per chunk to pay for a dispatch (~10 us).
    const std::size_t work = (a.u.rows ? a.u.rows : 1) * scan_block_width * (a.A.cols + 4);
    const std::size_t grain = std::max<std::size_t>(1, (std::size_t(1) << 15) / work);
    exec.parallel_for(nb, grain, [&](std::size_t b0, std::size_t b1) {
        scan_channels<Arch>(a, b0 * scan_block_width, std::min(d, b1 * scan_block_width), step);
    });
}

}  // namespace detail

/// Selective scan over L tokens from `state` (layouts at the top of this file): u, delta [L, d_inner],
/// dt_bias [d_inner] or empty, A [d_inner, d_state], B, C [L, d_state], D [d_inner] or empty,
/// z [L, d_inner] or an empty view (no gate), state [d_inner, d_state] (in/out), out [L, d_inner].
/// Any d_state (fast path 16); threads split channels, so results do not depend on the thread count.
template <Executor Exec, class Arch = simd::default_arch>
void selective_scan(MatrixView<const float> u, MatrixView<const float> delta, std::span<const float> dt_bias,
                    MatrixView<const float> A, MatrixView<const float> B, MatrixView<const float> C,
                    std::span<const float> D, MatrixView<const float> z, MatrixView<float> state, MatrixView<float> out,
                    Exec& exec) {
    const detail::ScanArgs a{u, delta, A, B, C, z, D, dt_bias, state, out};
    detail::scan_check("selective_scan", a);
    detail::scan_run<Arch>(a, false, exec);
}

inline void selective_scan(MatrixView<const float> u, MatrixView<const float> delta, std::span<const float> dt_bias,
                           MatrixView<const float> A, MatrixView<const float> B, MatrixView<const float> C,
                           std::span<const float> D, MatrixView<const float> z, MatrixView<float> state,
                           MatrixView<float> out) {
    SerialExecutor serial;
    selective_scan(u, delta, dt_bias, A, B, C, D, z, state, out, serial);
}

/// One decode step: u, delta, z, out [d_inner] (z may be empty), B, C [d_state], the rest as selective_scan.
/// Updates state in place; no allocation. Matches selective_scan over one token up to rounding (the sum over
/// states runs in another order).
template <Executor Exec, class Arch = simd::default_arch>
void selective_scan_step(std::span<const float> u, std::span<const float> delta, std::span<const float> dt_bias,
                         MatrixView<const float> A, std::span<const float> B, std::span<const float> C,
                         std::span<const float> D, std::span<const float> z, MatrixView<float> state,
                         std::span<float> out, Exec& exec) {
    const std::size_t d = A.rows, n = A.cols;
    check_size("selective_scan_step: u", u, d);
    check_size("selective_scan_step: delta", delta, d);
    check_size("selective_scan_step: B", B, n);
    check_size("selective_scan_step: C", C, n);
    check(z.empty() || z.size() == d, "selective_scan_step: z: expected [", d, "] or empty, got [", z.size(), "]");
    check_size("selective_scan_step: out", out, d);
    auto row = [](std::span<const float> s) { return MatrixView<const float>(s.data(), 1, s.size()); };
    const detail::ScanArgs a{row(u), row(delta), A, row(B), row(C),
                             z.empty() ? MatrixView<const float>() : row(z), D, dt_bias, state,
                             MatrixView<float>(out.data(), 1, out.size())};
    detail::scan_check("selective_scan_step", a);
    detail::scan_run<Arch>(a, true, exec);
}

inline void selective_scan_step(std::span<const float> u, std::span<const float> delta, std::span<const float> dt_bias,
                                MatrixView<const float> A, std::span<const float> B, std::span<const float> C,
                                std::span<const float> D, std::span<const float> z, MatrixView<float> state,
                                std::span<float> out) {
    SerialExecutor serial;
    selective_scan_step(u, delta, dt_bias, A, B, C, D, z, state, out, serial);
}

/// Plain scalar reference in double (selective_scan_ref's order: h = exp(dt A) h + (dt B) u), same arguments and
/// state semantics as selective_scan.
inline void selective_scan_reference(MatrixView<const float> u, MatrixView<const float> delta,
                                     std::span<const float> dt_bias, MatrixView<const float> A,
                                     MatrixView<const float> B, MatrixView<const float> C, std::span<const float> D,
                                     MatrixView<const float> z, MatrixView<float> state, MatrixView<float> out) {
    const detail::ScanArgs a{u, delta, A, B, C, z, D, dt_bias, state, out};
    detail::scan_check("selective_scan_reference", a);
    const std::size_t L = u.rows, d = A.rows, N = A.cols;
    for (std::size_t c = 0; c < d; ++c)
        for (std::size_t t = 0; t < L; ++t) {
            const double x = double(delta(t, c)) + (dt_bias.empty() ? 0.0 : dt_bias[c]);
            const double dt = x > 20.0 ? x : std::log1p(std::exp(x));  // softplus, PyTorch's threshold
            double y = 0;
            for (std::size_t n = 0; n < N; ++n) {
                const double h = std::exp(dt * A(c, n)) * state(c, n) + dt * B(t, n) * u(t, c);
                state(c, n) = float(h);
                y += h * C(t, n);
            }
            y += (D.empty() ? 0.0 : D[c]) * u(t, c);
            if (a.has_z()) y *= double(z(t, c)) / (1.0 + std::exp(-double(z(t, c))));
            out(t, c) = float(y);
        }
}

}  // namespace hystack::kernels

#undef HYSTACK_SCAN_UNROLL
