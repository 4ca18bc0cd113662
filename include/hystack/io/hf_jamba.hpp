#pragma once
#include "../core/module.hpp"

// HuggingFace Jamba configs: config.json -> JambaConfig (HF's keys, names and defaults), validated.
// The weights a config implies are not listed here: the model's own params() are that list
// (loaders/jamba.hpp checks a checkpoint against them).

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "../core/layout.hpp"
#include "json_file.hpp"

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
    bool is_attention_layer(std::size_t i) const { return periodic(i, attn_layer_period, attn_layer_offset); }
    /// layers_num_experts[i]: num_experts on MoE layers, 1 on dense ones.
    std::size_t layer_num_experts(std::size_t i) const {
        return periodic(i, expert_layer_period, expert_layer_offset) ? num_experts : 1;
    }
    bool is_moe_layer(std::size_t i) const { return layer_num_experts(i) > 1; }
    std::size_t head_dim() const { return attention_head_dim(hidden_size, num_attention_heads); }
    std::size_t d_inner() const { return mamba_d_inner(mamba_expand, hidden_size); }

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
        c.mamba_dt_rank = mamba_dt_rank_auto(c.hidden_size);
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

}  // namespace hystack::io
