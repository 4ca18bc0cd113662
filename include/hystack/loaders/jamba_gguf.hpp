#pragma once
#include "../core/module.hpp"

// Loading a GGUF file of llama.cpp's `jamba` architecture into a CausalLM:
//   auto model = hystack::io::load_jamba_gguf("model.gguf");              // weights as stored
//   auto q8 = hystack::io::load_jamba_gguf("model-bf16.gguf", {.weights = hystack::DType::q8_0});
// The layer pattern comes from the file (attention where attention.head_count_kv is non-zero, MoE
// where a layer has stacked experts), the model's params() give the HF names and shapes, and each
// is found in the file under llama.cpp's name (jamba_gguf_name). What llama.cpp stores differently:
// ssm_a holds A = -exp(A_log) (read back as A_log = log(-A)), ssm_conv1d is {d_conv, d_inner} (the
// same bytes as HF's [d_inner, 1, d_conv]), experts are stacked per layer ({d_model, ff, E}: expert e
// is the e-th slice). F32, F16, BF16 and Q8_0 tensors load (Q8_0 as it is, or converted); any other
// type is refused naming it and the tensor.

#include <cmath>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "../core/param.hpp"
#include "../core/weight.hpp"
#include "../io/gguf.hpp"
#include "../io/params.hpp"
#include "../model/causal_lm.hpp"
#include "../stack/builtin_kinds.hpp"

namespace hystack::io {

/// Where an HF parameter of a Jamba model lives in a llama.cpp GGUF file.
struct GgufTensorRef {
    std::string name;           // llama.cpp's tensor name
    std::size_t expert = 0;     // slice of a stacked expert tensor
    bool stacked = false;       // name is a {.., .., E} tensor and `expert` picks the slice
    bool a_from_ssm_a = false;  // the file holds A = -exp(A_log): read back as log(-A)
};

/// llama.cpp's name for HF Jamba parameter `hf` (e.g. "model.layers.3.mamba.in_proj.weight" ->
/// "blk.3.ssm_in.weight"); nullopt for a name it has none for.
inline std::optional<GgufTensorRef> jamba_gguf_name(const std::string& hf) {
    if (hf == "model.embed_tokens.weight") return GgufTensorRef{"token_embd.weight"};
    if (hf == "lm_head.weight") return GgufTensorRef{"output.weight"};
    if (hf == "model.final_layernorm.weight") return GgufTensorRef{"output_norm.weight"};
    const std::string pre = "model.layers.";
    if (hf.rfind(pre, 0) != 0) return std::nullopt;
    const std::size_t dot = hf.find('.', pre.size());
    if (dot == std::string::npos) return std::nullopt;
    const std::string layer = hf.substr(pre.size(), dot - pre.size()), rest = hf.substr(dot + 1);
    const std::string blk = "blk." + layer + ".";
    static const std::pair<std::string_view, std::string_view> plain[] = {
        {"input_layernorm.weight", "attn_norm.weight"},   {"pre_ff_layernorm.weight", "ffn_norm.weight"},
        {"mamba.in_proj.weight", "ssm_in.weight"},        {"mamba.in_proj.bias", "ssm_in.bias"},
        {"mamba.conv1d.weight", "ssm_conv1d.weight"},     {"mamba.conv1d.bias", "ssm_conv1d.bias"},
        {"mamba.x_proj.weight", "ssm_x.weight"},          {"mamba.dt_proj.weight", "ssm_dt.weight"},
        {"mamba.dt_proj.bias", "ssm_dt.bias"},            {"mamba.D", "ssm_d"},
        {"mamba.out_proj.weight", "ssm_out.weight"},      {"mamba.out_proj.bias", "ssm_out.bias"},
        {"mamba.dt_layernorm.weight", "ssm_dt_norm.weight"}, {"mamba.b_layernorm.weight", "ssm_b_norm.weight"},
        {"mamba.c_layernorm.weight", "ssm_c_norm.weight"}, {"self_attn.q_proj.weight", "attn_q.weight"},
        {"self_attn.k_proj.weight", "attn_k.weight"},     {"self_attn.v_proj.weight", "attn_v.weight"},
        {"self_attn.o_proj.weight", "attn_output.weight"}, {"feed_forward.gate_proj.weight", "ffn_gate.weight"},
        {"feed_forward.up_proj.weight", "ffn_up.weight"}, {"feed_forward.down_proj.weight", "ffn_down.weight"},
        {"feed_forward.router.weight", "ffn_gate_inp.weight"}};
    for (const auto& [h, g] : plain)
        if (rest == h) return GgufTensorRef{blk + std::string(g)};
    if (rest == "mamba.A_log") return GgufTensorRef{blk + "ssm_a", 0, false, true};
    const std::string ex = "feed_forward.experts.";
    if (rest.rfind(ex, 0) == 0) {
        const std::size_t d2 = rest.find('.', ex.size());
        if (d2 == std::string::npos) return std::nullopt;
        const std::string e = rest.substr(ex.size(), d2 - ex.size()), w = rest.substr(d2 + 1);
        if (e.empty() || e.size() > 6 || e.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
        for (const auto& [h, g] : {std::pair{"gate_proj.weight", "ffn_gate_exps.weight"},
                                   std::pair{"up_proj.weight", "ffn_up_exps.weight"},
                                   std::pair{"down_proj.weight", "ffn_down_exps.weight"}})
            if (w == h) return GgufTensorRef{blk + g, std::size_t(std::stoul(e)), true};
    }
    return std::nullopt;
}

/// The tensor dtype name (as io/params.hpp reads them) of a ggml type hystack loads; throws naming the
/// type and the tensor for any other (e.g. q4_K).
inline std::string gguf_loadable_dtype(const GgufFile& f, const GgufTensorInfo& t) {
    switch (t.type) {
        case GgmlType::F32: return "F32";
        case GgmlType::F16: return "F16";
        case GgmlType::BF16: return "BF16";
        case GgmlType::Q8_0: return "Q8_0";
        default: break;
    }
    fail(f.path(), ": tensor '", t.name, "' has type ", to_string(t.type),
         ", which hystack does not read (it reads f32, f16, bf16 and q8_0)");
}

/// The model a jamba GGUF file describes: its config and its layer pattern.
struct JambaGgufShape {
    ModelConfig model;
    Schedule schedule;
};

/// Reads the model shape from a jamba GGUF file's metadata and tensor table.
inline JambaGgufShape jamba_gguf_shape(const GgufFile& f) {
    const std::string arch = f.get_string("general.architecture");
    check(arch == "jamba", f.path(), ": general.architecture is '", arch, "', expected 'jamba'");
    const auto key = [](const char* k) { return std::string("jamba.") + k; };
    // sizes a file could lie about are capped (what a real Jamba needs, with room)
    const auto size = [&](const char* k, std::uint64_t lo, std::uint64_t hi) {
        const std::uint64_t v = f.get_u64(key(k));
        check(v >= lo && v <= hi, f.path(), ": ", key(k), " = ", v, ", expected ", lo, "..", hi);
        return std::size_t(v);
    };
    StackConfig s;
    s.d_model = size("embedding_length", 1, 1u << 16);
    s.num_layers = size("block_count", 1, 1024);
    s.rms_norm_eps = f.get_f32(key("attention.layer_norm_rms_epsilon"));
    s.num_attention_heads = size("attention.head_count", 1, 1024);
    s.intermediate_size = size("feed_forward_length", 1, 1u << 20);
    s.mamba_d_state = size("ssm.state_size", 1, 1024);
    s.mamba_d_conv = size("ssm.conv_kernel", 1, 64);
    s.mamba_dt_rank = size("ssm.time_step_rank", 1, 1u << 16);
    const std::size_t d_inner = size("ssm.inner_size", 1, 1u << 20);
    check(d_inner % s.d_model == 0, f.path(), ": ", key("ssm.inner_size"), " = ", d_inner, " is not a multiple of ",
          key("embedding_length"), " = ", s.d_model);
    s.mamba_expand = d_inner / s.d_model;
    s.num_experts = f.has(key("expert_count")) ? size("expert_count", 0, 4096) : 0;
    s.num_experts_per_tok = f.has(key("expert_used_count")) ? size("expert_used_count", 0, 4096) : 0;
    const auto kv = f.get_int_array(key("attention.head_count_kv"));
    check(kv.size() == s.num_layers, f.path(), ": ", key("attention.head_count_kv"), " has ", kv.size(),
          " entries, expected one per layer (", s.num_layers, ")");
    std::vector<LayerKind> layers(s.num_layers);
    for (std::size_t i = 0; i < s.num_layers; ++i) {
        check(kv[i] >= 0 && std::uint64_t(kv[i]) <= s.num_attention_heads, f.path(), ": ",
              key("attention.head_count_kv"), "[", i, "] = ", kv[i], ", expected 0..", s.num_attention_heads);
        const std::string blk = "blk." + std::to_string(i) + ".";
        layers[i].mixer = kv[i] > 0 ? kinds::attention : kinds::mamba1;
        if (kv[i] > 0) {
            check(s.num_key_value_heads == 0 || s.num_key_value_heads == std::size_t(kv[i]), f.path(),
                  ": attention layers with different KV head counts (", s.num_key_value_heads, " and ", kv[i], ")");
            s.num_key_value_heads = std::size_t(kv[i]);
        }
        layers[i].ff = f.contains(blk + "ffn_gate_exps.weight") ? kinds::moe : kinds::dense;
        if (layers[i].ff == kinds::moe)
            check(s.num_experts >= 1 && s.num_experts_per_tok >= 1 && s.num_experts_per_tok <= s.num_experts, f.path(),
                  ": layer ", i, " has experts but ", key("expert_count"), " = ", s.num_experts, ", ",
                  key("expert_used_count"), " = ", s.num_experts_per_tok);
    }
    // the Mamba layers' optional tensors, as the first Mamba layer has them
    for (std::size_t i = 0; i < s.num_layers; ++i)
        if (layers[i].mixer == kinds::mamba1) {
            const std::string blk = "blk." + std::to_string(i) + ".";
            s.mamba_conv_bias = f.contains(blk + "ssm_conv1d.bias");
            s.mamba_proj_bias = f.contains(blk + "ssm_in.bias");
            s.mamba_inner_layernorms = f.contains(blk + "ssm_dt_norm.weight");
            break;
        }
    ModelConfig m;
    check(f.contains("token_embd.weight"), f.path(), ": no tensor 'token_embd.weight'");
    const auto& emb = f.tensor("token_embd.weight");
    check(emb.ne.size() == 2 && emb.ne[0] == s.d_model, f.path(), ": token_embd.weight is ", ne_string(emb.ne),
          ", expected [", s.d_model, ", vocab]");
    m.vocab_size = std::size_t(emb.ne[1]);
    if (f.has(key("vocab_size")))
        check(f.get_u64(key("vocab_size")) == m.vocab_size, f.path(), ": ", key("vocab_size"), " = ",
              f.get_u64(key("vocab_size")), " but token_embd.weight has ", m.vocab_size, " rows");
    m.tie_word_embeddings = !f.contains("output.weight");
    m.stack = s;
    return {m, Schedule(std::move(layers))};
}

/// Options of load_jamba_gguf.
struct JambaGgufOptions {
    /// Element type of the weight matrices: nullopt keeps them as stored (Q8_0 stays q8_0, BF16 bf16,
    /// F32 and F16 f32), or f32 / bf16 / q8_0, converted while loading.
    std::optional<DType> weights;
    /// Called as tensors are read: (bytes filled, bytes total).
    std::function<void(std::size_t, std::size_t)> progress;
};

/// Loads a jamba GGUF file into a CausalLM: builds the model the file describes (jamba_gguf_shape),
/// checks every parameter's tensor (present, its shape, a type hystack reads) and that no tensor is
/// left unused, all problems in one hystack::error before anything is read, then fills the weights.
inline CausalLM load_jamba_gguf(const std::string& path, const JambaGgufOptions& opt = {}) {
    const GgufFile f = GgufFile::open(path);
    JambaGgufShape shape = jamba_gguf_shape(f);
    // built in the type it will hold (that of token_embd, as stored)
    shape.model.stack.weights = opt.weights.value_or(
        stored_weight_type(gguf_loadable_dtype(f, f.tensor("token_embd.weight"))));
    CausalLM model(shape.model, Stack(shape.model.stack, shape.schedule));
    ParamList params = model.params();

    // match every parameter to its tensor; every problem at once
    std::vector<std::string> problems;
    std::vector<const GgufTensorInfo*> src(params.size(), nullptr);
    std::vector<std::string> dtype(params.size());
    std::vector<bool> used(f.tensors().size(), false);
    for (std::size_t i = 0; i < params.size(); ++i) {
        const ParamRef& p = params[i];
        const auto ref = jamba_gguf_name(p.name);
        if (!ref || !f.contains(ref->name)) {
            if (!p.optional) problems.push_back("missing " + (ref ? ref->name + " (for " + p.name + ")" : p.name));
            continue;
        }
        const GgufTensorInfo& t = f.tensor(ref->name);
        used[std::size_t(&t - f.tensors().data())] = true;
        // the shape: HF's row-major shape is ne reversed (an expert: one slice of the stack)
        std::vector<std::size_t> want = p.shape;
        if (ref->stacked) want.insert(want.begin(), shape.model.stack.num_experts);
        if (p.name.ends_with("conv1d.weight")) want = {want[0], want[2]};  // [d_inner, 1, d_conv] as {d_conv, d_inner}
        if (t.shape() != want) {
            problems.push_back("wrong shape " + ref->name + " (for " + p.name + "): expected " + shape_string(want) +
                               ", got " + shape_string(t.shape()));
            continue;
        }
        try {
            dtype[i] = gguf_loadable_dtype(f, t);
        } catch (const error& e) {
            problems.push_back(e.what());
            continue;
        }
        if (ref->a_from_ssm_a && dtype[i] == "Q8_0") {
            problems.push_back(ref->name + " is q8_0; ssm_a loads from f32, f16 or bf16");
            continue;
        }
        src[i] = &t;
    }
    for (std::size_t k = 0; k < f.tensors().size(); ++k)
        if (!used[k] && !(shape.model.tie_word_embeddings && f.tensors()[k].name == "output.weight"))
            problems.push_back("unused " + f.tensors()[k].name + " " + ne_string(f.tensors()[k].ne));
    if (!problems.empty()) detail::throw_problems(path, problems, "load_jamba_gguf");

    LoadOptions lo;
    lo.weights = opt.weights;
    retype_weights(params, lo, [&](std::size_t i) -> std::optional<std::string> {
        if (!src[i]) return std::nullopt;
        return dtype[i];
    });
    std::size_t total = 0, done = 0;
    for (std::size_t i = 0; i < params.size(); ++i)
        if (src[i]) total += param_bytes(params[i]);
    for (std::size_t i = 0; i < params.size(); ++i) {
        if (!src[i]) continue;
        const GgufTensorInfo& t = *src[i];
        const ParamRef& p = params[i];
        const auto ref = *jamba_gguf_name(p.name);
        const std::size_t slice = ref.stacked ? std::size_t(t.bytes) / shape.model.stack.num_experts : 0;
        fill_param(p, dtype[i], [&](std::size_t off, std::span<std::byte> dst) {
            f.read_bytes(t, ref.expert * slice + off, dst);
        });
        if (ref.a_from_ssm_a)
            for (float& v : p.data) v = std::log(-v);  // A = -exp(A_log)
        done += param_bytes(p);
        if (opt.progress) opt.progress(done, total);
    }
    model.on_weights_loaded();
    return model;
}

}  // namespace hystack::io
