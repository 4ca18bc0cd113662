// One model, many callers: the loaded model is immutable while it runs (prefill, step and step_batch
// are const; scratch lives in each sequence's state), so threads decoding their own sequences on one
// shared model get exactly the bits of a serial run. Run under ThreadSanitizer by the tsan preset.
#include <hystack/hystack.hpp>

#include <cstring>
#include <thread>
#include <vector>

#include "catch.hpp"

using namespace hystack;

namespace {
ModelConfig shared_config() {
    ModelConfig c;
    c.vocab_size = 64;
    auto& s = c.stack;
    s.d_model = 32;
    s.num_layers = 4;
    s.num_attention_heads = 4;
    s.num_key_value_heads = 2;
    s.mamba_d_state = 8;
    s.mamba_dt_rank = 4;
    s.intermediate_size = 48;
    s.num_experts = 4;
    s.num_experts_per_tok = 2;
    s.attn_layer_period = 4;
    s.attn_layer_offset = 2;
    return c;
}
std::vector<token_id> prompt_of(std::size_t seq) {
    std::vector<token_id> v(7 + seq);
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = token_id((i * 11 + seq * 5 + 3) % 64);
    return v;
}
// Prefill the sequence's prompt, then decode 6 greedy tokens; returns every logit seen.
std::vector<float> decode(const CausalLM& lm, std::size_t seq) {
    SerialExecutor ex;
    auto st = lm.make_state(32);
    auto l = lm.prefill(prompt_of(seq), st, ex);
    std::vector<float> out(l.begin(), l.end());
    for (int i = 0; i < 6; ++i) {
        l = lm.step(argmax(l), st, ex);
        out.insert(out.end(), l.begin(), l.end());
    }
    return out;
}
}  // namespace

TEST_CASE("threads decode their own sequences on one shared model, bit-identical to a serial run", "[shared_model]") {
    CausalLM model(shared_config());
    randomize_params(model.params(), 21);
    model.on_weights_loaded();
    const CausalLM& lm = model;  // what the threads share: const access only
    constexpr std::size_t N = 4;
    std::vector<std::vector<float>> serial(N), threaded(N);
    for (std::size_t s = 0; s < N; ++s) serial[s] = decode(lm, s);
    std::vector<std::thread> threads;
    for (std::size_t s = 0; s < N; ++s) threads.emplace_back([&, s] { threaded[s] = decode(lm, s); });
    for (auto& t : threads) t.join();
    for (std::size_t s = 0; s < N; ++s) {
        INFO("sequence " << s);
        REQUIRE(threaded[s].size() == serial[s].size());
        CHECK(std::memcmp(threaded[s].data(), serial[s].data(), serial[s].size() * sizeof(float)) == 0);
    }
    // Sequences differ from each other (the comparison above could not pass by accident).
    CHECK(std::memcmp(serial[0].data(), serial[1].data(), 64 * sizeof(float)) != 0);
}

TEST_CASE("threads with their own pools and batched steps share one model", "[shared_model]") {
    CausalLM model(shared_config());
    randomize_params(model.params(), 22);
    model.on_weights_loaded();
    const CausalLM& lm = model;
    auto run = [&](std::size_t salt, std::vector<float>& out) {
        ThreadPool pool(2);
        auto a = lm.make_state(32), b = lm.make_state(32);
        lm.prefill(prompt_of(salt), a, pool);
        lm.prefill(prompt_of(salt + 1), b, pool);
        std::vector<CausalLM::State*> states{&a, &b};
        std::vector<token_id> ids{token_id(salt), token_id(salt + 2)};
        for (int i = 0; i < 4; ++i) {
            auto l = lm.step_batch(ids, states, pool);
            out.insert(out.end(), l.data, l.data + l.rows * l.cols);
        }
    };
    std::vector<float> s0, s1, t0, t1;
    run(1, s0);
    run(5, s1);
    std::thread x([&] { run(1, t0); }), y([&] { run(5, t1); });
    x.join();
    y.join();
    CHECK((t0 == s0));
    CHECK((t1 == s1));
}
