// Persistence of per-sequence state over the real Jamba layers: fork after a shared prompt,
// save/restore (in memory and through a file, into a freshly loaded model) continuing
// generation bit for bit, snapshots and rollback, and every restore error.
#include <hystack/hystack.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include <unistd.h>

#include "catch.hpp"

using namespace hystack;

namespace {

ModelConfig config() {
    ModelConfig c;
    c.vocab_size = 48;
    auto& s = c.stack;
    s.d_model = 32;
    s.num_layers = 8;
    s.num_attention_heads = 4;
    s.num_key_value_heads = 2;
    s.mamba_d_state = 8;
    s.mamba_d_conv = 4;
    s.mamba_dt_rank = 4;
    s.intermediate_size = 40;
    s.num_experts = 4;
    s.num_experts_per_tok = 2;
    return c;
}
using LM = BasicCausalLM<HybridStack<std::ratio<1, 8>>>;
LM model(std::uint64_t seed = 3) {
    LM lm(config());
    randomize_params(lm.params(), seed);
    lm.on_weights_loaded();
    return lm;
}
std::vector<token_id> prompt(std::size_t n) {
    std::vector<token_id> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = token_id((i * 7 + 3) % 48);
    return v;
}
bool same(std::span<const float> a, std::span<const float> b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size_bytes()) == 0;
}
std::vector<float> copy(std::span<const float> s) { return {s.begin(), s.end()}; }
}  // namespace


TEST_CASE("a copied state forks the sequence after a shared prompt", "[persistence]") {
    auto lm = model();
    SerialExecutor ex;
    auto shared = lm.make_state(64);
    lm.prefill(prompt(12), shared, ex);
    auto a = shared, b = shared;  // two continuations of one prompt
    auto la = copy(lm.step(5, a, ex));
    auto lb = copy(lm.step(6, b, ex));
    CHECK(!same(la, lb));
    // Each equals a sequence that was never forked.
    for (token_id t : {5, 6}) {
        auto fresh = lm.make_state(64);
        lm.prefill(prompt(12), fresh, ex);
        CHECK(same(lm.step(t, fresh, ex), t == 5 ? la : lb));
    }
    CHECK(shared.length() == 12);
    CHECK(a.length() == 13);
}

TEST_CASE("a restored state continues generation bit for bit", "[persistence]") {
    auto lm = model();
    ThreadPool pool(2);
    auto st = lm.make_state(96);
    lm.prefill(prompt(20), st, pool);
    lm.step(9, st, pool);
    const auto bytes = st.to_bytes();
    CHECK(bytes.size() > st.bytes() / 2);

    GenerateOptions opt;
    opt.max_new_tokens = 24;
    opt.sampling = {0.9f, 20, 0.95f, 1234};
    const auto p = prompt(3);
    auto original = st;
    auto want = lm.generate(p, original, opt, [](token_id) {}, pool);

    // In memory.
    auto restored = lm.make_state(96);
    restored.from_bytes(bytes);
    CHECK(restored.length() == 21);
    CHECK(lm.generate(p, restored, opt, [](token_id) {}, pool) == want);
    CHECK(restored.to_bytes() == original.to_bytes());

    // Through a file, into another model object with the same weights ("another process").
    const auto path = std::filesystem::temp_directory_path() / ("hystack_state_" + std::to_string(::getpid()) + ".bin");
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    std::ifstream in(path, std::ios::binary);
    std::vector<char> raw((std::istreambuf_iterator<char>(in)), {});
    std::filesystem::remove(path);
    auto other = model();
    auto s2 = other.make_state(96);
    s2.from_bytes(std::as_bytes(std::span<const char>(raw)));
    CHECK(other.generate(p, s2, opt, [](token_id) {}, pool) == want);
}

TEST_CASE("restores are checked and leave the state untouched on error", "[persistence]") {
    auto lm = model();
    SerialExecutor ex;
    auto st = lm.make_state(32);
    lm.prefill(prompt(10), st, ex);
    const auto good = st.to_bytes();
    auto target = lm.make_state(32);
    lm.prefill(prompt(4), target, ex);
    const auto before = target.to_bytes();

    auto bad = good;
    bad[3] ^= std::byte(0xff);
    CHECK_ERROR("not a hystack state", target.from_bytes(bad));
    bad = good;
    bad[8] = std::byte(1);  // a state saved before the K tile layout
    CHECK_ERROR("unsupported state format version 1 (this build reads 3)", target.from_bytes(bad));
    bad[8] = std::byte(2);  // a state whose layers were tagged by a variant index, not a kind name
    CHECK_ERROR("unsupported state format version 2 (this build reads 3)", target.from_bytes(bad));
    for (std::size_t cut : {std::size_t(5), std::size_t(40), good.size() / 2, good.size() - 1}) {
        bad.assign(good.begin(), good.begin() + std::ptrdiff_t(cut));
        CHECK_ERROR("truncated", target.from_bytes(bad));
    }
    bad = good;
    bad.insert(bad.end(), 4, std::byte(0));
    CHECK_ERROR("4 trailing bytes", target.from_bytes(bad));
    // A layer payload whose size field disagrees with what the layer reads.
    bad = good;
    bad[32 + 8] = std::byte(std::uint8_t(bad[32 + 8]) + 1);
    CHECK_ERROR("layer 0", target.from_bytes(bad));
    // A state of a differently shaped model (d_state 16 instead of 8).
    auto c = config();
    c.stack.mamba_d_state = 16;
    LM wide(c);
    auto ws = wide.make_state(32);
    CHECK_ERROR("State::load: layer 0: MambaState: expected d_inner 64, d_state 8", target.from_bytes(ws.to_bytes()));
    // A smaller KV capacity than the saved sequence needs.
    auto small = lm.make_state(4);
    CHECK_ERROR("State::load: layer 4: ", small.from_bytes(good));
    CHECK(small.length() == 0);
    CHECK(target.to_bytes() == before);
}

TEST_CASE("snapshots every N tokens let generation roll back", "[persistence]") {
    auto lm = model();
    SerialExecutor ex;
    auto st = lm.make_state(128);
    Snapshots<LM::State> snaps(8);
    std::vector<token_id> history = prompt(10);
    lm.prefill(history, st, ex);
    snaps.maybe_save(st);  // at 10 tokens: the first multiple of 8 passed
    std::vector<std::vector<float>> logits;  // logits after history[i], for i >= 10
    for (int i = 0; i < 20; ++i) {
        const token_id t = token_id((i * 5 + 1) % 48);
        logits.push_back(copy(lm.step(t, st, ex)));
        history.push_back(t);
        snaps.maybe_save(st);
    }
    CHECK(snaps.size() == 3);  // at 10, 16, 24
    const auto at30 = st.to_bytes();
    // Roll back to 19 tokens (restore the snapshot at 16, re-feed 3) and compare with what we had.
    auto l = lm.rollback(st, snaps, history, 19, ex);
    CHECK(st.length() == 19);
    double err = 0;
    for (std::size_t i = 0; i < l.size(); ++i) err = std::max(err, double(std::fabs(l[i] - logits[19 - 11][i])));
    CHECK(err < 1e-4);
    // Re-feeding the same tokens from there reaches the same logits again.
    history.resize(19);
    for (int i = 0; i < 11; ++i) {
        const token_id t = token_id(((i + 9) * 5 + 1) % 48);
        auto li = lm.step(t, st, ex);
        history.push_back(t);
        double e = 0;
        for (std::size_t k = 0; k < li.size(); ++k) e = std::max(e, double(std::fabs(li[k] - logits[std::size_t(i) + 9][k])));
        CHECK(e < 1e-4);
    }
    CHECK(st.length() == 30);
    (void)at30;
}
