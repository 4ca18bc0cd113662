#pragma once
// The tiny Jamba the model-level tests share (vocab 64, d_model 32, 8 layers, attention at layer 4,
// MoE (4 experts, top-2) at odd layers), its seeded random instance, and its HF config.json.
#include <hystack/hystack.hpp>

#include <cstdint>
#include <string>

inline hystack::ModelConfig tiny_config(bool tied = false) {
    hystack::ModelConfig c;
    c.vocab_size = 64;
    c.tie_word_embeddings = tied;
    auto& s = c.stack;
    s.d_model = 32;
    s.num_layers = 8;
    s.num_attention_heads = 4;
    s.num_key_value_heads = 2;
    s.mamba_d_state = 8;
    s.mamba_d_conv = 4;
    s.mamba_expand = 2;
    s.mamba_dt_rank = 4;
    s.intermediate_size = 48;
    s.num_experts = 4;
    s.num_experts_per_tok = 2;
    s.attn_layer_period = 8;
    s.attn_layer_offset = 4;
    return c;
}

inline hystack::CausalLM tiny_model(bool tied = false, std::uint64_t seed = 11) {
    hystack::CausalLM lm(tiny_config(tied));
    hystack::randomize_params(lm.params(), seed);
    lm.on_weights_loaded();
    return lm;
}

/// tiny_config as an HF config.json (attention offset and hidden size may be changed, e.g. for errors).
inline std::string tiny_config_json(bool tied = false, int attn_offset = 4, int hidden = 32) {
    return std::string(R"({"model_type": "jamba", "vocab_size": 64, "intermediate_size": 48,
        "hidden_size": )" + std::to_string(hidden) + R"(, "num_hidden_layers": 8, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
        "num_experts": 4, "num_experts_per_tok": 2, "expert_layer_period": 2, "expert_layer_offset": 1,
        "attn_layer_period": 8, "attn_layer_offset": )") +
           std::to_string(attn_offset) + R"(, "mamba_d_state": 8, "mamba_d_conv": 4, "mamba_expand": 2,
        "mamba_dt_rank": 4, "mamba_conv_bias": true, "mamba_proj_bias": false, "max_position_embeddings": 256,
        "tie_word_embeddings": )" + (tied ? "true" : "false") + "}";
}
