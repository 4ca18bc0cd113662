// RoPE (rotate-half): against the formula in double, norm preservation, relative-position property.
#include <hystack/kernels.hpp>

#include <cmath>
#include <random>

#include "catch.hpp"

using namespace hystack;
using Catch::Matchers::WithinAbs;

TEST_CASE("rope matches the rotate-half formula", "[attention_rope]") {
    const std::size_t H = 3, d = 8, L = 5, pos0 = 1000;
    Matrix<float> x(L, H * d);
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (auto& v : x.span()) v = dist(rng);
    Matrix<float> y = x;
    kernels::rope(y.view(), H, d, pos0, 500000.0);
    for (std::size_t r = 0; r < L; ++r)
        for (std::size_t h = 0; h < H; ++h)
            for (std::size_t i = 0; i < d / 2; ++i) {
                const double a = double(pos0 + r) / std::pow(500000.0, double(2 * i) / double(d));
                const double x1 = x(r, h * d + i), x2 = x(r, h * d + i + d / 2);
                CHECK_THAT(y(r, h * d + i), WithinAbs(x1 * std::cos(a) - x2 * std::sin(a), 1e-6));
                CHECK_THAT(y(r, h * d + i + d / 2), WithinAbs(x2 * std::cos(a) + x1 * std::sin(a), 1e-6));
            }
}

TEST_CASE("rope keeps norms and makes q.k depend on the position difference only", "[attention_rope]") {
    const std::size_t d = 64;
    Matrix<float> q(1, d), k(1, d);
    std::mt19937 rng(2);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (auto& v : q.span()) v = dist(rng);
    for (auto& v : k.span()) v = dist(rng);
    auto dot_at = [&](std::size_t pq, std::size_t pk) {
        Matrix<float> a = q, b = k;
        kernels::rope(a.view(), 1, d, pq);
        kernels::rope(b.view(), 1, d, pk);
        double s = 0, na = 0, nq = 0;
        for (std::size_t i = 0; i < d; ++i) {
            s += double(a(0, i)) * b(0, i);
            na += double(a(0, i)) * a(0, i);
            nq += double(q(0, i)) * q(0, i);
        }
        CHECK_THAT(na, WithinAbs(nq, 1e-4));
        return s;
    };
    CHECK_THAT(dot_at(10, 3), WithinAbs(dot_at(1007, 1000), 1e-4));
    CHECK_THAT(dot_at(5, 5), WithinAbs(dot_at(0, 0), 1e-4));
    Matrix<float> z = q;
    kernels::rope(z.view(), 1, d, 0);
    for (std::size_t i = 0; i < d; ++i) CHECK(z(0, i) == q(0, i));  // position 0: identity
    Matrix<float> odd(1, 6);
    CHECK_THROWS_AS(kernels::rope(odd.view(), 2, 3, 0), hystack::error);
    CHECK_THROWS_AS(kernels::rope(odd.view(), 1, 4, 0), hystack::error);
}
