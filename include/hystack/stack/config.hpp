#pragma once
#include "../core/module.hpp"

// Shape of a hybrid stack: every number its layers need, with HF Jamba's meanings.

#include <cstddef>

#include "../core/error.hpp"
#include "../core/layout.hpp"
#include "../core/weight.hpp"
#include "schedule.hpp"

namespace hystack {

/// Configuration of a hybrid attention/Mamba stack (HF JambaConfig names in comments).
struct StackConfig {
    std::size_t d_model = 0;     // hidden_size
    std::size_t num_layers = 0;  // num_hidden_layers
    float rms_norm_eps = 1e-6f;  // rms_norm_eps (decoder norms and Mamba's inner dt/B/C norms)
    float residual_multiplier = 1.0f;  // Granite's residual_multiplier: x += m * f(norm(x)); 1 elsewhere
    DType weights = DType::f32;  // element type of every projection matrix, the embedding and the head

    // Attention (no positional encoding in Jamba: the Mamba layers carry position).
    std::size_t num_attention_heads = 0;  // num_attention_heads
    std::size_t num_key_value_heads = 0;  // num_key_value_heads (GQA)
    std::size_t sliding_window = 0;       // sliding_window; 0 = global attention
    bool attention_bias = false;

    // Mamba.
    std::size_t mamba_d_state = 16;  // mamba_d_state
    std::size_t mamba_d_conv = 4;    // mamba_d_conv
    std::size_t mamba_expand = 2;    // mamba_expand
    std::size_t mamba_dt_rank = 0;   // mamba_dt_rank; 0 = "auto" = ceil(d_model / 16)
    bool mamba_conv_bias = true;     // mamba_conv_bias
    bool mamba_proj_bias = false;    // mamba_proj_bias
    bool mamba_inner_layernorms = true;  // Jamba's dt/B/C RMSNorms inside the mixer

    // Feed-forward.
    std::size_t intermediate_size = 0;  // intermediate_size (dense SwiGLU and every expert)
    std::size_t num_experts = 1;        // num_experts (<= 1: dense everywhere)
    std::size_t num_experts_per_tok = 2;  // num_experts_per_tok
    std::size_t expert_layer_period = 2;  // expert_layer_period
    std::size_t expert_layer_offset = 1;  // expert_layer_offset

    // Attention placement for run-time stacks (HF rule: i % period == offset). Compile-time
    // stacks take it from their ratio; when set (period > 0) they check it agrees.
    std::size_t attn_layer_period = 0;  // attn_layer_period
    std::size_t attn_layer_offset = 0;  // attn_layer_offset

    std::size_t d_inner() const { return mamba_d_inner(mamba_expand, d_model); }
    std::size_t dt_rank() const { return mamba_dt_rank ? mamba_dt_rank : mamba_dt_rank_auto(d_model); }
    std::size_t head_dim() const { return attention_head_dim(d_model, num_attention_heads); }
    FeedForwardSchedule ff_schedule() const { return {expert_layer_period, expert_layer_offset, num_experts}; }

    /// Throws hystack::error naming the first inconsistent field.
    void validate(const Schedule& schedule) const {
        check(d_model > 0, "StackConfig: d_model must be > 0");
        check(schedule.size() == num_layers, "StackConfig: schedule has ", schedule.size(), " layers, config ", num_layers);
        if (schedule.count(MixerKind::attention)) {
            check(num_attention_heads > 0 && d_model % num_attention_heads == 0, "StackConfig: d_model ", d_model,
                  " is not a multiple of num_attention_heads ", num_attention_heads);
            check(num_key_value_heads > 0 && num_attention_heads % num_key_value_heads == 0,
                  "StackConfig: num_attention_heads ", num_attention_heads, " is not a multiple of num_key_value_heads ",
                  num_key_value_heads);
        }
        if (schedule.count(MixerKind::mamba))
            check(mamba_d_state > 0 && mamba_d_conv > 0 && mamba_expand > 0,
                  "StackConfig: mamba_d_state, mamba_d_conv and mamba_expand must be > 0");
        if (schedule.count(FeedForwardKind::dense) || schedule.count(FeedForwardKind::moe))
            check(intermediate_size > 0, "StackConfig: intermediate_size must be > 0");
        if (schedule.count(FeedForwardKind::moe))
            check(num_experts_per_tok >= 1 && num_experts_per_tok <= num_experts, "StackConfig: num_experts_per_tok ",
                  num_experts_per_tok, " must be in [1, num_experts = ", num_experts, "]");
    }
};

}  // namespace hystack
