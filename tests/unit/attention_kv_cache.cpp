// KV caches: KVCache (contiguous, fixed capacity), WindowKVCache (ring of W slots), AttentionCache.
#include <hystack/kernels.hpp>

#include <limits>
#include <random>
#include <vector>

#include "catch.hpp"

using namespace hystack;

namespace {
Matrix<float> random_matrix(std::size_t r, std::size_t c, unsigned seed) {
    Matrix<float> m(r, c);
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (auto& x : m.span()) x = dist(rng);
    return m;
}
// Slots a cache allocates for n positions: whole K tiles.
std::size_t slots(std::size_t n) { return (n + kernels::kv_tile - 1) / kernels::kv_tile * kernels::kv_tile; }
// Reads dim t of the key / value of position p, kv head g back through a view (NaN if absent).
float find_k(const kernels::KVView& kv, std::size_t p, std::size_t g, std::size_t d, std::size_t t) {
    for (std::size_t s = 0; s < kv.count; ++s) {
        const auto& sg = kv.seg[s];
        if (p >= sg.pos && p < sg.pos + sg.n) return sg.key(p - sg.pos, g, d)[t * sg.key_dim_stride()];
    }
    return std::numeric_limits<float>::quiet_NaN();
}
float find_v(const kernels::KVView& kv, std::size_t p, std::size_t g, std::size_t d, std::size_t t) {
    for (std::size_t s = 0; s < kv.count; ++s) {
        const auto& sg = kv.seg[s];
        if (p >= sg.pos && p < sg.pos + sg.n) return sg.value(p - sg.pos, g, d)[t];
    }
    return std::numeric_limits<float>::quiet_NaN();
}
}  // namespace

TEST_CASE("KVCache appends, reports its size and throws past capacity", "[attention_kv_cache]") {
    KVCache c(10, 2, 8);
    CHECK(c.bytes() == 2 * slots(10) * 2 * 8 * sizeof(float));
    CHECK(c.length() == 0);
    auto k = random_matrix(7, 16, 1), v = random_matrix(7, 16, 2);
    c.append(k.view(), v.view());
    c.append(MatrixView<const float>(k.view()).rows_slice(0, 3), MatrixView<const float>(v.view()).rows_slice(0, 3));
    CHECK(c.length() == 10);
    const auto view = c.view();
    CHECK(view.count == 1);
    CHECK(view.size() == 10);
    for (std::size_t p = 0; p < 10; ++p)
        for (std::size_t i = 0; i < 16; ++i) {
            REQUIRE(c.key(p, i / 8, i % 8) == k(p % 7, i));
            REQUIRE(c.value(p, i / 8, i % 8) == v(p % 7, i));
            REQUIRE(find_k(view, p, i / 8, 8, i % 8) == k(p % 7, i));
            REQUIRE(find_v(view, p, i / 8, 8, i % 8) == v(p % 7, i));
        }
    try {
        c.append(MatrixView<const float>(k.view()).rows_slice(0, 1), MatrixView<const float>(v.view()).rows_slice(0, 1));
        FAIL("no throw");
    } catch (const hystack::error& e) {
        CHECK(std::string(e.what()) == "KVCache: sequence of 11 tokens exceeds capacity 10");
    }
    CHECK(c.length() == 10);
    auto bad = random_matrix(1, 15, 3);
    c.reset();
    CHECK(c.length() == 0);
    CHECK_THROWS_AS(c.append(bad.view(), bad.view()), hystack::error);
    CHECK_THROWS_AS(c.append(k.view(), MatrixView<const float>(v.view()).rows_slice(0, 2)), hystack::error);
}

TEST_CASE("WindowKVCache keeps the last W positions in O(W) memory", "[attention_kv_cache]") {
    // W = 5: one partial K tile; W = 37: the ring's segments start and end mid-tile.
    for (std::size_t W : {5, 37}) {
        WindowKVCache c(W, 2, 4);
        CHECK(c.bytes() == 2 * slots(W) * 8 * sizeof(float));
        auto k = random_matrix(200, 8, 1), v = random_matrix(200, 8, 2);
        std::size_t fed = 0;
        for (std::size_t n : {1, 2, 3, 7, 1, 1, 12, 4, 9, 30, 50, 17, 1, 40}) {
            c.append(MatrixView<const float>(k.view()).rows_slice(fed, n), MatrixView<const float>(v.view()).rows_slice(fed, n));
            fed += n;
            REQUIRE(c.length() == fed);
            REQUIRE(c.held() == std::min(fed, W));
            const auto view = c.view();
            REQUIRE(view.size() == std::min(fed, W));
            for (std::size_t p = fed - c.held(); p < fed; ++p)
                for (std::size_t i = 0; i < 8; ++i) {
                    REQUIRE(find_k(view, p, i / 4, 4, i % 4) == k(p, i));
                    REQUIRE(find_v(view, p, i / 4, 4, i % 4) == v(p, i));
                    REQUIRE(c.key(p, i / 4, i % 4) == k(p, i));
                    REQUIRE(c.value(p, i / 4, i % 4) == v(p, i));
                }
            CHECK(c.bytes() == 2 * slots(W) * 8 * sizeof(float));
        }
    }
    CHECK_THROWS_AS(WindowKVCache(0, 1, 4), hystack::error);
}

TEST_CASE("AttentionCache save/load round-trips, copies fork, mismatches throw", "[attention_kv_cache]") {
    for (bool window : {false, true}) {
        AttentionCache a = window ? AttentionCache(WindowKVCache(6, 2, 4)) : AttentionCache(KVCache(20, 2, 4));
        auto k = random_matrix(9, 8, 1), v = random_matrix(9, 8, 2);
        a.append(k.view(), v.view());
        std::vector<std::byte> bytes;
        ByteWriter w(bytes);
        a.save(w);
        AttentionCache b = window ? AttentionCache(WindowKVCache(6, 2, 4)) : AttentionCache(KVCache(20, 2, 4));
        ByteReader r(bytes);
        b.load(r);
        CHECK(r.remaining() == 0);
        CHECK(b.length() == 9);
        const auto va = a.view(), vb = b.view();
        REQUIRE(va.size() == vb.size());
        for (std::size_t p = 9 - va.size(); p < 9; ++p)
            for (std::size_t i = 0; i < 8; ++i) {
                REQUIRE(find_k(va, p, i / 4, 4, i % 4) == find_k(vb, p, i / 4, 4, i % 4));
                REQUIRE(find_v(va, p, i / 4, 4, i % 4) == find_v(vb, p, i / 4, 4, i % 4));
            }
        // Copy forks: appending to the copy leaves the original alone.
        AttentionCache c = a;
        c.append(MatrixView<const float>(k.view()).rows_slice(0, 1), MatrixView<const float>(v.view()).rows_slice(0, 1));
        CHECK(c.length() == 10);
        CHECK(a.length() == 9);
        CHECK(a.bytes() == c.bytes());
        // Truncated input and mismatched caches throw.
        std::vector<std::byte> cut(bytes.begin(), bytes.end() - 5);
        ByteReader rc(cut);
        CHECK_THROWS_AS(b.load(rc), hystack::error);
        AttentionCache other = window ? AttentionCache(WindowKVCache(7, 2, 4)) : AttentionCache(KVCache(21, 2, 4));
        ByteReader r2(bytes);
        CHECK_THROWS_AS(other.load(r2), hystack::error);
        AttentionCache kind = window ? AttentionCache(KVCache(20, 2, 4)) : AttentionCache(WindowKVCache(6, 2, 4));
        ByteReader r3(bytes);
        CHECK_THROWS_AS(kind.load(r3), hystack::error);
        a.reset();
        CHECK(a.length() == 0);
        CHECK(a.view().size() == 0);
    }
}
