#pragma once
// Catch2 v2 (Debian 12) / v3 compatibility: include this instead of Catch2's own headers.
#if __has_include(<catch2/catch_all.hpp>)
#include <catch2/catch_all.hpp>
#else
#include <catch2/catch.hpp>
#endif

using Catch::Matchers::WithinAbs;
using Catch::Matchers::WithinRel;

#include <hystack/core.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <span>
#include <string>

/// The message of the hystack::error that f() throws, or a marker string when it throws none
/// (any other exception propagates and fails the test).
template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const hystack::error& e) {
        return e.what();
    }
    return "<no hystack::error thrown>";
}

/// Checks that the expression throws a hystack::error whose message contains `sub`.
#define CHECK_ERROR(sub, ...)                                            \
    do {                                                                 \
        const std::string msg_ = error_of([&] { (void)(__VA_ARGS__); }); \
        INFO(msg_);                                                      \
        CHECK(msg_.find(sub) != std::string::npos);                      \
    } while (0)

/// max over i of |got[i] - want[i]| / (atol + rtol |want[i]|), NaN counting as infinite: <= 1 passes.
inline double excess(std::span<const float> got, std::span<const float> want, double atol, double rtol) {
    REQUIRE(got.size() == want.size());
    double worst = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
        const double e = std::fabs(double(got[i]) - want[i]) / (atol + rtol * std::fabs(want[i]));
        worst = std::max(worst, std::isnan(e) ? INFINITY : e);
    }
    return worst;
}

/// Bit-identical contents (for "any thread count / any chunking gives the same result" properties).
inline bool same_bits(std::span<const float> a, std::span<const float> b) {
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}
inline bool same_bits(hystack::MatrixView<const float> a, hystack::MatrixView<const float> b) {
    if (a.rows != b.rows || a.cols != b.cols) return false;
    if (a.cols == 0) return true;  // rows of zero floats may be null pointers, which memcmp must not get
    for (std::size_t r = 0; r < a.rows; ++r)
        if (std::memcmp(a.row(r), b.row(r), a.cols * sizeof(float)) != 0) return false;
    return true;
}
