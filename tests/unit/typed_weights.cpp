// Weight types: half conversions, ggml's q8_0 quantiser (the SIMD one equals the scalar reference bit for
// bit), bf16 / q8_0 projections against their scalar references on odd shapes, a row alone equal to the
// same row in a batch and any thread count giving the same bits, the fused SwiGLU and the MoE experts
// with typed weights, Weight's retyping, and the errors.
#include <hystack/kernels.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "catch.hpp"

using namespace hystack;

namespace {

std::vector<float> random_vector(std::size_t n, unsigned seed, float scale = 1.0f) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> d(-scale, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

Matrix<float> random_matrix(std::size_t r, std::size_t c, unsigned seed, float scale = 1.0f) {
    Matrix<float> m(r, c);
    const auto v = random_vector(r * c, seed, scale);
    std::copy(v.begin(), v.end(), m.span().begin());
    return m;
}

// A weight of type t holding f (converted: bf16 rounded, q8_0 by the quantiser).
Weight make_weight(MatrixView<const float> f, DType t) { return Weight::from(f, t); }

bool same_blocks(std::span<const block_q8_0> a, std::span<const block_q8_0> b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size_bytes()) == 0;
}

}  // namespace

TEST_CASE("half conversions round to nearest even and widen exactly", "[typed_weights]") {
    CHECK(fp16_bits(1.0f) == 0x3c00);
    CHECK(fp16_bits(-2.0f) == 0xc000);
    CHECK(fp16_bits(65504.0f) == 0x7bff);
    CHECK(fp16_bits(65519.0f) == 0x7bff);   // below the midpoint to 65536
    CHECK(fp16_bits(65520.0f) == 0x7c00);   // the tie rounds to even: infinity
    CHECK(fp16_bits(1e30f) == 0x7c00);
    CHECK(fp16_bits(-INFINITY) == 0xfc00);
    CHECK(fp16_bits(std::ldexp(1.0f, -24)) == 0x0001);  // smallest subnormal
    CHECK(fp16_bits(std::ldexp(1.0f, -25)) == 0x0000);  // the tie to 0 is even
    CHECK(fp16_bits(std::ldexp(1.5f, -25)) == 0x0001);
    CHECK(fp16_bits(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);         // tie: even
    CHECK(fp16_bits(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02);     // tie: even (up)
    CHECK(std::isnan(fp16_to_float(fp16_bits(NAN))));
    // every half widens and narrows back to itself
    for (std::uint32_t h = 0; h < 65536; ++h) {
        const float f = fp16_to_float(std::uint16_t(h));
        if (std::isnan(f)) continue;
        INFO(h);
        REQUIRE(fp16_bits(f) == h);
        REQUIRE(simd::half_to_float(std::uint16_t(h)) == f);
    }
    // midpoints between neighbouring halves go to the even one
    for (std::uint32_t h = 0x0400; h < 0x7bff; h += 97) {
        const float a = fp16_to_float(std::uint16_t(h)), b = fp16_to_float(std::uint16_t(h + 1));
        const float mid = a + (b - a) / 2;
        CHECK(fp16_bits(mid) == ((h & 1) ? h + 1 : h));
    }
}

TEST_CASE("q8_0 quantising: ggml's reference rule, the SIMD one bit for bit", "[typed_weights]") {
    SECTION("a block by hand") {
        std::vector<float> x(32, 0.0f);
        x[0] = 1.27f;
        x[1] = -0.5f;
        x[2] = 0.005f;  // 0.5 quanta: roundf goes away from zero
        std::vector<block_q8_0> q(1);
        quantize_q8_0_reference(x, q);
        const float d = 1.27f / 127.0f;
        CHECK(q[0].d == fp16_bits(d));
        CHECK(q[0].qs[0] == 127);
        CHECK(q[0].qs[1] == std::int8_t(std::roundf(-0.5f * (1.0f / d))));
        CHECK(q[0].qs[2] == std::int8_t(std::roundf(0.005f * (1.0f / d))));
        std::vector<float> back(32);
        dequantize_q8_0(q, back);
        CHECK(std::fabs(back[0] - 1.27f) < 1.27f / 127.0f);
    }
    SECTION("SIMD equals the reference") {
        std::vector<std::vector<float>> cases;
        cases.push_back(random_vector(32 * 37, 1));
        cases.push_back(random_vector(32 * 5, 2, 1e-30f));   // tiny: d is subnormal or zero in half
        cases.push_back(random_vector(32 * 5, 3, 6e4f));     // huge: d near the half's top
        cases.push_back(random_vector(32 * 5, 4, 1e6f));     // d overflows the half: inf
        cases.push_back(std::vector<float>(64, 0.0f));      // all-zero blocks: d = 0, q = 0
        std::vector<float> ties(32);
        for (std::size_t i = 0; i < 32; ++i) ties[i] = (float(i) - 15.5f);  // many .5 quanta after scaling
        ties[0] = 127.0f;
        cases.push_back(ties);
        std::vector<float> bad = random_vector(96, 5);
        bad[40] = NAN;
        bad[70] = -INFINITY;
        cases.push_back(bad);
        for (const auto& x : cases) {
            std::vector<block_q8_0> a(x.size() / 32), b(x.size() / 32);
            quantize_q8_0_reference(x, a);
            quantize_q8_0(x, b);
            CHECK(same_blocks(a, b));
        }
        // a block with a non-finite value reads back as NaN, its neighbours are untouched
        std::vector<block_q8_0> q(3);
        quantize_q8_0(bad, q);
        std::vector<float> back(96);
        dequantize_q8_0(q, back);
        CHECK(std::isnan(back[32]));
        CHECK(std::isnan(back[64]));
        CHECK(std::isfinite(back[0]));
    }
    SECTION("errors") {
        std::vector<float> x(33);
        std::vector<block_q8_0> q(1);
        CHECK_ERROR("length 33 is not a multiple of 32", quantize_q8_0(x, q));
        std::vector<float> y(64);
        CHECK_ERROR("expected [2] blocks, got [1]", quantize_q8_0(y, q));
        CHECK_ERROR("expected [32] values, got [64]", dequantize_q8_0(q, y));
    }
}

TEST_CASE("weight types: sizes, names, retyping", "[typed_weights]") {
    CHECK(row_bytes(DType::f32, 10) == 40);
    CHECK(row_bytes(DType::bf16, 10) == 20);
    CHECK(row_bytes(DType::q8_0, 64) == 68);
    CHECK_ERROR("q8_0 rows hold whole blocks of 32 values, got a row of 40", row_bytes(DType::q8_0, 40));
    CHECK(dtype_from_string("bf16") == DType::bf16);
    CHECK_ERROR("unknown weight type 'f16' (known: f32, bf16, q8_0)", dtype_from_string("f16"));
    Weight w(3, 64);
    CHECK(w.bytes() == 3 * 64 * 4);
    w.retype(DType::q8_0);
    CHECK(w.type() == DType::q8_0);
    CHECK(w.bytes() == 3 * 68);
    CHECK(w.view().row(2) == w.view().data + 2 * 68);
    CHECK_ERROR("is q8_0, expected f32", w.f32());
    Weight odd(2, 40);
    CHECK_ERROR("got a row of 40", odd.retype(DType::q8_0));
    CHECK(odd.type() == DType::f32);  // unchanged after the refusal
    // a parameter over rows of a weight
    Weight e(8, 32, DType::bf16);
    const ParamRef p = e.param("experts.1.w", {4, 32}, 4, 4);
    CHECK(p.data.empty());
    CHECK(param_dtype(p) == DType::bf16);
    CHECK(param_bytes(p) == 4 * 64);
    CHECK(param_numel(p) == 128);
}

TEST_CASE("bf16 and q8_0 projections equal their scalar references", "[typed_weights]") {
    unsigned seed = 100;
    for (DType t : {DType::bf16, DType::q8_0}) {
        const std::vector<std::size_t> Ks = t == DType::q8_0 ? std::vector<std::size_t>{32, 96, 320, 1056}
                                                              : std::vector<std::size_t>{1, 7, 16, 33, 100, 1030};
        for (std::size_t K : Ks)
            for (std::size_t N : {1, 5, 8, 19})
                for (std::size_t M : {0, 1, 2, 3, 5, 17}) {
                    INFO(to_string(t) << " M " << M << " N " << N << " K " << K);
                    const auto x = random_matrix(M, K, seed++);
                    const auto wf = random_matrix(N, K, seed++, 1.0f / std::sqrt(float(K)));
                    const Weight W = make_weight(wf, t);
                    const auto bias = random_vector(N, seed++);
                    Matrix<float> y(M, N), want(M, N);
                    SerialExecutor serial;
                    kernels::project(x, W.view(), bias, y.view(), serial);
                    kernels::project_reference(x, W.view(), bias, want.view());
                    // same products and sums, in another order: a few float roundings of the sum
                    CHECK(excess(y.span(), want.span(), 1e-5, 1e-5) <= 1.0);
                }
    }
}

TEST_CASE("typed projections: a row alone equals it in a batch, any thread count the same bits", "[typed_weights]") {
    ThreadPool pool(3);
    unsigned seed = 300;
    for (DType t : {DType::bf16, DType::q8_0})
        for (std::size_t K : {64, 160, 4096}) {
            const std::size_t N = 37, M = 11;
            INFO(to_string(t) << " K " << K);
            const auto x = random_matrix(M, K, seed++);
            const Weight W = make_weight(random_matrix(N, K, seed++, 0.05f), t);
            Matrix<float> y1(M, N), y3(M, N), row(1, N);
            SerialExecutor serial;
            kernels::project(x, W.view(), {}, y1.view(), serial);
            kernels::project(x, W.view(), {}, y3.view(), pool);
            CHECK(same_bits(y1.view(), y3.view()));
            for (std::size_t m = 0; m < M; ++m) {
                kernels::project(x.view().rows_slice(m, 1), W.view(), {}, row.view(), serial);
                CHECK(same_bits(row.view(), y1.view().rows_slice(m, 1)));
            }
            // the fused SwiGLU too
            const Weight U = make_weight(random_matrix(N, K, seed++, 0.05f), t);
            Matrix<float> h1(M, N), h3(M, N), hr(1, N);
            kernels::project_swiglu(x, W.view(), U.view(), h1.view(), serial);
            kernels::project_swiglu(x, W.view(), U.view(), h3.view(), pool);
            CHECK(same_bits(h1.view(), h3.view()));
            kernels::project_swiglu(x.view().rows_slice(M - 1, 1), W.view(), U.view(), hr.view(), serial);
            CHECK(same_bits(hr.view(), h1.view().rows_slice(M - 1, 1)));
            // h = silu(x Wg) * (x Wu) to rounding
            Matrix<float> g(M, N), u(M, N);
            kernels::project_reference(x, W.view(), {}, g.view());
            kernels::project_reference(x, U.view(), {}, u.view());
            for (std::size_t i = 0; i < M * N; ++i) g.span()[i] = g.span()[i] / (1.0f + std::exp(-g.span()[i])) * u.span()[i];
            CHECK(excess(h1.span(), g.span(), 1e-5, 1e-4) <= 1.0);
        }
}

TEST_CASE("typed projections: extreme values and errors", "[typed_weights]") {
    SerialExecutor serial;
    SECTION("huge and tiny activations stay finite, a NaN reaches only its row") {
        for (DType t : {DType::bf16, DType::q8_0}) {
            auto x = random_matrix(3, 64, 9);
            for (std::size_t c = 0; c < 64; ++c) {
                x(0, c) *= 1e30f;
                x(1, c) *= 1e-30f;
            }
            x(2, 5) = NAN;
            const Weight W = make_weight(random_matrix(4, 64, 10, 0.1f), t);
            Matrix<float> y(3, 4), want(3, 4);
            kernels::project(x, W.view(), {}, y.view(), serial);
            kernels::project_reference(x, W.view(), {}, want.view());
            INFO(to_string(t));
            for (std::size_t m = 0; m < 2; ++m)
                CHECK(excess(std::span<const float>(y.row(m), 4), std::span<const float>(want.row(m), 4),
                             m == 0 ? 1e20 : 1e-40, 1e-5) <= 1.0);
            for (std::size_t n = 0; n < 4; ++n) CHECK(std::isnan(y(2, n)));
        }
    }
    SECTION("errors") {
        const Weight W(4, 64, DType::q8_0);
        Matrix<float> x(2, 60), y(2, 4), y5(2, 5);
        CHECK_ERROR("linear_typed: x: expected [*, 64], got [2, 60]", kernels::project(x, W.view(), {}, y.view(), serial));
        Matrix<float> x64(2, 64);
        CHECK_ERROR("linear_typed: y: expected [2, 4], got [2, 5]", kernels::project(x64, W.view(), {}, y5.view(), serial));
        std::vector<float> b(3);
        CHECK_ERROR("linear_typed: bias: expected [4] or empty, got [3]", kernels::project(x64, W.view(), b, y.view(), serial));
        const Weight G(4, 64, DType::bf16);
        CHECK_ERROR("project_swiglu: gate is bf16, up is q8_0", kernels::project_swiglu(x64, G.view(), W.view(), y.view(), serial));
        CHECK_ERROR("no typed kernel for f32 weights", kernels::linear_typed(x64, Weight(4, 64).view(), {}, y.view(), serial));
    }
}

TEST_CASE("MoE experts with typed weights equal the scalar reference", "[typed_weights]") {
    unsigned seed = 500;
    for (DType t : {DType::bf16, DType::q8_0}) {
        const std::size_t d = 64, H = 96, E = 4, L = 9, k = 2;
        std::vector<Weight> gate, up, down;
        for (std::size_t e = 0; e < E; ++e) {
            gate.push_back(make_weight(random_matrix(H, d, seed++, 0.125f), t));
            up.push_back(make_weight(random_matrix(H, d, seed++, 0.125f), t));
            down.push_back(make_weight(random_matrix(d, H, seed++, 0.1f), t));
        }
        auto experts = [&](std::size_t e) {
            return kernels::SwiGLUWeights{gate[e].view(), up[e].view(), down[e].view()};
        };
        const auto x = random_matrix(L, d, seed++);
        // token t goes to experts t % E and (t + 1) % E
        std::vector<std::uint32_t> index(L * k);
        std::vector<float> wt(L * k);
        for (std::size_t i = 0; i < L; ++i) {
            index[i * k] = std::uint32_t(i % E);
            index[i * k + 1] = std::uint32_t((i + 1) % E);
            wt[i * k] = 0.7f;
            wt[i * k + 1] = 0.3f;
        }
        std::vector<std::uint32_t> offsets(E + 1), token(L * k);
        std::vector<float> token_weight(L * k);
        kernels::moe_bucket(MatrixView<const std::uint32_t>(index.data(), L, k), MatrixView<const float>(wt.data(), L, k), E,
                            std::span<std::uint32_t>(offsets), std::span<std::uint32_t>(token), std::span<float>(token_weight));
        Matrix<float> y(L, d), want(L, d);
        std::vector<float> h(L * k * H);
        ThreadPool pool(2);
        kernels::moe_experts(x.view(), offsets, token, token_weight, experts, y.view(), h, pool);
        kernels::moe_experts_reference(x.view(), offsets, token, token_weight, experts, want.view());
        INFO(to_string(t));
        CHECK(excess(y.span(), want.span(), 1e-5, 1e-4) <= 1.0);
    }
}

TEST_CASE("bf16 weights give the bits of their f32 widening in linear", "[typed_weights]") {
    SerialExecutor serial;
    ThreadPool pool(2);
    unsigned seed = 900;
    for (std::size_t K : {1, 15, 64, 1000, 1500})
        for (std::size_t M : {1, 2, 3, 7, 130}) {
            INFO("M " << M << " K " << K);
            const auto x = random_matrix(M, K, seed++);
            const Weight W = Weight::from(random_matrix(13, K, seed++), DType::bf16);
            Matrix<float> wide(13, K), y(M, 13), want(M, 13);
            for (std::size_t n = 0; n < 13; ++n)
                decode_row(DType::bf16, std::span<const std::byte>(W.view().row(n), W.view().row_bytes()),
                           std::span<float>(wide.row(n), K));
            if (M % 2)
                kernels::project(x, W.view(), {}, y.view(), serial);
            else
                kernels::project(x, W.view(), {}, y.view(), pool);
            kernels::linear(x, wide, {}, want.view(), pool);
            CHECK(same_bits(y.view(), want.view()));
        }
}

#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
TEST_CASE("the vdpbf16ps form of the bf16 kernel, where the CPU has it", "[typed_weights]") {
    if constexpr (simd::has_bf16_dot<simd::default_arch>) {
        using Dot = kernels::detail::Bf16Dot<simd::default_arch, true>;
        SerialExecutor serial;
        unsigned seed = 950;
        for (std::size_t K : {1, 31, 32, 33, 200})
            for (std::size_t M : {1, 2, 5}) {
                INFO("M " << M << " K " << K);
                const auto x = random_matrix(M, K, seed++);
                const Weight W = Weight::from(random_matrix(11, K, seed++), DType::bf16);
                Matrix<float> y(M, 11), want(M, 11), row(1, 11);
                kernels::detail::typed_linear_rows<Dot>(
                    M, [&](std::size_t m) { return x.row(m); }, W.view(),
                    [&](std::size_t m, std::size_t n, float v) { y(m, n) = v; }, serial);
                kernels::linear_bf16_reference(x, W.view(), {}, want.view(), /*round_x=*/true);
                CHECK(excess(y.span(), want.span(), 1e-5, 1e-5) <= 1.0);
                kernels::detail::typed_linear_rows<Dot>(
                    1, [&](std::size_t) { return x.row(M - 1); }, W.view(),
                    [&](std::size_t, std::size_t n, float v) { row(0, n) = v; }, serial);
                CHECK(same_bits(row.view(), y.view().rows_slice(M - 1, 1)));
            }
    } else {
        SUCCEED("no AVX512_BF16 on this build");
    }
}
#endif
