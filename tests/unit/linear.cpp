// linear (y = x W^T + b) and the fused SwiGLU input projection against plain references, over
// many shapes (odd sizes, sizes around the SIMD width and the K block, L = 0..33), strided views,
// extreme values; bit-identical results for 1 and 2 threads and for a row alone vs in a batch.
#include <hystack/kernels.hpp>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "catch.hpp"

using namespace hystack;

namespace {

Matrix<float> random_matrix(std::size_t r, std::size_t c, unsigned seed, float scale = 1.0f) {
    Matrix<float> m(r, c);
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> d(-scale, scale);
    for (auto& v : m.span()) v = d(rng);
    return m;
}

// y = x W^T + b in double, and the bound sum_k |x||w| the float error scales with.
void reference(MatrixView<const float> x, MatrixView<const float> W, std::span<const float> b, std::vector<double>& y,
               std::vector<double>& mag) {
    y.assign(x.rows * W.rows, 0.0);
    mag.assign(x.rows * W.rows, 0.0);
    for (std::size_t m = 0; m < x.rows; ++m)
        for (std::size_t n = 0; n < W.rows; ++n) {
            double s = b.empty() ? 0.0 : b[n], a = b.empty() ? 0.0 : std::fabs(b[n]);
            for (std::size_t k = 0; k < W.cols; ++k) {
                s += double(x(m, k)) * W(n, k);
                a += std::fabs(double(x(m, k)) * W(n, k));
            }
            y[m * W.rows + n] = s;
            mag[m * W.rows + n] = a;
        }
}

void check_close(MatrixView<const float> got, const std::vector<double>& want, const std::vector<double>& mag,
                 std::size_t K) {
    const double eps = 6e-8 * double(K + 2);
    for (std::size_t m = 0; m < got.rows; ++m)
        for (std::size_t n = 0; n < got.cols; ++n) {
            const double g = got(m, n), w = want[m * got.cols + n], tol = eps * mag[m * got.cols + n] + 1e-37;
            if (!(std::fabs(g - w) <= tol)) {
                INFO("m " << m << " n " << n << " got " << g << " want " << w << " tol " << tol);
                CHECK(std::fabs(g - w) <= tol);
                return;
            }
        }
}


}  // namespace

TEST_CASE("linear matches a double reference over many shapes, with and without bias", "[linear]") {
    ThreadPool pool2(2);
    const std::size_t Ls[] = {0, 1, 2, 3, 4, 5, 7, 17, 33};
    const std::size_t ins[] = {1, 3, 15, 16, 17, 33, 100, 1024, 1041, 2100};
    const std::size_t outs[] = {1, 2, 5, 8, 9, 17, 33};
    unsigned seed = 1;
    for (std::size_t L : Ls)
        for (std::size_t in : ins)
            for (std::size_t out : outs) {
                if (in >= 1024 && out > 9 && L > 5) continue;  // keep the run short
                auto x = random_matrix(L, in, seed++);
                auto W = random_matrix(out, in, seed++);
                auto b = random_matrix(1, out, seed++);
                for (bool with_bias : {false, true}) {
                    std::span<const float> bias = with_bias ? b.span() : std::span<const float>();
                    INFO("L " << L << " in " << in << " out " << out << " bias " << with_bias);
                    std::vector<double> want, mag;
                    reference(x, W, bias, want, mag);
                    Matrix<float> y1(L, out), y2(L, out), yr(L, out);
                    kernels::linear(x, W, bias, y1);
                    kernels::linear(x, W, bias, y2.view(), pool2);
                    kernels::linear_reference(x, W, bias, yr);
                    check_close(y1, want, mag, in);
                    check_close(yr, want, mag, in);
                    CHECK(same_bits(y1, y2));
                }
            }
}

TEST_CASE("linear: 1 and 2 threads bit-identical on a large shape; a row alone equals the row in a batch", "[linear]") {
    ThreadPool pool2(2);
    auto x = random_matrix(70, 300, 7);
    auto W = random_matrix(261, 300, 8);
    Matrix<float> y1(70, 261), y2(70, 261);
    kernels::linear(x, W, {}, y1);
    kernels::linear(x, W, {}, y2.view(), pool2);
    CHECK(same_bits(y1, y2));
    // each row computed alone (the decode path) and in small batches gives the same bits
    for (std::size_t B : {1, 2, 3, 4, 5}) {
        Matrix<float> yb(B, 261);
        for (std::size_t r0 = 0; r0 + B <= 70; r0 += 13) {
            kernels::linear(x.view().rows_slice(r0, B), W, {}, yb.view(), pool2);
            CHECK(same_bits(yb, MatrixView<const float>(y1.view().rows_slice(r0, B))));
        }
    }
}

TEST_CASE("linear: long rows (K blocks outermost, several M blocks) give the bits of a row alone", "[linear]") {
    // in = 2100: two K blocks of 1024, a short one, and a scalar tail; 140 rows span several M blocks.
    // A batch accumulates each lane across the K blocks; a row alone (decode) runs one pass.
    ThreadPool pool2(2);
    const std::size_t L = 140, in = 2100, out = 20;
    auto x = random_matrix(L, in, 21);
    auto W = random_matrix(out, in, 22);
    auto b = random_matrix(1, out, 23);
    Matrix<float> y1(L, out), y2(L, out), y_one(1, out);
    kernels::linear(x, W, b.span(), y1);
    kernels::linear(x, W, b.span(), y2.view(), pool2);
    CHECK(same_bits(y1, y2));
    std::vector<double> want, mag;
    reference(x, W, b.span(), want, mag);
    check_close(y1, want, mag, in);
    for (std::size_t r = 0; r < L; r += 9) {
        kernels::linear(x.view().rows_slice(r, 1), W, b.span(), y_one.view());
        INFO("row " << r);
        CHECK(same_bits(y_one, MatrixView<const float>(y1.view().rows_slice(r, 1))));
    }
    // the fused SwiGLU input side too: h of a row alone equals its row of the batch
    auto Wu = random_matrix(out, in, 24);
    Matrix<float> h(L, out), h_one(1, out);
    kernels::linear_swiglu(x, W, Wu, h.view(), pool2);
    for (std::size_t r = 0; r < L; r += 9) {
        kernels::linear_swiglu(x.view().rows_slice(r, 1), W, Wu, h_one.view());
        INFO("row " << r);
        CHECK(same_bits(h_one, MatrixView<const float>(h.view().rows_slice(r, 1))));
    }
}

TEST_CASE("linear works on strided views and extreme values", "[linear]") {
    // x and y as column slices of wider matrices (row stride > cols)
    auto xb = random_matrix(9, 50, 3);
    auto W = random_matrix(21, 37, 4);
    auto x = MatrixView<const float>(xb).cols_slice(5, 37);
    Matrix<float> yb(9, 30);
    auto y = yb.view().cols_slice(4, 21);
    kernels::linear(x, W, {}, y);
    std::vector<double> want, mag;
    reference(x, W, {}, want, mag);
    check_close(y, want, mag, 37);
    for (std::size_t r = 0; r < 9; ++r) {
        for (std::size_t c = 0; c < 4; ++c) CHECK(yb(r, c) == 0.0f);  // untouched outside the view
        for (std::size_t c = 25; c < 30; ++c) CHECK(yb(r, c) == 0.0f);
    }
    // huge and tiny magnitudes: no spurious overflow / flush in the kernel beyond float's own range
    for (float scale : {1e18f, 1e-18f}) {
        auto xs = random_matrix(6, 70, 11, scale);
        auto Ws = random_matrix(19, 70, 12, 1.0f);
        Matrix<float> ys(6, 19);
        kernels::linear(xs, Ws, {}, ys);
        reference(xs, Ws, {}, want, mag);
        check_close(ys, want, mag, 70);
    }
    // zero-width input: y = bias
    Matrix<float> x0(3, 0), W0(4, 0), y0(3, 4);
    std::vector<float> b{1, 2, 3, 4};
    kernels::linear(x0, W0, b, y0);
    CHECK(y0(2, 3) == 4.0f);
    CHECK(y0(0, 0) == 1.0f);
}

TEST_CASE("linear_swiglu equals silu(x Wg^T) * (x Wu^T)", "[linear]") {
    ThreadPool pool2(2);
    for (std::size_t L : {1, 2, 3, 4, 6, 19})
        for (std::size_t H : {1, 2, 3, 7, 40})
            for (std::size_t in : {1, 16, 37, 130}) {
                INFO("L " << L << " H " << H << " in " << in);
                auto x = random_matrix(L, in, unsigned(L * 100 + H * 10 + in), 2.0f);
                auto Wg = random_matrix(H, in, 5);
                auto Wu = random_matrix(H, in, 6);
                Matrix<float> g(L, H), u(L, H), h1(L, H), h2(L, H);
                kernels::linear(x, Wg, {}, g);
                kernels::linear(x, Wu, {}, u);
                kernels::linear_swiglu(x, Wg, Wu, h1);
                kernels::linear_swiglu(x, Wg, Wu, h2.view(), pool2);
                CHECK(same_bits(h1, h2));
                for (std::size_t m = 0; m < L; ++m)
                    for (std::size_t n = 0; n < H; ++n) {
                        const double want = double(g(m, n)) / (1.0 + std::exp(-double(g(m, n)))) * u(m, n);
                        CHECK_THAT(h1(m, n), WithinAbs(want, 1e-6 + 1e-5 * std::fabs(want)));
                    }
            }
}

TEST_CASE("linear rejects bad shapes", "[linear]") {
    Matrix<float> x(3, 8), W(5, 8), y(3, 5), Wbad(5, 7), ybad(3, 4), ybad2(2, 5);
    std::vector<float> bias(4);
    CHECK_THROWS_AS(kernels::linear(x, Wbad, {}, y), error);
    CHECK_THROWS_WITH(kernels::linear(x, Wbad, {}, y), "linear: x: expected [*, 7], got [3, 8]");
    CHECK_THROWS_AS(kernels::linear(x, W, {}, ybad), error);
    CHECK_THROWS_AS(kernels::linear(x, W, {}, ybad2), error);
    CHECK_THROWS_AS(kernels::linear(x, W, bias, y), error);
    CHECK_THROWS_AS(kernels::linear_reference(x, Wbad, {}, y), error);
    Matrix<float> Wu(6, 8), h(3, 5);
    CHECK_THROWS_AS(kernels::linear_swiglu(x, W, Wu, h), error);
    CHECK_THROWS_AS(kernels::linear_swiglu(x, W, W, ybad), error);
}

TEST_CASE("linear_swiglu matches its scalar reference on odd sizes, 0 and 1 included", "[linear]") {
    // Sizes off the SIMD widths (4, 8, 16) and the tile (3 x 8): every vector body, tail and tile edge.
    // Both sides sum in float in different orders; the bound is what those orders can differ by.
    ThreadPool pool2(2);
    unsigned seed = 300;
    for (std::size_t L : {0, 1, 2, 5, 19})
        for (std::size_t H : {0, 1, 3, 13})
            for (std::size_t in : {0, 1, 7, 17, 33, 101}) {
                INFO("L " << L << " H " << H << " in " << in);
                auto x = random_matrix(L, in, seed++);
                auto Wg = random_matrix(H, in, seed++);
                auto Wu = random_matrix(H, in, seed++);
                Matrix<float> h(L, H), h2(L, H), ref(L, H);
                kernels::linear_swiglu(x, Wg, Wu, h.view());
                kernels::linear_swiglu(x, Wg, Wu, h2.view(), pool2);
                kernels::linear_swiglu_reference(x, Wg, Wu, ref.view());
                CHECK(same_bits(h, h2));
                const double e = 2 * 6e-8 * double(in + 2);  // |g - exact| <= e sum|x Wg|, same for u
                double worst = 0;  // largest |h - ref| / tol
                for (std::size_t m = 0; m < L; ++m)
                    for (std::size_t n = 0; n < H; ++n) {
                        double g = 0, mg = 0, u = 0, mu = 0;
                        for (std::size_t k = 0; k < in; ++k) {
                            g += double(x(m, k)) * Wg(n, k);
                            mg += std::fabs(double(x(m, k)) * Wg(n, k));
                            u += double(x(m, k)) * Wu(n, k);
                            mu += std::fabs(double(x(m, k)) * Wu(n, k));
                        }
                        // silu' <= 1.1 and |silu(g)| <= |g|; 1e-6 relative for the two exps
                        const double tol = e * (1.1 * mg * (std::fabs(u) + e * mu) + std::fabs(g) * mu) +
                                           1e-6 * std::fabs(ref(m, n)) + 1e-30;
                        const double r = std::fabs(double(h(m, n)) - ref(m, n)) / tol;
                        worst = std::isnan(r) ? INFINITY : std::max(worst, r);
                    }
                CHECK(worst <= 1.0);
            }
}
