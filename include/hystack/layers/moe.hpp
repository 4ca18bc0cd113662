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
#include "../kernels/linear.hpp"
#include "../kernels/moe.hpp"
#include "stateless.hpp"

namespace hystack {

struct SparseMoEConfig {
    std::size_t d_model = 0;
    std::size_t hidden = 0;       // each expert's intermediate_size
    std::size_t num_experts = 0;  // HF num_experts
    std::size_t top_k = 2;        // HF num_experts_per_tok
    bool renormalize = false;     // Jamba: false; Mixtral-style: true
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
/// Stateless. Keeps workspaces grown on demand (not reentrant: one call at a time); step allocates
/// nothing after construction.
class SparseMoE : public StatelessLayer<SparseMoE> {
public:
    static constexpr const char* name = "SparseMoE";
    using StatelessLayer<SparseMoE>::prefill;

    explicit SparseMoE(const SparseMoEConfig& cfg)
        : cfg_(cfg),
          router_(cfg.num_experts, cfg.d_model),
          gate_(cfg.num_experts * cfg.hidden * cfg.d_model),
          up_(cfg.num_experts * cfg.hidden * cfg.d_model),
          down_(cfg.num_experts * cfg.d_model * cfg.hidden) {
        check(cfg.d_model > 0 && cfg.hidden > 0 && cfg.num_experts > 0,
              "SparseMoE: d_model, hidden and num_experts must be positive, got ", cfg.d_model, ", ", cfg.hidden, ", ",
              cfg.num_experts);
        check(cfg.top_k >= 1 && cfg.top_k <= cfg.num_experts, "SparseMoE: top_k: expected 1..", cfg.num_experts, ", got ",
              cfg.top_k);
        stats_.tokens_per_expert.assign(cfg.num_experts, 0);
        stats_.mean_prob.assign(cfg.num_experts, 0.0);
        prob_sum_.assign(cfg.num_experts, 0.0);
        offsets_.resize(cfg.num_experts + 1);
        reserve(1);  // step never allocates
    }

    const SparseMoEConfig& config() const { return cfg_; }

    ParamList params() {
        ParamList p;
        p.push_back({"router.weight", {cfg_.num_experts, cfg_.d_model}, router_.span()});
        const std::size_t hd = cfg_.hidden * cfg_.d_model;
        for (std::size_t e = 0; e < cfg_.num_experts; ++e) {
            const std::string pre = "experts." + std::to_string(e) + ".";
            p.push_back({pre + "gate_proj.weight", {cfg_.hidden, cfg_.d_model}, {gate_.data() + e * hd, hd}});
            p.push_back({pre + "up_proj.weight", {cfg_.hidden, cfg_.d_model}, {up_.data() + e * hd, hd}});
            p.push_back({pre + "down_proj.weight", {cfg_.d_model, cfg_.hidden}, {down_.data() + e * hd, hd}});
        }
        return p;
    }
    MatrixView<float> router_weight() { return router_.view(); }
    MatrixView<float> gate_proj(std::size_t e) { return {gate_.data() + e * cfg_.hidden * cfg_.d_model, cfg_.hidden, cfg_.d_model}; }
    MatrixView<float> up_proj(std::size_t e) { return {up_.data() + e * cfg_.hidden * cfg_.d_model, cfg_.hidden, cfg_.d_model}; }
    MatrixView<float> down_proj(std::size_t e) { return {down_.data() + e * cfg_.hidden * cfg_.d_model, cfg_.d_model, cfg_.hidden}; }

    /// y = sum over the top-k experts of w_e * expert_e(x), per row of x [L, d_model]; y [L, d_model]
    /// (written, must not alias x).
    template <Executor Exec>
    void prefill(MatrixView<const float> x, MatrixView<float> y, Exec& exec) {
        check_shape("SparseMoE: x", x, any, cfg_.d_model);
        check_shape("SparseMoE: y", y, x.rows, cfg_.d_model);
        const std::size_t L = x.rows, E = cfg_.num_experts, k = cfg_.top_k;
        reserve(L);
        // logits = x router^T; p = softmax; top-k
        MatrixView<float> logits(logits_.data(), L, E);
        kernels::linear(x, router_.view(), {}, logits, exec);
        MatrixView<std::uint32_t> index(index_.data(), L, k);
        MatrixView<float> weight(weight_.data(), L, k);
        for (auto& s : prob_sum_) s = 0.0;
        kernels::moe_route(logits, cfg_.renormalize, index, weight, prob_sum_);
        // buckets, then the experts over their buckets
        kernels::moe_bucket(index, weight, E, offsets_.span(), std::span<std::uint32_t>(token_.data(), L * k),
                            std::span<float>(token_weight_.data(), L * k));
        kernels::moe_experts(
            x, offsets_.span(), std::span<const std::uint32_t>(token_.data(), L * k),
            std::span<const float>(token_weight_.data(), L * k),
            [&](std::size_t e) {
                return kernels::SwiGLUWeights{gate_proj(e), up_proj(e), down_proj(e)};
            },
            y, h_.span(), exec);
        update_stats(L);
    }
    /// Routing of the last call: expert indices and weights [L, top_k], highest first.
    MatrixView<const std::uint32_t> last_topk_index() const { return {index_.data(), stats_.tokens, cfg_.top_k}; }
    MatrixView<const float> last_topk_weight() const { return {weight_.data(), stats_.tokens, cfg_.top_k}; }
    const RouterStats& router_stats() const { return stats_; }
    /// Workspace bytes currently held.
    std::size_t workspace_bytes() const {
        return logits_.bytes() + index_.bytes() + weight_.bytes() + offsets_.bytes() + token_.bytes() +
               token_weight_.bytes() + h_.bytes();
    }

    /// Grows the workspaces for calls of up to L tokens (prefill does this itself).
    void reserve(std::size_t L) {
        const std::size_t E = cfg_.num_experts, k = cfg_.top_k;
        L = std::max<std::size_t>(L, 1);
        if (logits_.size() < L * E) logits_.resize(L * E);
        if (index_.size() < L * k) {
            index_.resize(L * k);
            weight_.resize(L * k);
            token_.resize(L * k);
            token_weight_.resize(L * k);
        }
        // the largest bucket has at most L tokens (each token picks an expert once)
        if (h_.size() < L * cfg_.hidden) h_.resize(L * cfg_.hidden);
    }

private:
    void update_stats(std::size_t L) {
        const std::size_t E = cfg_.num_experts;
        stats_.tokens = L;
        double lb = 0.0;
        for (std::size_t e = 0; e < E; ++e) {
            stats_.tokens_per_expert[e] = offsets_[e + 1] - offsets_[e];
            stats_.mean_prob[e] = L ? prob_sum_[e] / double(L) : 0.0;
            lb += (L ? double(stats_.tokens_per_expert[e]) / double(L) : 0.0) * stats_.mean_prob[e];
        }
        stats_.load_balancing = double(E) * lb;
    }

    SparseMoEConfig cfg_;
    Matrix<float> router_;                  // router [E, d_model]
    Buffer<float> gate_, up_, down_;        // per expert e: gate, up [hidden, d_model]; down [d_model, hidden]
    Buffer<float> logits_;                  // [L, E]
    Buffer<std::uint32_t> index_;           // [L, k]
    Buffer<float> weight_;                  // [L, k]
    Buffer<std::uint32_t> offsets_;         // [E + 1]
    Buffer<std::uint32_t> token_;           // [L * k] tokens by expert
    Buffer<float> token_weight_;            // [L * k]
    Buffer<float> h_;                       // [largest bucket, hidden]
    std::vector<double> prob_sum_;          // [E]
    RouterStats stats_;
};

}  // namespace hystack
