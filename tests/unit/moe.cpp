// SparseMoE and the MoE kernels (router, buckets, expert dispatch) against a naive per-token loop in
// double: k = 1 and k = num_experts, experts that receive no token, ties, renormalised or not,
// 1 and 2 threads identical, decode (step, step_batch) identical to prefill rows, no allocation in
// step, router statistics, bad shapes.
#include <hystack/layers.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "catch.hpp"

using namespace hystack;

namespace {

void fill(std::span<float> v, unsigned seed, float lo, float hi) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> d(lo, hi);
    for (auto& x : v) x = d(rng);
}

void fill_layer(SparseMoE& moe, unsigned seed) {
    for (auto& p : moe.params()) {
        const float s = 1.0f / std::sqrt(float(p.shape[1]));
        fill(p.data, seed++, -s, s);
    }
}

Matrix<float> random_x(std::size_t L, std::size_t d, unsigned seed, float lo = -1.0f, float hi = 1.0f) {
    Matrix<float> x(L, d);
    fill(x.span(), seed, lo, hi);
    return x;
}

struct Naive {
    std::vector<double> out;                 // [L, d]
    std::vector<std::vector<std::size_t>> idx;  // [L][k]
    std::vector<std::vector<double>> w;         // [L][k]
    std::vector<std::vector<double>> p;         // [L][E]
};

// The per-token loop the issue describes, in double.
Naive naive_moe(SparseMoE& moe, MatrixView<const float> x) {
    const auto& c = moe.config();
    const std::size_t L = x.rows, d = c.d_model, H = c.hidden, E = c.num_experts, k = c.top_k;
    Naive r;
    r.out.assign(L * d, 0.0);
    auto R = moe.router_weight();
    for (std::size_t t = 0; t < L; ++t) {
        std::vector<double> lg(E), p(E);
        for (std::size_t e = 0; e < E; ++e)
            for (std::size_t i = 0; i < d; ++i) lg[e] += double(x(t, i)) * R(e, i);
        const double mx = *std::max_element(lg.begin(), lg.end());
        double s = 0;
        for (std::size_t e = 0; e < E; ++e) s += p[e] = std::exp(lg[e] - mx);
        for (auto& v : p) v /= s;
        std::vector<std::size_t> order(E);
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return p[a] > p[b]; });
        std::vector<std::size_t> idx(order.begin(), order.begin() + long(k));
        std::vector<double> w(k);
        double ws = 0;
        for (std::size_t j = 0; j < k; ++j) ws += w[j] = p[idx[j]];
        if (c.renormalize)
            for (auto& v : w) v /= ws;
        for (std::size_t j = 0; j < k; ++j) {
            const std::size_t e = idx[j];
            auto G = moe.gate_proj(e), U = moe.up_proj(e), D = moe.down_proj(e);
            std::vector<double> h(H);
            for (std::size_t n = 0; n < H; ++n) {
                double g = 0, u = 0;
                for (std::size_t i = 0; i < d; ++i) {
                    g += double(x(t, i)) * G(n, i);
                    u += double(x(t, i)) * U(n, i);
                }
                h[n] = g / (1.0 + std::exp(-g)) * u;
            }
            for (std::size_t o = 0; o < d; ++o) {
                double s2 = 0;
                for (std::size_t n = 0; n < H; ++n) s2 += h[n] * D(o, n);
                r.out[t * d + o] += w[j] * s2;
            }
        }
        r.idx.push_back(idx);
        r.w.push_back(w);
        r.p.push_back(p);
    }
    return r;
}


void check_against_naive(SparseMoE& moe, MatrixView<const float> x, MatrixView<const float> y) {
    const auto ref = naive_moe(moe, x);
    const std::size_t d = moe.config().d_model, k = moe.config().top_k;
    for (std::size_t t = 0; t < x.rows; ++t) {
        for (std::size_t j = 0; j < k; ++j) {
            CHECK(moe.last_topk_index()(t, j) == ref.idx[t][j]);
            CHECK_THAT(moe.last_topk_weight()(t, j), WithinAbs(ref.w[t][j], 1e-6));
        }
        for (std::size_t o = 0; o < d; ++o) CHECK_THAT(y(t, o), WithinAbs(ref.out[t * d + o], 2e-5));
    }
}

}  // namespace

TEST_CASE("SparseMoE matches a naive per-token loop: k = 1, 2, num_experts; renormalised or not", "[moe]") {
    ThreadPool pool2(2);
    struct Case {
        std::size_t d, H, E, k;
        bool renorm;
    };
    for (const Case& c : {Case{24, 20, 4, 1, false}, Case{24, 20, 4, 1, true}, Case{17, 37, 8, 2, false},
                          Case{17, 37, 8, 2, true}, Case{33, 16, 5, 5, false}, Case{33, 16, 5, 5, true},
                          Case{64, 48, 16, 2, false}}) {
        SparseMoE moe({c.d, c.H, c.E, c.k, c.renorm});
        fill_layer(moe, unsigned(c.d * 7 + c.E));
        for (std::size_t L : {1, 3, 17, 40}) {
            INFO("d " << c.d << " H " << c.H << " E " << c.E << " k " << c.k << " renorm " << c.renorm << " L " << L);
            auto x = random_x(L, c.d, unsigned(L + c.k));
            Matrix<float> y1(L, c.d), y2(L, c.d);
            moe.prefill(x, y1.view(), pool2);
            check_against_naive(moe, x, y1);
            moe.prefill(x, y2);
            CHECK(same_bits(y1, y2));  // 1 and 2 threads
            // statistics of the last call
            const auto& st = moe.router_stats();
            CHECK(st.tokens == L);
            std::size_t total = 0;
            for (auto n : st.tokens_per_expert) total += n;
            CHECK(total == L * c.k);
            if (c.k == c.E)
                for (auto n : st.tokens_per_expert) CHECK(n == L);
        }
    }
}

TEST_CASE("SparseMoE: decode (step, step_batch) gives the bits of the prefill rows", "[moe]") {
    ThreadPool pool2(2);
    SparseMoE moe({40, 56, 8, 2, false});
    fill_layer(moe, 3);
    const std::size_t L = 9;
    auto x = random_x(L, 40, 5);
    Matrix<float> y(L, 40), ys(1, 40), yb(4, 40);
    moe.prefill(x, y.view(), pool2);
    for (std::size_t t = 0; t < L; ++t) {
        moe.step(std::span<const float>(x.row(t), 40), ys.span(), pool2);
        CHECK(same_bits(ys, MatrixView<const float>(y.view().rows_slice(t, 1))));
    }
    moe.step_batch(MatrixView<const float>(x.view()).rows_slice(2, 4), yb.view(), pool2);
    CHECK(same_bits(yb, MatrixView<const float>(y.view().rows_slice(2, 4))));
}

TEST_CASE("SparseMoE: experts that receive no token, ties to the lower index", "[moe]") {
    const std::size_t d = 20, H = 12, E = 6;
    SparseMoE moe({d, H, E, 2, false});
    fill_layer(moe, 9);
    auto R = moe.router_weight();
    // x > 0 everywhere; router rows 4 and 5 all -1: their logits are very negative, never chosen.
    for (std::size_t e : {4, 5})
        for (std::size_t i = 0; i < d; ++i) R(e, i) = -1.0f;
    auto x = random_x(11, d, 2, 0.5f, 1.0f);
    Matrix<float> y(11, d);
    moe.prefill(x, y);
    CHECK(moe.router_stats().tokens_per_expert[4] == 0);
    CHECK(moe.router_stats().tokens_per_expert[5] == 0);
    check_against_naive(moe, x, y);

    // ties: experts 1, 2 and 3 get identical router rows (identical p); top-2 must pick 1 then 2
    // when they lead, and expert 0 is made the weakest.
    for (std::size_t i = 0; i < d; ++i) {
        R(1, i) = R(2, i) = R(3, i) = 0.5f;
        R(0, i) = 0.0f;
    }
    moe.prefill(x, y);
    for (std::size_t t = 0; t < 11; ++t) {
        CHECK(moe.last_topk_index()(t, 0) == 1);
        CHECK(moe.last_topk_index()(t, 1) == 2);
        CHECK(moe.last_topk_weight()(t, 0) == moe.last_topk_weight()(t, 1));
    }
    CHECK(moe.router_stats().tokens_per_expert[3] == 0);
    check_against_naive(moe, x, y);

    // every logit equal: uniform p, top-k = the first k experts, weight 1/E (or 1/k renormalised)
    for (std::size_t e = 0; e < E; ++e)
        for (std::size_t i = 0; i < d; ++i) R(e, i) = 0.25f;
    moe.prefill(x, y);
    CHECK(moe.last_topk_index()(0, 0) == 0);
    CHECK(moe.last_topk_index()(0, 1) == 1);
    CHECK_THAT(moe.last_topk_weight()(0, 0), WithinAbs(1.0 / E, 1e-7));
    CHECK_THAT(moe.router_stats().load_balancing, WithinAbs(double(E) * (1.0 * 1.0 / E + 1.0 * 1.0 / E), 1e-6));
}

TEST_CASE("moe kernels: router and buckets", "[moe]") {
    // logits with a tie between 2 and 3, renormalised weights sum to 1
    Matrix<float> logits(2, 4);
    const float l0[] = {0.0f, 1.0f, 2.0f, 2.0f}, l1[] = {3.0f, -1.0f, 0.0f, 3.0f};
    std::copy(l0, l0 + 4, logits.row(0));
    std::copy(l1, l1 + 4, logits.row(1));
    Matrix<std::uint32_t> index(2, 2);
    Matrix<float> weight(2, 2);
    std::vector<double> ps(4, 0.0);
    kernels::moe_route(logits, false, index, weight, ps);
    CHECK(index(0, 0) == 2);
    CHECK(index(0, 1) == 3);
    CHECK(index(1, 0) == 0);
    CHECK(index(1, 1) == 3);
    const double z0 = 1 + std::exp(1.0) + 2 * std::exp(2.0);
    CHECK_THAT(weight(0, 0), WithinAbs(std::exp(2.0) / z0, 1e-7));
    CHECK_THAT(ps[1], WithinAbs(std::exp(1.0) / z0 + std::exp(-1.0) / (2 * std::exp(3.0) + std::exp(-1.0) + 1), 1e-6));
    kernels::moe_route(logits, true, index, weight);
    CHECK_THAT(weight(0, 0) + weight(0, 1), WithinAbs(1.0, 1e-7));
    CHECK_THAT(weight(0, 0), WithinAbs(0.5, 1e-7));
    // buckets: expert 0 <- token 1; 1 <- none; 2 <- token 0; 3 <- tokens 0, 1
    std::vector<std::uint32_t> off(5), tok(4);
    std::vector<float> tw(4);
    kernels::moe_bucket(index, weight, 4, off, tok, tw);
    CHECK(off == std::vector<std::uint32_t>{0, 1, 1, 2, 4});
    CHECK(tok == std::vector<std::uint32_t>{1, 0, 0, 1});
    CHECK(tw[0] == weight(1, 0));
    CHECK(tw[3] == weight(1, 1));
    // errors
    Matrix<std::uint32_t> index5(2, 5), bad_index(2, 2);
    Matrix<float> weight5(2, 5);
    CHECK_THROWS_AS(kernels::moe_route(logits, false, index5, weight5), error);
    CHECK_THROWS_AS(kernels::moe_route(logits, false, index, weight5), error);
    bad_index(0, 0) = 7;
    CHECK_THROWS_AS(kernels::moe_bucket(bad_index, weight, 4, off, tok, tw), error);
}

TEST_CASE("SparseMoE: step allocates nothing once constructed; params; bad shapes throw", "[moe]") {
    SparseMoE moe({32, 24, 4, 2, false});
    fill_layer(moe, 1);
    auto params = moe.params();
    REQUIRE(params.size() == 1 + 3 * 4);
    CHECK(params[0].name == "router.weight");
    CHECK(params[0].shape == std::vector<std::size_t>{4, 32});
    CHECK(params[1].name == "experts.0.gate_proj.weight");
    CHECK(params[3].name == "experts.0.down_proj.weight");
    CHECK(params[3].shape == std::vector<std::size_t>{32, 24});
    CHECK(params[12].name == "experts.3.down_proj.weight");

    ThreadPool pool2(2);
    std::vector<float> x(32, 0.3f), y(32);
    const std::size_t ws = moe.workspace_bytes();
    const auto* idx = moe.last_topk_index().data;
    for (int i = 0; i < 3; ++i) moe.step(x, y, pool2);
    CHECK(moe.workspace_bytes() == ws);
    CHECK(moe.last_topk_index().data == idx);

    Matrix<float> xb(3, 31), yb(3, 32), yb2(2, 32), xg(3, 32);
    CHECK_THROWS_AS(moe.prefill(xb, yb), error);
    CHECK_THROWS_WITH(moe.prefill(xb, yb), "SparseMoE: x: expected [*, 32], got [3, 31]");
    CHECK_THROWS_AS(moe.prefill(xg, yb2), error);
    std::vector<float> x31(31);
    CHECK_THROWS_AS(moe.step(x31, y), error);
    CHECK_THROWS_AS(moe.step(x, x31), error);
    CHECK_THROWS_AS(SparseMoE({32, 24, 4, 5, false}), error);
    CHECK_THROWS_AS(SparseMoE({32, 24, 4, 0, false}), error);
    CHECK_THROWS_AS(SparseMoE({0, 24, 4, 1, false}), error);
    // zero tokens: nothing to do
    Matrix<float> x0(0, 32), y0(0, 32);
    CHECK_NOTHROW(moe.prefill(x0, y0));
}

TEST_CASE("moe_experts matches its scalar reference on odd sizes, 0 and 1 included", "[moe]") {
    // Routing from moe_route / moe_bucket, then the fast dispatch against the reference over the same
    // buckets. Sizes off the SIMD widths and the 3 x 8 tile; L = 0 (no token), E = 1, k = E.
    ThreadPool pool2(2);
    struct Case {
        std::size_t d, H, E, k;
    };
    unsigned seed = 700;
    for (const Case& c : {Case{1, 1, 1, 1}, Case{7, 5, 3, 1}, Case{17, 19, 5, 2}, Case{33, 13, 5, 5}, Case{9, 1, 2, 2},
                          Case{1, 23, 4, 3}}) {
        std::vector<Matrix<float>> gate, up, down;
        for (std::size_t e = 0; e < c.E; ++e) {
            gate.push_back(random_x(c.H, c.d, seed++, -1.0f / std::sqrt(float(c.d)), 1.0f / std::sqrt(float(c.d))));
            up.push_back(random_x(c.H, c.d, seed++, -1.0f / std::sqrt(float(c.d)), 1.0f / std::sqrt(float(c.d))));
            down.push_back(random_x(c.d, c.H, seed++, -1.0f / std::sqrt(float(c.H)), 1.0f / std::sqrt(float(c.H))));
        }
        auto experts = [&](std::size_t e) {
            return kernels::SwiGLUWeights{WeightView::of(gate[e].view()), WeightView::of(up[e].view()), WeightView::of(down[e].view())};
        };
        auto router = random_x(c.E, c.d, seed++);
        for (std::size_t L : {0, 1, 3, 17}) {
            INFO("d " << c.d << " H " << c.H << " E " << c.E << " k " << c.k << " L " << L);
            auto x = random_x(L, c.d, seed++);
            Matrix<float> logits(L, c.E), weight(L, c.k);
            Matrix<std::uint32_t> index(L, c.k);
            kernels::linear_reference(x, router, {}, logits.view());
            kernels::moe_route(logits, c.k > 1, index.view(), weight.view());
            std::vector<std::uint32_t> offsets(c.E + 1), token(L * c.k);
            std::vector<float> token_weight(L * c.k);
            kernels::moe_bucket(index, weight, c.E, offsets, token, token_weight);
            std::vector<float> h(L * c.k * c.H);  // at least the largest bucket x H
            Matrix<float> y(L, c.d), y2(L, c.d), ref(L, c.d);
            SerialExecutor serial;
            kernels::moe_experts(x, offsets, token, token_weight, experts, y.view(), h, serial);
            kernels::moe_experts(x, offsets, token, token_weight, experts, y2.view(), h, pool2);
            kernels::moe_experts_reference(x, offsets, token, token_weight, experts, ref.view());
            CHECK(same_bits(y, y2));
            // Weights ~ 1/sqrt(fan-in) keep g, u, h and y O(1): float rounding in either summation order
            // stays far below 1e-5, a wrong weight, token or expert far above.
            double worst = 0;
            for (std::size_t t = 0; t < L; ++t)
                for (std::size_t o = 0; o < c.d; ++o) {
                    const double r = std::fabs(double(y(t, o)) - ref(t, o)) / (1e-5 * (1.0 + std::fabs(ref(t, o))));
                    worst = std::isnan(r) ? INFINITY : std::max(worst, r);
                }
            CHECK(worst <= 1.0);
            if (L > 0) {
                double norm = 0;  // a wrong result must not hide behind an all-zero output
                for (float v : ref.span()) norm += std::fabs(v);
                CHECK(norm > 0);
            }
        }
    }
}
