#pragma once
#include "../core/module.hpp"

// The built-in layer kinds, with HF Jamba's module names and the sizes a StackConfig gives them:
//   mixers        "mamba1"    MambaMixer (with Jamba's dt/B/C RMSNorms)   under "mamba"
//                 "attention" AttentionLayer (no positional encoding in Jamba; GQA; global or sliding window)
//                             under "self_attn"
//   feed-forwards "dense"     SwiGLU (JambaMLP)                           under "feed_forward"
//                 "moe"       SparseMoE (JambaSparseMoeBlock, no top-k renormalisation) under "feed_forward"

#include "../layers/attention.hpp"
#include "../layers/mamba.hpp"
#include "../layers/mlp.hpp"
#include "../layers/moe.hpp"
#include "config.hpp"
#include "kinds.hpp"
#include "schedule.hpp"

namespace hystack {

/// Sizes of the built-in layers from a StackConfig (HF Jamba's meanings).
struct JambaShapes {
    static MambaConfig mamba(const StackConfig& c) {
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
        m.weights = c.weights;
        return m;
    }
    static AttentionConfig attention(const StackConfig& c) {
        AttentionConfig a;
        a.d_model = c.d_model;
        a.n_heads = c.num_attention_heads;
        a.n_kv_heads = c.num_key_value_heads;
        a.window = c.sliding_window;
        a.qkv_bias = c.attention_bias;
        a.o_bias = c.attention_bias;
        a.rope = false;  // Jamba attention has no positional encoding
        a.weights = c.weights;
        return a;
    }
    static SwiGLUConfig dense(const StackConfig& c) { return {c.d_model, c.intermediate_size, c.weights}; }
    static SparseMoEConfig moe(const StackConfig& c) {
        SparseMoEConfig m;
        m.d_model = c.d_model;
        m.hidden = c.intermediate_size;
        m.num_experts = c.num_experts;
        m.top_k = c.num_experts_per_tok;
        m.renormalize = false;
        m.weights = c.weights;
        return m;
    }
};

/// Adds the built-in kinds (mamba1, attention, dense, moe) to `r`.
inline KindRegistry& add_builtin_kinds(KindRegistry& r) {
    r.add_mixer_type<MambaMixer>(kinds::mamba1, "mamba", [](const StackConfig& c, std::size_t) { return JambaShapes::mamba(c); });
    r.add_mixer_type<AttentionLayer>(kinds::attention, "self_attn",
                                     [](const StackConfig& c, std::size_t) { return JambaShapes::attention(c); });
    r.add_feed_forward_type<SwiGLU>(kinds::dense, "feed_forward", [](const StackConfig& c, std::size_t) { return JambaShapes::dense(c); });
    r.add_feed_forward_type<SparseMoE>(kinds::moe, "feed_forward", [](const StackConfig& c, std::size_t) { return JambaShapes::moe(c); });
    return r;
}

/// The registry of the built-in kinds (a copy of it can take more kinds: add_mixer / add_feed_forward).
inline const KindRegistry& builtin_kinds() {
    static const KindRegistry r = [] {
        KindRegistry k;
        add_builtin_kinds(k);
        return k;
    }();
    return r;
}

}  // namespace hystack
