// HF Jamba: config.json parsing (defaults, "auto" dt_rank, validation of every bad value) and
// load_params (aliases, shape/dtype checks, every problem reported at once) against hand-made
// parameter lists, small checkpoints written here and the golden tiny model.
#include <hystack/io.hpp>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "catch.hpp"
#include "temp_dir.hpp"

using namespace hystack;
using namespace hystack::io;
namespace fs = std::filesystem;

namespace {



const std::string tiny_dir = std::string(HYSTACK_TEST_DATA) + "/golden/jamba/shared_tiny";

// The weights a model of cfg holds: its params() (names, shapes), the list checkpoints are checked against.
CausalLM model_of(const JambaConfig& cfg) { return CausalLM(jamba_model_config(cfg)); }

// Storage for a ParamList (e.g. a model's params()), filled with a sentinel.
struct Store {
    std::vector<std::vector<float>> bufs;
    ParamList params;
    explicit Store(ParamList p, float fill = -777.0f) : params(std::move(p)) {
        bufs.reserve(params.size());
        for (auto& q : params) {
            std::size_t n = 1;
            for (auto d : q.shape) n *= d;
            bufs.emplace_back(n, fill);
            q.data = bufs.back();
            q.weight = nullptr;  // plain float storage of our own
        }
    }
};

}  // namespace

TEST_CASE("hf_jamba: the golden tiny config", "[hf_jamba]") {
    const auto c = read_jamba_config(tiny_dir + "/config.json");
    CHECK(c.vocab_size == 256);
    CHECK(c.hidden_size == 64);
    CHECK(c.intermediate_size == 128);
    CHECK(c.num_hidden_layers == 8);
    CHECK(c.num_attention_heads == 4);
    CHECK(c.num_key_value_heads == 2);
    CHECK(c.rms_norm_eps == 1e-6);
    CHECK_FALSE(c.tie_word_embeddings);
    CHECK(c.num_experts == 4);
    CHECK(c.num_experts_per_tok == 2);
    CHECK(c.expert_layer_period == 2);
    CHECK(c.expert_layer_offset == 1);
    CHECK(c.attn_layer_period == 8);
    CHECK(c.attn_layer_offset == 4);
    CHECK(c.mamba_d_state == 16);
    CHECK(c.mamba_d_conv == 4);
    CHECK(c.mamba_expand == 2);
    CHECK(c.mamba_dt_rank == 4);
    CHECK(c.mamba_conv_bias);
    CHECK_FALSE(c.mamba_proj_bias);
    CHECK_FALSE(c.sliding_window.has_value());
    CHECK(c.max_position_embeddings == 1024);
    CHECK_FALSE(c.use_mamba_kernels);
    CHECK(c.eos_token_id == std::vector<std::int64_t>{2});
    CHECK(c.is_attention_layer(4));
    CHECK_FALSE(c.is_attention_layer(3));
    CHECK(c.is_moe_layer(1));
    CHECK(c.layer_num_experts(2) == 1);
    CHECK(c.head_dim() == 16);
    CHECK(c.d_inner() == 128);
}

TEST_CASE("hf_jamba: HF defaults for absent keys; auto dt_rank; nulls", "[hf_jamba]") {
    const auto d = parse_jamba_config("{}");
    CHECK(d.vocab_size == 65536);
    CHECK(d.hidden_size == 4096);
    CHECK(d.intermediate_size == 14336);
    CHECK(d.num_hidden_layers == 32);
    CHECK(d.num_attention_heads == 32);
    CHECK(d.num_key_value_heads == 8);
    CHECK(d.num_experts == 16);
    CHECK(d.max_position_embeddings == 262144);
    CHECK(d.mamba_dt_rank == 256);
    CHECK(d.use_mamba_kernels);
    CHECK(d.pad_token_id == 0);
    CHECK(d.bos_token_id == 1);
    CHECK_FALSE(d.sliding_window);
    CHECK(d.mamba_conv_bias);

    auto c = parse_jamba_config(R"({"hidden_size": 72, "num_attention_heads": 6, "num_key_value_heads": null,
        "mamba_dt_rank": "auto", "sliding_window": 128, "eos_token_id": [2, 7], "pad_token_id": null, "bos_token_id": 5,
        "some_unknown_key": {"x": [1, 2]}, "torch_dtype": "bfloat16"})");
    CHECK(c.mamba_dt_rank == 5);  // ceil(72 / 16)
    CHECK(c.num_key_value_heads == 6);
    CHECK(c.sliding_window == std::optional<std::size_t>(128));
    CHECK(c.eos_token_id == std::vector<std::int64_t>{2, 7});
    CHECK_FALSE(c.pad_token_id);
    CHECK(c.bos_token_id == 5);
    CHECK(parse_jamba_config(R"({"hidden_size": 64, "mamba_dt_rank": null, "num_attention_heads": 4, "num_key_value_heads": 2})").mamba_dt_rank == 4);
    CHECK(parse_jamba_config(R"({"hidden_size": 64, "mamba_dt_rank": 9, "num_attention_heads": 4, "num_key_value_heads": 2})").mamba_dt_rank == 9);
    CHECK(parse_jamba_config(R"({"sliding_window": null})").sliding_window == std::nullopt);
}

TEST_CASE("hf_jamba: bad configs are refused with the key named", "[hf_jamba]") {
    const auto bad = [](const std::string& json, const std::string& what) {
        INFO(json);
        CHECK_ERROR("cfg.json: " + what, parse_jamba_config(json, "cfg.json"));
    };
    bad("{", "invalid JSON");
    bad("[1]", "not a JSON object");
    bad(R"({"hidden_size": 64, "hidden_size": 32})", "duplicate key 'hidden_size'");
    bad(R"({"hidden_size": 0})", "hidden_size must be positive");
    bad(R"({"num_hidden_layers": 0})", "num_hidden_layers must be positive");
    bad(R"({"vocab_size": -5})", "vocab_size must be a non-negative integer");
    bad(R"({"vocab_size": 5.5})", "vocab_size must be a non-negative integer");
    bad(R"({"vocab_size": "100"})", "vocab_size must be a non-negative integer");
    bad(R"({"vocab_size": true})", "vocab_size must be a non-negative integer");
    bad(R"({"vocab_size": 1e300})", "vocab_size must be a non-negative integer");
    bad(R"({"hidden_size": 100, "num_attention_heads": 32})", "hidden_size 100 is not divisible by num_attention_heads 32");
    bad(R"({"num_key_value_heads": 5})", "num_attention_heads 32 is not divisible by num_key_value_heads 5");
    bad(R"({"num_key_value_heads": 0})", "num_key_value_heads must be positive");
    bad(R"({"num_experts": 2, "num_experts_per_tok": 3})", "num_experts_per_tok 3 exceeds num_experts 2");
    bad(R"({"attn_layer_offset": 8})", "attn_layer_offset 8 must be smaller than attn_layer_period 8");
    bad(R"({"expert_layer_period": 0})", "expert_layer_period must be positive");
    bad(R"({"expert_layer_offset": 2})", "expert_layer_offset 2 must be smaller than expert_layer_period 2");
    bad(R"({"mamba_dt_rank": "big"})", "mamba_dt_rank must be an integer or \"auto\"");
    bad(R"({"mamba_dt_rank": 0})", "mamba_dt_rank must be positive");
    bad(R"({"mamba_conv_bias": 1})", "mamba_conv_bias must be true or false");
    bad(R"({"rms_norm_eps": "small"})", "rms_norm_eps must be a number");
    bad(R"({"rms_norm_eps": -1})", "rms_norm_eps must be positive");
    bad(R"({"sliding_window": 0})", "sliding_window must be positive");
    bad(R"({"model_type": "llama"})", "model_type must be \"jamba\"");
    bad(R"({"hidden_act": "gelu"})", "hidden_act \"gelu\" not supported");
    bad(R"({"eos_token_id": "x"})", "eos_token_id must be an integer");
    bad(R"({"vocab_size": 1000000000000})", "vocab_size = 1000000000000 exceeds the supported maximum");
    bad(R"({"hidden_size": 16777216, "num_attention_heads": 1, "num_key_value_heads": 1})",
        "mamba_expand * hidden_size = 33554432 exceeds");
    CHECK_ERROR("/nonexistent/config.json: cannot open file", read_jamba_config("/nonexistent/config.json"));
}

TEST_CASE("hf_jamba: expected names match the golden checkpoint; load fills every parameter", "[hf_jamba]") {
    const auto cfg = read_jamba_config(tiny_dir + "/config.json");
    const auto ckpt = Checkpoint::open(tiny_dir);
    auto model = model_of(cfg);
    const auto expected = model.params();
    CHECK(expected.size() == ckpt.names().size());
    verify_jamba_checkpoint(ckpt, model);
    Store s(expected);
    load_params(ckpt, s.params);
    for (std::size_t i = 0; i < s.params.size(); ++i) {
        INFO(s.params[i].name);
        REQUIRE(s.bufs[i] == ckpt.read_float(s.params[i].name));
    }
    // layer 4 is the attention layer, odd layers are MoE
    CHECK(ckpt.contains("model.layers.4.self_attn.q_proj.weight"));
    CHECK(ckpt.info("model.layers.4.self_attn.k_proj.weight").shape == std::vector<std::size_t>{32, 64});
}

TEST_CASE("hf_jamba: config values that contradict the tensors", "[hf_jamba]") {
    const auto base = read_jamba_config(tiny_dir + "/config.json");
    const auto ckpt = Checkpoint::open(tiny_dir);
    auto expect = [&](JambaConfig c, std::vector<std::string> parts) {
        const std::string msg = error_of([&] {
            auto m = model_of(c);
            verify_jamba_checkpoint(ckpt, m);
        });
        INFO(msg);
        CHECK(msg.find(tiny_dir) != std::string::npos);
        for (const auto& p : parts) CHECK(msg.find(p) != std::string::npos);
    };
    auto c = base;
    c.intermediate_size = 96;
    expect(c, {"wrong shape model.layers.0.feed_forward.gate_proj.weight: expected [96, 64], got [128, 64]",
               "wrong shape model.layers.7.feed_forward.experts.3.down_proj.weight: expected [64, 96], got [64, 128]"});
    c = base;
    c.num_experts = 8;
    expect(c, {"missing model.layers.1.feed_forward.experts.4.gate_proj.weight [128, 64]",
               "wrong shape model.layers.1.feed_forward.router.weight: expected [8, 64], got [4, 64]"});
    c = base;
    c.attn_layer_offset = 3;
    expect(c, {"missing model.layers.3.self_attn.q_proj.weight", "unused model.layers.4.self_attn.q_proj.weight",
               "unused model.layers.3.mamba.A_log [128, 16]"});
    c = base;
    c.num_hidden_layers = 7;
    expect(c, {"unused model.layers.7.input_layernorm.weight"});
    c = base;
    c.mamba_dt_rank = 8;
    expect(c, {"wrong shape model.layers.0.mamba.x_proj.weight: expected [40, 128], got [36, 128]"});
    c = base;
    c.mamba_proj_bias = true;
    expect(c, {"missing model.layers.0.mamba.in_proj.bias [256]"});
    // tied: lm_head.weight in the checkpoint is tolerated
    c = base;
    c.tie_word_embeddings = true;
    auto tied = model_of(c);
    CHECK_NOTHROW(verify_jamba_checkpoint(ckpt, tied));
}

TEST_CASE("hf_jamba: load_params accepts .moe. and dense experts.0 aliases", "[hf_jamba]") {
    TempDir d;
    const std::vector<float> w1 = {1, 2, 3, 4, 5, 6}, w2 = {7, 8, 9, 10, 11, 12}, w3 = {13, 14}, w4 = {15, 16, 17};
    write_safetensors(d / "model.safetensors", {{"model.layers.0.feed_forward.experts.0.gate_proj.weight", {3, 2}, w1},
                                                {"model.layers.1.moe.experts.1.up_proj.weight", {2, 3}, w2, "BF16"},
                                                {"model.layers.1.moe.router.weight", {1, 2}, w3},
                                                {"model.layers.2.moe.experts.0.down_proj.weight", {3}, w4}});
    std::vector<float> a(6), b(6), r(2), c(3);
    ParamList params = {{"model.layers.0.feed_forward.gate_proj.weight", {3, 2}, a},
                        {"model.layers.1.feed_forward.experts.1.up_proj.weight", {2, 3}, b},
                        {"model.layers.1.feed_forward.router.weight", {1, 2}, r},
                        {"model.layers.2.feed_forward.down_proj.weight", {3}, c}};
    load_params(Checkpoint::open(d.path.string()), params);
    CHECK(a == w1);
    CHECK(b == w2);  // small integers: exact in BF16
    CHECK(r == w3);
    CHECK(c == w4);
}

TEST_CASE("hf_jamba: load_params reports every problem at once and writes nothing", "[hf_jamba]") {
    TempDir d;
    const std::vector<float> v6 = {1, 2, 3, 4, 5, 6};
    std::vector<std::int32_t> ints = {1, 2};
    std::vector<std::byte> ib(8);
    std::memcpy(ib.data(), ints.data(), 8);
    write_safetensors(d / "model.safetensors", {{"ok", {6}, v6},
                                                {"shape", {2, 3}, v6},
                                                {"stray", {6}, v6},
                                                {"model.layers.0.feed_forward.up_proj.weight", {6}, v6},
                                                {"model.layers.0.moe.up_proj.weight", {6}, v6}});
    // a second file to add an integer tensor: write via raw
    write_safetensors_raw(d / "ints.safetensors", {{"ids", "I32", {2}, ib}});
    const auto ckpt = Checkpoint::open(d.path.string());
    std::vector<float> ok(6, -1), shape(6, -1), missing(3, -1), opt(2, -1), up(6, -1), tooshort(5, -1);
    ParamList params = {{"ok", {6}, ok},
                        {"shape", {3, 2}, shape},
                        {"missing", {3}, missing},
                        {"optional_absent", {2}, opt, true},
                        {"model.layers.0.feed_forward.up_proj.weight", {6}, up},
                        {"ok", {6}, ok}};
    const std::string msg = error_of([&] { load_params(ckpt, params); });
    INFO(msg);
    CHECK(msg.find("load_params: " + d.path.string()) != std::string::npos);
    CHECK(msg.find("5 problems") != std::string::npos);
    CHECK(msg.find("wrong shape shape: expected [3, 2], got [2, 3]") != std::string::npos);
    CHECK(msg.find("missing missing [3]") != std::string::npos);
    CHECK(msg.find("optional_absent") == std::string::npos);
    CHECK(msg.find("ambiguous model.layers.0.feed_forward.up_proj.weight: checkpoint has "
                   "model.layers.0.feed_forward.up_proj.weight model.layers.0.moe.up_proj.weight") != std::string::npos);
    CHECK(msg.find("unused stray [6]") != std::string::npos);
    CHECK(msg.find("duplicate parameter ok") != std::string::npos);
    CHECK(ok == std::vector<float>(6, -1));  // nothing written

    // storage of the wrong size; allow_unused; a dtype that does not convert
    ParamList p2 = {{"ok", {6}, tooshort}};
    LoadOptions o;
    o.allow_unused = {"shape", "stray", "model.layers.0.feed_forward.up_proj.weight", "model.layers.0.moe.up_proj.weight"};
    CHECK_ERROR("parameter ok has storage for 5 values, shape [6] needs 6", load_params(ckpt, p2, o));
    ParamList p3 = {{"ok", {6}, ok}, {"optional_absent", {2}, opt, true}};
    load_params(ckpt, p3, o);
    CHECK(ok == v6);
    CHECK(opt == std::vector<float>(2, -1));
    const auto ic = Checkpoint::open(d / "ints.safetensors");
    std::vector<float> idv(2);
    CHECK_ERROR("unsupported dtype ids: I32", load_params(ic, ParamList{{"ids", {2}, idv}}));
}

TEST_CASE("hf_jamba: a sharded BF16 checkpoint loads through the index", "[hf_jamba]") {
    TempDir d;
    JambaConfig cfg = parse_jamba_config(R"({"vocab_size": 32, "hidden_size": 16, "intermediate_size": 24,
        "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "num_experts": 2,
        "attn_layer_period": 2, "attn_layer_offset": 1, "mamba_d_state": 4, "mamba_d_conv": 3, "tie_word_embeddings": true})");
    auto model = model_of(cfg);
    const auto expected = model.params();
    Store src(expected);
    for (std::size_t i = 0; i < src.bufs.size(); ++i)
        for (std::size_t j = 0; j < src.bufs[i].size(); ++j) src.bufs[i][j] = float(int((i * 31 + j * 7) % 61) - 30) / 8.0f;
    std::vector<TensorData> a, b;
    std::string weight_map;
    for (std::size_t i = 0; i < expected.size(); ++i) {
        const bool first = i < expected.size() / 2;
        (first ? a : b).push_back({expected[i].name, expected[i].shape, src.bufs[i], "BF16"});
        weight_map += std::string(weight_map.empty() ? "" : ", ") + "\"" + expected[i].name + "\": \"" +
                      (first ? "s1.safetensors" : "s2.safetensors") + "\"";
    }
    write_safetensors(d / "s1.safetensors", a);
    write_safetensors(d / "s2.safetensors", b);
    {
        std::ofstream(d / "model.safetensors.index.json") << "{\"weight_map\": {" << weight_map << "}}";
    }
    const auto ckpt = Checkpoint::open(d.path.string());
    verify_jamba_checkpoint(ckpt, model);
    Store dst(expected);
    std::size_t calls = 0, last_done = 0, last_total = 0;
    LoadOptions opt;
    opt.progress = [&](std::size_t done, std::size_t total) {
        CHECK(done > last_done);
        ++calls;
        last_done = done;
        last_total = total;
    };
    load_params(ckpt, dst.params, opt);
    CHECK(calls == expected.size());
    CHECK(last_done == last_total);
    for (std::size_t i = 0; i < src.bufs.size(); ++i) REQUIRE(dst.bufs[i] == src.bufs[i]);  // exact in BF16
    CHECK(std::none_of(expected.begin(), expected.end(), [](const ParamRef& p) { return p.name == "lm_head.weight"; }));
}
