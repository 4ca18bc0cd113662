// Model: CausalLM over the real Jamba layers (HF names, prefill/step/batched step agreement,
// thread-count independence, generate, errors), loading HF Jamba directories, and hystack-cli's
// argument parser.
#include <hystack/hystack.hpp>
#include <hystack/io.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <vector>

#include <unistd.h>

#include "../../examples/cli_args.hpp"
#include "catch.hpp"
#include "tiny_jamba.hpp"

using namespace hystack;

namespace {

std::vector<token_id> tokens(std::size_t n, unsigned salt = 0) {
    std::vector<token_id> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = token_id((i * 13 + salt * 7 + 5) % 64);
    return v;
}

double max_diff(std::span<const float> a, std::span<const float> b) {
    REQUIRE(a.size() == b.size());
    double m = 0;
    for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::fabs(a[i] - b[i])));
    return m;
}
bool same(std::span<const float> a, std::span<const float> b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size_bytes()) == 0;
}

// Writes lm's parameters and an HF config.json describing cfg into dir.
void save_hf_dir(CausalLM& lm, const std::filesystem::path& dir, const std::string& config_json) {
    std::filesystem::create_directories(dir);
    std::vector<io::TensorData> t;
    for (auto& p : lm.params()) t.push_back({p.name, p.shape, std::span<const float>(p.data)});
    io::write_safetensors((dir / "model.safetensors").string(), t);
    std::ofstream(dir / "config.json") << config_json;
}
}  // namespace


TEST_CASE("params are the HF checkpoint's names and shapes", "[model]") {
    for (bool tied : {false, true}) {
        auto lm = tiny_model(tied);
        auto ours = lm.params();
        for (auto& p : ours) {
            std::size_t n = 1;
            for (auto d : p.shape) n *= d;
            CHECK(p.data.size() == n);
        }
        std::set<std::string> names;
        for (auto& p : ours) names.insert(p.name);
        CHECK(names.count("model.embed_tokens.weight"));
        CHECK(names.count("model.layers.0.mamba.in_proj.weight"));
        CHECK(names.count("model.layers.4.self_attn.q_proj.weight"));
        CHECK(names.count("model.layers.1.feed_forward.router.weight"));
        CHECK(names.count("model.layers.1.feed_forward.experts.3.down_proj.weight"));
        CHECK(names.count("model.layers.0.feed_forward.gate_proj.weight"));
        CHECK(names.count("model.layers.7.pre_ff_layernorm.weight"));
        CHECK(names.count("model.final_layernorm.weight"));
        CHECK(names.count("lm_head.weight") == (tied ? 0u : 1u));
        if (tied) CHECK(lm.lm_head().f32().data == lm.embed_tokens().data());
    }
}

TEST_CASE("params are exactly the tensors of a checkpoint HF's JambaForCausalLM wrote", "[model]") {
    // The golden tiny model was saved by transformers; our params() are the one list the loader checks.
    const std::string dir = std::string(HYSTACK_TEST_DATA) + "/golden/jamba/shared_tiny";
    const io::JambaConfig jc = io::read_jamba_config(dir + "/config.json");
    CausalLM lm(io::jamba_model_config(jc));
    const auto ckpt = io::Checkpoint::open(dir);
    std::set<std::pair<std::string, std::vector<std::size_t>>> ours, theirs;
    for (auto& p : lm.params()) ours.insert({p.name, p.shape});
    for (auto& n : ckpt.names()) theirs.insert({n, ckpt.info(n).shape});
    if (jc.tie_word_embeddings) theirs.erase({"lm_head.weight", {jc.vocab_size, jc.hidden_size}});
    CHECK(ours == theirs);
}

TEST_CASE("on_weights_loaded derives what layers compute from their weights (Mamba's A = -exp(A_log))", "[model]") {
    auto lm = tiny_model();  // randomized, then on_weights_loaded()
    CausalLM raw(tiny_config());
    auto from = lm.params(), to = raw.params();
    REQUIRE(from.size() == to.size());
    for (std::size_t i = 0; i < from.size(); ++i) std::copy(from[i].data.begin(), from[i].data.end(), to[i].data.begin());
    SerialExecutor ex;
    auto s1 = lm.make_state(16), s2 = raw.make_state(16), s3 = raw.make_state(16);
    const auto ids = tokens(5);
    const auto want = lm.prefill(ids, s1, ex);  // in s1's workspace: stays put while s2, s3 run
    const auto stale = raw.prefill(ids, s2, ex);
    CHECK_FALSE(same(want, stale));  // the same weights, but A still derived from the zero A_log
    raw.on_weights_loaded();
    CHECK(same(want, raw.prefill(ids, s3, ex)));
}

TEST_CASE("prefill, chunked prefill and steps agree; threads give identical results", "[model]") {
    auto lm = tiny_model();
    const auto ids = tokens(21);
    SerialExecutor serial;
    ThreadPool pool(2);

    auto s1 = lm.make_state(64);
    auto all = lm.prefill_all(ids, s1, serial);
    REQUIRE(all.rows() == 21);
    REQUIRE(all.cols() == 64);
    const std::vector<float> hidden(lm.last_hidden(s1).begin(), lm.last_hidden(s1).end());

    // Last-position API = last row.
    auto s2 = lm.make_state(64);
    auto last = lm.prefill(ids, s2, serial);
    CHECK(same(last, std::span<const float>(all.row(20), 64)));

    // Token by token.
    auto s3 = lm.make_state(64);
    for (std::size_t i = 0; i < ids.size(); ++i) {
        auto l = lm.step(ids[i], s3, serial);
        CHECK(max_diff(l, std::span<const float>(all.row(i), 64)) < 1e-4);
    }
    CHECK(max_diff(lm.last_hidden(s3), hidden) < 1e-4);

    // Chunks of 5 (state carried), threaded.
    lm.set_prefill_chunk(5);
    auto s4 = lm.make_state(64);
    auto chunked = lm.prefill_all(ids, s4, pool);
    CHECK(max_diff(chunked.span(), all.span()) < 1e-4);
    lm.set_prefill_chunk(512);

    // 1 vs 2 threads: bit-identical prefill and steps.
    auto a = lm.make_state(64), b = lm.make_state(64);
    auto la = lm.prefill_all(ids, a, serial);
    auto lb = lm.prefill_all(ids, b, pool);
    CHECK(same(la.span(), lb.span()));
    auto e = lm.make_state(64), f = lm.make_state(64);
    lm.prefill(ids, e, serial);
    lm.prefill(ids, f, pool);
    for (token_id t : {3, 9, 27}) {
        auto le = lm.step(t, e, serial);
        std::vector<float> ve(le.begin(), le.end());
        auto lf = lm.step(t, f, pool);
        CHECK(same(ve, lf));
    }
}

TEST_CASE("batched steps equal single steps of each sequence", "[model]") {
    auto lm = tiny_model();
    SerialExecutor ex;
    std::vector<CausalLM::State> seqs;
    for (unsigned s = 0; s < 3; ++s) {
        seqs.push_back(lm.make_state(64));
        lm.prefill(tokens(5 + s, s), seqs.back(), ex);
    }
    auto singles = seqs;
    const std::vector<token_id> next = {7, 8, 9};
    std::vector<CausalLM::State*> ptrs{&seqs[0], &seqs[1], &seqs[2]};
    auto batch = lm.step_batch(next, ptrs, ex);
    std::vector<float> got(batch.data, batch.data + 3 * 64);
    for (std::size_t b = 0; b < 3; ++b) {
        auto l = lm.step(next[b], singles[b], ex);
        CHECK(max_diff(std::span<const float>(got.data() + b * 64, 64), l) < 1e-5);
        CHECK(seqs[b].length() == singles[b].length());
    }
    CHECK_ERROR("CausalLM::step_batch: 2 ids for 3 states", lm.step_batch(std::vector<token_id>{1, 2}, ptrs, ex));
}

TEST_CASE("generate streams tokens, stops on request, is reproducible", "[model]") {
    auto lm = tiny_model();
    SerialExecutor ex;
    const auto prompt = tokens(6);
    GenerateOptions opt;
    opt.max_new_tokens = 10;
    opt.sampling = SamplingParams::greedy();
    std::vector<token_id> streamed;
    GenerateStats stats;
    auto st = lm.make_state(64);
    auto out = lm.generate(prompt, st, opt, [&](token_id t) { streamed.push_back(t); }, ex, &stats);
    CHECK(out == streamed);
    CHECK(out.size() == 10);
    CHECK(stats.prompt_tokens == 6);
    CHECK(stats.decode_steps == 9);
    CHECK(st.length() == 6 + 9);  // the last token is not fed
    // Greedy = argmax of the logits of a manual loop.
    auto s2 = lm.make_state(64);
    auto l = lm.prefill(prompt, s2, ex);
    for (std::size_t i = 0; i < out.size(); ++i) {
        const token_id t = argmax(l);
        CHECK(t == out[i]);
        if (i + 1 < out.size()) l = lm.step(t, s2, ex);
    }
    // Seeded sampling reproduces; the callback can stop; stop tokens end generation.
    opt.sampling = {1.0f, 0, 1.0f, 77};
    auto s3 = lm.make_state(64), s4 = lm.make_state(64);
    auto r1 = lm.generate(prompt, s3, opt, [](token_id) {}, ex);
    auto r2 = lm.generate(prompt, s4, opt, [](token_id) {}, ex);
    CHECK(r1 == r2);
    auto s5 = lm.make_state(64);
    auto r3 = lm.generate(prompt, s5, opt, [n = 0](token_id) mutable { return ++n < 3; }, ex);
    CHECK(r3.size() == 3);
    opt.stop_tokens = {r1[1]};
    auto s6 = lm.make_state(64);
    auto r4 = lm.generate(prompt, s6, opt, [](token_id) {}, ex);
    CHECK(r4.size() <= 2);
    CHECK(r4.back() == r1[1]);
}

TEST_CASE("model errors name the problem", "[model]") {
    auto lm = tiny_model();
    SerialExecutor ex;
    auto st = lm.make_state(8);
    CHECK_ERROR("CausalLM::prefill: token id 64 out of range [0, 64)", lm.prefill(std::vector<token_id>{1, 64}, st, ex));
    CHECK_ERROR("CausalLM: token id -1 out of range [0, 64)", lm.step(-1, st, ex));
    CHECK_ERROR("CausalLM::prefill: expected at least one token", lm.prefill(std::vector<token_id>{}, st, ex));
    CHECK_ERROR("exceeds capacity 8", lm.prefill(tokens(9), st, ex));
    auto other = CausalLM([] {
        auto c = tiny_config();
        c.stack.num_layers = 9;
        return c;
    }());
    auto wrong = other.make_state(8);
    CHECK_ERROR("state has 9 layers, the stack has 8", lm.step(1, wrong, ex));
    auto c = tiny_config();
    c.vocab_size = 0;
    CHECK_ERROR("vocab_size must be > 0", CausalLM(c));
    CHECK_ERROR("CausalLM: prefill chunk must be > 0", lm.set_prefill_chunk(0));
}

TEST_CASE("memory report matches the state's bytes", "[model]") {
    auto lm = tiny_model();
    for (std::size_t ctx : {16u, 100u}) {
        auto st = lm.make_state(ctx);
        auto r = lm.memory_report(ctx);
        CHECK(r.total_bytes == st.bytes());
        CHECK(r.attention_layers == 1);
        const std::size_t slots = (ctx + 15) / 16 * 16;  // whole K tiles of 16 keys
        CHECK(r.kv_bytes == 2 * 2 * 8 * slots * 4);
        CHECK(r.all_attention_kv_bytes == 8 * r.kv_bytes);
    }
    // Parameter count and weight bytes per decode step.
    CHECK(lm.num_params() > 0);
    CHECK(lm.weight_bytes_per_token() < lm.num_params() * 4);
}

TEST_CASE("load_jamba reads an HF directory and reproduces the model", "[model]") {
    namespace fs = std::filesystem;
    const fs::path dir = fs::temp_directory_path() / ("hystack_model_test_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    auto lm = tiny_model(false, 5);
    save_hf_dir(lm, dir / "m", tiny_config_json());
    SerialExecutor ex;
    const auto ids = tokens(9);
    auto s1 = lm.make_state(32);
    auto want = lm.prefill_all(ids, s1, ex);

    std::size_t calls = 0, last_done = 0, total = 0;
    io::JambaLoadOptions opt;
    opt.progress = [&](std::size_t d, std::size_t t) {
        ++calls;
        last_done = d;
        total = t;
    };
    auto loaded = io::load_jamba((dir / "m").string(), opt);
    CHECK(calls > 0);
    CHECK(last_done == total);
    auto s2 = loaded.make_state(32);
    CHECK(same(loaded.prefill_all(ids, s2, ex).span(), want.span()));
    // The compile-time 1:8 stack accepts it; another layout is refused with a clear message.
    auto j18 = io::load_jamba<HybridStack<std::ratio<1, 8>>>((dir / "m").string());
    auto s3 = j18.make_state(32);
    CHECK(same(j18.prefill_all(ids, s3, ex).span(), want.span()));
    save_hf_dir(lm, dir / "off3", tiny_config_json(false, 3));
    CHECK_ERROR("HybridStack<1:8>: the config puts attention at layers {3}",
                io::load_jamba<HybridStack<std::ratio<1, 8>>>((dir / "off3").string()));
    // Tied checkpoint.
    auto tied = tiny_model(true, 6);
    save_hf_dir(tied, dir / "tied", tiny_config_json(true));
    auto lt = io::load_jamba((dir / "tied").string());
    auto s4 = lt.make_state(32), s5 = tied.make_state(32);
    CHECK(same(lt.prefill(ids, s4, ex), tied.prefill(ids, s5, ex)));
    // Errors: no directory; a checkpoint that does not match its config.
    CHECK_ERROR("not a directory", io::load_jamba((dir / "nope").string()));
    save_hf_dir(lm, dir / "bad", tiny_config_json(false, 4, 16));  // weights of d_model 32, config says 16
    CHECK_ERROR("wrong shape model.embed_tokens.weight: expected [64, 16], got [64, 32]",
                io::load_jamba((dir / "bad").string()));
    fs::remove_all(dir);
}

TEST_CASE("hystack-cli parses its commands and rejects bad arguments", "[model]") {
    auto parse = [](std::vector<const char*> v) {
        v.insert(v.begin(), "hystack-cli");
        return cli::parse(int(v.size()), v.data());
    };
    auto g = parse({"generate", "dir", "--prompt", "Hi there", "-n", "12", "--temperature", "0.5", "--top-k", "10",
                    "--top-p", "0.9", "--seed", "3", "--threads", "2"});
    CHECK(g.command == "generate");
    CHECK(g.model_dir == "dir");
    CHECK(*g.prompt == "Hi there");
    CHECK(g.n == 12);
    CHECK(g.sampling.temperature == 0.5f);
    CHECK(g.sampling.top_k == 10);
    CHECK(g.sampling.top_p == 0.9f);
    CHECK(g.sampling.seed == 3);
    CHECK(g.threads == 2);
    auto l = parse({"logits", "d", "--ids", "1,2, 3", "--out", "x.safetensors"});
    CHECK(*l.ids == std::vector<token_id>{1, 2, 3});
    CHECK(l.out == "x.safetensors");
    auto i = parse({"info", "d"});
    CHECK(i.contexts == std::vector<std::size_t>{4096, 32768, 262144});
    CHECK(parse({"--help"}).help);
    // --weights on every command that loads a model (default: as stored); a .gguf model path
    CHECK_FALSE(i.weights);
    CHECK(parse({"info", "m.gguf", "--weights", "q8_0", "--context", "64"}).weights == DType::q8_0);
    CHECK(parse({"generate", "m.gguf", "--ids", "1", "--weights", "bf16"}).weights == DType::bf16);
    CHECK(parse({"logits", "d", "--weights", "f32", "--ids", "1", "--out", "x"}).weights == DType::f32);
    CHECK(cli::is_gguf_path("models/m.gguf"));
    CHECK_FALSE(cli::is_gguf_path("models/jamba"));
    auto cv = parse({"convert", "hf_dir", "out.gguf", "--weights", "q8_0"});
    CHECK(cv.command == "convert");
    CHECK(cv.model_dir == "hf_dir");
    CHECK(cv.out == "out.gguf");
    CHECK(cv.weights == DType::q8_0);
    CHECK(cv.contexts.empty());
    auto cv2 = parse({"convert", "in.gguf", "out.gguf"});
    CHECK(cv2.model_dir == "in.gguf");
    CHECK_FALSE(cv2.weights);
    CHECK(cli::bytes_to_ids("Az") == std::vector<token_id>{65, 122});

    auto bad = [&](std::vector<const char*> v, const char* msg) {
        std::string got;
        try {
            parse(v);
            got = "<accepted>";
        } catch (const cli::UsageError& e) {
            got = e.what();
        }
        INFO(got);
        CHECK(got.find(msg) != std::string::npos);
    };
    bad({}, "missing command");
    bad({"run", "d"}, "unknown command 'run'");
    bad({"generate"}, "generate: missing MODEL");
    bad({"generate", "d"}, "missing --prompt TEXT or --ids IDS");
    bad({"generate", "d", "--prompt", "a", "--ids", "1"}, "not both");
    bad({"generate", "d", "--prompt"}, "--prompt: missing value");
    bad({"generate", "d", "--prompt", "a", "-n", "x"}, "-n: 'x' is not a valid number");
    bad({"generate", "d", "--prompt", "a", "--temperature", "-1"}, "temperature must be >= 0");
    bad({"generate", "d", "--prompt", "a", "--top-p", "2"}, "top_p");
    bad({"generate", "d", "--prompt", "a", "--threads", "0"}, "--threads: expected 1 to 1024");
    bad({"generate", "d", "--prompt", "a", "--frobnicate"}, "unknown option '--frobnicate'");
    bad({"logits", "d", "--ids", "1,x"}, "'x' is not a token id");
    bad({"logits", "d", "--ids", "1"}, "missing --out");
    bad({"logits", "d", "--out", "f"}, "missing --ids");
    bad({"info", "d", "--out", "f"}, "unknown option '--out'");
    bad({"info", "d", "--context", "-5"}, "not a valid number");
    bad({"info", "d", "--weights", "q4_K"}, "--weights: unknown weight type 'q4_K' (known: f32, bf16, q8_0)");
    bad({"generate", "d", "--prompt", "a", "--weights", "F32"}, "unknown weight type 'F32' (known: f32, bf16, q8_0)");
    bad({"info", "d", "--weights"}, "--weights: missing value");
    bad({"convert"}, "convert: missing MODEL");
    bad({"convert", "d"}, "convert: missing OUT.gguf");
    bad({"convert", "d", "--weights", "q8_0"}, "convert: missing OUT.gguf");
    bad({"convert", "d", "out.safetensors"}, "convert: OUT 'out.safetensors' does not end in .gguf");
    bad({"convert", "d", "o.gguf", "--weights", "int4"}, "unknown weight type 'int4'");
    bad({"convert", "d", "o.gguf", "--threads", "2"}, "convert: unknown option '--threads'");
    bad({"convert", "d", "o.gguf", "--context", "5"}, "convert: unknown option '--context'");
    bad({"info", "d", "--threads", "2"}, "info: unknown option '--threads'");
}

TEST_CASE("load_jamba: weights as stored (bf16) or converted (f32, bf16, q8_0) while loading", "[model]") {
    namespace fs = std::filesystem;
    const fs::path dir = fs::temp_directory_path() / ("hystack_types_test_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir / "bf16");
    // A BF16 checkpoint (the 2-D weights BF16, as HF saves a bf16 model; the rest F32), and the f32 model
    // holding exactly its values.
    auto lm = tiny_model(false, 21);
    std::vector<std::vector<float>> rounded;
    std::vector<io::TensorData> t;
    for (auto& p : lm.params()) {
        const bool matrix = p.weight != nullptr;
        if (matrix)
            for (auto& v : p.data) v = float(bf16(v));
        t.push_back({p.name, p.shape, std::span<const float>(p.data), matrix ? "BF16" : "F32"});
    }
    io::write_safetensors((dir / "bf16" / "model.safetensors").string(), t);
    std::ofstream(dir / "bf16" / "config.json") << tiny_config_json();

    SerialExecutor serial;
    ThreadPool pool(2);
    const auto ids = tokens(13);
    auto s0 = lm.make_state(32);
    const auto want = lm.prefill_all(ids, s0, serial);
    const auto type_of = [](CausalLM& m, const std::string& name) {
        for (auto& p : m.params())
            if (p.name == name) return param_dtype(p);
        FAIL("no parameter " << name);
        return DType::f32;
    };
    const std::string in_proj = "model.layers.0.mamba.in_proj.weight", dt_proj = "model.layers.0.mamba.dt_proj.weight",
                      expert_down = "model.layers.1.feed_forward.experts.2.down_proj.weight",
                      expert_up = "model.layers.1.feed_forward.experts.2.up_proj.weight";

    SECTION("as stored: bf16, the f32 model's logits") {
        auto m = io::load_jamba((dir / "bf16").string());
        CHECK(type_of(m, in_proj) == DType::bf16);
        CHECK(type_of(m, "model.embed_tokens.weight") == DType::bf16);
        CHECK(type_of(m, "lm_head.weight") == DType::bf16);
        CHECK(type_of(m, expert_up) == DType::bf16);
        CHECK(m.weight_bytes_per_token() < lm.weight_bytes_per_token() * 6 / 10);
        auto s = m.make_state(32);
        CHECK(max_diff(m.prefill_all(ids, s, serial).span(), want.span()) < 1e-5);
    }
    SECTION("converted to f32: the same bits as the f32 model") {
        io::JambaLoadOptions opt;
        opt.weights = DType::f32;
        auto m = io::load_jamba((dir / "bf16").string(), opt);
        CHECK(type_of(m, in_proj) == DType::f32);
        auto s = m.make_state(32);
        CHECK(same(m.prefill_all(ids, s, serial).span(), want.span()));
    }
    SECTION("converted to q8_0: close, rows that are no whole blocks stay f32, decode agrees with prefill") {
        io::JambaLoadOptions opt;
        opt.weights = DType::q8_0;
        auto m = io::load_jamba((dir / "bf16").string(), opt);
        CHECK(type_of(m, in_proj) == DType::q8_0);
        CHECK(type_of(m, expert_up) == DType::q8_0);
        CHECK(type_of(m, dt_proj) == DType::f32);      // rows of dt_rank 4
        CHECK(type_of(m, expert_down) == DType::f32);  // rows of 48
        auto s = m.make_state(32);
        const auto got = m.prefill_all(ids, s, serial);
        double scale = 0;
        for (float v : want.span()) scale = std::max(scale, double(std::fabs(v)));
        CHECK(max_diff(got.span(), want.span()) < 0.05 * scale);
        auto st = m.make_state(32);
        for (std::size_t i = 0; i < ids.size(); ++i)
            CHECK(max_diff(m.step(ids[i], st, serial), std::span<const float>(got.row(i), 64)) < 1e-4);
        auto sp = m.make_state(32);
        CHECK(same(m.prefill_all(ids, sp, pool).span(), got.span()));
    }
    SECTION("a model converted in memory equals the one converted while loading") {
        io::JambaLoadOptions opt;
        opt.weights = DType::q8_0;
        auto a = io::load_jamba((dir / "bf16").string(), opt);
        auto b = io::load_jamba((dir / "bf16").string());  // bf16, then re-loaded from its own params
        io::LoadOptions lo;
        lo.weights = DType::q8_0;
        const auto ckpt = io::Checkpoint::open((dir / "bf16").string());
        io::load_params(ckpt, b.params(), lo);
        b.on_weights_loaded();
        auto sa = a.make_state(32), sb = b.make_state(32);
        CHECK(same(a.prefill_all(ids, sa, serial).span(), b.prefill_all(ids, sb, serial).span()));
    }
    fs::remove_all(dir);
}
