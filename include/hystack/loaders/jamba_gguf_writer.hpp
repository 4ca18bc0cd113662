#pragma once
#include "../core/module.hpp"

// Saving a CausalLM as a GGUF file of llama.cpp's `jamba` architecture, the file load_jamba_gguf
// (jamba_gguf.hpp) and llama.cpp's jamba loader read:
//   auto lm = hystack::io::load_jamba(dir, {.weights = hystack::DType::q8_0});
//   hystack::io::save_jamba_gguf(lm, "model-q8_0.gguf", {.name = "jamba-mini"});
// The matrices are written in the model's own element types (f32 -> F32, bf16 -> BF16, q8_0 -> Q8_0:
// the bytes the model holds); everything else (norms, biases, conv, ssm_a, ssm_d, dt bias, router)
// is F32, the split llama.cpp's converter and llama-quantize make. What llama.cpp stores differently
// from HF: ssm_a holds A = -exp(A_log), ssm_conv1d is {d_conv, d_inner}, experts are stacked per layer
// ({d_model, ff, E}: expert e is the e-th slice), attention.head_count_kv is per layer (0 on Mamba).
//
// Layout, as llama.cpp's own tools lay out a file of the type (so that converting llama.cpp's g0-f32
// file to q8_0 gives the bytes of llama-quantize's g0-q8_0 file, tests/unit/gguf_model.cpp):
// - no Q8_0 tensor (all f32 or mostly bf16: what convert_hf_to_gguf.py writes): general.file_type
//   after general.name, no general.quantization_version; tensors token_embd, then each layer in HF
//   order (attn_norm, the mixer's, ffn_norm, the feed-forward's), then output_norm, output;
// - Q8_0 tensors (what llama-quantize writes): general.quantization_version = 2 and general.file_type
//   last; tensors in llama-quantize's order (non-layer tensors first, then by layer, each by name).
// general.file_type is llama.cpp's LLAMA_FTYPE: 0 (ALL_F32), 32 (MOSTLY_BF16), 7 (MOSTLY_Q8_0).
// The file is streamed one tensor at a time (GgufWriter): no tensor is copied unless a stacked
// expert tensor's slices are not adjacent in memory (then that one tensor is gathered).

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "../core/param.hpp"
#include "../core/weight.hpp"
#include "../io/gguf_format.hpp"
#include "../io/gguf_writer.hpp"
#include "../io/params.hpp"
#include "../model/causal_lm.hpp"
#include "../stack/builtin_kinds.hpp"
#include "jamba_gguf.hpp"

namespace hystack::io {

/// llama.cpp's llama_ftype values (llama.h) that hystack writes as general.file_type.
inline constexpr std::uint32_t llama_ftype_all_f32 = 0;
inline constexpr std::uint32_t llama_ftype_mostly_q8_0 = 7;
inline constexpr std::uint32_t llama_ftype_mostly_bf16 = 32;
/// ggml's GGML_QNT_VERSION, written as general.quantization_version in files with quantised tensors.
inline constexpr std::uint32_t ggml_quantization_version = 2;

/// The GGUF tensor type of a weight type.
inline GgmlType ggml_type_of(DType t) {
    switch (t) {
        case DType::f32: return GgmlType::F32;
        case DType::bf16: return GgmlType::BF16;
        case DType::q8_0: return GgmlType::Q8_0;
    }
    fail("ggml_type_of: unknown weight type ", int(t));
}

/// Options of save_jamba_gguf.
struct JambaGgufSaveOptions {
    /// general.name.
    std::string name = "hystack";
    /// jamba.context_length (llama.cpp's n_ctx_train; HF Jamba's max_position_embeddings).
    std::size_t context_length = 262144;
    /// Called as tensors are written: (bytes written, bytes total).
    std::function<void(std::size_t, std::size_t)> progress;
};

/// What save_jamba_gguf wrote.
struct JambaGgufSaveInfo {
    std::size_t tensors = 0;
    std::uint64_t tensor_bytes = 0;  // the tensors' data (without alignment padding)
    std::uint64_t file_bytes = 0;
    std::uint32_t file_type = 0;     // general.file_type (LLAMA_FTYPE)
    DType weights = DType::f32;      // the type that names the file type: q8_0 if any, else bf16 if any, else f32
    std::size_t f32_tensors = 0, bf16_tensors = 0, q8_0_tensors = 0;
};

namespace detail {

// One tensor of the file: its parameters (one, or E slices of a stacked expert tensor).
struct JambaGgufPlanned {
    std::string name;
    std::vector<std::uint64_t> ne;
    GgmlType type = GgmlType::F32;
    std::vector<const ParamRef*> parts;
    bool ssm_a = false;
    int layer = -1;       // blk.N, -1 for token_embd / output_norm / output
    std::size_t rank = 0; // position in convert_hf_to_gguf's order
};

// convert_hf_to_gguf's order of a layer's tensors (the g0 files' order), HF's module order.
inline std::size_t jamba_gguf_layer_rank(std::string_view suffix) {
    static constexpr std::string_view order[] = {
        "attn_norm.weight",  "ssm_in.weight",      "ssm_in.bias",        "ssm_conv1d.weight", "ssm_conv1d.bias",
        "ssm_x.weight",      "ssm_dt.weight",      "ssm_dt.bias",        "ssm_a",             "ssm_d",
        "ssm_out.weight",    "ssm_out.bias",       "ssm_dt_norm.weight", "ssm_b_norm.weight", "ssm_c_norm.weight",
        "attn_q.weight",     "attn_k.weight",      "attn_v.weight",      "attn_output.weight", "ffn_norm.weight",
        "ffn_gate_inp.weight", "ffn_gate_exps.weight", "ffn_up_exps.weight", "ffn_down_exps.weight",
        "ffn_gate.weight",   "ffn_up.weight",      "ffn_down.weight"};
    for (std::size_t i = 0; i < std::size(order); ++i)
        if (suffix == order[i]) return i;
    return std::size(order);
}

// ssm_a = -exp(A_log) as the float nearest the exact value; when a neighbour float is what log(-A)
// reads back as this very A_log (and the nearest is not), that neighbour, so a model saved and loaded
// again holds the same A_log (and computes the same A).
inline float jamba_ssm_a(float a_log) {
    const float a = -float(std::exp(double(a_log)));
    if (!std::isfinite(a) || std::log(-a) == a_log) return a;
    for (float n : {std::nextafter(a, 0.0f), std::nextafter(a, -INFINITY)})
        if (std::log(-n) == a_log) return n;
    return a;
}

}  // namespace detail

/// Every reason the jamba GGUF format (as llama.cpp's jamba loader and load_jamba_gguf read it)
/// cannot hold `model`; empty when it can.
template <class StackT>
std::vector<std::string> jamba_gguf_problems(const BasicCausalLM<StackT>& model) {
    std::vector<std::string> problems;
    const StackConfig& s = model.config().stack;
    const Schedule& sched = model.schedule();
    const auto num = [](auto v) { return std::to_string(v); };
    if (s.residual_multiplier != 1.0f)
        problems.push_back("residual_multiplier = " + num(s.residual_multiplier) +
                           " (jamba's residuals are x + f(norm(x)), multiplier 1)");
    bool mamba = false, attention = false;
    for (std::size_t i = 0; i < sched.size(); ++i) {
        const LayerKind& k = sched[i];
        if (k.mixer == kinds::mamba1) mamba = true;
        else if (k.mixer == kinds::attention) attention = true;
        else
            problems.push_back("layer " + num(i) + ": mixer '" + k.mixer + "' (jamba has mamba1 and attention mixers)");
        if (k.ff != kinds::dense && k.ff != kinds::moe)
            problems.push_back("layer " + num(i) + ": feed-forward '" + k.ff + "' (jamba has dense and moe)");
    }
    if (attention && s.sliding_window != 0)
        problems.push_back("sliding_window = " + num(s.sliding_window) + " (jamba's attention is global)");
    if (attention && s.attention_bias) problems.push_back("attention_bias (jamba's attention projections have no bias)");
    if (s.mamba_expand != 2)
        problems.push_back("mamba_expand = " + num(s.mamba_expand) +
                           " (llama.cpp's jamba requires ssm.inner_size = 2 x embedding_length)");
    if (mamba) {
        if (!s.mamba_conv_bias) problems.push_back("no conv1d bias (jamba's ssm_conv1d.bias is required)");
        if (s.mamba_proj_bias) problems.push_back("mamba_proj_bias (jamba's ssm_in / ssm_out have no bias)");
        if (!s.mamba_inner_layernorms)
            problems.push_back("no dt/B/C layernorms in the Mamba mixer (jamba's ssm_dt_norm, ssm_b_norm, "
                               "ssm_c_norm are required)");
    }
    if (std::endian::native != std::endian::little) problems.push_back("a big-endian host (GGUF is little-endian)");
    return problems;
}

/// Writes `model` as a jamba GGUF v3 file at `path` (under "<path>.tmp", renamed into place when
/// complete). Throws one hystack::error listing every reason when the format cannot hold the model
/// (a sliding window, a residual multiplier other than 1, a mixer other than mamba1/attention, ...).
/// `model` is only read (params() lists views of its storage).
template <class StackT>
JambaGgufSaveInfo save_jamba_gguf(const BasicCausalLM<StackT>& model, const std::string& path,
                                  const JambaGgufSaveOptions& opt = {}) {
    const std::string who = "save_jamba_gguf: " + path;
    {
        auto problems = jamba_gguf_problems(model);
        if (opt.context_length == 0 || opt.context_length > UINT32_MAX)
            problems.push_back("context_length = " + std::to_string(opt.context_length) + " (expected 1..2^32-1)");
        if (!problems.empty()) {
            std::string msg = who + ": the jamba GGUF format cannot hold this model:";
            for (const auto& p : problems) msg += "\n  " + p;
            throw error(msg);
        }
    }
    const ModelConfig& cfg = model.config();
    const StackConfig& s = cfg.stack;
    const Schedule& sched = model.schedule();
    // params() only builds views of the storage; nothing is written through them here
    const ParamList params = const_cast<BasicCausalLM<StackT>&>(model).params();

    // one planned tensor per llama.cpp name, stacked experts gathered
    std::vector<detail::JambaGgufPlanned> plan;
    std::map<std::string, std::size_t, std::less<>> index;
    std::vector<std::string> problems;
    const std::size_t E = s.num_experts;
    for (const ParamRef& p : params) {
        const auto ref = jamba_gguf_name(p.name);
        if (!ref) {
            problems.push_back("parameter " + p.name + " has no tensor in llama.cpp's jamba format");
            continue;
        }
        auto [it, fresh] = index.try_emplace(ref->name, plan.size());
        if (fresh) {
            detail::JambaGgufPlanned t;
            t.name = ref->name;
            t.ne.assign(p.shape.rbegin(), p.shape.rend());  // ggml order: the row length first
            if (p.name.ends_with("conv1d.weight") && p.shape.size() == 3) t.ne = {p.shape[2], p.shape[0]};
            if (ref->stacked) {
                t.ne.push_back(E);
                t.parts.assign(E, nullptr);
            }
            t.type = ggml_type_of(param_dtype(p));
            t.ssm_a = ref->a_from_ssm_a;
            if (t.name.rfind("blk.", 0) == 0) {
                const std::size_t dot = t.name.find('.', 4);
                t.layer = std::stoi(t.name.substr(4, dot - 4));
                t.rank = detail::jamba_gguf_layer_rank(std::string_view(t.name).substr(dot + 1));
            } else {
                t.rank = t.name == "token_embd.weight" ? 0 : t.name == "output_norm.weight" ? 1 : 2;
            }
            plan.push_back(std::move(t));
        }
        detail::JambaGgufPlanned& t = plan[it->second];
        if (!ref->stacked) {
            if (!fresh) problems.push_back("two parameters for tensor " + t.name + " (" + p.name + ")");
            else t.parts.push_back(&p);
            continue;
        }
        if (ref->expert >= E || t.parts[ref->expert]) {
            problems.push_back("parameter " + p.name + ": expert " + std::to_string(ref->expert) +
                               (ref->expert >= E ? " out of range (num_experts = " + std::to_string(E) + ")"
                                                 : " given twice"));
            continue;
        }
        if (ggml_type_of(param_dtype(p)) != t.type)
            problems.push_back("experts of " + t.name + " in different types (" + std::string(to_string(t.type)) +
                               " and " + to_string(param_dtype(p)) + " for " + p.name + ")");
        t.parts[ref->expert] = &p;
    }
    for (const auto& t : plan)
        for (std::size_t e = 0; e < t.parts.size(); ++e)
            if (!t.parts[e]) problems.push_back("tensor " + t.name + ": no parameter for expert " + std::to_string(e));
    if (!problems.empty()) detail::throw_problems(path, problems, "save_jamba_gguf");

    // the file type: q8_0 if any matrix is, else bf16 if any is, else all f32
    JambaGgufSaveInfo info;
    for (const auto& t : plan) {
        if (t.type == GgmlType::Q8_0) ++info.q8_0_tensors;
        else if (t.type == GgmlType::BF16) ++info.bf16_tensors;
        else ++info.f32_tensors;
    }
    const bool quantized = info.q8_0_tensors > 0;
    info.weights = quantized ? DType::q8_0 : info.bf16_tensors ? DType::bf16 : DType::f32;
    info.file_type = quantized ? llama_ftype_mostly_q8_0
                     : info.bf16_tensors ? llama_ftype_mostly_bf16
                                         : llama_ftype_all_f32;
    if (quantized)  // llama-quantize's order (its weight_name_comparer): layer, then name
        std::stable_sort(plan.begin(), plan.end(), [](const auto& a, const auto& b) {
            return a.layer != b.layer ? a.layer < b.layer : a.name < b.name;
        });
    else  // convert_hf_to_gguf's: token_embd, the layers, output_norm, output
        std::stable_sort(plan.begin(), plan.end(), [](const auto& a, const auto& b) {
            const auto group = [](const auto& t) { return t.layer >= 0 ? 1 : t.rank == 0 ? 0 : 2; };
            if (group(a) != group(b)) return group(a) < group(b);
            return a.layer != b.layer ? a.layer < b.layer : a.rank < b.rank;
        });

    GgufWriter w;
    const auto u32 = [](std::size_t v) { return std::uint32_t(v); };
    w.set("general.architecture", "jamba");
    w.set("general.name", opt.name);
    if (!quantized) w.set("general.file_type", info.file_type);
    const std::string a = "jamba.";
    w.set(a + "vocab_size", u32(cfg.vocab_size));
    w.set(a + "context_length", u32(opt.context_length));
    w.set(a + "embedding_length", u32(s.d_model));
    w.set(a + "block_count", u32(s.num_layers));
    w.set(a + "feed_forward_length", u32(s.intermediate_size));
    w.set(a + "attention.head_count", u32(s.num_attention_heads));
    std::vector<std::int32_t> kv(sched.size(), 0);
    for (std::size_t i = 0; i < sched.size(); ++i)
        if (sched[i].mixer == kinds::attention) kv[i] = std::int32_t(s.num_key_value_heads);
    w.set(a + "attention.head_count_kv", std::move(kv));
    w.set(a + "attention.layer_norm_rms_epsilon", s.rms_norm_eps);
    // llama.cpp requires expert_used_count = 0 when expert_count is 0 (a model without MoE layers)
    const bool moe = sched.count_feed_forward(kinds::moe) > 0;
    w.set(a + "expert_count", u32(moe ? s.num_experts : 0));
    w.set(a + "expert_used_count", u32(moe ? s.num_experts_per_tok : 0));
    w.set(a + "ssm.conv_kernel", u32(s.mamba_d_conv));
    w.set(a + "ssm.inner_size", u32(s.d_inner()));
    w.set(a + "ssm.state_size", u32(s.mamba_d_state));
    w.set(a + "ssm.time_step_rank", u32(s.dt_rank()));
    w.set("tokenizer.ggml.model", "none");
    if (quantized) {
        w.set("general.quantization_version", ggml_quantization_version);
        w.set("general.file_type", info.file_type);
    }
    for (const auto& t : plan) {
        const auto& d = w.add_tensor(t.name, t.ne, t.type);
        info.tensor_bytes += d.bytes;
    }
    info.tensors = plan.size();

    w.begin(path);
    std::vector<std::byte> gathered;
    std::vector<float> a_buf;
    std::size_t done = 0;
    const auto bytes_of = [](const ParamRef& p) -> std::span<const std::byte> {
        if (p.weight) {
            const WeightView v = p.weight->view().rows_slice(p.row0, p.rows);
            return {v.data, v.bytes()};
        }
        return std::as_bytes(std::span<const float>(p.data));
    };
    for (const auto& t : plan) {
        std::span<const std::byte> bytes;
        if (t.ssm_a) {
            const ParamRef& p = *t.parts[0];
            a_buf.resize(p.data.size());
            for (std::size_t i = 0; i < a_buf.size(); ++i) a_buf[i] = detail::jamba_ssm_a(p.data[i]);
            bytes = std::as_bytes(std::span<const float>(a_buf));
        } else if (t.parts.size() == 1) {
            bytes = bytes_of(*t.parts[0]);
        } else {
            // stacked experts: one span when the slices lie back to back in one weight, else gathered
            const ParamRef& p0 = *t.parts[0];
            bool adjacent = p0.weight != nullptr;
            for (std::size_t e = 1; adjacent && e < t.parts.size(); ++e)
                adjacent = t.parts[e]->weight == p0.weight && t.parts[e]->row0 == p0.row0 + e * p0.rows;
            if (adjacent) {
                const WeightView v = p0.weight->view().rows_slice(p0.row0, p0.rows * t.parts.size());
                bytes = {v.data, v.bytes()};
            } else {
                gathered.clear();
                for (const ParamRef* p : t.parts) {
                    const auto b = bytes_of(*p);
                    gathered.insert(gathered.end(), b.begin(), b.end());
                }
                bytes = gathered;
            }
        }
        w.write_tensor(t.name, bytes);
        done += bytes.size();
        if (opt.progress) opt.progress(done, std::size_t(info.tensor_bytes));
    }
    w.finish();
    info.file_bytes = std::filesystem::file_size(path);
    return info;
}

}  // namespace hystack::io
