#pragma once
#include "../core/module.hpp"

// Loading a HuggingFace Jamba checkpoint directory (config.json + model.safetensors or a sharded
// model.safetensors.index.json) into a CausalLM:
//   auto model = hystack::io::load_jamba("path/to/jamba");     // run-time stack, any HF config
//   auto j1 = hystack::io::load_jamba<hystack::HybridStack<std::ratio<1, 8>>>(dir);  // checked 1:8
// loaders/ sits above both the model (StackConfig, ModelConfig, BasicCausalLM) and io/ (the config,
// the checkpoint and load_params), which knows nothing of the model; the names stay in hystack::io.

#include <cstddef>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/param.hpp"
#include "../io/checkpoint.hpp"
#include "../io/hf_jamba.hpp"
#include "../io/params.hpp"
#include "../model/causal_lm.hpp"
#include "../stack/builtin_kinds.hpp"

namespace hystack::io {

/// The stack shape an HF Jamba config describes.
inline StackConfig jamba_stack_config(const JambaConfig& c) {
    StackConfig s;
    s.d_model = c.hidden_size;
    s.num_layers = c.num_hidden_layers;
    s.rms_norm_eps = float(c.rms_norm_eps);
    s.num_attention_heads = c.num_attention_heads;
    s.num_key_value_heads = c.num_key_value_heads;
    // HF's eager/sdpa Jamba attention ignores sliding_window (only flash-attention uses it); we honour
    // it, as the flash path does.
    s.sliding_window = c.sliding_window ? *c.sliding_window : 0;
    s.mamba_d_state = c.mamba_d_state;
    s.mamba_d_conv = c.mamba_d_conv;
    s.mamba_expand = c.mamba_expand;
    s.mamba_dt_rank = c.mamba_dt_rank;
    s.mamba_conv_bias = c.mamba_conv_bias;
    s.mamba_proj_bias = c.mamba_proj_bias;
    s.mamba_inner_layernorms = true;
    s.intermediate_size = c.intermediate_size;
    s.num_experts = c.num_experts;
    s.num_experts_per_tok = c.num_experts_per_tok;
    s.expert_layer_period = c.expert_layer_period;
    s.expert_layer_offset = c.expert_layer_offset;
    s.attn_layer_period = c.attn_layer_period;
    s.attn_layer_offset = c.attn_layer_offset;
    return s;
}

inline ModelConfig jamba_model_config(const JambaConfig& c) {
    ModelConfig m;
    m.vocab_size = c.vocab_size;
    m.tie_word_embeddings = c.tie_word_embeddings;
    m.stack = jamba_stack_config(c);
    return m;
}

/// Options of load_jamba.
struct JambaLoadOptions {
    /// Called as tensors are read: (bytes read, bytes total).
    std::function<void(std::size_t, std::size_t)> progress;
    /// Element type of the weight matrices: nullopt keeps them as stored (a BF16 checkpoint loads as
    /// bf16), or f32 / bf16 / q8_0, converted while loading (see LoadOptions::weights).
    std::optional<DType> weights;
};

/// The type a checkpoint's weights have as stored: that of its embedding table (HF checkpoints store
/// every matrix alike), f32 when it has none.
inline DType stored_weight_type(const Checkpoint& ckpt) {
    for (const char* name : {"model.embed_tokens.weight", "lm_head.weight"})
        if (ckpt.contains(name)) return stored_weight_type(ckpt.info(name).dtype);
    return DType::f32;
}

/// The load options a Jamba checkpoint needs: "lm_head.weight" may be present although tied.
inline LoadOptions jamba_load_options(bool tie_word_embeddings) {
    LoadOptions lo;
    if (tie_word_embeddings) lo.allow_unused.push_back("lm_head.weight");
    return lo;
}

/// Checks that `ckpt` holds exactly the weights of `model` (its params(): the one list of HF names
/// and shapes), with loadable dtypes; throws one hystack::error listing every problem.
template <class StackT>
void verify_jamba_checkpoint(const Checkpoint& ckpt, BasicCausalLM<StackT>& model) {
    verify_params(ckpt, model.params(), jamba_load_options(model.config().tie_word_embeddings));
}

/// Loads an HF Jamba directory into a CausalLM over StackT (hystack::Stack: any config;
/// HybridStack<R>: throws when the config's attention layout disagrees with R, before any I/O).
/// Builds the model the config describes, checks the checkpoint against the model's params() (every
/// missing, misshapen or unused tensor in one hystack::error, before any tensor is read), then reads
/// every tensor (F32/BF16/F16) into them, the weight matrices as opt.weights asks.
template <class StackT = Stack>
BasicCausalLM<StackT> load_jamba(const std::string& dir, const JambaLoadOptions& opt = {}) {
    namespace fs = std::filesystem;
    check(fs::is_directory(dir), "load_jamba: ", dir, ": not a directory");
    const JambaConfig cfg = read_jamba_config((fs::path(dir) / "config.json").string());
    cfg.validate(dir + "/config.json");
    // A compile-time stack refuses a config whose layout disagrees with its ratio, before any I/O.
    if constexpr (requires(const StackConfig& sc) { StackT::checked_schedule(sc); })
        (void)StackT::checked_schedule(jamba_stack_config(cfg));
    const Checkpoint ckpt = Checkpoint::open(dir);
    ModelConfig mc = jamba_model_config(cfg);
    // built in the type it will hold, so no weight is allocated twice
    mc.stack.weights = opt.weights.value_or(stored_weight_type(ckpt));
    BasicCausalLM<StackT> model(mc);
    LoadOptions lo = jamba_load_options(cfg.tie_word_embeddings);
    lo.progress = opt.progress;
    lo.weights = opt.weights;
    load_params(ckpt, model.params(), lo);
    model.on_weights_loaded();
    return model;
}

}  // namespace hystack::io
