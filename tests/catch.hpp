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
