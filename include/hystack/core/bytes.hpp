#pragma once
#include "module.hpp"

// Byte serialisation helpers for per-sequence states (save/restore of caches). Readers check
// every size and throw hystack::error on truncated or mismatched input.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <vector>

#include "error.hpp"

namespace hystack {

class ByteWriter {
public:
    explicit ByteWriter(std::vector<std::byte>& out) : out_(out) {}
    void u64(std::uint64_t v) { raw(&v, sizeof v); }
    void f32(std::span<const float> v) {
        u64(v.size());
        raw(v.data(), v.size() * sizeof(float));
    }
    void raw(const void* p, std::size_t n) {
        const auto* b = static_cast<const std::byte*>(p);
        out_.insert(out_.end(), b, b + n);
    }

private:
    std::vector<std::byte>& out_;
};

class ByteReader {
public:
    explicit ByteReader(std::span<const std::byte> in) : in_(in) {}
    std::uint64_t u64(std::string_view what) {
        std::uint64_t v;
        raw(&v, sizeof v, what);
        return v;
    }
    /// Reads a float array written by ByteWriter::f32 into `dst`, whose size must match.
    void f32(std::span<float> dst, std::string_view what) {
        const std::uint64_t n = u64(what);
        check(n == dst.size(), what, ": expected ", dst.size(), " floats, got ", n);
        raw(dst.data(), dst.size() * sizeof(float), what);
    }
    void raw(void* p, std::size_t n, std::string_view what) {
        check(n <= in_.size() - pos_, what, ": truncated state (need ", n, " more bytes, ", in_.size() - pos_, " left)");
        if (n) std::memcpy(p, in_.data() + pos_, n);
        pos_ += n;
    }
    std::size_t remaining() const { return in_.size() - pos_; }

private:
    std::span<const std::byte> in_;
    std::size_t pos_ = 0;
};

}  // namespace hystack
