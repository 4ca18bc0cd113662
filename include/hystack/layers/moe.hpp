#pragma once
#include "../core/module.hpp"

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/param.hpp"
#include "../core/view.hpp"
#include "../core/workspace.hpp"
#include "../core/weight.hpp"
#include "../kernels/linear.hpp"
#include "../kernels/project.hpp"
#include "../kernels/moe.hpp"
#include "stateless.hpp"

namespace hystack {

struct SparseMoEConfig {
    std::size_t d_model = 0;
    std::size_t hidden = 0;       // each expert's intermediate_size
    std::size_t num_experts = 0;  // HF num_experts
    std::size_t top_k = 2;        // HF num_experts_per_tok
    bool renormalize = false;     // Jamba: false; Mixtral-style: true
    DType weights = DType::f32;  // element type of the experts' weight matrices (the router stays f32) (one whose rows do not fit stays f32)
};

/// Routing figures of the last call (prefill, step or step_batch).
struct RouterStats {
    std::size_t tokens = 0;                      // tokens routed
    std::vector<std::size_t> tokens_per_expert;  // [num_experts]: tokens that chose expert e
    std::vector<double> mean_prob;               // [num_experts]: mean over tokens of p_e
    /// Switch-style load balancing value num_experts * sum_e fraction_e * mean_prob_e with
    /// fraction_e = tokens_per_expert[e] / tokens (as HF's load_balancing_loss_func, which sums over
    /// the top-k slots): top_k for perfectly uniform routing, larger when routing is skewed.
    double load_balancing = 0.0;
};

/// Sparse mixture of SwiGLU experts (HF JambaSparseMoeBlock): router (no bias), softmax over all
/// experts in fp32, top-k (ties to the lower index), weights not renormalised unless configured.
/// Weights: "router.weight" [num_experts, d_model], "experts.{e}.gate_proj.weight" and
/// "experts.{e}.up_proj.weight" [hidden, d_model], "experts.{e}.down_proj.weight" [d_model, hidden].
/// Stateless: forward() reads only the weights and the caller's workspace (routing buffers, the
/// expert hidden rows and the routing figures of the caller's last call), grown on demand, so a step
/// allocates nothing once a call of at least its size has run.
class SparseMoE : public StatelessLayer<SparseMoE> {
public:
    static constexpr const char* name = "SparseMoE";

    /// Scratch of one caller, and the routing of its last call.
    struct Work {
        Buffer<float> logits;                // [L, E]
        Buffer<std::uint32_t> index;         // [L, k]
        Buffer<float> weight;                // [L, k]
        Buffer<std::uint32_t> offsets;       // [E + 1]
        Buffer<std::uint32_t> token;         // [L * k] tokens by expert
        Buffer<float> token_weight;          // [L * k]
        Buffer<float> h;                     // [largest bucket, hidden]
        std::vector<double> prob_sum;        // [E]
        RouterStats stats;
    };

    explicit SparseMoE(const SparseMoEConfig& cfg)
        : cfg_(cfg),
          router_(cfg.num_experts, cfg.d_model),
          gate_(cfg.num_experts * cfg.hidden, cfg.d_model, fitting_type(cfg.weights, cfg.d_model)),
          up_(cfg.num_experts * cfg.hidden, cfg.d_model, fitting_type(cfg.weights, cfg.d_model)),
          down_(cfg.num_experts * cfg.d_model, cfg.hidden, fitting_type(cfg.weights, cfg.hidden)) {
        check(cfg.d_model > 0 && cfg.hidden > 0 && cfg.num_experts > 0,
              "SparseMoE: d_model, hidden and num_experts must be positive, got ", cfg.d_model, ", ", cfg.hidden, ", ",
              cfg.num_experts);
        check(cfg.top_k >= 1 && cfg.top_k <= cfg.num_experts, "SparseMoE: top_k: expected 1..", cfg.num_experts, ", got ",
              cfg.top_k);
        reserve(own_workspace(), 1);  // the convenience step never allocates
    }

    const SparseMoEConfig& config() const { return cfg_; }

    ParamList params() {
        ParamList p;
        p.push_back({"router.weight", {cfg_.num_experts, cfg_.d_model}, router_.span()});
        for (std::size_t e = 0; e < cfg_.num_experts; ++e) {
            const std::string pre = "experts." + std::to_string(e) + ".";
            p.push_back(expert_param(gate_, e, cfg_.hidden, pre + "gate_proj.weight"));
            p.push_back(expert_param(up_, e, cfg_.hidden, pre + "up_proj.weight"));
            p.push_back(expert_param(down_, e, cfg_.d_model, pre + "down_proj.weight"));
        }
        return p;
    }
    MatrixView<float> router_weight() { return router_.view(); }
    /// Expert e's weights, writable (f32): gate, up [hidden, d_model]; down [d_model, hidden].
    MatrixView<float> gate_proj(std::size_t e) { return gate_.f32().rows_slice(e * cfg_.hidden, cfg_.hidden); }
    MatrixView<float> up_proj(std::size_t e) { return up_.f32().rows_slice(e * cfg_.hidden, cfg_.hidden); }
    MatrixView<float> down_proj(std::size_t e) { return down_.f32().rows_slice(e * cfg_.d_model, cfg_.d_model); }
    /// Expert e's weights as typed views.
    WeightView gate_proj(std::size_t e) const { return gate_.view().rows_slice(e * cfg_.hidden, cfg_.hidden); }
    WeightView up_proj(std::size_t e) const { return up_.view().rows_slice(e * cfg_.hidden, cfg_.hidden); }
    WeightView down_proj(std::size_t e) const { return down_.view().rows_slice(e * cfg_.d_model, cfg_.d_model); }

    /// y = sum over the top-k experts of w_e * expert_e(x), per row of x [L, d_model]; y [L, d_model]
    /// (written, must not alias x).
    template <Executor Exec>
    void forward(MatrixView<const float> x, MatrixView<float> y, Workspace& ws, Exec& exec) const {
        check_shape("SparseMoE: x", x, any, cfg_.d_model);
        check_shape("SparseMoE: y", y, x.rows, cfg_.d_model);
        const std::size_t L = x.rows, E = cfg_.num_experts, k = cfg_.top_k;
        Work& w = reserve(ws, L);
        // logits = x router^T; p = softmax; top-k
        MatrixView<float> logits(w.logits.data(), L, E);
        kernels::linear(x, router_.view(), {}, logits, exec);
        MatrixView<std::uint32_t> index(w.index.data(), L, k);
        MatrixView<float> weight(w.weight.data(), L, k);
        for (auto& s : w.prob_sum) s = 0.0;
        kernels::moe_route(logits, cfg_.renormalize, index, weight, w.prob_sum);
        // buckets, then the experts over their buckets
        kernels::moe_bucket(index, weight, E, w.offsets.span(), std::span<std::uint32_t>(w.token.data(), L * k),
                            std::span<float>(w.token_weight.data(), L * k));
        kernels::moe_experts(
            x, w.offsets.span(), std::span<const std::uint32_t>(w.token.data(), L * k),
            std::span<const float>(w.token_weight.data(), L * k),
            [&](std::size_t e) { return kernels::SwiGLUWeights{gate_proj(e), up_proj(e), down_proj(e)}; },
            y, w.h.span(),
            exec);
        update_stats(w, L);
    }
    /// Routing of the caller's last call: expert indices and weights [L, top_k], highest first.
    MatrixView<const std::uint32_t> last_topk_index(Workspace& ws) const {
        Work& w = ws.get<Work>();
        return {w.index.data(), w.stats.tokens, cfg_.top_k};
    }
    MatrixView<const float> last_topk_weight(Workspace& ws) const {
        Work& w = ws.get<Work>();
        return {w.weight.data(), w.stats.tokens, cfg_.top_k};
    }
    const RouterStats& router_stats(Workspace& ws) const { return ws.get<Work>().stats; }
    /// The same for the last call of the convenience entry points (prefill, step, step_batch).
    MatrixView<const std::uint32_t> last_topk_index() { return last_topk_index(own_workspace()); }
    MatrixView<const float> last_topk_weight() { return last_topk_weight(own_workspace()); }
    const RouterStats& router_stats() { return router_stats(own_workspace()); }

    /// Bytes held by the own workspace (the convenience entry points').
    std::size_t workspace_bytes() const {
        const Work& w = own_workspace().get<Work>();
        return w.logits.bytes() + w.index.bytes() + w.weight.bytes() + w.offsets.bytes() + w.token.bytes() +
               w.token_weight.bytes() + w.h.bytes();
    }

    /// Grows ws's buffers for calls of up to L tokens (forward does this itself).
    Work& reserve(Workspace& ws, std::size_t L) const {
        const std::size_t E = cfg_.num_experts, k = cfg_.top_k;
        Work& w = ws.get<Work>();
        if (w.offsets.size() != E + 1) {
            w.offsets.resize(E + 1);
            w.prob_sum.assign(E, 0.0);
            w.stats.tokens_per_expert.assign(E, 0);
            w.stats.mean_prob.assign(E, 0.0);
        }
        L = std::max<std::size_t>(L, 1);
        if (w.logits.size() < L * E) w.logits.resize(L * E);
        if (w.index.size() < L * k) {
            w.index.resize(L * k);
            w.weight.resize(L * k);
            w.token.resize(L * k);
            w.token_weight.resize(L * k);
        }
        // the largest bucket has at most L tokens (each token picks an expert once)
        if (w.h.size() < L * cfg_.hidden) w.h.resize(L * cfg_.hidden);
        return w;
    }

private:
    void update_stats(Work& w, std::size_t L) const {
        const std::size_t E = cfg_.num_experts;
        RouterStats& st = w.stats;
        st.tokens = L;
        double lb = 0.0;
        for (std::size_t e = 0; e < E; ++e) {
            st.tokens_per_expert[e] = w.offsets[e + 1] - w.offsets[e];
            st.mean_prob[e] = L ? w.prob_sum[e] / double(L) : 0.0;
            lb += (L ? double(st.tokens_per_expert[e]) / double(L) : 0.0) * st.mean_prob[e];
        }
        st.load_balancing = double(E) * lb;
    }

    SparseMoEConfig cfg_;
    Matrix<float> router_;            // router [E, d_model]
    Weight gate_, up_, down_;  // experts stacked: gate, up [E hidden, d_model]; down [E d_model, hidden]

    // Expert e's rows of a stacked weight as parameter `name` ([rows, cols] of it).
    static ParamRef expert_param(Weight& w, std::size_t e, std::size_t rows, std::string name) {
        return w.param(std::move(name), {rows, w.cols()}, e * rows, rows);
    }
};

}  // namespace hystack
