#pragma once
#include "../core/module.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/view.hpp"
#include "../core/weight.hpp"
#include "linear.hpp"
#include "linear_typed.hpp"
#include "project.hpp"

namespace hystack::kernels {

// Mixture of experts as HuggingFace's Jamba computes it: p = softmax(x router^T) over all experts
// in fp32, the top-k of p (ties to the lower expert index, highest first), out = sum over the chosen
// experts of p_e * expert_e(x) with p_e as it is (Jamba) or divided by the sum of the chosen k
// (Mixtral; `renormalize`). expert(x) = down(silu(gate x) * up x).
//
// Prefill runs each expert as GEMMs over the bucket of tokens routed to it (gathered by index, no
// copy): one fused gate/up pass, then down with the weighted sum scattered into y. Experts run in
// ascending order and each output element is owned by one thread inside an expert's GEMM, so every
// token's sum is accumulated in ascending expert order whatever the thread count. Decode is the same
// code with buckets of one token: only the chosen experts' weights are read, once.

/// Router: per row of logits [L, E], p = softmax(logits) in fp32; index [L, k] gets the k most
/// probable experts (highest first, ties to the lower index), weight [L, k] their p (divided by the
/// sum of the k when `renormalize`). When prob_sum [E] is given, prob_sum[e] += sum over rows of p_e
/// (for router statistics).
inline void moe_route(MatrixView<const float> logits, bool renormalize, MatrixView<std::uint32_t> index,
                      MatrixView<float> weight, std::span<double> prob_sum = {}) {
    const std::size_t L = logits.rows, E = logits.cols, k = index.cols;
    check(k >= 1 && k <= E, "moe_route: top_k: expected 1..", E, ", got ", k);
    check_shape("moe_route: index", index, L, any);
    check_shape("moe_route: weight", weight, L, k);
    check(prob_sum.empty() || prob_sum.size() == E, "moe_route: prob_sum: expected [", E, "] or empty, got [",
          prob_sum.size(), "]");
    constexpr std::size_t stack_experts = 256;
    check(E <= stack_experts, "moe_route: at most ", stack_experts, " experts, got ", E);
    float p[stack_experts];
    bool taken[stack_experts];
    for (std::size_t t = 0; t < L; ++t) {
        const float* lg = logits.row(t);  // logits [E]
        // p = exp(l - max) / sum
        float mx = lg[0];
        for (std::size_t e = 1; e < E; ++e) mx = lg[e] > mx ? lg[e] : mx;
        float s = 0.0f;
        for (std::size_t e = 0; e < E; ++e) {
            p[e] = std::exp(lg[e] - mx);
            s += p[e];
        }
        const float inv = 1.0f / s;
        for (std::size_t e = 0; e < E; ++e) {
            p[e] *= inv;
            taken[e] = false;
            if (!prob_sum.empty()) prob_sum[e] += p[e];
        }
        // top-k by selection: strict > keeps the lower index on ties
        float chosen = 0.0f;
        for (std::size_t j = 0; j < k; ++j) {
            std::size_t best = E;
            for (std::size_t e = 0; e < E; ++e)
                if (!taken[e] && (best == E || p[e] > p[best])) best = e;
            taken[best] = true;
            index(t, j) = std::uint32_t(best);
            weight(t, j) = p[best];
            chosen += p[best];
        }
        if (renormalize)
            for (std::size_t j = 0; j < k; ++j) weight(t, j) /= chosen;
    }
}

/// Tokens grouped by expert (a counting sort; tokens ascending inside each bucket).
/// index, weight [L, k] from moe_route; offsets [E + 1]; token, token_weight [L * k]:
/// bucket e is token[offsets[e] .. offsets[e+1]) with the routing weights token_weight[...].
inline void moe_bucket(MatrixView<const std::uint32_t> index, MatrixView<const float> weight, std::size_t E,
                       std::span<std::uint32_t> offsets, std::span<std::uint32_t> token, std::span<float> token_weight) {
    const std::size_t L = index.rows, k = index.cols;
    check_shape("moe_bucket: weight", weight, L, k);
    check_size("moe_bucket: offsets", offsets, E + 1);
    check_size("moe_bucket: token", token, L * k);
    check_size("moe_bucket: token_weight", token_weight, L * k);
    for (auto& o : offsets) o = 0;
    for (std::size_t t = 0; t < L; ++t)
        for (std::size_t j = 0; j < k; ++j) {
            check(index(t, j) < E, "moe_bucket: expert index ", index(t, j), " out of range [0, ", E, ")");
            ++offsets[index(t, j) + 1];
        }
    for (std::size_t e = 0; e < E; ++e) offsets[e + 1] += offsets[e];
    // fill: offsets[e] walks through bucket e, then is restored by the shift below
    for (std::size_t t = 0; t < L; ++t)
        for (std::size_t j = 0; j < k; ++j) {
            const std::uint32_t e = index(t, j), at = offsets[e]++;
            token[at] = std::uint32_t(t);
            token_weight[at] = weight(t, j);
        }
    for (std::size_t e = E; e > 0; --e) offsets[e] = offsets[e - 1];
    offsets[0] = 0;
}

/// The weights of one SwiGLU expert: gate, up [hidden, d_model], down [d_model, hidden], of one type.
struct SwiGLUWeights {
    WeightView gate, up, down;
};

/// Expert dispatch: y[t] = sum over the buckets holding t, in ascending expert order, of
/// w * down_e(silu(gate_e x[t]) * up_e x[t]). x [L, d]; buckets from moe_bucket; experts(e) returns the
/// SwiGLUWeights of expert e; y [L, d] is overwritten; h is workspace of at least
/// (largest bucket) x hidden floats. Threads split the features of each expert's GEMMs.
template <Executor Exec, class Experts, class Arch = simd::default_arch>
void moe_experts(MatrixView<const float> x, std::span<const std::uint32_t> offsets, std::span<const std::uint32_t> token,
                 std::span<const float> token_weight, Experts&& experts, MatrixView<float> y, std::span<float> h,
                 Exec& exec) {
    const std::size_t E = offsets.size() - 1, d = x.cols;
    check_shape("moe_experts: y", y, x.rows, d);
    for (std::size_t r = 0; r < y.rows; ++r)
        for (std::size_t c = 0; c < d; ++c) y(r, c) = 0.0f;
    for (std::size_t e = 0; e < E; ++e) {
        const std::size_t b0 = offsets[e], n = offsets[e + 1] - b0;
        if (n == 0) continue;  // an expert that received no token reads no weights
        const SwiGLUWeights w = experts(e);
        const std::size_t H = w.gate.rows;
        check(w.gate.cols == d && w.up.rows == H && w.up.cols == d && w.down.rows == d && w.down.cols == H,
              "moe_experts: expert ", e, ": expected gate, up [H, ", d, "] and down [", d, ", H], got [", w.gate.rows,
              ", ", w.gate.cols, "], [", w.up.rows, ", ", w.up.cols, "], [", w.down.rows, ", ", w.down.cols, "]");
        check(w.gate.type == w.up.type, "moe_experts: expert ", e, ": gate is ", to_string(w.gate.type), ", up is ",
              to_string(w.up.type));
        check(h.size() >= n * H, "moe_experts: workspace: expected at least [", n * H, "], got [", h.size(), "]");
        MatrixView<float> he(h.data(), n, H);  // h [n, H]
        const std::uint32_t* tok = token.data() + b0;
        const float* tw = token_weight.data() + b0;
        auto xrow = [&](std::size_t m) { return x.row(tok[m]); };
        auto hrow = [&](std::size_t m) { return static_cast<const float*>(he.row(m)); };
        auto add = [&](std::size_t m, std::size_t c, float v) { y(tok[m], c) += tw[m] * v; };
        // h = silu(x_b gate^T) * (x_b up^T) over the bucket's rows of x (typed: x packed in scratch slot 0)
        if (w.gate.type == DType::f32)
            detail::swiglu_rows<Arch>(n, xrow, w.gate.f32(), w.up.f32(), he, exec);
        else
            detail::with_typed_dot<Arch>(w.gate.type, "moe_experts", [&]<class Dot>() {
                detail::typed_swiglu_rows<Dot>(n, xrow, w.gate, w.up, he, exec, 0);
            });
        // y[tok] += w * (h down^T) (typed: h packed in slot 1)
        if (w.down.type == DType::f32)
            detail::linear_rows<Arch>(n, hrow, w.down.f32(), add, exec);
        else
            detail::with_typed_dot<Arch>(w.down.type, "moe_experts", [&]<class Dot>() {
                detail::typed_linear_rows<Dot>(n, hrow, w.down, add, exec, 1);
            });
    }
}

/// Scalar reference of moe_experts, one routed token at a time: for each expert e in ascending order and
/// each token t of its bucket, y[t] += w * down_e(silu(gate_e x[t]) * up_e x[t]), every sum in index
/// order in float. Same arguments as moe_experts, without the workspace and the executor.
template <class Experts>
void moe_experts_reference(MatrixView<const float> x, std::span<const std::uint32_t> offsets,
                           std::span<const std::uint32_t> token, std::span<const float> token_weight,
                           Experts&& experts, MatrixView<float> y) {
    check(!offsets.empty(), "moe_experts_reference: offsets: expected [experts + 1], got []");
    const std::size_t E = offsets.size() - 1, d = x.cols;
    check_shape("moe_experts_reference: y", y, x.rows, d);
    // y = 0
    for (std::size_t r = 0; r < y.rows; ++r)
        for (std::size_t c = 0; c < d; ++c) y(r, c) = 0.0f;
    std::vector<float> g, u, h, o;  // [H], [H], [H], [d]
    for (std::size_t e = 0; e < E; ++e) {
        if (offsets[e] == offsets[e + 1]) continue;
        const SwiGLUWeights w = experts(e);
        const std::size_t H = w.gate.rows;
        check(w.gate.cols == d && w.up.rows == H && w.up.cols == d && w.down.rows == d && w.down.cols == H,
              "moe_experts_reference: expert ", e, ": shapes do not match d_model ", d);
        g.resize(H);
        u.resize(H);
        h.resize(H);
        o.resize(d);
        for (std::size_t b = offsets[e]; b < offsets[e + 1]; ++b) {
            const std::size_t t = token[b];
            // h = silu(gate x[t]) * (up x[t])
            const MatrixView<const float> xt(x.row(t), 1, d);
            project_reference(xt, w.gate, {}, MatrixView<float>(g.data(), 1, H));
            project_reference(xt, w.up, {}, MatrixView<float>(u.data(), 1, H));
            for (std::size_t n = 0; n < H; ++n) h[n] = g[n] / (1.0f + std::exp(-g[n])) * u[n];
            // y[t] += weight * (down h)
            project_reference(MatrixView<const float>(h.data(), 1, H), w.down, {}, MatrixView<float>(o.data(), 1, d));
            for (std::size_t c = 0; c < d; ++c) y(t, c) += token_weight[b] * o[c];
        }
    }
}

}  // namespace hystack::kernels
