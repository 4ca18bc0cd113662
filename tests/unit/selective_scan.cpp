// Selective scan kernel: fast vs scalar reference over many shapes, chunked == whole (bit for bit), decode step,
// 1,000,000 tokens, extreme inputs, every shape error, 1 vs 2 threads bit-identical.
#include <hystack/kernels.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "catch.hpp"

using namespace hystack;

#if defined(__SANITIZE_ADDRESS__)
#define HYSTACK_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HYSTACK_TEST_ASAN 1
#endif
#endif
#if defined(HYSTACK_TEST_ASAN)
constexpr bool sanitized_build = true;
#else
constexpr bool sanitized_build = false;
#endif

namespace {

#if __has_include(<catch2/catch_all.hpp>)
using Catch::Matchers::ContainsSubstring;
#else
inline auto ContainsSubstring(const std::string& s) { return Catch::Matchers::Contains(s); }
#endif

struct ScanCase {
    std::size_t L, d, N;
    bool has_D = true, has_z = true, has_bias = true;
    Matrix<float> u, delta, z, A, B, C, h0;
    std::vector<float> D, bias;

    ScanCase(std::size_t L_, std::size_t d_, std::size_t N_, unsigned seed, float delta_lo = -4, float delta_hi = 2,
             float u_scale = 1)
        : L(L_), d(d_), N(N_), u(L_, d_), delta(L_, d_), z(L_, d_), A(d_, N_), B(L_, N_), C(L_, N_), h0(d_, N_),
          D(d_), bias(d_) {
        std::mt19937 rng(seed);
        auto fill = [&](std::span<float> v, float lo, float hi) {
            std::uniform_real_distribution<float> dist(lo, hi);
            for (auto& x : v) x = dist(rng);
        };
        fill(u.span(), -u_scale, u_scale);
        fill(delta.span(), delta_lo, delta_hi);
        fill(z.span(), -3, 3);
        fill(A.span(), -6, -0.05f);
        fill(B.span(), -1, 1);
        fill(C.span(), -1, 1);
        fill(h0.span(), -1, 1);
        fill(D, -1, 1);
        fill(bias, -1, 0.5f);
    }
    std::span<const float> Dv() const { return has_D ? std::span<const float>(D) : std::span<const float>(); }
    std::span<const float> bv() const { return has_bias ? std::span<const float>(bias) : std::span<const float>(); }
    MatrixView<const float> zv() const { return has_z ? MatrixView<const float>(z.view()) : MatrixView<const float>(); }

    template <class Exec>
    void run(Matrix<float>& h, Matrix<float>& out, Exec& ex) const {
        kernels::selective_scan(u.view(), delta.view(), bv(), A.view(), B.view(), C.view(), Dv(), zv(), h.view(),
                                out.view(), ex);
    }
    void reference(Matrix<float>& h, Matrix<float>& out) const {
        kernels::selective_scan_reference(u.view(), delta.view(), bv(), A.view(), B.view(), C.view(), Dv(), zv(), h.view(),
                                          out.view());
    }
};



}  // namespace

TEST_CASE("selective_scan matches the scalar reference over many shapes", "[selective_scan]") {
    SerialExecutor serial;
    unsigned seed = 1;
    for (std::size_t d : {1, 5, 16, 17, 31, 48, 70})
        for (std::size_t N : {1, 4, 15, 16, 17, 33})
            for (std::size_t L : {0, 1, 2, 9, 40}) {
                ScanCase c(L, d, N, seed++);
                c.has_D = seed % 3 != 0;
                c.has_z = seed % 4 != 0;
                c.has_bias = seed % 5 != 0;
                Matrix<float> h = c.h0, out(L, d), href = c.h0, oref(L, d);
                c.run(h, out, serial);
                c.reference(href, oref);
                INFO("d=" << d << " N=" << N << " L=" << L << " D=" << c.has_D << " z=" << c.has_z << " bias=" << c.has_bias);
                CHECK(excess(out.span(), oref.span(), 1e-4, 1e-4) <= 1);
                CHECK(excess(h.span(), href.span(), 1e-4, 1e-4) <= 1);
            }
}

TEST_CASE("selective_scan: strided inputs (views into wider rows) give the same result", "[selective_scan]") {
    ScanCase c(13, 35, 16, 7);
    Matrix<float> wide(13, 100);
    for (std::size_t t = 0; t < 13; ++t)
        for (std::size_t i = 0; i < 35; ++i) wide(t, 50 + i) = c.u(t, i);
    Matrix<float> h1 = c.h0, o1(13, 35), h2 = c.h0, o2(13, 80);
    kernels::selective_scan(c.u.view(), c.delta.view(), c.bias, c.A.view(), c.B.view(), c.C.view(), c.D, c.z.view(),
                            h1.view(), o1.view());
    kernels::selective_scan(MatrixView<const float>(wide.view()).cols_slice(50, 35), c.delta.view(), c.bias, c.A.view(),
                            c.B.view(), c.C.view(), c.D, c.z.view(), h2.view(), o2.view().cols_slice(3, 35));
    for (std::size_t t = 0; t < 13; ++t)
        for (std::size_t i = 0; i < 35; ++i) CHECK(o1(t, i) == o2(t, 3 + i));
    CHECK(same_bits(h1.span(), h2.span()));
}

TEST_CASE("selective_scan: chunks carried through the state equal one call, bit for bit", "[selective_scan]") {
    for (std::size_t N : {16, 5}) {
        const std::size_t L = 100, d = 37;
        ScanCase c(L, d, N, 11);
        Matrix<float> h = c.h0, out(L, d);
        SerialExecutor serial;
        c.run(h, out, serial);
        Matrix<float> h2 = c.h0, out2(L, d);
        for (std::size_t t0 : {0, 1, 4, 50}) {  // chunks [0,1), [1,4), [4,50), [50,100)
            const std::size_t t1 = t0 == 0 ? 1 : t0 == 1 ? 4 : t0 == 4 ? 50 : L;
            const std::size_t n = t1 - t0;
            kernels::selective_scan(c.u.view().rows_slice(t0, n), c.delta.view().rows_slice(t0, n), c.bias, c.A.view(),
                                    c.B.view().rows_slice(t0, n), c.C.view().rows_slice(t0, n), c.D,
                                    c.z.view().rows_slice(t0, n), h2.view(), out2.view().rows_slice(t0, n));
        }
        CHECK(same_bits(out.span(), out2.span()));
        CHECK(same_bits(h.span(), h2.span()));
    }
}

TEST_CASE("selective_scan_step token by token matches the prefill kernel", "[selective_scan]") {
    for (std::size_t N : {16, 4, 19})
        for (std::size_t d : {16, 21, 3}) {
            const std::size_t L = 30;
            ScanCase c(L, d, N, unsigned(N * 100 + d));
            c.has_z = d != 21;
            Matrix<float> h = c.h0, out(L, d), hs = c.h0, os(L, d);
            SerialExecutor serial;
        c.run(h, out, serial);
            for (std::size_t t = 0; t < L; ++t)
                kernels::selective_scan_step(c.u.view().row_span(t), c.delta.view().row_span(t), c.bias, c.A.view(),
                                             c.B.view().row_span(t), c.C.view().row_span(t), c.D,
                                             c.has_z ? c.z.view().row_span(t) : std::span<float>(), hs.view(),
                                             os.view().row_span(t));
            INFO("N=" << N << " d=" << d);
            CHECK(excess(os.span(), out.span(), 1e-5, 1e-5) <= 1);
            CHECK(excess(hs.span(), h.span(), 1e-6, 1e-6) <= 1);
        }
}

TEST_CASE("selective_scan: 1 and 2 threads are bit-identical (prefill and step)", "[selective_scan]") {
    ThreadPool pool(2);
    SerialExecutor serial;
    for (std::size_t d : {2048, 100, 40}) {
        const std::size_t L = 24;
        ScanCase c(L, d, 16, 3);
        Matrix<float> h1 = c.h0, o1(L, d), h2 = c.h0, o2(L, d);
        c.run(h1, o1, serial);
        c.run(h2, o2, pool);
        CHECK(same_bits(o1.span(), o2.span()));
        CHECK(same_bits(h1.span(), h2.span()));
        std::vector<float> s1(d), s2(d);
        kernels::selective_scan_step(c.u.view().row_span(0), c.delta.view().row_span(0), c.bias, c.A.view(),
                                     c.B.view().row_span(0), c.C.view().row_span(0), c.D, c.z.view().row_span(0), h1.view(),
                                     s1, serial);
        kernels::selective_scan_step(c.u.view().row_span(0), c.delta.view().row_span(0), c.bias, c.A.view(),
                                     c.B.view().row_span(0), c.C.view().row_span(0), c.D, c.z.view().row_span(0), h2.view(),
                                     s2, pool);
        CHECK(same_bits(s1, s2));
        CHECK(same_bits(h1.span(), h2.span()));
    }
}

TEST_CASE("selective_scan: 1,000,000 tokens stay finite and equal 4 chunks carried through the state",
          "[selective_scan]") {
    // Under AddressSanitizer every out-of-line SIMD exp poisons a large stack frame (~100 ns per call), so the
    // sanitizer build scans 2 states (the same run-time path for any d_state) instead of the fast path's 16.
    const std::size_t L = 1000000, d = 16, N = sanitized_build ? 2 : 16;
    Matrix<float> u(L, d), delta(L, d), B(L, N), C(L, N), A(d, N);
    std::uint32_t seed = 5;
    auto U = [&] {  // cheap uniform [-1, 1): 64M draws must be fast under the sanitizers too
        seed = seed * 1664525u + 1013904223u;
        return float(seed >> 8) * (2.0f / 16777216.0f) - 1.0f;
    };
    for (auto& v : u.span()) v = U();
    for (auto& v : delta.span()) v = 3 * U() - 1;
    for (auto& v : B.span()) v = U();
    for (auto& v : C.span()) v = U();
    for (std::size_t i = 0; i < d; ++i)
        for (std::size_t n = 0; n < N; ++n) A(i, n) = -float(n + 1) * (i % 2 ? 1e-3f : 1.0f);  // slow and fast decay
    std::vector<float> D(d, 1.0f), bias(d, -2.0f);
    ThreadPool pool(2);
    Matrix<float> h(d, N), out(L, d);
    kernels::selective_scan(u.view(), delta.view(), bias, A.view(), B.view(), C.view(), D, MatrixView<const float>(),
                            h.view(), out.view(), pool);
    bool finite = true;
    for (float v : out.span()) finite = finite && std::isfinite(v);
    for (float v : h.span()) finite = finite && std::isfinite(v) && std::fabs(v) < 1e4f;
    CHECK(finite);
    Matrix<float> h2(d, N), out2(L, d);
    const std::size_t q = L / 4;
    for (std::size_t k = 0; k < 4; ++k)
        kernels::selective_scan(u.view().rows_slice(k * q, q), delta.view().rows_slice(k * q, q), bias, A.view(),
                                B.view().rows_slice(k * q, q), C.view().rows_slice(k * q, q), D, MatrixView<const float>(),
                                h2.view(), out2.view().rows_slice(k * q, q));
    CHECK(same_bits(out.span(), out2.span()));
    CHECK(same_bits(h.span(), h2.span()));
    // The head of the sequence matches the reference (the long run itself is the chunked one above).
    const std::size_t head = 2000;
    Matrix<float> hr(d, N), orf(head, d);
    kernels::selective_scan_reference(u.view().rows_slice(0, head), delta.view().rows_slice(0, head), bias, A.view(),
                                      B.view().rows_slice(0, head), C.view().rows_slice(0, head), D,
                                      MatrixView<const float>(), hr.view(), orf.view());
    CHECK(excess(std::span<const float>(out.data(), head * d), orf.span(), 1e-4, 1e-4) <= 1);
}

TEST_CASE("selective_scan: extreme dt (softplus input +-50) and huge u (1e3) stay finite and accurate",
          "[selective_scan]") {
    SerialExecutor serial;
    for (float dlo : {-50.0f, 50.0f}) {
        for (float us : {1.0f, 1e3f}) {
            const std::size_t L = 50, d = 33;
            ScanCase c(L, d, 16, 9, dlo, dlo, us);
            c.has_bias = false;
            for (std::size_t t = 0; t < L; t += 3)  // mix in the other extreme
                for (std::size_t i = 0; i < d; ++i) c.delta(t, i) = -dlo;
            Matrix<float> h = c.h0, out(L, d), href = c.h0, oref(L, d);
            c.run(h, out, serial);
            c.reference(href, oref);
            bool finite = true;
            for (float v : out.span()) finite = finite && std::isfinite(v);
            for (float v : h.span()) finite = finite && std::isfinite(v);
            INFO("delta " << dlo << " u scale " << us);
            CHECK(finite);
            CHECK(excess(out.span(), oref.span(), 1e-4 * us * us, 1e-4) <= 1);
            CHECK(excess(h.span(), href.span(), 1e-4 * us, 1e-4) <= 1);
        }
    }
}

TEST_CASE("selective_scan: every shape mismatch throws hystack::error naming the argument", "[selective_scan]") {
    const std::size_t L = 5, d = 20, N = 16;
    ScanCase c(L, d, N, 1);
    Matrix<float> h(d, N), out(L, d), bad(L + 1, d), badc(L, d + 1), hbad(d, N + 1), Bbad(L, N + 1);
    std::vector<float> D3(3);
    auto run = [&](MatrixView<const float> u, MatrixView<const float> delta, std::span<const float> bias,
                   MatrixView<const float> B, MatrixView<const float> C, std::span<const float> D,
                   MatrixView<const float> z, MatrixView<float> hh, MatrixView<float> o) {
        kernels::selective_scan(u, delta, bias, c.A.view(), B, C, D, z, hh, o);
    };
    CHECK_THROWS_WITH(run(badc.view(), c.delta.view(), c.bias, c.B.view(), c.C.view(), c.D, c.z.view(), h.view(), out.view()),
                      ContainsSubstring("selective_scan: u: expected [*, 20], got [5, 21]"));
    CHECK_THROWS_WITH(run(c.u.view(), bad.view(), c.bias, c.B.view(), c.C.view(), c.D, c.z.view(), h.view(), out.view()),
                      ContainsSubstring("delta"));
    CHECK_THROWS_WITH(run(c.u.view(), c.delta.view(), D3, c.B.view(), c.C.view(), c.D, c.z.view(), h.view(), out.view()),
                      ContainsSubstring("dt_bias"));
    CHECK_THROWS_WITH(run(c.u.view(), c.delta.view(), c.bias, Bbad.view(), c.C.view(), c.D, c.z.view(), h.view(), out.view()),
                      ContainsSubstring("B: expected"));
    CHECK_THROWS_WITH(run(c.u.view(), c.delta.view(), c.bias, c.B.view(), Bbad.view(), c.D, c.z.view(), h.view(), out.view()),
                      ContainsSubstring("C: expected"));
    CHECK_THROWS_WITH(run(c.u.view(), c.delta.view(), c.bias, c.B.view(), c.C.view(), D3, c.z.view(), h.view(), out.view()),
                      ContainsSubstring("D: expected"));
    CHECK_THROWS_WITH(run(c.u.view(), c.delta.view(), c.bias, c.B.view(), c.C.view(), c.D, bad.view(), h.view(), out.view()),
                      ContainsSubstring("z: expected"));
    CHECK_THROWS_WITH(run(c.u.view(), c.delta.view(), c.bias, c.B.view(), c.C.view(), c.D, c.z.view(), hbad.view(), out.view()),
                      ContainsSubstring("state: expected [20, 16], got [20, 17]"));
    CHECK_THROWS_WITH(run(c.u.view(), c.delta.view(), c.bias, c.B.view(), c.C.view(), c.D, c.z.view(), h.view(), bad.view()),
                      ContainsSubstring("out: expected"));
    CHECK_THROWS_AS(kernels::selective_scan_reference(badc.view(), c.delta.view(), c.bias, c.A.view(), c.B.view(), c.C.view(),
                                                      c.D, c.z.view(), h.view(), out.view()),
                    error);
    // Step.
    std::vector<float> v(d), v1(d + 1), n(N), n1(N + 1), o(d);
    auto step = [&](std::span<const float> u, std::span<const float> dl, std::span<const float> B, std::span<const float> C,
                    std::span<const float> z, MatrixView<float> hh, std::span<float> out1) {
        kernels::selective_scan_step(u, dl, c.bias, c.A.view(), B, C, c.D, z, hh, out1);
    };
    CHECK_NOTHROW(step(v, v, n, n, v, h.view(), o));
    CHECK_NOTHROW(step(v, v, n, n, {}, h.view(), o));
    CHECK_THROWS_WITH(step(v1, v, n, n, v, h.view(), o), ContainsSubstring("selective_scan_step: u: expected [20], got [21]"));
    CHECK_THROWS_WITH(step(v, v1, n, n, v, h.view(), o), ContainsSubstring("delta"));
    CHECK_THROWS_WITH(step(v, v, n1, n, v, h.view(), o), ContainsSubstring("B"));
    CHECK_THROWS_WITH(step(v, v, n, n1, v, h.view(), o), ContainsSubstring("C"));
    CHECK_THROWS_WITH(step(v, v, n, n, v1, h.view(), o), ContainsSubstring("z"));
    CHECK_THROWS_WITH(step(v, v, n, n, v, hbad.view(), o), ContainsSubstring("state"));
    CHECK_THROWS_WITH(step(v, v, n, n, v, h.view(), v1), ContainsSubstring("out"));
}
