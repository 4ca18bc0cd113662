// attention kernel: flash (lane / dot / scalar paths) against the double-precision reference.
#include <hystack/kernels.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "catch.hpp"

using namespace hystack;
using kernels::AttentionDims;
using kernels::AttentionPath;

namespace {

Matrix<float> random_matrix(std::size_t r, std::size_t c, unsigned seed, float lo = -1.0f, float hi = 1.0f) {
    Matrix<float> m(r, c);
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(lo, hi);
    for (auto& x : m.span()) x = dist(rng);
    return m;
}

double max_excess(const Matrix<float>& got, const Matrix<float>& want, double atol = 2e-5, double rtol = 2e-5) {
    double worst = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
        const double g = got.data()[i], w = want.data()[i];
        const double e = std::fabs(g - w) / (atol + rtol * std::fabs(w));
        worst = std::isnan(e) ? 1e30 : std::max(worst, e);
    }
    return worst;
}

struct Case {
    std::size_t L, past, H, Hk, d, window;
};

// Runs the kernel on `path` (keys 0..past+L-1, queries at past..) and compares with the reference.
void check_case(const Case& c, AttentionPath path, unsigned seed, float qscale = 1.0f) {
    const AttentionDims dims{c.H, c.Hk, c.d, c.window, 0.0f};
    const std::size_t n = c.past + c.L;
    auto q = random_matrix(c.L, c.H * c.d, seed, -qscale, qscale);
    auto k = random_matrix(n, c.Hk * c.d, seed + 1);
    auto v = random_matrix(n, c.Hk * c.d, seed + 2);
    Matrix<float> got(c.L, c.H * c.d), want(c.L, c.H * c.d);
    kernels::attention_reference(q.view(), c.past, k.view(), v.view(), 0, want.view(), dims);
    kernels::AttentionWorkspace ws;
    SerialExecutor ex;
    kernels::attention(q.view(), c.past, kernels::KVView::of(k.view(), v.view()), got.view(), dims, ws, ex, path);
    INFO("L=" << c.L << " past=" << c.past << " H=" << c.H << " Hk=" << c.Hk << " d=" << c.d << " W=" << c.window
              << " path=" << int(path));
    CHECK(max_excess(got, want) <= 1.0);
}

}  // namespace

TEST_CASE("attention matches the reference on odd sizes (lane path)", "[attention]") {
    unsigned seed = 1;
    for (std::size_t d : {40, 64, 128})
        for (std::size_t group : {1, 2, 8})
            for (std::size_t L : {1, 7, 129})
                for (std::size_t window : {0, 5, 64}) {
                    const std::size_t Hk = group == 8 ? 1 : 2;
                    check_case({L, 0, Hk * group, Hk, d, window}, AttentionPath::lane, seed++);
                    check_case({L, 37, Hk * group, Hk, d, window}, AttentionPath::lane, seed++);
                }
}

TEST_CASE("attention decode (dot path) matches the reference", "[attention]") {
    unsigned seed = 100;
    for (std::size_t d : {64, 128})
        for (std::size_t group : {1, 2, 4, 8, 16})
            for (std::size_t past : {0, 1, 15, 16, 17, 63, 64, 65, 300, 1100})
                for (std::size_t window : {0, 7, 100}) check_case({1, past, 2 * group, 2, d, window}, AttentionPath::dot, seed++);
}

TEST_CASE("attention scalar path and automatic path match the reference", "[attention]") {
    unsigned seed = 300;
    for (auto path : {AttentionPath::scalar, AttentionPath::automatic})
        for (std::size_t d : {40, 64})
            for (std::size_t L : {1, 7, 33})
                for (std::size_t window : {0, 5}) check_case({L, 11, 4, 2, d, window}, path, seed++);
}

TEST_CASE("attention keeps extreme scores exact and never makes NaN", "[attention]") {
    // Integer q and k in {-1, 0, 1}, scale 1: scores are exact integers up to +-1e4 (softmax nearly
    // one-hot, with exact gaps), so fp32 must match the double reference to rounding.
    for (auto path : {AttentionPath::lane, AttentionPath::dot, AttentionPath::scalar})
        for (std::size_t L : {1, 37}) {
            if (path == AttentionPath::dot && L > 1) continue;
            const std::size_t H = 4, Hk = 2, d = 64, n = 40 + L;
            const AttentionDims dims{H, Hk, d, L > 1 ? 9u : 0u, 1.0f};
            std::mt19937 rng(unsigned(L) + unsigned(path) * 10);
            std::uniform_int_distribution<int> tern(-1, 1), big(-160, 160);
            Matrix<float> q(L, H * d), k(n, Hk * d), v(n, Hk * d), got(L, H * d), want(L, H * d);
            for (auto& x : q.span()) x = float(big(rng));
            for (auto& x : k.span()) x = float(tern(rng));
            for (auto& x : v.span()) x = float(tern(rng)) * 0.5f;
            kernels::attention_reference(q.view(), n - L, k.view(), v.view(), 0, want.view(), dims);
            kernels::AttentionWorkspace ws;
            SerialExecutor ex;
            kernels::attention(q.view(), n - L, kernels::KVView::of(k.view(), v.view()), got.view(), dims, ws, ex, path);
            float maxscore = 0;
            for (std::size_t j = 0; j < n; ++j) {
                float s = 0;
                for (std::size_t t = 0; t < d; ++t) s += q(0, t) * k(j, t);
                maxscore = std::max(maxscore, std::fabs(s));
            }
            INFO("path " << int(path) << " L " << L << " max |score| " << maxscore);
            CHECK(maxscore > 1000.0f);
            CHECK(max_excess(got, want) <= 1.0);
        }
}

TEST_CASE("attention rows that see no key yield zeros", "[attention]") {
    // Keys at positions 100.. but queries at 0..9: every row is fully masked.
    const AttentionDims dims{4, 2, 64, 0, 0.0f};
    auto q = random_matrix(10, 4 * 64, 1);
    auto k = random_matrix(20, 2 * 64, 2), v = random_matrix(20, 2 * 64, 3);
    for (auto path : {AttentionPath::lane, AttentionPath::scalar, AttentionPath::dot}) {
        const std::size_t L = path == AttentionPath::dot ? 1 : 10;
        Matrix<float> out(L, 4 * 64);
        for (auto& x : out.span()) x = 7.0f;
        kernels::AttentionWorkspace ws;
        SerialExecutor ex;
        kernels::attention(q.view().rows_slice(0, L), 0, kernels::KVView::of(k.view(), v.view(), 100), out.view(), dims, ws, ex, path);
        for (float x : out.span()) REQUIRE(x == 0.0f);
        Matrix<float> want(L, 4 * 64);
        kernels::attention_reference(q.view().rows_slice(0, L), 0, k.view(), v.view(), 100, want.view(), dims);
        for (float x : want.span()) REQUIRE(x == 0.0f);
    }
}

TEST_CASE("attention: window >= L equals global", "[attention]") {
    const std::size_t L = 50;
    auto q = random_matrix(L, 4 * 40, 1);
    auto k = random_matrix(L, 2 * 40, 2), v = random_matrix(L, 2 * 40, 3);
    Matrix<float> a(L, 4 * 40), b(L, 4 * 40);
    kernels::attention(q.view(), k.view(), v.view(), a.view(), {4, 2, 40, 0, 0.0f});
    kernels::attention(q.view(), k.view(), v.view(), b.view(), {4, 2, 40, L, 0.0f});
    for (std::size_t i = 0; i < a.size(); ++i) REQUIRE(a.data()[i] == b.data()[i]);
}

TEST_CASE("attention: 1 and 2 threads are bit-identical", "[attention]") {
    ThreadPool pool(2);
    SerialExecutor serial;
    for (std::size_t L : {1, 100}) {
        const AttentionDims dims{8, 2, 64, L == 1 ? 0u : 30u, 0.0f};
        const std::size_t n = 3000;
        auto q = random_matrix(L, 8 * 64, 1);
        auto k = random_matrix(n, 2 * 64, 2), v = random_matrix(n, 2 * 64, 3);
        Matrix<float> a(L, 8 * 64), b(L, 8 * 64);
        kernels::AttentionWorkspace w1, w2;
        const auto kv = kernels::KVView::of(k.view(), v.view());
        kernels::attention(q.view(), n - L, kv, a.view(), dims, w1, serial);
        kernels::attention(q.view(), n - L, kv, b.view(), dims, w2, pool);
        for (std::size_t i = 0; i < a.size(); ++i) REQUIRE(a.data()[i] == b.data()[i]);
    }
}

TEST_CASE("attention: segments in any split give the same result", "[attention]") {
    // Keys split into 3 segments (as a ring cache + new keys produce) == one segment.
    const AttentionDims dims{4, 1, 64, 0, 0.0f};
    const std::size_t n = 200, L = 20;
    auto q = random_matrix(L, 4 * 64, 1);
    auto k = random_matrix(n, 64, 2), v = random_matrix(n, 64, 3);
    Matrix<float> a(L, 4 * 64), b(L, 4 * 64);
    kernels::AttentionWorkspace ws;
    SerialExecutor ex;
    kernels::attention(q.view(), n - L, kernels::KVView::of(k.view(), v.view()), a.view(), dims, ws, ex);
    kernels::KVView kv;
    kv.add({120, 80, k.row(120), v.row(120), 64});
    kv.add({0, 50, k.row(0), v.row(0), 64});
    kv.add({50, 70, k.row(50), v.row(50), 64});
    kernels::attention(q.view(), n - L, kv, b.view(), dims, ws, ex);
    CHECK(max_excess(b, a, 1e-6, 1e-5) <= 1.0);
}

TEST_CASE("attention: errors on bad shapes", "[attention]") {
    auto q = random_matrix(3, 4 * 8, 1), k = random_matrix(3, 2 * 8, 2), v = random_matrix(3, 2 * 8, 3);
    Matrix<float> out(3, 4 * 8);
    CHECK_THROWS_AS(kernels::attention(q.view(), k.view(), v.view(), out.view(), {3, 2, 8, 0, 0.0f}), hystack::error);
    CHECK_THROWS_AS(kernels::attention(q.view(), k.view(), v.view(), out.view(), {4, 2, 0, 0, 0.0f}), hystack::error);
    Matrix<float> bad(3, 4 * 8 + 1);
    CHECK_THROWS_AS(kernels::attention(q.view(), k.view(), v.view(), bad.view(), {4, 2, 8, 0, 0.0f}), hystack::error);
    CHECK_THROWS_AS(kernels::attention(bad.view(), k.view(), v.view(), out.view(), {4, 2, 8, 0, 0.0f}), hystack::error);
    auto k2 = random_matrix(3, 2 * 8 + 1, 2);
    CHECK_THROWS_AS(kernels::attention(q.view(), k2.view(), v.view(), out.view(), {4, 2, 8, 0, 0.0f}), hystack::error);
    try {
        kernels::attention(bad.view(), k.view(), v.view(), out.view(), {4, 2, 8, 0, 0.0f});
    } catch (const hystack::error& e) {
        CHECK(std::string(e.what()) == "attention: q: expected [*, 32], got [3, 33]");
    }
}
