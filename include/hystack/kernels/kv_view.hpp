#pragma once
#include "../core/module.hpp"

// Keys and values as the attention kernels read them: kv_tile (the K tile width of a cache's
// transposed layout), KVSegment (one run of consecutive positions with its own pointers, strides and
// K layout) and KVView (up to 4 segments: a cache's part(s) plus the new keys of a call). The caches
// that store this layout are in kv_cache.hpp.

#include <cstddef>

#include "../core/error.hpp"
#include "../core/view.hpp"

namespace hystack::kernels {

/// Keys per K tile of a cache. A cache stores each kv head's keys as tiles of kv_tile keys, transposed:
/// tile [head_dim, kv_tile], dim t of the tile's keys side by side. Decode then scores kv_tile keys with
/// plain vector FMAs (keys in lanes) instead of one horizontal reduction per key.
inline constexpr std::size_t kv_tile = 16;

/// Keys/values at absolute positions pos .. pos + n - 1. V: value i of kv head g is the head_dim floats at
/// v + i * stride + g * head_stride. head_stride 0 means head_dim: rows [n, stride] holding all heads side
/// by side (a projection's output); a cache stores each head contiguously instead (head_stride = slots *
/// head_dim). K: the same as V, or, with k_tiled, transposed tiles: dim t of key i, kv head g at
///   k + g * head_stride + (u / kv_tile) * kv_tile * head_dim + t * kv_tile + u % kv_tile,  u = k_off + i
/// (u: the key's index in the tile space starting at k; a ring cache's segment may start mid-tile).
struct KVSegment {
    std::size_t pos = 0;
    std::size_t n = 0;
    const float* k = nullptr;
    const float* v = nullptr;
    std::size_t stride = 0;
    std::size_t head_stride = 0;
    bool k_tiled = false;
    std::size_t k_off = 0;

    std::size_t head_offset(std::size_t g, std::size_t head_dim) const { return g * (head_stride ? head_stride : head_dim); }
    /// Dim 0 of key i of kv head g; its dims follow key_dim_stride() floats apart.
    const float* key(std::size_t i, std::size_t g, std::size_t head_dim) const {
        if (!k_tiled) return k + i * stride + head_offset(g, head_dim);
        const std::size_t u = k_off + i;
        return k + g * head_stride + (u / kv_tile) * kv_tile * head_dim + u % kv_tile;
    }
    std::size_t key_dim_stride() const { return k_tiled ? kv_tile : 1; }
    /// Value i of kv head g: head_dim consecutive floats.
    const float* value(std::size_t i, std::size_t g, std::size_t head_dim) const { return v + i * stride + head_offset(g, head_dim); }
};

/// Up to max_segments key/value segments (e.g. a ring cache's two halves plus this call's new keys).
/// Positions must not repeat across segments; their order does not matter.
struct KVView {
    static constexpr std::size_t max_segments = 4;
    KVSegment seg[max_segments];
    std::size_t count = 0;

    /// Appends a segment (empty ones are dropped).
    void add(const KVSegment& s) {
        if (s.n == 0) return;
        check(count < max_segments, "KVView: more than ", max_segments, " segments");
        seg[count++] = s;
    }
    /// Total keys.
    std::size_t size() const {
        std::size_t n = 0;
        for (std::size_t i = 0; i < count; ++i) n += seg[i].n;
        return n;
    }
    /// K, V [n, stride] at positions pos0...
    static KVView of(MatrixView<const float> k, MatrixView<const float> v, std::size_t pos0 = 0) {
        check_shape("KVView: v", v, k.rows, k.cols);
        check(k.stride == v.stride || k.rows <= 1, "KVView: k and v must share a row stride, got ", k.stride, " and ", v.stride);
        KVView kv;
        kv.add({pos0, k.rows, k.data, v.data, k.stride});
        return kv;
    }
};

}  // namespace hystack::kernels
