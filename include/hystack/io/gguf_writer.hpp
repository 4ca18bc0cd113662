#pragma once
#include "../core/module.hpp"

// GgufWriter: writes a GGUF v3 file (gguf_format.hpp) as a stream, so a converter holds one tensor at
// a time: metadata and tensor declarations first (name, ne, type: the offsets follow), then begin()
// writes the header and write_tensor() each tensor's bytes in declared order, then finish().
// Conventions are llama.cpp's (gguf-py and gguf.cpp write the same bytes): each tensor starts at a
// multiple of the alignment (general.alignment, 32 unless set), in declaration order, padded with
// zero bytes to the next multiple, the last one included; the header is zero-padded likewise. The
// file is written under "<path>.tmp" and renamed into place by finish(), so a failed or abandoned
// write never leaves a half-written file under the final name.

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "../core/error.hpp"
#include "gguf_format.hpp"

namespace hystack::io {

/// Longest tensor name llama.cpp reads (GGML_MAX_NAME - 1: ggml keeps names in 64-byte arrays).
inline constexpr std::size_t gguf_max_tensor_name = 63;

/// Streams a GGUF v3 file: set() metadata and add_tensor() declarations, then begin(path),
/// write_tensor() in declared order, finish(). Example:
///   GgufWriter w;
///   w.set("general.architecture", "jamba");
///   w.set("jamba.block_count", std::uint32_t(8));
///   w.add_tensor("token_embd.weight", {d_model, vocab}, GgmlType::BF16);  // ne[0] = row length
///   w.begin("model.gguf");
///   w.write_tensor("token_embd.weight", bytes);
///   w.finish();
class GgufWriter {
public:
    GgufWriter() = default;
    GgufWriter(const GgufWriter&) = delete;
    GgufWriter& operator=(const GgufWriter&) = delete;
    /// An unfinished file is abandoned: its temporary is removed.
    ~GgufWriter() { abandon(); }

    /// Adds a metadata entry (before begin). The value's C++ type is its GGUF type: pass
    /// std::uint32_t(8) for a uint32, 1e-5f for a float32. "general.alignment" must be a uint32
    /// power of two and sets the alignment of the tensor data.
    void set(std::string key, GgufValue value) {
        check(state_ == State::declaring, "GgufWriter: set('", key, "') after begin()");
        check(!key.empty(), "GgufWriter: empty metadata key");
        check(keys_.insert(key).second, "GgufWriter: duplicate metadata key '", key, "'");
        if (key == "general.alignment") {
            const auto* a = value.get_if<std::uint32_t>();
            check(a != nullptr, "GgufWriter: general.alignment: expected uint32, found ", value.type_name());
            check(*a != 0 && std::has_single_bit(*a), "GgufWriter: general.alignment = ", *a, " is not a power of two");
            alignment_ = *a;
            layout();
        }
        kvs_.push_back({std::move(key), std::move(value)});
    }

    /// Declares a tensor (before begin): ne in ggml order (ne[0] the row length, a multiple of the
    /// type's block size), 1 to 4 dims. Returns its info (offset and bytes under the current alignment).
    const GgufTensorInfo& add_tensor(std::string name, std::vector<std::uint64_t> ne, GgmlType type) {
        check(state_ == State::declaring, "GgufWriter: add_tensor('", name, "') after begin()");
        check(!name.empty(), "GgufWriter: empty tensor name");
        check(name.size() <= gguf_max_tensor_name, "GgufWriter: tensor name '", name, "' is ", name.size(),
              " bytes; llama.cpp reads at most ", gguf_max_tensor_name);
        check(!names_.count(name), "GgufWriter: duplicate tensor name '", name, "'");
        check(!ne.empty() && ne.size() <= gguf_max_dims, "GgufWriter: tensor '", name, "': ", ne.size(),
              " dims (expected 1..", gguf_max_dims, ")");
        check(ggml_type_known(std::uint32_t(type)), "GgufWriter: tensor '", name, "': unknown ggml type id ",
              std::uint32_t(type));
        GgufTensorInfo t{std::move(name), std::move(ne), type, 0, 0};
        t.bytes = ggml_nbytes(t.type, t.ne, "GgufWriter: tensor '" + t.name + "'");
        names_.insert(t.name);  // only once every check passed: a refused declaration leaves no trace
        tensors_.push_back(std::move(t));
        layout();
        return tensors_.back();
    }

    /// Writes the header to "<path>.tmp"; the tensors follow with write_tensor.
    void begin(const std::string& path) {
        check(state_ == State::declaring, "GgufWriter: begin('", path, "') called twice");
        path_ = path;
        tmp_ = path + ".tmp";
        std::string h;
        h.append("GGUF", 4);
        put<std::uint32_t>(h, gguf_version);
        put<std::uint64_t>(h, tensors_.size());
        put<std::uint64_t>(h, kvs_.size());
        for (const auto& kv : kvs_) {
            put_string(h, kv.key);
            put<std::uint32_t>(h, std::uint32_t(kv.value.type()));
            put_value(h, kv.value, 1, kv.key);
        }
        for (const auto& t : tensors_) {
            put_string(h, t.name);
            put<std::uint32_t>(h, std::uint32_t(t.ne.size()));
            for (auto d : t.ne) put<std::uint64_t>(h, d);
            put<std::uint32_t>(h, std::uint32_t(t.type));
            put<std::uint64_t>(h, t.offset);
        }
        h.append(pad(h.size()), '\0');
        out_.open(tmp_, std::ios::binary | std::ios::trunc);
        check(bool(out_), path_, ": cannot create file ", tmp_);
        state_ = State::writing;
        emit(h.data(), h.size());
    }

    /// Writes the next tensor's bytes (little-endian, exactly its `bytes`): `name` must be the next
    /// declared tensor.
    void write_tensor(std::string_view name, std::span<const std::byte> bytes) {
        check(state_ == State::writing, "GgufWriter: write_tensor('", name, "') ",
              state_ == State::declaring ? "before begin()" : "after finish()");
        check(next_ < tensors_.size(), path_, ": write_tensor('", name, "'): all ", tensors_.size(),
              " declared tensors are written");
        const auto& t = tensors_[next_];
        check(name == t.name, path_, ": write_tensor('", name, "'): expected tensor '", t.name,
              "' next (tensors are written in declared order)");
        check(bytes.size() == t.bytes, path_, ": tensor '", t.name, "': ", ne_string(t.ne), " x ", to_string(t.type),
              " takes ", t.bytes, " bytes, got ", bytes.size());
        emit(bytes.data(), bytes.size());
        static constexpr char zeros[64] = {};
        for (std::uint64_t p = pad(t.bytes); p > 0;) {
            const auto n = std::min<std::uint64_t>(p, sizeof zeros);
            emit(zeros, n);
            p -= n;
        }
        ++next_;
    }

    /// Checks every declared tensor was written, then moves the file into place.
    void finish() {
        check(state_ == State::writing, "GgufWriter: finish() ", state_ == State::declaring ? "before begin()" : "called twice");
        if (next_ < tensors_.size()) {
            const std::string missing = tensors_[next_].name;
            const std::size_t more = tensors_.size() - next_ - 1;
            abandon();
            fail(path_, ": tensor '", missing, "'", more ? " and " + std::to_string(more) + " more" : std::string(),
                 " declared but not written");
        }
        out_.flush();
        const bool ok = bool(out_);
        out_.close();
        if (!ok || out_.fail()) {
            abandon();
            fail(path_, ": write error");
        }
        std::error_code ec;
        std::filesystem::rename(tmp_, path_, ec);
        if (ec) {
            abandon();
            fail(path_, ": cannot rename ", tmp_, " into place (", ec.message(), ")");
        }
        state_ = State::done;
    }

    std::uint32_t alignment() const { return alignment_; }
    /// The declared tensors with their offsets (relative to the data section) and sizes.
    const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }

private:
    enum class State { declaring, writing, done };

    std::uint64_t pad(std::uint64_t n) const { return (alignment_ - n % alignment_) % alignment_; }
    void layout() {  // llama.cpp's layout: declaration order, each tensor padded to the alignment
        std::uint64_t off = 0;
        for (auto& t : tensors_) {
            t.offset = off;
            check(t.bytes <= UINT64_MAX - off - alignment_, "GgufWriter: tensor '", t.name,
                  "': the data section overflows 64 bits");
            off += t.bytes + pad(t.bytes);
        }
    }
    void emit(const void* p, std::uint64_t n) {
        out_.write(static_cast<const char*>(p), std::streamsize(n));
        if (!out_) {
            abandon();
            fail(path_, ": write error");
        }
    }
    void abandon() {
        if (state_ != State::writing) return;
        out_.close();
        std::remove(tmp_.c_str());
        state_ = State::done;
    }

    template <class U>
    static void put(std::string& b, U v) {
        for (std::size_t i = 0; i < sizeof(U); ++i) b.push_back(char((v >> (8 * i)) & 0xff));
    }
    static void put_string(std::string& b, std::string_view s) {
        put<std::uint64_t>(b, s.size());
        b.append(s);
    }
    template <class T>
    static void put_scalar(std::string& b, const T& v) {
        if constexpr (std::is_same_v<T, bool>) b.push_back(char(v ? 1 : 0));
        else if constexpr (std::is_same_v<T, float>) put(b, std::bit_cast<std::uint32_t>(v));
        else if constexpr (std::is_same_v<T, double>) put(b, std::bit_cast<std::uint64_t>(v));
        else if constexpr (std::is_same_v<T, std::string>) put_string(b, v);
        else put(b, std::make_unsigned_t<T>(v));
    }
    static void put_value(std::string& b, const GgufValue& value, int depth, std::string_view key) {
        std::visit(
            [&](const auto& v) {
                if constexpr (std::is_same_v<std::decay_t<decltype(v)>, GgufArray>) put_array(b, v, depth, key);
                else put_scalar(b, v);
            },
            value.variant());
    }
    static void put_array(std::string& b, const GgufArray& a, int depth, std::string_view key) {
        // what the reader accepts (an array of arrays at depth gguf_max_array_depth is one level too
        // many); llama.cpp itself reads no nested arrays at all
        check(a.type() != GgufValueType::ARRAY || depth < gguf_max_array_depth, "GgufWriter: metadata '", key,
              "': arrays nested deeper than ", gguf_max_array_depth, " levels");
        put<std::uint32_t>(b, std::uint32_t(a.type()));
        put<std::uint64_t>(b, a.size());
        std::visit(
            [&](const auto& v) {
                for (const auto& e : v) {
                    if constexpr (std::is_same_v<std::decay_t<decltype(v)>, std::vector<GgufArray>>)
                        put_array(b, e, depth + 1, key);
                    else if constexpr (std::is_same_v<std::decay_t<decltype(v)>, std::vector<bool>>)
                        put_scalar(b, bool(e));
                    else
                        put_scalar(b, e);
                }
            },
            a.variant());
    }

    State state_ = State::declaring;
    std::uint32_t alignment_ = gguf_default_alignment;
    std::vector<GgufKv> kvs_;
    std::unordered_set<std::string> keys_, names_;
    std::vector<GgufTensorInfo> tensors_;
    std::size_t next_ = 0;
    std::string path_, tmp_;
    std::ofstream out_;
};

}  // namespace hystack::io
