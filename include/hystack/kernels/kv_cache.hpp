#pragma once
#include "../core/module.hpp"

// Key/value caches of one attention layer for one sequence (stack-owned per-sequence state).
// Layout of both: each kv head contiguous, so a decode step streams each head's keys and values
// sequentially; slots rounded up to whole K tiles.
//   V [n_kv_heads, slots, head_dim]: value of slot s, head g at (g * slots + s) * head_dim
//   K [n_kv_heads, slots / kv_tile, head_dim, kv_tile]: transposed tiles of kv_tile keys (see
//     kernels::KVSegment), so decode scores a tile's keys with vector FMAs and no horizontal sums.
// Appending scatters the projection rows [n, n_kv_heads * head_dim] per head.
// - KVCache: contiguous, slot = position, fixed capacity given at construction.
// - WindowKVCache: ring of W slots, slot = position mod W; keeps the last W positions, which is all
//   a sliding window of W needs (a query at i sees i-W+1 .. i). Memory O(W) whatever the length.
// AttentionCache is the one state type of AttentionLayer: either of the two.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <algorithm>
#include <string>
#include <utility>
#include <variant>

#include "../core/bytes.hpp"
#include "../core/error.hpp"
#include "../core/view.hpp"
#include "kv_view.hpp"

namespace hystack {

namespace detail {
/// Slots rounded up to whole K tiles.
inline std::size_t kv_slots(std::size_t n) { return (n + kernels::kv_tile - 1) / kernels::kv_tile * kernels::kv_tile; }

/// Stores the K and V rows of kv head g (head_dim floats each) at slot s of a cache with `slots` slots.
inline void store_kv(float* K, float* V, std::size_t slots, std::size_t d, std::size_t g, std::size_t s, const float* k,
                     const float* v) {
    constexpr std::size_t T = kernels::kv_tile;
    float* kt = K + g * slots * d + (s / T) * T * d + s % T;  // Kt[g, s / T, t, s % T]
    for (std::size_t t = 0; t < d; ++t) kt[t * T] = k[t];
    std::memcpy(V + (g * slots + s) * d, v, d * sizeof(float));
}

inline void check_kv_rows(const char* who, MatrixView<const float> k, MatrixView<const float> v, std::size_t row) {
    check_shape(ArgName{who, "k"}, k, any, row);
    check_shape(ArgName{who, "v"}, v, k.rows, row);
}
}  // namespace detail

/// Contiguous K/V cache: positions 0 .. length()-1, capacity fixed at construction.
class KVCache {
public:
    KVCache() = default;
    KVCache(std::size_t capacity, std::size_t n_kv_heads, std::size_t head_dim)
        : cap_(capacity),
          slots_(detail::kv_slots(capacity)),
          nkv_(n_kv_heads),
          d_(head_dim),
          k_(slots_ * n_kv_heads * head_dim),
          v_(slots_ * n_kv_heads * head_dim) {}

    std::size_t capacity() const { return cap_; }
    std::size_t length() const { return len_; }
    std::size_t n_kv_heads() const { return nkv_; }
    std::size_t head_dim() const { return d_; }
    std::size_t row_size() const { return nkv_ * d_; }
    /// Bytes of K and V storage (allocated at construction).
    std::size_t bytes() const { return k_.bytes() + v_.bytes(); }
    /// Bytes a cache of this shape allocates.
    static std::size_t bytes_for(std::size_t capacity, std::size_t n_kv_heads, std::size_t head_dim) {
        return 2 * detail::kv_slots(capacity) * n_kv_heads * head_dim * sizeof(float);
    }
    void reset() { len_ = 0; }

    /// Throws unless n more tokens fit.
    void check_append(std::size_t n) const {
        check(len_ + n <= cap_, "KVCache: sequence of ", len_ + n, " tokens exceeds capacity ", cap_);
    }
    /// Appends K, V [n, n_kv_heads * head_dim] at positions length() ...
    void append(MatrixView<const float> k, MatrixView<const float> v) {
        detail::check_kv_rows("KVCache::append", k, v, row_size());
        check_append(k.rows);
        for (std::size_t i = 0; i < k.rows; ++i)
            for (std::size_t g = 0; g < nkv_; ++g)
                detail::store_kv(k_.data(), v_.data(), slots_, d_, g, len_ + i, k.row(i) + g * d_, v.row(i) + g * d_);
        len_ += k.rows;
    }
    /// Adds the cached positions [0, length()) to a kernel view.
    void add_to(kernels::KVView& kv) const { kv.add({0, len_, k_.data(), v_.data(), d_, slots_ * d_, true, 0}); }
    kernels::KVView view() const {
        kernels::KVView kv;
        add_to(kv);
        return kv;
    }
    /// Dim t of the key / value of position p (< length()), kv head g.
    float key(std::size_t p, std::size_t g, std::size_t t) const {
        const kernels::KVSegment all{0, cap_, k_.data(), v_.data(), d_, slots_ * d_, true, 0};
        return all.key(p, g, d_)[t * kernels::kv_tile];
    }
    float value(std::size_t p, std::size_t g, std::size_t t) const { return v_[(g * slots_ + p) * d_ + t]; }

    /// Saves the cache's own layout: per kv head the K tiles holding positions < length(), then their V rows.
    void save(ByteWriter& w) const {
        w.u64(cap_);
        w.u64(nkv_);
        w.u64(d_);
        w.u64(len_);
        for (std::size_t g = 0; g < nkv_; ++g) {
            w.f32({k_.data() + g * slots_ * d_, detail::kv_slots(len_) * d_});
            w.f32({v_.data() + g * slots_ * d_, len_ * d_});
        }
    }
    void load(ByteReader& r) {
        const auto cap = r.u64("KVCache"), nkv = r.u64("KVCache"), d = r.u64("KVCache"), len = r.u64("KVCache");
        check(cap == cap_ && nkv == nkv_ && d == d_, "KVCache::load: saved cache [capacity ", cap, ", kv heads ", nkv, ", head_dim ", d,
              "] does not match [", cap_, ", ", nkv_, ", ", d_, "]");
        check(len <= cap_, "KVCache::load: length ", len, " exceeds capacity ", cap_);
        for (std::size_t g = 0; g < nkv_; ++g) {
            r.f32({k_.data() + g * slots_ * d_, detail::kv_slots(len) * d_}, "KVCache::load: k");
            r.f32({v_.data() + g * slots_ * d_, len * d_}, "KVCache::load: v");
        }
        len_ = len;
    }

private:
    std::size_t cap_ = 0, slots_ = 0, nkv_ = 0, d_ = 0, len_ = 0;
    Buffer<float> k_, v_;
};

/// Sliding-window K/V cache: a ring of W slots holding positions max(0, length()-W) .. length()-1.
class WindowKVCache {
public:
    WindowKVCache() = default;
    WindowKVCache(std::size_t window, std::size_t n_kv_heads, std::size_t head_dim)
        : w_(window),
          slots_(detail::kv_slots(window)),
          nkv_(n_kv_heads),
          d_(head_dim),
          k_(slots_ * n_kv_heads * head_dim),
          v_(slots_ * n_kv_heads * head_dim) {
        check(window > 0, "WindowKVCache: window must be > 0");
    }

    std::size_t window() const { return w_; }
    /// Tokens seen (unbounded).
    std::size_t length() const { return len_; }
    /// Positions held: min(length(), window()).
    std::size_t held() const { return len_ < w_ ? len_ : w_; }
    std::size_t n_kv_heads() const { return nkv_; }
    std::size_t head_dim() const { return d_; }
    std::size_t row_size() const { return nkv_ * d_; }
    std::size_t bytes() const { return k_.bytes() + v_.bytes(); }
    /// Bytes a cache of this shape allocates.
    static std::size_t bytes_for(std::size_t window, std::size_t n_kv_heads, std::size_t head_dim) {
        return KVCache::bytes_for(window, n_kv_heads, head_dim);
    }
    void reset() { len_ = 0; }
    void check_append(std::size_t) const {}

    /// Appends K, V [n, n_kv_heads * head_dim] at positions length() ...; only the last W are kept.
    void append(MatrixView<const float> k, MatrixView<const float> v) {
        detail::check_kv_rows("WindowKVCache::append", k, v, row_size());
        const std::size_t n = k.rows, first = n > w_ ? n - w_ : 0;
        for (std::size_t i = first; i < n; ++i) {
            const std::size_t slot = (len_ + i) % w_;
            for (std::size_t g = 0; g < nkv_; ++g)
                detail::store_kv(k_.data(), v_.data(), slots_, d_, g, slot, k.row(i) + g * d_, v.row(i) + g * d_);
        }
        len_ += n;
    }
    /// Adds the held positions to a kernel view (two segments when the ring wraps).
    void add_to(kernels::KVView& kv) const {
        const std::size_t n = held(), p0 = len_ - n, s0 = p0 % w_;
        const std::size_t first = std::min(n, w_ - s0);
        kv.add({p0, first, k_.data(), v_.data() + s0 * d_, d_, slots_ * d_, true, s0});
        kv.add({p0 + first, n - first, k_.data(), v_.data(), d_, slots_ * d_, true, 0});
    }
    kernels::KVView view() const {
        kernels::KVView kv;
        add_to(kv);
        return kv;
    }
    /// Dim t of the key / value of position p (length() - held() <= p < length()), kv head g.
    float key(std::size_t p, std::size_t g, std::size_t t) const {
        const kernels::KVSegment all{0, w_, k_.data(), v_.data(), d_, slots_ * d_, true, 0};
        return all.key(p % w_, g, d_)[t * kernels::kv_tile];
    }
    float value(std::size_t p, std::size_t g, std::size_t t) const { return v_[(g * slots_ + p % w_) * d_ + t]; }

    void save(ByteWriter& w) const {
        w.u64(w_);
        w.u64(nkv_);
        w.u64(d_);
        w.u64(len_);
        w.f32(k_.span());
        w.f32(v_.span());
    }
    void load(ByteReader& r) {
        const auto win = r.u64("WindowKVCache"), nkv = r.u64("WindowKVCache"), d = r.u64("WindowKVCache"),
                   len = r.u64("WindowKVCache");
        check(win == w_ && nkv == nkv_ && d == d_, "WindowKVCache::load: saved cache [window ", win, ", kv heads ", nkv, ", head_dim ",
              d, "] does not match [", w_, ", ", nkv_, ", ", d_, "]");
        r.f32(k_.span(), "WindowKVCache::load: k");
        r.f32(v_.span(), "WindowKVCache::load: v");
        len_ = len;
    }

private:
    std::size_t w_ = 0, slots_ = 0, nkv_ = 0, d_ = 0, len_ = 0;
    Buffer<float> k_, v_;
};

/// AttentionLayer's per-sequence state: a global KVCache (capacity = max context) or a WindowKVCache
/// (W slots). A value type: copying forks the sequence.
class AttentionCache {
    std::variant<KVCache, WindowKVCache> c_;

    template <class F>
    decltype(auto) visit(F&& f) const {
        return std::visit(std::forward<F>(f), c_);
    }

public:
    AttentionCache() = default;
    explicit AttentionCache(KVCache c) : c_(std::move(c)) {}
    explicit AttentionCache(WindowKVCache c) : c_(std::move(c)) {}

    bool is_window() const { return std::holds_alternative<WindowKVCache>(c_); }
    /// Tokens seen.
    std::size_t length() const { return visit([](const auto& c) { return c.length(); }); }
    /// Bytes of cached K/V.
    std::size_t bytes() const { return visit([](const auto& c) { return c.bytes(); }); }
    void reset() {
        std::visit([](auto& c) { c.reset(); }, c_);
    }
    void check_append(std::size_t n) const { visit([&](const auto& c) { c.check_append(n); }); }
    void append(MatrixView<const float> k, MatrixView<const float> v) {
        std::visit([&](auto& c) { c.append(k, v); }, c_);
    }
    void add_to(kernels::KVView& kv) const { visit([&](const auto& c) { c.add_to(kv); }); }
    kernels::KVView view() const {
        kernels::KVView kv;
        add_to(kv);
        return kv;
    }
    void save(ByteWriter& w) const {
        w.u64(is_window() ? 1 : 0);
        visit([&](const auto& c) { c.save(w); });
    }
    void load(ByteReader& r) {
        const auto kind = r.u64("AttentionCache");
        check(kind == (is_window() ? 1u : 0u), "AttentionCache::load: saved a ", kind ? "window" : "global", " cache, this is a ",
              is_window() ? "window" : "global", " cache");
        std::visit([&](auto& c) { c.load(r); }, c_);
    }
    const KVCache* global() const { return std::get_if<KVCache>(&c_); }
    const WindowKVCache* ring() const { return std::get_if<WindowKVCache>(&c_); }

};

}  // namespace hystack
