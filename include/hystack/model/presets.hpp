#pragma once
#include "../core/module.hpp"

#include "causal_lm.hpp"

namespace hystack::presets {

/// J1, the reference shape of hystack's model benchmarks and demo (and of the llama.cpp figures they
/// are compared with): vocab 256, d_model 1024, 16 layers at ratio 1:8 (attention at layers 4 and 12,
/// 16 heads / 4 kv heads), MoE at odd layers (8 experts, top-2, hidden 2816), dense SwiGLU hidden
/// 2816 elsewhere, Mamba d_state 16, d_conv 4, expand 2, dt_rank 64.
inline ModelConfig j1() {
    ModelConfig cfg;
    cfg.vocab_size = 256;
    StackConfig& s = cfg.stack;
    s.d_model = 1024;
    s.num_layers = 16;
    s.num_attention_heads = 16;
    s.num_key_value_heads = 4;
    s.mamba_d_state = 16;
    s.mamba_d_conv = 4;
    s.mamba_expand = 2;
    s.mamba_dt_rank = 64;
    s.intermediate_size = 2816;
    s.num_experts = 8;
    s.num_experts_per_tok = 2;
    s.expert_layer_period = 2;
    s.expert_layer_offset = 1;
    return cfg;
}

}  // namespace hystack::presets
