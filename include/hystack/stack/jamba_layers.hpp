#pragma once
#include "../core/module.hpp"

// The layer set of HF Jamba stacks: MambaMixer (with Jamba's dt/B/C RMSNorms), AttentionLayer
// (no positional encoding; GQA; global or sliding window), SwiGLU (JambaMLP) and SparseMoE
// (JambaSparseMoeBlock, no top-k renormalisation).

#include <memory>

#include "../layers/attention.hpp"
#include "../layers/mamba.hpp"
#include "../layers/mlp.hpp"
#include "../layers/moe.hpp"
#include "config.hpp"
#include "hybrid_stack.hpp"

namespace hystack {

struct JambaLayers {
    using Mamba = MambaMixer;
    using Attention = AttentionLayer;
    using Dense = SwiGLU;
    using MoE = SparseMoE;

    static MambaConfig mamba_config(const StackConfig& c) {
        MambaConfig m;
        m.d_model = c.d_model;
        m.d_inner = c.d_inner();
        m.d_state = c.mamba_d_state;
        m.d_conv = c.mamba_d_conv;
        m.dt_rank = c.dt_rank();
        m.dt_bc_norm = c.mamba_inner_layernorms;
        m.rms_norm_eps = c.rms_norm_eps;
        m.conv_bias = c.mamba_conv_bias;
        m.proj_bias = c.mamba_proj_bias;
        return m;
    }
    static AttentionConfig attention_config(const StackConfig& c) {
        AttentionConfig a;
        a.d_model = c.d_model;
        a.n_heads = c.num_attention_heads;
        a.n_kv_heads = c.num_key_value_heads;
        a.window = c.sliding_window;
        a.qkv_bias = c.attention_bias;
        a.o_bias = c.attention_bias;
        a.rope = false;  // Jamba attention has no positional encoding
        return a;
    }
    static SwiGLUConfig dense_config(const StackConfig& c) { return {c.d_model, c.intermediate_size}; }
    static SparseMoEConfig moe_config(const StackConfig& c) {
        SparseMoEConfig m;
        m.d_model = c.d_model;
        m.hidden = c.intermediate_size;
        m.num_experts = c.num_experts;
        m.top_k = c.num_experts_per_tok;
        m.renormalize = false;
        return m;
    }

    static std::unique_ptr<Mamba> make_mamba(const StackConfig& c) { return std::make_unique<Mamba>(mamba_config(c)); }
    static std::unique_ptr<Attention> make_attention(const StackConfig& c) {
        return std::make_unique<Attention>(attention_config(c));
    }
    static std::unique_ptr<Dense> make_dense(const StackConfig& c) { return std::make_unique<Dense>(dense_config(c)); }
    static std::unique_ptr<MoE> make_moe(const StackConfig& c) { return std::make_unique<MoE>(moe_config(c)); }
};

}  // namespace hystack
