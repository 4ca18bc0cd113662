#pragma once
#include "../core/module.hpp"

// HuggingFace Jamba checkpoints: config.json -> JambaConfig (HF's keys, names and defaults), the
// expected weight names/shapes of a config, and load_params(), which fills a model's ParamList from
// a Checkpoint, accepting older name aliases and reporting every problem at once.

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "../core/error.hpp"
#include "../core/param.hpp"
#include "checkpoint.hpp"
#include "json_file.hpp"
#include "safetensors_format.hpp"

namespace hystack::io {

/// HuggingFace JambaConfig (transformers/models/jamba/configuration_jamba.py): every key under
/// HF's name with HF's default. mamba_dt_rank is resolved ("auto" -> ceil(hidden_size / 16)).
struct JambaConfig {
    std::string model_type = "jamba";
    std::size_t vocab_size = 65536;
    bool tie_word_embeddings = false;
    std::size_t hidden_size = 4096;
    std::size_t intermediate_size = 14336;
    std::size_t num_hidden_layers = 32;
    std::size_t num_attention_heads = 32;
    std::size_t num_key_value_heads = 8;  // null in config.json -> num_attention_heads
    std::string hidden_act = "silu";
    double initializer_range = 0.02;
    double rms_norm_eps = 1e-6;
    bool use_cache = true;
    std::size_t num_logits_to_keep = 1;
    bool output_router_logits = false;
    double router_aux_loss_coef = 0.001;
    std::optional<std::int64_t> pad_token_id = 0;
    std::optional<std::int64_t> bos_token_id = 1;
    std::vector<std::int64_t> eos_token_id = {2};  // HF allows an int or a list
    std::optional<std::size_t> sliding_window;      // null: global attention
    std::size_t max_position_embeddings = 262144;
    double attention_dropout = 0.0;
    std::size_t num_experts_per_tok = 2;
    std::size_t num_experts = 16;
    std::size_t expert_layer_period = 2;
    std::size_t expert_layer_offset = 1;
    std::size_t attn_layer_period = 8;
    std::size_t attn_layer_offset = 4;
    bool use_mamba_kernels = true;
    std::size_t mamba_d_state = 16;
    std::size_t mamba_d_conv = 4;
    std::size_t mamba_expand = 2;
    std::size_t mamba_dt_rank = 256;  // ceil(4096 / 16), HF's "auto" for the default hidden_size
    bool mamba_conv_bias = true;
    bool mamba_proj_bias = false;

    // HF's derived properties.
    /// layers_block_type[i] == "attention"
    bool is_attention_layer(std::size_t i) const { return i % attn_layer_period == attn_layer_offset; }
    /// layers_num_experts[i]: num_experts on MoE layers, 1 on dense ones.
    std::size_t layer_num_experts(std::size_t i) const {
        return i % expert_layer_period == expert_layer_offset ? num_experts : 1;
    }
    bool is_moe_layer(std::size_t i) const { return layer_num_experts(i) > 1; }
    std::size_t head_dim() const { return hidden_size / num_attention_heads; }
    std::size_t d_inner() const { return mamba_expand * hidden_size; }

    /// Throws hystack::error (prefixed with `source`) unless the values describe a buildable model.
    void validate(const std::string& source = "JambaConfig") const {
        auto positive = [&](const char* key, std::size_t v) { check(v > 0, source, ": ", key, " must be positive, got ", v); };
        positive("vocab_size", vocab_size);
        positive("hidden_size", hidden_size);
        positive("intermediate_size", intermediate_size);
        positive("num_hidden_layers", num_hidden_layers);
        positive("num_attention_heads", num_attention_heads);
        positive("num_key_value_heads", num_key_value_heads);
        positive("num_experts", num_experts);
        positive("num_experts_per_tok", num_experts_per_tok);
        positive("expert_layer_period", expert_layer_period);
        positive("attn_layer_period", attn_layer_period);
        positive("mamba_d_state", mamba_d_state);
        positive("mamba_d_conv", mamba_d_conv);
        positive("mamba_expand", mamba_expand);
        positive("mamba_dt_rank", mamba_dt_rank);
        positive("max_position_embeddings", max_position_embeddings);
        check(model_type == "jamba", source, ": model_type must be \"jamba\", got \"", model_type, "\"");
        check(hidden_size % num_attention_heads == 0, source, ": hidden_size ", hidden_size,
              " is not divisible by num_attention_heads ", num_attention_heads);
        check(num_attention_heads % num_key_value_heads == 0, source, ": num_attention_heads ", num_attention_heads,
              " is not divisible by num_key_value_heads ", num_key_value_heads);
        check(num_experts_per_tok <= num_experts, source, ": num_experts_per_tok ", num_experts_per_tok,
              " exceeds num_experts ", num_experts);
        check(expert_layer_offset < expert_layer_period, source, ": expert_layer_offset ", expert_layer_offset,
              " must be smaller than expert_layer_period ", expert_layer_period);
        check(attn_layer_offset < attn_layer_period, source, ": attn_layer_offset ", attn_layer_offset,
              " must be smaller than attn_layer_period ", attn_layer_period);
        check(std::isfinite(rms_norm_eps) && rms_norm_eps > 0, source, ": rms_norm_eps must be positive, got ",
              rms_norm_eps);
        check(!sliding_window || *sliding_window > 0, source, ": sliding_window must be positive or null");
        check(hidden_act == "silu" || hidden_act == "swish", source, ": hidden_act \"", hidden_act,
              "\" not supported (silu)");
        // Sizes whose products index memory must stay far from overflow: a hostile config must not
        // make the model allocate petabytes or wrap a size computation.
        constexpr std::size_t dim_limit = std::size_t(1) << 24;
        const std::pair<const char*, std::size_t> dims[] = {
            {"vocab_size", vocab_size},       {"hidden_size", hidden_size},     {"intermediate_size", intermediate_size},
            {"num_hidden_layers", num_hidden_layers}, {"num_experts", num_experts}, {"mamba_d_state", mamba_d_state},
            {"mamba_d_conv", mamba_d_conv},   {"mamba_expand", mamba_expand},   {"mamba_dt_rank", mamba_dt_rank}};
        for (const auto& [key, v] : dims)
            check(v <= dim_limit, source, ": ", key, " = ", v, " exceeds the supported maximum ", dim_limit);
        check(double(d_inner()) <= double(dim_limit), source, ": mamba_expand * hidden_size = ", d_inner(),
              " exceeds the supported maximum ", dim_limit);
    }
};

namespace detail {

inline std::size_t json_size(const nlohmann::json& v, const char* key, const std::string& src) {
    check(v.is_number_integer(), src, ": ", key, " must be a non-negative integer, got ", v.dump());
    check(v.is_number_unsigned() || v.get<std::int64_t>() >= 0, src, ": ", key,
          " must be a non-negative integer, got ", v.dump());
    const auto u = v.get<std::uint64_t>();
    check(u <= std::numeric_limits<std::size_t>::max(), src, ": ", key, " = ", u, " too large");
    return std::size_t(u);
}
inline std::int64_t json_int(const nlohmann::json& v, const char* key, const std::string& src) {
    check(v.is_number_integer() && !(v.is_number_unsigned() && v.get<std::uint64_t>() > std::uint64_t(INT64_MAX)),
          src, ": ", key, " must be an integer, got ", v.dump());
    return v.get<std::int64_t>();
}
inline double json_double(const nlohmann::json& v, const char* key, const std::string& src) {
    check(v.is_number(), src, ": ", key, " must be a number, got ", v.dump());
    return v.get<double>();
}
inline bool json_bool(const nlohmann::json& v, const char* key, const std::string& src) {
    check(v.is_boolean(), src, ": ", key, " must be true or false, got ", v.dump());
    return v.get<bool>();
}
inline std::string json_string(const nlohmann::json& v, const char* key, const std::string& src) {
    check(v.is_string(), src, ": ", key, " must be a string, got ", v.dump());
    return v.get<std::string>();
}

}  // namespace detail

/// Parses config.json text (`source` names it in messages); absent keys keep HF's defaults, unknown
/// keys are ignored; the result is validated.
inline JambaConfig parse_jamba_config(std::string_view json_text, const std::string& source = "config.json") {
    using nlohmann::json;
    const json j = detail::parse_json_unique(json_text, source);
    check(j.is_object(), source, ": not a JSON object");
    JambaConfig c;
    const auto has = [&](const char* k) { return j.contains(k); };
    const auto present = [&](const char* k) { return j.contains(k) && !j[k].is_null(); };
#define HYSTACK_JAMBA_SIZE(key) \
    if (has(#key)) c.key = detail::json_size(j[#key], #key, source);
#define HYSTACK_JAMBA_BOOL(key) \
    if (has(#key)) c.key = detail::json_bool(j[#key], #key, source);
#define HYSTACK_JAMBA_DOUBLE(key) \
    if (has(#key)) c.key = detail::json_double(j[#key], #key, source);
    if (has("model_type")) c.model_type = detail::json_string(j["model_type"], "model_type", source);
    HYSTACK_JAMBA_SIZE(vocab_size)
    HYSTACK_JAMBA_BOOL(tie_word_embeddings)
    HYSTACK_JAMBA_SIZE(hidden_size)
    HYSTACK_JAMBA_SIZE(intermediate_size)
    HYSTACK_JAMBA_SIZE(num_hidden_layers)
    HYSTACK_JAMBA_SIZE(num_attention_heads)
    if (has("num_key_value_heads")) {
        c.num_key_value_heads = j["num_key_value_heads"].is_null()
                                    ? c.num_attention_heads
                                    : detail::json_size(j["num_key_value_heads"], "num_key_value_heads", source);
    }
    if (has("hidden_act")) c.hidden_act = detail::json_string(j["hidden_act"], "hidden_act", source);
    HYSTACK_JAMBA_DOUBLE(initializer_range)
    HYSTACK_JAMBA_DOUBLE(rms_norm_eps)
    HYSTACK_JAMBA_BOOL(use_cache)
    if (present("num_logits_to_keep")) c.num_logits_to_keep = detail::json_size(j["num_logits_to_keep"], "num_logits_to_keep", source);
    HYSTACK_JAMBA_BOOL(output_router_logits)
    HYSTACK_JAMBA_DOUBLE(router_aux_loss_coef)
    if (has("pad_token_id"))
        c.pad_token_id = j["pad_token_id"].is_null() ? std::nullopt
                                                      : std::optional(detail::json_int(j["pad_token_id"], "pad_token_id", source));
    if (has("bos_token_id"))
        c.bos_token_id = j["bos_token_id"].is_null() ? std::nullopt
                                                      : std::optional(detail::json_int(j["bos_token_id"], "bos_token_id", source));
    if (has("eos_token_id")) {
        const auto& e = j["eos_token_id"];
        c.eos_token_id.clear();
        if (e.is_array()) {
            for (const auto& x : e) c.eos_token_id.push_back(detail::json_int(x, "eos_token_id", source));
        } else if (!e.is_null()) {
            c.eos_token_id.push_back(detail::json_int(e, "eos_token_id", source));
        }
    }
    if (present("sliding_window")) c.sliding_window = detail::json_size(j["sliding_window"], "sliding_window", source);
    else if (has("sliding_window")) c.sliding_window.reset();
    HYSTACK_JAMBA_SIZE(max_position_embeddings)
    HYSTACK_JAMBA_DOUBLE(attention_dropout)
    HYSTACK_JAMBA_SIZE(num_experts_per_tok)
    HYSTACK_JAMBA_SIZE(num_experts)
    HYSTACK_JAMBA_SIZE(expert_layer_period)
    HYSTACK_JAMBA_SIZE(expert_layer_offset)
    HYSTACK_JAMBA_SIZE(attn_layer_period)
    HYSTACK_JAMBA_SIZE(attn_layer_offset)
    HYSTACK_JAMBA_BOOL(use_mamba_kernels)
    HYSTACK_JAMBA_SIZE(mamba_d_state)
    HYSTACK_JAMBA_SIZE(mamba_d_conv)
    HYSTACK_JAMBA_SIZE(mamba_expand)
    HYSTACK_JAMBA_BOOL(mamba_conv_bias)
    HYSTACK_JAMBA_BOOL(mamba_proj_bias)
#undef HYSTACK_JAMBA_SIZE
#undef HYSTACK_JAMBA_BOOL
#undef HYSTACK_JAMBA_DOUBLE
    const auto& dt = present("mamba_dt_rank") ? j["mamba_dt_rank"] : json("auto");
    if (dt.is_string()) {
        check(dt.get_ref<const std::string&>() == "auto", source, ": mamba_dt_rank must be an integer or \"auto\", got ",
              dt.dump());
        c.mamba_dt_rank = (c.hidden_size + 15) / 16;
    } else {
        c.mamba_dt_rank = detail::json_size(dt, "mamba_dt_rank", source);
    }
    c.validate(source);
    return c;
}

/// Reads and parses a config.json file.
inline JambaConfig read_jamba_config(const std::string& config_json_path) {
    return parse_jamba_config(detail::read_text_file(config_json_path, 16u << 20), config_json_path);
}

/// The weights a HuggingFace JambaForCausalLM with `cfg` holds: full HF names and shapes, in module
/// order, with empty data spans (lm_head.weight only when not tied). Useful to check a checkpoint
/// against a config before allocating anything (verify_params) and in tests.
inline ParamList jamba_expected_params(const JambaConfig& cfg) {
    ParamList p;
    const std::size_t H = cfg.hidden_size, I = cfg.intermediate_size, V = cfg.vocab_size;
    const std::size_t di = cfg.d_inner(), ds = cfg.mamba_d_state, dr = cfg.mamba_dt_rank;
    const std::size_t hd = cfg.head_dim();
    auto add = [&](std::string name, std::vector<std::size_t> shape) { p.push_back({std::move(name), std::move(shape), {}, false}); };
    add("model.embed_tokens.weight", {V, H});
    for (std::size_t i = 0; i < cfg.num_hidden_layers; ++i) {
        const std::string l = "model.layers." + std::to_string(i) + ".";
        add(l + "input_layernorm.weight", {H});
        if (cfg.is_attention_layer(i)) {
            add(l + "self_attn.q_proj.weight", {cfg.num_attention_heads * hd, H});
            add(l + "self_attn.k_proj.weight", {cfg.num_key_value_heads * hd, H});
            add(l + "self_attn.v_proj.weight", {cfg.num_key_value_heads * hd, H});
            add(l + "self_attn.o_proj.weight", {H, cfg.num_attention_heads * hd});
        } else {
            const std::string m = l + "mamba.";
            add(m + "in_proj.weight", {2 * di, H});
            if (cfg.mamba_proj_bias) add(m + "in_proj.bias", {2 * di});
            add(m + "conv1d.weight", {di, 1, cfg.mamba_d_conv});
            if (cfg.mamba_conv_bias) add(m + "conv1d.bias", {di});
            add(m + "x_proj.weight", {dr + 2 * ds, di});
            add(m + "dt_layernorm.weight", {dr});
            add(m + "b_layernorm.weight", {ds});
            add(m + "c_layernorm.weight", {ds});
            add(m + "dt_proj.weight", {di, dr});
            add(m + "dt_proj.bias", {di});
            add(m + "A_log", {di, ds});
            add(m + "D", {di});
            add(m + "out_proj.weight", {H, di});
            if (cfg.mamba_proj_bias) add(m + "out_proj.bias", {H});
        }
        add(l + "pre_ff_layernorm.weight", {H});
        const std::string f = l + "feed_forward.";
        if (cfg.is_moe_layer(i)) {
            add(f + "router.weight", {cfg.num_experts, H});
            for (std::size_t e = 0; e < cfg.num_experts; ++e) {
                const std::string x = f + "experts." + std::to_string(e) + ".";
                add(x + "gate_proj.weight", {I, H});
                add(x + "up_proj.weight", {I, H});
                add(x + "down_proj.weight", {H, I});
            }
        } else {
            add(f + "gate_proj.weight", {I, H});
            add(f + "up_proj.weight", {I, H});
            add(f + "down_proj.weight", {H, I});
        }
    }
    add("model.final_layernorm.weight", {H});
    if (!cfg.tie_word_embeddings) add("lm_head.weight", {V, H});
    return p;
}

/// Options for verify_params / load_params.
struct LoadOptions {
    /// Checkpoint tensors that may stay unused (e.g. "lm_head.weight" saved beside tied embeddings).
    std::vector<std::string> allow_unused;
    /// load_params calls this after each tensor it reads: (bytes of float storage filled so far, total).
    std::function<void(std::size_t, std::size_t)> progress;
};

namespace detail {

// Checkpoint names that may hold HF parameter `name`, in order of preference: the name itself,
// ".moe." for ".feed_forward.", and on dense layers "feed_forward.experts.0.X" for "feed_forward.X".
inline std::vector<std::string> param_aliases(const std::string& name) {
    std::vector<std::string> out{name};
    const std::string ff = ".feed_forward.";
    const auto pos = name.find(ff);
    if (pos == std::string::npos) return out;
    const std::string head = name.substr(0, pos), tail = name.substr(pos + ff.size());
    out.push_back(head + ".moe." + tail);
    if (tail.rfind("experts.", 0) != 0 && tail.rfind("router.", 0) != 0) {
        out.push_back(head + ff + "experts.0." + tail);
        out.push_back(head + ".moe.experts.0." + tail);
    }
    return out;
}

// Matches each parameter to a checkpoint tensor; collects every problem. `resolved[i]` is the
// checkpoint name for params[i] (empty when absent).
inline std::vector<std::string> match_params(const Checkpoint& ckpt, const ParamList& params, const LoadOptions& opt,
                                             bool check_data, std::vector<std::string>& resolved) {
    std::vector<std::string> problems;
    std::unordered_set<std::string> used, seen_params;
    resolved.assign(params.size(), {});
    for (std::size_t i = 0; i < params.size(); ++i) {
        const auto& p = params[i];
        if (!seen_params.insert(p.name).second) {
            problems.push_back("duplicate parameter " + p.name);
            continue;
        }
        std::vector<std::string> found;
        for (auto& a : param_aliases(p.name))
            if (ckpt.contains(a)) found.push_back(std::move(a));
        if (found.empty()) {
            if (!p.optional) problems.push_back("missing " + p.name + " " + shape_string(p.shape));
            continue;
        }
        for (const auto& f : found) used.insert(f);
        if (found.size() > 1) {
            std::string s = "ambiguous " + p.name + ": checkpoint has";
            for (const auto& f : found) s += " " + f;
            problems.push_back(s);
            continue;
        }
        const auto& t = ckpt.info(found[0]);
        const std::string label = found[0] == p.name ? p.name : found[0] + " (for " + p.name + ")";
        if (t.shape != p.shape) {
            problems.push_back("wrong shape " + label + ": expected " + shape_string(p.shape) + ", got " +
                               shape_string(t.shape));
            continue;
        }
        if (!dtype_readable_as_float(t.dtype)) {
            problems.push_back("unsupported dtype " + label + ": " + t.dtype + " (F32, BF16 and F16 load)");
            continue;
        }
        if (check_data && p.data.size() != t.numel()) {
            problems.push_back("parameter " + p.name + " has storage for " + std::to_string(p.data.size()) +
                               " floats, shape " + shape_string(p.shape) + " needs " + std::to_string(t.numel()));
            continue;
        }
        resolved[i] = found[0];
    }
    const std::unordered_set<std::string> allowed(opt.allow_unused.begin(), opt.allow_unused.end());
    for (const auto& n : ckpt.names())
        if (!used.count(n) && !allowed.count(n))
            problems.push_back("unused " + n + " " + shape_string(ckpt.info(n).shape));
    return problems;
}

inline void throw_problems(const Checkpoint& ckpt, const std::vector<std::string>& problems, const char* what) {
    std::string msg = std::string(what) + ": " + ckpt.path() + ": " + std::to_string(problems.size()) +
                      (problems.size() == 1 ? " problem" : " problems");
    for (const auto& p : problems) msg += "\n  " + p;
    throw error(msg);
}

}  // namespace detail

/// Checks that `ckpt` holds exactly the tensors `params` names (aliases accepted), with their shapes
/// and a loadable dtype; throws one hystack::error listing every problem. Data spans are not used.
inline void verify_params(const Checkpoint& ckpt, const ParamList& params, const LoadOptions& opt = {}) {
    std::vector<std::string> resolved;
    const auto problems = detail::match_params(ckpt, params, opt, false, resolved);
    if (!problems.empty()) detail::throw_problems(ckpt, problems, "verify_params");
}

/// Fills every parameter's span from `ckpt` (F32/BF16/F16 converted exactly to float) after checking
/// names (aliases: ".moe." for ".feed_forward.", dense "feed_forward.experts.0.X" for
/// "feed_forward.X"), shapes, dtypes and that no checkpoint tensor is left unused. All problems are
/// reported in one hystack::error; nothing is written unless there are none. Optional parameters may be
/// absent (their spans are left untouched).
inline void load_params(const Checkpoint& ckpt, const ParamList& params, const LoadOptions& opt = {}) {
    std::vector<std::string> resolved;
    const auto problems = detail::match_params(ckpt, params, opt, true, resolved);
    if (!problems.empty()) detail::throw_problems(ckpt, problems, "load_params");
    std::size_t total = 0, done = 0;
    for (std::size_t i = 0; i < params.size(); ++i)
        if (!resolved[i].empty()) total += params[i].data.size_bytes();
    for (std::size_t i = 0; i < params.size(); ++i) {
        if (resolved[i].empty()) continue;
        ckpt.read_into(resolved[i], params[i].data);
        done += params[i].data.size_bytes();
        if (opt.progress) opt.progress(done, total);
    }
}

/// Checks a Jamba checkpoint against a config before anything is allocated: the tensors must be
/// exactly those of jamba_expected_params(cfg). "lm_head.weight" may be present although tied.
inline void verify_jamba_checkpoint(const Checkpoint& ckpt, const JambaConfig& cfg) {
    LoadOptions opt;
    if (cfg.tie_word_embeddings) opt.allow_unused.push_back("lm_head.weight");
    verify_params(ckpt, jamba_expected_params(cfg), opt);
}

}  // namespace hystack::io
