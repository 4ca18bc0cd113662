// Core: errors, views, buffers, executors, SIMD math accuracy, bf16.
#include <hystack/core.hpp>

#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "catch.hpp"

using namespace hystack;

TEST_CASE("errors name the argument, the expected and the given shape", "[core]") {
    try {
        check_shape("q", 7, 256, any, 512);
        FAIL("no throw");
    } catch (const error& e) {
        CHECK(std::string(e.what()) == "q: expected [*, 512], got [7, 256]");
    }
    CHECK_THROWS_AS(check_size("bias", 3, 4), error);
    CHECK_NOTHROW(check_size("bias", 4, 4));
    CHECK_THROWS_WITH(check(false, "x: expected ", 3, ", got ", 4), "x: expected 3, got 4");
    CHECK(std::is_base_of_v<std::runtime_error, error>);
}

TEST_CASE("views and Eigen maps convert both ways over the same memory", "[core]") {
    Matrix<float> m(3, 5);
    for (std::size_t i = 0; i < 15; ++i) m.span()[i] = float(i);
    MatrixView<float> v = m.view().cols_slice(1, 3);
    auto e = v.eigen();  // view -> map
    CHECK(e(2, 0) == 11.0f);
    e(0, 0) = -1.0f;
    CHECK(m(0, 1) == -1.0f);
    auto back = MatrixView<float>::of(e);  // map -> view
    CHECK(back.data == v.data);
    CHECK(back.rows == 3);
    CHECK(back.cols == 3);
    CHECK(back.stride == 5);
    using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    RowMajor owned = RowMajor::Constant(2, 4, 3.0f);
    auto ov = MatrixView<float>::of(owned);  // an Eigen matrix's storage as a view
    ov(1, 3) = 7.0f;
    CHECK(owned(1, 3) == 7.0f);
    auto blk = owned.block(0, 1, 2, 2);  // a block of it: the outer stride carries over
    auto bv = MatrixView<const float>::of(blk);
    CHECK(bv.stride == 4);
    CHECK(bv(1, 1) == 3.0f);
    std::vector<float> vec{1, 2, 3};
    auto ev = eigen_vector(std::span<float>(vec));  // span -> vector map
    CHECK(ev.size() == 3);
    ev.coeffRef(2) *= 2.0f;
    CHECK(vec[2] == 6.0f);
    Eigen::VectorXf x = Eigen::VectorXf::Ones(4);
    CHECK(span_of(x).size() == 4);
    CHECK(span_of(x).data() == x.data());
}

TEST_CASE("views slice rows and columns without copying; buffers are aligned", "[core]") {
    Matrix<float> m(4, 6);
    for (std::size_t r = 0; r < 4; ++r)
        for (std::size_t c = 0; c < 6; ++c) m(r, c) = float(r * 10 + c);
    MatrixView<float> v = m.view();
    auto s = v.rows_slice(1, 2).cols_slice(2, 3);
    CHECK(s.rows == 2);
    CHECK(s.cols == 3);
    CHECK(s(1, 2) == 24.0f);
    CHECK(s.eigen()(0, 0) == 12.0f);
    MatrixView<const float> cv = s;  // to const
    CHECK(cv(0, 1) == 13.0f);
    CHECK(reinterpret_cast<std::uintptr_t>(m.data()) % 64 == 0);
    Buffer<float> b(17);
    CHECK(reinterpret_cast<std::uintptr_t>(b.data()) % 64 == 0);
    CHECK(std::all_of(b.begin(), b.end(), [](float x) { return x == 0.0f; }));
    b[3] = 5;
    Buffer<float> c = b;  // deep copy
    c[3] = 6;
    CHECK(b[3] == 5.0f);
    Buffer<float> empty(0);
    CHECK(empty.data() == nullptr);
    CHECK(empty.empty());
}

TEST_CASE("large buffers are 2 MB aligned (huge-page candidates) and behave like small ones", "[core]") {
    const std::size_t n = huge_page_bytes / sizeof(float) + 3;  // just past the threshold
    Buffer<float> big(n);
    CHECK(reinterpret_cast<std::uintptr_t>(big.data()) % huge_page_bytes == 0);
    CHECK(std::all_of(big.begin(), big.end(), [](float x) { return x == 0.0f; }));
    big[n - 1] = 7.0f;
    Buffer<float> copy = big;  // deep copy keeps the alignment
    CHECK(reinterpret_cast<std::uintptr_t>(copy.data()) % huge_page_bytes == 0);
    CHECK(copy[n - 1] == 7.0f);
    Buffer<float> moved = std::move(copy);
    CHECK(moved[n - 1] == 7.0f);
    moved.resize(5);  // shrinking below the threshold: a small, 64-byte aligned buffer (freed with its own alignment)
    CHECK(reinterpret_cast<std::uintptr_t>(moved.data()) % alignment == 0);
    CHECK(moved.size() == 5);
    Buffer<float> small(huge_page_bytes / sizeof(float) - 1);  // just below: 64-byte aligned is all it promises
    CHECK(reinterpret_cast<std::uintptr_t>(small.data()) % alignment == 0);
}

template <class Exec>
static std::vector<std::pair<std::size_t, std::size_t>> chunks_of(Exec& ex, std::size_t n, std::size_t grain) {
    std::vector<std::pair<std::size_t, std::size_t>> seen(64, {0, 0});
    std::atomic<int> count{0};
    ex.parallel_for(n, grain, [&](std::size_t b, std::size_t e, std::size_t c) {
        seen[c] = {b, e};
        count++;
    });
    seen.resize(std::size_t(count.load()));
    return seen;
}

TEST_CASE("executors cover [0, n) exactly once with a static split", "[core]") {
    SerialExecutor serial;
    ThreadPool pool(3);
    CHECK(pool.num_threads() == 3);
    for (std::size_t n : {0u, 1u, 2u, 3u, 7u, 100u, 1001u}) {
        for (std::size_t grain : {1u, 4u, 1000u}) {
            std::vector<std::atomic<int>> hits(n);
            pool.parallel_for(n, grain, [&](std::size_t b, std::size_t e) {
                for (std::size_t i = b; i < e; ++i) hits[i]++;
            });
            for (std::size_t i = 0; i < n; ++i) REQUIRE(hits[i] == 1);
            auto ch = chunks_of(pool, n, grain);
            CHECK(ch.size() == detail::chunk_count(n, grain, 3));
            for (auto [b, e] : ch) CHECK((e - b >= grain || ch.size() == 1));
        }
    }
    auto one = chunks_of(serial, 10, 1);
    REQUIRE(one.size() == 1);
    CHECK(one[0] == std::pair<std::size_t, std::size_t>{0, 10});
}

TEST_CASE("thread pool: resizing, nested calls, exceptions, many calls", "[core]") {
    ThreadPool pool(2);
    pool.set_num_threads(4);
    CHECK(pool.num_threads() == 4);
    pool.set_num_threads(1);
    CHECK(pool.num_threads() == 1);
    pool.set_num_threads(2);
    std::atomic<long> total{0};
    for (int it = 0; it < 2000; ++it)
        pool.parallel_for(8, 1, [&](std::size_t b, std::size_t e) {
            pool.parallel_for(e - b, 1, [&](std::size_t b2, std::size_t e2) { total += long(e2 - b2); });
        });
    CHECK(total == 2000 * 8);
    // Regression: workers created by a resize must not re-run the previous (finished) job.
    std::atomic<int> runs{0};
    for (std::size_t t : {2u, 1u, 2u, 3u, 2u}) {
        pool.set_num_threads(t);
        for (int it = 0; it < 10; ++it) pool.parallel_for(t, 1, [&](std::size_t, std::size_t) { runs++; });
    }
    CHECK(runs == 10 * (2 + 1 + 2 + 3 + 2));
    CHECK_THROWS_AS(pool.parallel_for(4, 1, [](std::size_t b, std::size_t) {
        if (b != 0) throw error("worker failed");
    }), error);
    // Still usable after an exception.
    std::atomic<int> n{0};
    pool.parallel_for(4, 1, [&](std::size_t b, std::size_t e) { n += int(e - b); });
    CHECK(n == 4);
}

static double rel_err(float got, double want) {
    if (want == 0) return std::fabs(double(got));
    return std::fabs(double(got) - want) / std::fabs(want);
}

TEST_CASE("exp: relative error <= 2e-7 over [-87, 88], scalar and SIMD", "[core]") {
    std::vector<float> x;
    for (double v = -87.0; v <= 88.0; v += 0.000731) x.push_back(float(v));
    x.push_back(-87.0f);
    x.push_back(88.0f);
    std::vector<float> y(x.size());
    math::exp(std::span<const float>(x), std::span<float>(y));
    double worst = 0, worst_scalar = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
        const double want = std::exp(double(x[i]));
        worst = std::max(worst, rel_err(y[i], want));
        worst_scalar = std::max(worst_scalar, rel_err(math::exp(x[i]), want));
    }
    INFO("worst simd " << worst << " scalar " << worst_scalar);
    CHECK(worst <= 2e-7);
    CHECK(worst_scalar <= 2e-7);
}

TEST_CASE("exp/sigmoid/silu/softplus edge values: 0, +-inf, NaN, denormals, overflow edges", "[core]") {
    const float inf = std::numeric_limits<float>::infinity();
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float den = std::numeric_limits<float>::denorm_min();
    std::vector<float> x = {0.0f, -0.0f, inf, -inf, nan, den, -den, 88.72f, 88.73f, 89.0f, -87.5f, -100.0f, -103.0f, -104.0f,
                            -1000.0f, 1000.0f, 1e-30f, -1e-30f, 20.0f, 20.5f, -20.5f, 50.0f, -50.0f, 1.0f, -1.0f};
    // Pad past one SIMD width so both the vector body and the scalar tail see every value.
    const std::size_t base = x.size();
    for (std::size_t i = 0; i < base; ++i) x.push_back(x[i]);
    std::vector<float> e(x.size()), sg(x.size()), sl(x.size()), sp(x.size());
    math::exp(std::span<const float>(x), std::span<float>(e));
    math::sigmoid(std::span<const float>(x), std::span<float>(sg));
    math::silu(std::span<const float>(x), std::span<float>(sl));
    math::softplus(std::span<const float>(x), std::span<float>(sp));
    // Expected values are rounded to float's range first: what overflows float must be inf.
    // Results below FLT_MIN may be flushed (abs 1e-38), except exp's, which must be exact denormals.
    auto close = [](float got, double want, double tol, double abs_tol = 1e-44) {
        if (std::fabs(want) > double(std::numeric_limits<float>::max()) * (1 + 1e-7)) want = want > 0 ? INFINITY : -INFINITY;
        if (std::isnan(want)) return std::isnan(got);
        if (std::isinf(want)) return got == float(want);
        const double a = std::fabs(double(got) - want);
        return a <= tol * std::fabs(want) || a <= abs_tol;
    };
    for (std::size_t i = 0; i < x.size(); ++i) {
        const double xd = x[i];
        INFO("x = " << x[i]);
        CHECK(close(e[i], std::exp(xd), 2e-7));
        CHECK(close(math::exp(x[i]), std::exp(xd), 2e-7));
        CHECK(close(sg[i], 1.0 / (1.0 + std::exp(-xd)), 4e-7, 1e-38));
        const double silu = std::isinf(xd) ? (xd > 0 ? xd : 0.0) : xd / (1.0 + std::exp(-xd));
        CHECK(close(sl[i], silu, 4e-7, 1e-38));
        const double softplus = xd > 20 ? xd : std::log1p(std::exp(xd));
        CHECK(close(sp[i], softplus, 4e-7));
        CHECK(close(math::softplus(x[i]), softplus, 4e-7));
    }
    CHECK(math::softplus(50.0f) == 50.0f);  // never inf
    CHECK(math::exp(-inf) == 0.0f);
    CHECK(std::isinf(math::exp(inf)));
}

TEST_CASE("math array functions reject mismatched sizes and allow aliasing", "[core]") {
    std::vector<float> a(10, 1.0f), b(9);
    CHECK_THROWS_AS(math::exp(std::span<const float>(a), std::span<float>(b)), error);
    math::silu(std::span<const float>(a), std::span<float>(a));
    CHECK_THAT(a[9], WithinRel(1.0 / (1.0 + std::exp(-1.0)), 1e-6));
}

TEST_CASE("bf16: round to nearest even, NaN, inf, exact widening, SIMD arrays match scalar", "[core]") {
    auto from = [](std::uint32_t u) {
        float f;
        std::memcpy(&f, &u, 4);
        return f;
    };
    CHECK(bf16(from(0x3f808000u)).bits == 0x3f80);  // tie, even stays
    CHECK(bf16(from(0x3f818000u)).bits == 0x3f82);  // tie, odd rounds up
    CHECK(bf16(from(0x3f808001u)).bits == 0x3f81);  // above tie
    CHECK(bf16(from(0x3f807fffu)).bits == 0x3f80);  // below tie
    CHECK(bf16(std::numeric_limits<float>::infinity()).bits == 0x7f80);
    CHECK(bf16(-std::numeric_limits<float>::infinity()).bits == 0xff80);
    CHECK(std::isnan(float(bf16(std::numeric_limits<float>::quiet_NaN()))));
    CHECK(std::isnan(float(bf16(from(0x7f800001u)))));  // signalling NaN stays NaN, not inf
    CHECK(bf16(from(0x7f7fffffu)).bits == 0x7f80);        // max float rounds to inf
    CHECK(float(bf16::from_bits(0x4049)) == from(0x40490000u));
    std::vector<float> xs;
    for (std::uint32_t u = 0; u < 0xffffffffu - 9973u * 1024u; u += 9973u * 1024u) xs.push_back(from(u));
    for (std::uint32_t u : {0x3f808000u, 0x3f818000u, 0x7f800001u, 0xffc00000u, 0x7f7fffffu, 0x00000001u}) xs.push_back(from(u));
    std::vector<bf16> hv(xs.size());
    narrow(std::span<const float>(xs), std::span<bf16>(hv));
    std::vector<float> back(xs.size());
    widen(std::span<const bf16>(hv), std::span<float>(back));
    for (std::size_t i = 0; i < xs.size(); ++i) {
        INFO(i);
        const bf16 s(xs[i]);
        if (std::isnan(xs[i])) {
            CHECK(std::isnan(back[i]));
        } else {
            CHECK(hv[i].bits == s.bits);
            const float w = float(s);
            CHECK(std::memcmp(&back[i], &w, 4) == 0);
        }
    }
    std::vector<bf16> small(3);
    CHECK_THROWS_AS(narrow(std::span<const float>(xs), std::span<bf16>(small)), error);
}

#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
namespace {
// The halving tree reduce_add_many promises, on stored lanes: s_l += s_{l+h} for h = W/2, ..., 1.
float halving_tree(std::vector<float> s) {
    for (std::size_t h = s.size() / 2; h >= 1; h /= 2)
        for (std::size_t l = 0; l < h; ++l) s[l] += s[l + h];
    return s[0];
}
template <std::size_t N>
void check_reduce_many(std::mt19937& rng) {
    using A = simd::default_arch;
    constexpr std::size_t W = simd::width<A>;
    // lanes of mixed sign and magnitude, so a different pairing would round differently
    std::uniform_real_distribution<float> d(-1.0f, 1.0f);
    std::vector<float> lanes(N * W);
    for (std::size_t i = 0; i < lanes.size(); ++i) lanes[i] = d(rng) * std::ldexp(1.0f, int(i % 7) * 9 - 30);
    simd::batch<A> v[N];
    for (std::size_t a = 0; a < N; ++a) v[a] = simd::load<A>(lanes.data() + a * W);
    std::vector<float> out(N + 1, -7.0f);
    simd::reduce_add_many<A>(v, out.data());
    for (std::size_t a = 0; a < N; ++a) {
        INFO("N " << N << " vector " << a);
        const float want = halving_tree(std::vector<float>(lanes.begin() + std::ptrdiff_t(a * W),
                                                           lanes.begin() + std::ptrdiff_t((a + 1) * W)));
        CHECK(std::memcmp(&out[a], &want, 4) == 0);
    }
    CHECK(out[N] == -7.0f);  // writes exactly N sums
}
}  // namespace

TEST_CASE("reduce_add_many: each sum is its vector's halving tree, bit for bit, whatever N", "[core]") {
    std::mt19937 rng(5);
    for (int rep = 0; rep < 20; ++rep) {
        check_reduce_many<1>(rng);
        check_reduce_many<2>(rng);
        check_reduce_many<7>(rng);
        check_reduce_many<8>(rng);
        check_reduce_many<16>(rng);
        check_reduce_many<17>(rng);
        check_reduce_many<24>(rng);
        check_reduce_many<33>(rng);
    }
}
#endif

#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
TEST_CASE("exp_nonpos (the scan's decay) equals exp for x <= 0, -inf and denormal results included", "[core]") {
    constexpr std::size_t W = simd::width<>;
    std::vector<float> x = {0.0f, -0.0f, -1e-30f, -0.5f, -1.0f, -20.0f, -87.0f, -87.5f, -100.0f, -103.0f, -103.9f,
                            -120.0f, -1000.0f, -std::numeric_limits<float>::infinity()};
    for (float v = -110.0f; v < 0.0f; v += 0.37f) x.push_back(v);
    while (x.size() % W) x.push_back(-2.0f);
    std::vector<float> a(x.size()), b(x.size());
    for (std::size_t i = 0; i < x.size(); i += W) {
        using A = simd::default_arch;
        simd::store<A>(a.data() + i, math::exp_nonpos<A>(simd::load<A>(x.data() + i)));
        simd::store<A>(b.data() + i, math::exp<A>(simd::load<A>(x.data() + i)));
    }
    for (std::size_t i = 0; i < x.size(); ++i) {
        INFO("x = " << x[i]);
        if (x[i] >= -103.9f)
            CHECK(a[i] == b[i]);  // the same algorithm: bit-identical
        else
            CHECK(a[i] <= std::numeric_limits<float>::denorm_min());  // exp's 0, or the smallest denormal
        CHECK(a[i] >= 0.0f);
    }
}
#endif
