// Sampling: greedy, temperature, top-k, top-p; seeded and reproducible; parameter errors.
#include <hystack/model.hpp>

#include <cmath>
#include <map>
#include <vector>

#include "catch.hpp"

using namespace hystack;

namespace {
}  // namespace

TEST_CASE("greedy picks the argmax, lowest id on ties, ignoring NaN", "[sampling]") {
    Sampler s(SamplingParams::greedy());
    std::vector<float> l = {0.1f, 2.0f, -1.0f, 2.0f};
    CHECK(s.sample(l) == 1);
    CHECK(argmax(l) == 1);
    std::vector<float> n = {NAN, -5.0f, NAN, -4.0f};
    CHECK(argmax(n) == 3);
    // top_k = 1 is greedy whatever the temperature.
    Sampler k1({2.0f, 1, 1.0f, 7});
    for (int i = 0; i < 20; ++i) CHECK(k1.sample(l) == 1);
    CHECK_THROWS_AS(s.sample(std::span<const float>{}), error);
}

TEST_CASE("the same seed gives the same tokens; another seed differs", "[sampling]") {
    std::vector<float> l(64);
    for (std::size_t i = 0; i < l.size(); ++i) l[i] = std::sin(float(i) * 0.7f) * 2.0f;
    auto draw = [&](SamplingParams p) {
        Sampler s(p);
        std::vector<token_id> v;
        for (int i = 0; i < 200; ++i) v.push_back(s.sample(l));
        return v;
    };
    const SamplingParams p{0.8f, 0, 1.0f, 1234};
    CHECK(draw(p) == draw(p));
    auto q = p;
    q.seed = 1235;
    CHECK(draw(p) != draw(q));
    // Reseeding restarts the sequence.
    Sampler s(p);
    auto a = s.sample(l);
    s.reseed(1234);
    CHECK(s.sample(l) == a);
}

TEST_CASE("temperature sampling follows softmax(logits / T)", "[sampling]") {
    std::vector<float> l = {0.0f, 1.0f, 2.0f};
    const float T = 1.5f;
    Sampler s({T, 0, 1.0f, 99});
    std::map<token_id, int> counts;
    const int n = 60000;
    for (int i = 0; i < n; ++i) ++counts[s.sample(l)];
    double z = 0;
    for (float v : l) z += std::exp(v / T);
    for (int t = 0; t < 3; ++t) {
        const double want = std::exp(l[std::size_t(t)] / T) / z;
        CHECK_THAT(double(counts[t]) / n, WithinAbs(want, 0.01));
    }
}

TEST_CASE("top-k keeps only the k largest; top-p the smallest nucleus", "[sampling]") {
    std::vector<float> l = {3.0f, 0.0f, 2.9f, -1.0f, 2.8f, 1.0f};
    Sampler k({1.0f, 3, 1.0f, 5});
    for (int i = 0; i < 2000; ++i) {
        const auto t = k.sample(l);
        CHECK((t == 0 || t == 2 || t == 4));
    }
    // probs ~ {0.36, 0.02, 0.33, 0.006, 0.30, 0.05}: top_p 0.5 keeps ids 0 and 2.
    Sampler p({1.0f, 0, 0.5f, 6});
    std::map<token_id, int> seen;
    for (int i = 0; i < 2000; ++i) ++seen[p.sample(l)];
    CHECK(seen.size() == 2);
    CHECK(seen.count(0));
    CHECK(seen.count(2));
    // A tiny top_p keeps just the best token.
    Sampler tiny({1.0f, 0, 1e-6f, 6});
    for (int i = 0; i < 100; ++i) CHECK(tiny.sample(l) == 0);
    // -inf logits are never drawn.
    std::vector<float> m = {-INFINITY, 0.0f, -INFINITY, 0.0f};
    Sampler t({1.0f, 0, 1.0f, 3});
    for (int i = 0; i < 500; ++i) {
        const auto v = t.sample(m);
        CHECK((v == 1 || v == 3));
    }
}

TEST_CASE("sampling parameters are validated", "[sampling]") {
    CHECK_ERROR("temperature must be >= 0", Sampler({-1.0f, 0, 1.0f, 0}));
    CHECK_ERROR("temperature", Sampler({NAN, 0, 1.0f, 0}));
    CHECK_ERROR("top_p must be in (0, 1]", Sampler({1.0f, 0, 0.0f, 0}));
    CHECK_ERROR("top_p", Sampler({1.0f, 0, 1.5f, 0}));
}
