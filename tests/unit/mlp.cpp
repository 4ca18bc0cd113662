// SwiGLU MLP against a plain double loop; 1 and 2 threads identical; step equals prefill rows;
// no allocation in step; params; bad shapes throw.
#include <hystack/layers.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "catch.hpp"

using namespace hystack;

namespace {
void fill(std::span<float> v, unsigned seed, float s) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> d(-s, s);
    for (auto& x : v) x = d(rng);
}
}  // namespace

TEST_CASE("SwiGLU matches down(silu(gate x) * up x) in double", "[mlp]") {
    ThreadPool pool2(2);
    for (auto [d, H] : {std::pair<std::size_t, std::size_t>{1, 1}, {16, 40}, {37, 29}, {64, 176}}) {
        SwiGLU mlp({d, H});
        unsigned seed = 1;
        for (auto& p : mlp.params()) fill(p.data, seed++, 1.0f / std::sqrt(float(p.shape[1])));
        for (std::size_t L : {0, 1, 2, 3, 5, 21}) {
            INFO("d " << d << " H " << H << " L " << L);
            Matrix<float> x(L, d), y1(L, d), y2(L, d);
            fill(x.span(), unsigned(L + 100), 2.0f);
            mlp.prefill(x, y1.view(), pool2);
            mlp.prefill(x, y2);
            CHECK(same_bits(y1, y2));
            auto G = mlp.gate_proj(), U = mlp.up_proj(), D = mlp.down_proj();
            for (std::size_t t = 0; t < L; ++t) {
                std::vector<double> h(H);
                for (std::size_t n = 0; n < H; ++n) {
                    double g = 0, u = 0;
                    for (std::size_t i = 0; i < d; ++i) {
                        g += double(x(t, i)) * G(n, i);
                        u += double(x(t, i)) * U(n, i);
                    }
                    h[n] = g / (1 + std::exp(-g)) * u;
                }
                for (std::size_t o = 0; o < d; ++o) {
                    double s = 0;
                    for (std::size_t n = 0; n < H; ++n) s += h[n] * D(o, n);
                    CHECK_THAT(y1(t, o), WithinAbs(s, 1e-5 + 1e-5 * std::fabs(s)));
                }
                // decode gives the prefill row's bits
                std::vector<float> ys(d);
                mlp.step(std::span<const float>(x.row(t), d), ys, pool2);
                CHECK(std::memcmp(ys.data(), y1.row(t), d * sizeof(float)) == 0);
            }
            if (L >= 3) {
                Matrix<float> yb(3, d);
                mlp.step_batch(MatrixView<const float>(x.view()).rows_slice(0, 3), yb.view(), pool2);
                CHECK(same_bits(yb, MatrixView<const float>(y1.view().rows_slice(0, 3))));
            }
        }
    }
}

TEST_CASE("SwiGLU: params, no allocation in step, bad shapes", "[mlp]") {
    SwiGLU mlp({8, 12});
    auto p = mlp.params();
    REQUIRE(p.size() == 3);
    CHECK(p[0].name == "gate_proj.weight");
    CHECK(p[1].name == "up_proj.weight");
    CHECK(p[2].name == "down_proj.weight");
    CHECK(p[2].shape == std::vector<std::size_t>{8, 12});
    std::vector<float> x(8, 1.0f), y(8);
    const auto ws = mlp.workspace_bytes();
    mlp.step(x, y);
    mlp.step(x, y);
    CHECK(mlp.workspace_bytes() == ws);
    Matrix<float> xb(2, 7), yb(2, 8), yc(3, 8), xg(2, 8);
    CHECK_THROWS_WITH(mlp.prefill(xb, yb), "SwiGLU: x: expected [*, 8], got [2, 7]");
    CHECK_THROWS_AS(mlp.prefill(xg, yc), error);
    std::vector<float> x7(7);
    CHECK_THROWS_AS(mlp.step(x7, y), error);
    CHECK_THROWS_AS(mlp.step(x, x7), error);
    CHECK_THROWS_AS(SwiGLU({0, 4}), error);
}
