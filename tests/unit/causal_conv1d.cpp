// Causal conv1d + bias + SiLU kernel: fast vs reference over many shapes and widths, state carry, step ==
// one-token prefill (bit for bit), 1 vs 2 threads bit-identical, errors.
#include <hystack/kernels.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "catch.hpp"

using namespace hystack;

namespace {

#if __has_include(<catch2/catch_all.hpp>)
using Catch::Matchers::ContainsSubstring;
#else
inline auto ContainsSubstring(const std::string& s) { return Catch::Matchers::Contains(s); }
#endif

struct ConvCase {
    std::size_t L, d, K;
    Matrix<float> x, w, s0;
    std::vector<float> bias;
    ConvCase(std::size_t L_, std::size_t d_, std::size_t K_, unsigned seed, float scale = 1)
        : L(L_), d(d_), K(K_), x(L_, d_), w(d_, K_), s0(K_ - 1, d_), bias(d_) {
        std::mt19937 rng(seed);
        std::uniform_real_distribution<float> U(-1, 1);
        for (auto& v : x.span()) v = scale * U(rng);
        for (auto& v : w.span()) v = U(rng);
        for (auto& v : s0.span()) v = scale * U(rng);
        for (auto& v : bias) v = U(rng);
    }
};



}  // namespace

TEST_CASE("causal_conv1d matches the reference for many widths and shapes", "[causal_conv1d]") {
    unsigned seed = 1;
    for (std::size_t K : {1, 2, 3, 4, 5, 8, 70})
        for (std::size_t d : {1, 15, 16, 17, 40, 100})
            for (std::size_t L : {0, 1, 2, 3, 5, 37}) {
                ConvCase c(L, d, K, seed++);
                const bool with_bias = seed % 3 != 0;
                std::span<const float> b = with_bias ? std::span<const float>(c.bias) : std::span<const float>();
                Matrix<float> s = c.s0, out(L, d), sr = c.s0, outr(L, d);
                kernels::causal_conv1d(c.x.view(), c.w.view(), b, s.view(), out.view());
                kernels::causal_conv1d_reference(c.x.view(), c.w.view(), b, sr.view(), outr.view());
                INFO("K=" << K << " d=" << d << " L=" << L << " bias=" << with_bias);
                CHECK(excess(out.span(), outr.span(), 1e-5, 1e-5) <= 1);
                CHECK(same_bits(s.span(), sr.span()));  // the state is a copy of inputs: exact
            }
}

TEST_CASE("causal_conv1d: a new sequence (zero state) is zero-padded on the left", "[causal_conv1d]") {
    ConvCase c(6, 16, 4, 3);
    Matrix<float> s(3, 16), out(6, 16);
    kernels::causal_conv1d(c.x.view(), c.w.view(), c.bias, s.view(), out.view());
    for (std::size_t i = 0; i < 16; ++i) {
        const double a0 = c.bias[i] + double(c.w(i, 3)) * c.x(0, i);
        CHECK_THAT(out(0, i), WithinAbs(a0 / (1 + std::exp(-a0)), 1e-6));
        const double a1 = c.bias[i] + double(c.w(i, 2)) * c.x(0, i) + double(c.w(i, 3)) * c.x(1, i);
        CHECK_THAT(out(1, i), WithinAbs(a1 / (1 + std::exp(-a1)), 1e-6));
        for (std::size_t j = 0; j < 3; ++j) CHECK(s(j, i) == c.x(3 + j, i));  // last K-1 inputs, oldest first
    }
}

TEST_CASE("causal_conv1d: chunks and steps carried through the state equal one call, bit for bit", "[causal_conv1d]") {
    for (std::size_t K : {4, 3, 1})
        for (std::size_t d : {2048, 37}) {
            const std::size_t L = 20;
            ConvCase c(L, d, K, unsigned(K * 7 + d));
            Matrix<float> s = c.s0, out(L, d);
            kernels::causal_conv1d(c.x.view(), c.w.view(), c.bias, s.view(), out.view());
            // Chunks of 0, 1, 2, 5 tokens, then single steps.
            Matrix<float> s2 = c.s0, out2(L, d);
            std::size_t t = 0;
            for (std::size_t n : {0, 1, 2, 5}) {
                kernels::causal_conv1d(c.x.view().rows_slice(t, n), c.w.view(), c.bias, s2.view(), out2.view().rows_slice(t, n));
                t += n;
            }
            for (; t < L; ++t) kernels::causal_conv1d_step(c.x.view().row_span(t), c.w.view(), c.bias, s2.view(), out2.view().row_span(t));
            INFO("K=" << K << " d=" << d);
            CHECK(same_bits(out.span(), out2.span()));
            CHECK(same_bits(s.span(), s2.span()));
        }
}

TEST_CASE("causal_conv1d: 1 and 2 threads are bit-identical; huge inputs stay finite", "[causal_conv1d]") {
    ThreadPool pool(2);
    for (std::size_t d : {2048, 300}) {
        ConvCase c(64, d, 4, 5, 1e3f);
        Matrix<float> s1 = c.s0, o1(64, d), s2 = c.s0, o2(64, d);
        kernels::causal_conv1d(c.x.view(), c.w.view(), c.bias, s1.view(), o1.view());
        kernels::causal_conv1d(c.x.view(), c.w.view(), c.bias, s2.view(), o2.view(), pool);
        CHECK(same_bits(o1.span(), o2.span()));
        CHECK(same_bits(s1.span(), s2.span()));
        bool finite = true;
        for (float v : o1.span()) finite = finite && std::isfinite(v);
        CHECK(finite);
        std::vector<float> a(d), b(d);
        kernels::causal_conv1d_step(c.x.view().row_span(0), c.w.view(), c.bias, s1.view(), a);
        kernels::causal_conv1d_step(c.x.view().row_span(0), c.w.view(), c.bias, s2.view(), b, pool);
        CHECK(same_bits(a, b));
    }
}

TEST_CASE("causal_conv1d: every shape mismatch throws hystack::error naming the argument", "[causal_conv1d]") {
    ConvCase c(5, 20, 4, 1);
    Matrix<float> s(3, 20), out(5, 20), xbad(5, 21), sbad(4, 20), obad(6, 20), w0(20, 0);
    std::vector<float> b3(3);
    CHECK_THROWS_WITH(kernels::causal_conv1d(xbad.view(), c.w.view(), c.bias, s.view(), out.view()),
                      ContainsSubstring("causal_conv1d: x: expected [*, 20], got [5, 21]"));
    CHECK_THROWS_WITH(kernels::causal_conv1d(c.x.view(), c.w.view(), b3, s.view(), out.view()), ContainsSubstring("bias"));
    CHECK_THROWS_WITH(kernels::causal_conv1d(c.x.view(), c.w.view(), c.bias, sbad.view(), out.view()),
                      ContainsSubstring("state: expected [3, 20], got [4, 20]"));
    CHECK_THROWS_WITH(kernels::causal_conv1d(c.x.view(), c.w.view(), c.bias, s.view(), obad.view()), ContainsSubstring("out"));
    CHECK_THROWS_WITH(kernels::causal_conv1d(c.x.view(), w0.view(), c.bias, s.view(), out.view()), ContainsSubstring("K >= 1"));
    CHECK_THROWS_AS(kernels::causal_conv1d_reference(xbad.view(), c.w.view(), c.bias, s.view(), out.view()), error);
    std::vector<float> v(20), v1(21);
    CHECK_THROWS_WITH(kernels::causal_conv1d_step(v1, c.w.view(), c.bias, s.view(), v),
                      ContainsSubstring("causal_conv1d_step: x: expected [20], got [21]"));
    CHECK_THROWS_WITH(kernels::causal_conv1d_step(v, c.w.view(), c.bias, s.view(), v1), ContainsSubstring("out"));
    CHECK_THROWS_WITH(kernels::causal_conv1d_step(v, c.w.view(), c.bias, sbad.view(), v), ContainsSubstring("state"));
}

TEST_CASE("causal_conv1d: outputs past the streaming-store threshold equal chunked calls and the reference",
          "[causal_conv1d]") {
    // One call whose output exceeds conv1d_stream_bytes (non-temporal stores) against the same tokens in chunks that
    // stay below it (plain stores): the values must not depend on how they were stored.
    const std::size_t d = 2048 + 16, K = 4;
    const std::size_t L = kernels::detail::conv1d_stream_bytes / (d * sizeof(float)) + 5;
    ConvCase c(L, d, K, 77);
    for (std::size_t threads : {1, 2}) {
        ThreadPool pool(threads);
        Matrix<float> s = c.s0, out(L, d);
        kernels::causal_conv1d(c.x.view(), c.w.view(), c.bias, s.view(), out.view(), pool);
        Matrix<float> s2 = c.s0, out2(L, d);
        const std::size_t chunk = L / 4 + 1;
        for (std::size_t t0 = 0; t0 < L; t0 += chunk) {
            const std::size_t n = std::min(chunk, L - t0);
            kernels::causal_conv1d(c.x.view().rows_slice(t0, n), c.w.view(), c.bias, s2.view(), out2.view().rows_slice(t0, n),
                                   pool);
        }
        INFO("threads=" << threads);
        CHECK(same_bits(out.span(), out2.span()));
        CHECK(same_bits(s.span(), s2.span()));
        // spot check against the reference on the last 3 tokens (whose inputs include the previous K-1)
        Matrix<float> sr(K - 1, d), outr(3, d);
        for (std::size_t j = 0; j + 1 < K; ++j)
            for (std::size_t i = 0; i < d; ++i) sr(j, i) = c.x(L - 3 - (K - 1) + j, i);
        kernels::causal_conv1d_reference(c.x.view().rows_slice(L - 3, 3), c.w.view(), c.bias, sr.view(), outr.view());
        CHECK(excess(std::span<const float>(out.row(L - 3), 3 * d), outr.span(), 1e-5, 1e-5) <= 1);
    }
}
