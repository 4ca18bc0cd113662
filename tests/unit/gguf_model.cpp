// GGUF models: save_jamba_gguf against llama.cpp's own files (the g0 files in tests/data/golden/gguf:
// converting g0-f32 to q8_0 gives llama-quantize's bytes, re-saving each file gives its bytes), round
// trips save -> load_jamba_gguf (bit-identical logits in f32, bf16 and q8_0), HF safetensors -> GGUF,
// the models the format cannot hold, and load_jamba_gguf's errors.
#include <hystack/hystack.hpp>
#include <hystack/io.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <unistd.h>

#include "catch.hpp"
#include "tiny_jamba.hpp"
#include "temp_dir.hpp"

using namespace hystack;
namespace fs = std::filesystem;

namespace {

const std::string g0_dir = std::string(HYSTACK_TEST_DATA) + "/golden/gguf/";
std::string g0(const std::string& kind) { return g0_dir + "g0-" + kind + "/model.gguf"; }


std::vector<char> file_bytes(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    REQUIRE(f);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// "" when the two files hold the same bytes, else where they first differ (a message, not the bytes:
// Catch would print megabytes).
std::string file_difference(const std::string& a, const std::string& b) {
    const auto x = file_bytes(a), y = file_bytes(b);
    if (x == y) return "";
    std::size_t i = 0;
    while (i < x.size() && i < y.size() && x[i] == y[i]) ++i;
    return a + " (" + std::to_string(x.size()) + " bytes) and " + b + " (" + std::to_string(y.size()) +
           " bytes) differ from byte " + std::to_string(i);
}

// Every tensor of `want` is in `got` with the same type, dims and bytes, and `got` has no other.
// Returns the names that differ (empty: all the same).
std::vector<std::string> tensor_differences(const io::GgufFile& got, const io::GgufFile& want) {
    std::vector<std::string> diff;
    for (const auto& t : want.tensors()) {
        if (!got.contains(t.name)) {
            diff.push_back("missing " + t.name);
            continue;
        }
        const auto& u = got.tensor(t.name);
        const auto a = got.data(u), b = want.data(t);
        if (u.type != t.type || u.ne != t.ne || a.size() != b.size() || std::memcmp(a.data(), b.data(), a.size()) != 0)
            diff.push_back(t.name + " (" + std::string(io::to_string(u.type)) + " " + io::ne_string(u.ne) + " vs " +
                           std::string(io::to_string(t.type)) + " " + io::ne_string(t.ne) + ")");
    }
    for (const auto& u : got.tensors())
        if (!want.contains(u.name)) diff.push_back("extra " + u.name);
    return diff;
}

// The metadata keys whose values (or types) differ, or that only one file has.
std::vector<std::string> metadata_differences(const io::GgufFile& got, const io::GgufFile& want) {
    std::vector<std::string> diff;
    for (const auto& kv : want.metadata()) {
        const io::GgufValue* v = got.find(kv.key);
        if (!v) diff.push_back("missing " + kv.key);
        else if (!(*v == kv.value)) diff.push_back(kv.key + " = " + v->to_display() + ", want " + kv.value.to_display());
    }
    for (const auto& kv : got.metadata())
        if (!want.has(kv.key)) diff.push_back("extra " + kv.key);
    return diff;
}

std::vector<token_id> prompt(std::size_t n, std::size_t vocab) {
    std::vector<token_id> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = token_id((i * 37 + 11) % vocab);
    return v;
}

template <class LM>
Matrix<float> logits_of(const LM& lm, std::span<const token_id> ids) {
    SerialExecutor ex;
    auto st = lm.make_state(ids.size() + 1);
    return lm.prefill_all(ids, st, ex);
}

bool same_logits(const Matrix<float>& a, const Matrix<float>& b) {
    return a.rows() == b.rows() && a.cols() == b.cols() && same_bits(a.span(), b.span());
}

// The weight type of every parameter, by HF name.
std::map<std::string, DType> types_of(CausalLM& lm) {
    std::map<std::string, DType> m;
    for (auto& p : lm.params()) m[p.name] = param_dtype(p);
    return m;
}


// A copy of GGUF file `src` at `dst` through GgufWriter, edited on the way: `meta` may change a
// metadata value (return nullopt to drop the key), `tensor` may drop a tensor (return false) or change
// its declaration (name, ne, type: then its bytes are zeros), `extra` appends tensors (as zeros).
struct GgufEdit {
    std::function<std::optional<io::GgufValue>(const std::string&, const io::GgufValue&)> meta;
    std::function<bool(io::GgufTensorInfo&)> tensor;
    std::vector<io::GgufTensorInfo> extra;
};
void copy_gguf(const std::string& src, const std::string& dst, const GgufEdit& edit) {
    const auto f = io::GgufFile::open(src);
    io::GgufWriter w;
    for (const auto& kv : f.metadata()) {
        std::optional<io::GgufValue> v = kv.value;
        if (edit.meta) v = edit.meta(kv.key, kv.value);
        if (v) w.set(kv.key, *v);
    }
    struct Out {
        std::string name;
        const io::GgufTensorInfo* from;  // null: zeros
    };
    std::vector<Out> out;
    for (const auto& t : f.tensors()) {
        io::GgufTensorInfo d = t;
        if (edit.tensor && !edit.tensor(d)) continue;
        const bool same = d.ne == t.ne && d.type == t.type;
        w.add_tensor(d.name, d.ne, d.type);
        out.push_back({d.name, same ? &t : nullptr});
    }
    for (const auto& t : edit.extra) {
        w.add_tensor(t.name, t.ne, t.type);
        out.push_back({t.name, nullptr});
    }
    w.begin(dst);
    std::size_t k = 0;
    for (const auto& o : out) {
        if (o.from) {
            w.write_tensor(o.name, f.data(*o.from));
        } else {
            std::vector<std::byte> zeros(std::size_t(w.tensors()[k].bytes));
            w.write_tensor(o.name, zeros);
        }
        ++k;
    }
    w.finish();
}

}  // namespace

TEST_CASE("save_jamba_gguf: g0-f32 converted to q8_0 is llama-quantize's g0-q8_0 file, byte for byte", "[gguf_model]") {
    TempDir dir("quantize");
    auto lm = io::load_jamba_gguf(g0("f32"), {.weights = DType::q8_0, .progress = {}});
    const auto info = io::save_jamba_gguf(lm, dir / "q8_0.gguf", {.name = "g0", .context_length = 262144, .progress = {}});
    CHECK(info.file_type == io::llama_ftype_mostly_q8_0);
    CHECK(info.weights == DType::q8_0);
    const auto got = io::GgufFile::open(dir / "q8_0.gguf");
    const auto want = io::GgufFile::open(g0("q8_0"));
    CHECK(info.tensors == want.tensors().size());
    CHECK(info.q8_0_tensors + info.f32_tensors == info.tensors);
    // every tensor: its type, dims and bytes (ggml's quantiser, ssm_a = -exp(A_log), stacked experts)
    const auto td = tensor_differences(got, want);
    INFO("tensors differing: " << td.size() << (td.empty() ? "" : ", first: " + td[0]));
    CHECK(td.empty());
    // the metadata: every key, value and type (general.name is the caller's: "g0" here)
    const auto md = metadata_differences(got, want);
    INFO("metadata differing: " << md.size() << (md.empty() ? "" : ", first: " + md[0]));
    CHECK(md.empty());
    // and the layout too: the whole file is llama-quantize's
    CHECK(info.file_bytes == file_bytes(g0("q8_0")).size());
    CHECK(file_difference(dir / "q8_0.gguf", g0("q8_0")) == "");
}

TEST_CASE("save_jamba_gguf: each g0 file loaded as stored and saved again gives its bytes", "[gguf_model]") {
    TempDir dir("resave");
    for (const std::string kind : {"f32", "bf16", "q8_0"}) {
        INFO("g0-" << kind);
        auto lm = io::load_jamba_gguf(g0(kind));
        std::size_t calls = 0, last = 0, total = 0;
        io::JambaGgufSaveOptions opt;
        opt.name = "g0";
        opt.progress = [&](std::size_t d, std::size_t t) {
            ++calls;
            CHECK(d >= last);
            last = d;
            total = t;
        };
        const auto info = io::save_jamba_gguf(lm, dir / (kind + ".gguf"), opt);
        CHECK(calls == info.tensors);
        CHECK(last == total);
        CHECK(total == info.tensor_bytes);
        CHECK(info.file_type == (kind == "f32" ? 0u : kind == "bf16" ? 32u : 7u));
        const auto got = io::GgufFile::open(dir / (kind + ".gguf"));
        const auto want = io::GgufFile::open(g0(kind));
        const auto td = tensor_differences(got, want);
        INFO("tensors differing: " << td.size() << (td.empty() ? "" : ", first: " + td[0]));
        CHECK(td.empty());
        CHECK(metadata_differences(got, want).empty());
        CHECK(file_difference(dir / (kind + ".gguf"), g0(kind)) == "");
    }
    // f32 loaded as bf16 is what llama.cpp's converter wrote for the bf16 model
    auto bf = io::load_jamba_gguf(g0("f32"), {.weights = DType::bf16, .progress = {}});
    io::save_jamba_gguf(bf, dir / "f32-as-bf16.gguf", {.name = "g0", .context_length = 262144, .progress = {}});
    CHECK(file_difference(dir / "f32-as-bf16.gguf", g0("bf16")) == "");
}

TEST_CASE("load_jamba_gguf reads the layer pattern from the file: attention at layer 0", "[gguf_model]") {
    TempDir dir("attn0");
    ModelConfig c = tiny_config(false);
    c.stack.attn_layer_offset = 0;  // layer 0 has no Mamba tensors: the Mamba options come from layer 1
    CausalLM lm(c);
    randomize_params(lm.params(), 12);
    lm.on_weights_loaded();
    io::save_jamba_gguf(lm, dir / "a0.gguf");
    auto back = io::load_jamba_gguf(dir / "a0.gguf");
    CHECK(back.schedule().describe() == lm.schedule().describe());
    CHECK(back.config().stack.mamba_conv_bias);
    const auto ids = prompt(11, 64);
    CHECK(same_logits(logits_of(back, ids), logits_of(lm, ids)));
}

TEST_CASE("save_jamba_gguf -> load_jamba_gguf: the same weights, types and logits bit for bit", "[gguf_model]") {
    TempDir dir("roundtrip");
    const auto ids = prompt(19, 64);
    for (bool tied : {false, true}) {
        // a random f32 model, then the same in bf16 and q8_0 (converted while loading its f32 GGUF)
        auto base = tiny_model(tied, tied ? 7 : 3);
        io::save_jamba_gguf(base, dir / "base.gguf");
        for (const std::optional<DType> type : {std::optional<DType>(), std::optional<DType>(DType::bf16),
                                                std::optional<DType>(DType::q8_0)}) {
            INFO((tied ? "tied, " : "untied, ") << (type ? to_string(*type) : "f32"));
            auto m1 = io::load_jamba_gguf(dir / "base.gguf", {.weights = type, .progress = {}});
            const std::string p1 = dir / "m1.gguf", p2 = dir / "m2.gguf";
            const auto info = io::save_jamba_gguf(m1, p1);
            auto m2 = io::load_jamba_gguf(p1);  // as stored
            CHECK(types_of(m2) == types_of(m1));
            CHECK(m2.config().tie_word_embeddings == tied);
            CHECK(m2.schedule().describe() == base.schedule().describe());
            CHECK(same_logits(logits_of(m2, ids), logits_of(m1, ids)));
            if (!type) CHECK(same_logits(logits_of(m2, ids), logits_of(base, ids)));
            // the file holds the model's types: q8_0 where rows are whole blocks, f32 where not
            const auto f = io::GgufFile::open(p1);
            CHECK(f.contains("output.weight") == !tied);
            const auto want = type == DType::q8_0 ? io::GgmlType::Q8_0
                              : type == DType::bf16 ? io::GgmlType::BF16
                                                    : io::GgmlType::F32;
            CHECK(f.tensor("blk.0.ssm_in.weight").type == want);
            CHECK(f.tensor("blk.1.ffn_gate_exps.weight").type == want);
            CHECK(f.tensor("blk.1.ffn_down_exps.weight").type ==
                  (type == DType::q8_0 ? io::GgmlType::F32 : want));  // rows of 48: no whole q8_0 blocks
            CHECK(f.tensor("blk.0.ssm_a").type == io::GgmlType::F32);
            CHECK(f.tensor("blk.1.ffn_gate_inp.weight").type == io::GgmlType::F32);
            CHECK(f.get_u32("general.file_type") == info.file_type);
            // saving the loaded model again gives the same file
            io::save_jamba_gguf(m2, p2);
            CHECK(file_difference(p2, p1) == "");
        }
    }
    // the g0 models round trip too
    const auto g0_ids = prompt(23, 256);
    for (const std::string kind : {"f32", "bf16", "q8_0"}) {
        INFO("g0-" << kind);
        auto m1 = io::load_jamba_gguf(g0(kind));
        io::save_jamba_gguf(m1, dir / "g0.gguf");
        auto m2 = io::load_jamba_gguf(dir / "g0.gguf");
        CHECK(same_logits(logits_of(m2, g0_ids), logits_of(m1, g0_ids)));
    }
    // a compile-time 1:8 stack saves like a run-time one
    BasicCausalLM<HybridStack<std::ratio<1, 8>>> hybrid(tiny_config(false));
    randomize_params(hybrid.params(), 9);
    hybrid.on_weights_loaded();
    io::save_jamba_gguf(hybrid, dir / "hybrid.gguf");
    auto back = io::load_jamba_gguf(dir / "hybrid.gguf");
    CHECK(same_logits(logits_of(back, ids), logits_of(hybrid, ids)));
}

TEST_CASE("an HF safetensors Jamba converted to GGUF gives load_jamba's logits", "[gguf_model]") {
    TempDir dir("hf");
    const auto ids = prompt(17, 64);
    for (bool tied : {false, true}) {
        auto lm = tiny_model(tied, tied ? 13 : 12);
        fs::create_directories(dir.path / "hf");
        std::vector<io::TensorData> t;
        for (auto& p : lm.params()) t.push_back({p.name, p.shape, std::span<const float>(p.data)});
        io::write_safetensors(dir / "hf/model.safetensors", t);
        std::ofstream(dir / "hf/config.json") << tiny_config_json(tied);
        const io::JambaConfig jc = io::read_jamba_config(dir / "hf/config.json");
        for (const std::optional<DType> type : {std::optional<DType>(), std::optional<DType>(DType::bf16),
                                                std::optional<DType>(DType::q8_0)}) {
            INFO((tied ? "tied, " : "untied, ") << (type ? to_string(*type) : "as stored"));
            io::JambaLoadOptions lo;
            lo.weights = type;
            auto hf = io::load_jamba(dir / "hf", lo);
            const auto info = io::save_jamba_gguf(
                hf, dir / "hf.gguf", {.name = "tiny", .context_length = jc.max_position_embeddings, .progress = {}});
            CHECK(info.weights == type.value_or(DType::f32));
            auto gg = io::load_jamba_gguf(dir / "hf.gguf");
            CHECK(types_of(gg) == types_of(hf));
            CHECK(same_logits(logits_of(gg, ids), logits_of(hf, ids)));
            const auto f = io::GgufFile::open(dir / "hf.gguf");
            CHECK(f.get_string("general.name") == "tiny");
            CHECK(f.get_u32("jamba.context_length") == 256);
            CHECK(f.get_int_array("jamba.attention.head_count_kv") == std::vector<std::int64_t>{0, 0, 0, 0, 2, 0, 0, 0});
            CHECK(f.get_u32("jamba.ssm.time_step_rank") == 4);
            CHECK(f.get_u32("jamba.ssm.inner_size") == 64);
            CHECK(f.get_u32("jamba.expert_count") == 4);
            CHECK(f.get_u32("jamba.expert_used_count") == 2);
            CHECK(f.get_f32("jamba.attention.layer_norm_rms_epsilon") == 1e-6f);
            CHECK(f.tensor("blk.0.ssm_conv1d.weight").ne == std::vector<std::uint64_t>{4, 64});
            CHECK(f.tensor("blk.3.ffn_up_exps.weight").ne == std::vector<std::uint64_t>{32, 48, 4});
            CHECK(f.tensor("blk.3.ffn_down_exps.weight").ne == std::vector<std::uint64_t>{48, 32, 4});
            // expert 2 of layer 3's up projection is the third slice of the stacked tensor
            std::vector<float> slice(48 * 32), want(48 * 32);
            const auto& up = f.tensor("blk.3.ffn_up_exps.weight");
            const std::size_t sb = std::size_t(up.bytes) / 4;
            std::vector<std::byte> raw(sb);
            f.read_bytes(up, 2 * sb, raw);
            for (auto& p : hf.params())
                if (p.name == "model.layers.3.feed_forward.experts.2.up_proj.weight") {
                    const WeightView v = p.weight->view().rows_slice(p.row0, p.rows);
                    CHECK(v.bytes() == raw.size());
                    CHECK(std::memcmp(v.data, raw.data(), raw.size()) == 0);
                }
        }
    }
}

TEST_CASE("a Jamba saved by transformers converts: every tensor exact but ssm_a, which rounds A = -exp(A_log)",
          "[gguf_model]") {
    // The file stores A, not A_log: an A_log near 0 (this model's are ~N(0, 0.1)) has no f32 A that reads
    // back as the same A_log, so those come back within an ulp of A; everything else is bit-exact.
    TempDir dir("transformers");
    const std::string hf_dir = std::string(HYSTACK_TEST_DATA) + "/golden/jamba/shared_tiny";
    auto hf = io::load_jamba(hf_dir);
    io::save_jamba_gguf(hf, dir / "tiny.gguf");
    auto gg = io::load_jamba_gguf(dir / "tiny.gguf");
    auto ph = hf.params(), pg = gg.params();
    REQUIRE(ph.size() == pg.size());
    std::size_t a_total = 0, a_rounded = 0;
    for (std::size_t i = 0; i < ph.size(); ++i) {
        INFO(ph[i].name);
        REQUIRE(ph[i].name == pg[i].name);
        REQUIRE(ph[i].data.size() == pg[i].data.size());
        if (!ph[i].name.ends_with("A_log")) {
            CHECK(same_bits(ph[i].data, pg[i].data));
            continue;
        }
        for (std::size_t j = 0; j < ph[i].data.size(); ++j) {
            ++a_total;
            if (ph[i].data[j] == pg[i].data[j]) continue;
            ++a_rounded;
            // the A the file holds is within an ulp of the exact -exp(A_log)
            const double exact = -std::exp(double(ph[i].data[j]));
            const float stored = -std::exp(pg[i].data[j]);
            CHECK(std::fabs(double(stored) - exact) <= std::fabs(exact) * 1.2e-7);
        }
    }
    CHECK(a_rounded > 0);           // this model does hit the limitation (else the test shows nothing)
    CHECK(a_rounded < a_total / 4);
    const auto ids = prompt(11, hf.vocab_size());
    const auto want = logits_of(hf, ids), got = logits_of(gg, ids);
    double scale = 0;
    for (float v : want.span()) scale = std::max(scale, double(std::fabs(v)));
    CHECK(excess(got.span(), want.span(), 1e-6 * scale, 0) <= 1);
}

TEST_CASE("save_jamba_gguf refuses a model the jamba format cannot hold, naming why", "[gguf_model]") {
    TempDir dir("refuse");
    const std::string out = dir / "x.gguf";
    const auto refused = [&](const std::string& why, auto&& make) {
        auto lm = make();
        CHECK_ERROR(why, io::save_jamba_gguf(lm, out));
        CHECK_FALSE(fs::exists(out));
        CHECK_FALSE(fs::exists(out + ".tmp"));
    };
    refused("sliding_window = 16 (jamba's attention is global)", [] {
        auto c = tiny_config(false);
        c.stack.sliding_window = 16;
        return CausalLM(c);
    });
    refused("residual_multiplier = 0.5", [] {
        auto c = tiny_config(false);
        c.stack.residual_multiplier = 0.5f;
        return CausalLM(c);
    });
    refused("mamba_expand = 4", [] {
        auto c = tiny_config(false);
        c.stack.mamba_expand = 4;
        return CausalLM(c);
    });
    refused("mamba_proj_bias", [] {
        auto c = tiny_config(false);
        c.stack.mamba_proj_bias = true;
        return CausalLM(c);
    });
    refused("no conv1d bias", [] {
        auto c = tiny_config(false);
        c.stack.mamba_conv_bias = false;
        return CausalLM(c);
    });
    // a block without a mixer (a kind the format has no name for)
    refused("layer 1: mixer '' (jamba has mamba1 and attention mixers)", [] {
        auto c = tiny_config(false);
        c.stack.num_layers = 2;
        return CausalLM(c, Stack(c.stack, Schedule(std::vector<LayerKind>{{kinds::mamba1, kinds::dense},
                                                                          {"", kinds::dense}})));
    });
    // every reason at once
    auto c = tiny_config(false);
    c.stack.sliding_window = 8;
    c.stack.residual_multiplier = 2.0f;
    CausalLM both(c);
    const std::string msg = error_of([&] { io::save_jamba_gguf(both, out); });
    CHECK(msg.find("cannot hold this model") != std::string::npos);
    CHECK(msg.find("sliding_window = 8") != std::string::npos);
    CHECK(msg.find("residual_multiplier = 2") != std::string::npos);
    CHECK(io::jamba_gguf_problems(tiny_model(false, 1)).empty());
}

TEST_CASE("load_jamba_gguf names what is wrong with a file", "[gguf_model]") {
    TempDir dir("errors");
    const std::string src = g0("f32");
    const auto error_loading = [&](const std::string& name, const GgufEdit& edit) {
        const std::string path = dir / name;
        copy_gguf(src, path, edit);
        return error_of([&] { io::load_jamba_gguf(path); });
    };
    // the unedited copy loads (so each error below comes from its one edit)
    CHECK(error_loading("copy.gguf", {}) == "<no hystack::error thrown>");

    SECTION("a file of another architecture") {
        const auto msg = error_loading("llama.gguf", {.meta = [](const std::string& k, const io::GgufValue& v) {
            return k == "general.architecture" ? io::GgufValue("llama") : v;
        }, .tensor = {}, .extra = {}});
        INFO(msg);
        CHECK(msg.find("general.architecture is 'llama', expected 'jamba'") != std::string::npos);
    }
    SECTION("a missing tensor") {
        const auto msg = error_loading("missing.gguf", {.meta = {}, .tensor = [](io::GgufTensorInfo& t) {
            return t.name != "blk.3.ssm_x.weight";
        }, .extra = {}});
        INFO(msg);
        CHECK(msg.find("1 problem") != std::string::npos);
        CHECK(msg.find("missing blk.3.ssm_x.weight (for model.layers.3.mamba.x_proj.weight)") != std::string::npos);
    }
    SECTION("a tensor of the wrong shape") {
        const auto msg = error_loading("shape.gguf", {.meta = {}, .tensor = [](io::GgufTensorInfo& t) {
            if (t.name == "blk.2.ssm_d") t.ne = {128};
            return true;
        }, .extra = {}});
        INFO(msg);
        CHECK(msg.find("1 problem") != std::string::npos);
        CHECK(msg.find("wrong shape blk.2.ssm_d (for model.layers.2.mamba.D): expected [256], got [128]") !=
              std::string::npos);
    }
    SECTION("an unused tensor") {
        const auto msg = error_loading("unused.gguf", {.meta = {}, .tensor = {},
                                                       .extra = {{"blk.0.frobnicator.weight", {128, 3}, io::GgmlType::F32, 0, 0}}});
        INFO(msg);
        CHECK(msg.find("1 problem") != std::string::npos);
        CHECK(msg.find("unused blk.0.frobnicator.weight [128, 3]") != std::string::npos);
    }
    SECTION("a tensor of a type hystack does not read") {
        const auto msg = error_loading("q4k.gguf", {.meta = {}, .tensor = [](io::GgufTensorInfo& t) {
            if (t.name == "blk.5.ssm_x.weight") t.type = io::GgmlType::Q4_K;  // [256, 64]: whole 256-blocks
            return true;
        }, .extra = {}});
        INFO(msg);
        CHECK(msg.find("1 problem") != std::string::npos);
        CHECK(msg.find("tensor 'blk.5.ssm_x.weight' has type q4_K") != std::string::npos);
    }
    SECTION("every problem in one error") {
        const auto msg = error_loading("all.gguf", {.meta = {}, .tensor = [](io::GgufTensorInfo& t) {
            if (t.name == "blk.2.ssm_d") t.ne = {128};
            if (t.name == "blk.5.ssm_x.weight") t.type = io::GgmlType::Q4_K;
            return t.name != "blk.3.ssm_x.weight";
        }, .extra = {{"blk.0.frobnicator.weight", {128, 3}, io::GgmlType::F32, 0, 0}}});
        INFO(msg);
        CHECK(msg.find("4 problems") != std::string::npos);
        for (const char* what : {"missing blk.3.ssm_x.weight", "wrong shape blk.2.ssm_d", "unused blk.0.frobnicator.weight",
                                 "'blk.5.ssm_x.weight' has type q4_K"})
            CHECK(msg.find(what) != std::string::npos);
    }
}
