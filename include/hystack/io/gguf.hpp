#pragma once
#include "../core/module.hpp"

// GgufFile: one GGUF v3 file (the format: gguf_format.hpp), opened (mapped_file.hpp) and validated,
// its metadata with typed getters and its tensors as raw bytes (in-place views of the mapping, or
// copies). Knows no model: what the keys and tensors mean is the loader's business.
//
// Everything read from a file is untrusted: every malformed file gets a hystack::error naming the
// file, what was wrong and what was expected, never a crash, hang or allocation sized by the file's
// claims. Concretely:
//   - every read is bounds-checked; a short one names what was being read and at which byte;
//   - counts (metadata entries, tensors, array elements) are capped by the bytes left in the file
//     (each entry needs a minimum number of bytes), and string lengths by the bytes left, so memory
//     stays a small multiple of the file size whatever the counts say;
//   - nested arrays deeper than gguf_max_array_depth, unknown value and tensor types, bools other
//     than 0/1, duplicate keys and tensor names, n_dims outside 1..4 are refused;
//   - element counts and byte sizes are computed with overflow checks (ggml_nbytes), and ne[0] must
//     be a multiple of the type's block size;
//   - general.alignment, when present, must be a uint32 power of two; every tensor offset must be a
//     multiple of the alignment, every tensor's bytes must lie inside the file and no two tensors
//     may overlap (gaps are allowed: llama.cpp pads each tensor to the alignment).
// Dimensions of size 0 are accepted (ggml accepts them): such a tensor holds 0 bytes, and its
// offset must still be aligned and inside the data section. Only little-endian files exist in
// practice; a big-endian one is recognised by its version field and refused.

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <ostream>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "gguf_format.hpp"
#include "mapped_file.hpp"

namespace hystack::io {

namespace detail {

// Names for messages, formatted only when a check fails (the parser reads up to a few hundred
// thousand strings for a tokenizer, so the success path builds no message text).
struct GgufMetaName {  // metadata 'key'
    std::string_view key;
    friend std::ostream& operator<<(std::ostream& os, const GgufMetaName& m) { return os << "metadata '" << m.key << "'"; }
};
struct GgufElemName {  // element 7 of metadata 'key'
    std::string_view key;
    std::uint64_t index;
    friend std::ostream& operator<<(std::ostream& os, const GgufElemName& e) {
        return os << "element " << e.index << " of metadata '" << e.key << "'";
    }
};
struct GgufTensorName {  // path: tensor 'name'
    std::string_view path, name;
    friend std::ostream& operator<<(std::ostream& os, const GgufTensorName& t) {
        return os << t.path << ": tensor '" << t.name << "'";
    }
};
struct GgufTensorField {  // n_dims of tensor 'name'
    std::string_view field, name;
    friend std::ostream& operator<<(std::ostream& os, const GgufTensorField& t) {
        return os << t.field << " of tensor '" << t.name << "'";
    }
};
struct GgufNth {  // key of metadata entry 3
    std::string_view what;
    std::uint64_t index;
    friend std::ostream& operator<<(std::ostream& os, const GgufNth& n) { return os << n.what << ' ' << n.index; }
};

// Little-endian reads from an untrusted byte range. Every read checks the bytes are there first and
// otherwise throws "<path>: truncated file: <what> at byte <pos> needs N bytes, M remain".
class GgufCursor {
public:
    GgufCursor(const std::byte* data, std::size_t size, const std::string& path) : data_(data), size_(size), path_(path) {}

    std::uint64_t pos() const { return pos_; }
    std::uint64_t remaining() const { return size_ - pos_; }

    template <class What>
    void need(std::uint64_t n, const What& what) const {
        if (n > remaining()) [[unlikely]]
            fail(path_, ": truncated file: ", what, " at byte ", pos_, " needs ", n, " bytes, ", remaining(),
                 " remain");
    }
    // An unsigned integer of N bytes, little-endian, independent of the host's byte order.
    template <class U, class What>
    U uint(const What& what) {
        need(sizeof(U), what);
        const U v = load<U>(data_ + pos_);
        pos_ += sizeof(U);
        return v;
    }
    template <class U>
    static U load(const std::byte* p) {
        U v = 0;
        for (std::size_t i = 0; i < sizeof(U); ++i) v = U(v | (U(std::uint8_t(p[i])) << (8 * i)));
        return v;
    }
    // u64 length + bytes. The length is checked against the bytes left before anything is allocated.
    template <class What>
    std::string string(const What& what) {
        const auto len = uint<std::uint64_t>(what);
        if (len > remaining()) [[unlikely]]
            fail(path_, ": truncated file: ", what, ": string of ", len, " bytes at byte ", pos_, ", ", remaining(),
                 " remain");
        std::string s(reinterpret_cast<const char*>(data_ + pos_), std::size_t(len));
        pos_ += len;
        return s;
    }
    const std::byte* here() const { return data_ + pos_; }
    void skip(std::uint64_t n) { pos_ += n; }  // after need(n)
    const std::string& path() const { return path_; }

private:
    const std::byte* data_;
    std::uint64_t size_;
    std::uint64_t pos_ = 0;
    const std::string& path_;
};

// The fewest bytes one value of type t takes in a file (caps counts by the bytes left).
inline std::uint64_t gguf_min_value_bytes(GgufValueType t) {
    switch (t) {
        case GgufValueType::UINT8: case GgufValueType::INT8: case GgufValueType::BOOL: return 1;
        case GgufValueType::UINT16: case GgufValueType::INT16: return 2;
        case GgufValueType::UINT32: case GgufValueType::INT32: case GgufValueType::FLOAT32: return 4;
        case GgufValueType::UINT64: case GgufValueType::INT64: case GgufValueType::FLOAT64: return 8;
        case GgufValueType::STRING: return 8;   // the length
        case GgufValueType::ARRAY: return 12;   // element type + count
    }
    return 1;
}

// One scalar of type T (not bool, not string).
template <class T, class What>
T gguf_read_scalar(GgufCursor& c, const What& what) {
    if constexpr (std::is_same_v<T, float>) return std::bit_cast<float>(c.uint<std::uint32_t>(what));
    else if constexpr (std::is_same_v<T, double>) return std::bit_cast<double>(c.uint<std::uint64_t>(what));
    else return T(c.uint<std::make_unsigned_t<T>>(what));
}

template <class What>
bool gguf_read_bool(GgufCursor& c, const What& what) {
    const std::uint64_t at = c.pos();
    const auto b = c.uint<std::uint8_t>(what);
    check(b <= 1, c.path(), ": ", what, ": bool value ", unsigned(b), " at byte ", at, " (expected 0 or 1)");
    return b == 1;
}

template <class What>
GgufValueType gguf_read_type(GgufCursor& c, const What& what) {
    const std::uint64_t at = c.pos();
    const auto t = c.uint<std::uint32_t>(what);
    check(t < gguf_value_type_count, c.path(), ": ", what, ": unknown value type ", t, " at byte ", at,
          " (expected 0..12: uint8, int8, uint16, int16, uint32, int32, float32, bool, string, array, uint64, int64, "
          "float64)");
    return GgufValueType(t);
}

inline GgufArray gguf_read_array(GgufCursor& c, std::string_view key, int depth);

// A value of type t (the value type has been read already).
inline GgufValue gguf_read_value(GgufCursor& c, GgufValueType t, std::string_view key) {
    const GgufMetaName what{key};
    switch (t) {
        case GgufValueType::UINT8: return gguf_read_scalar<std::uint8_t>(c, what);
        case GgufValueType::INT8: return gguf_read_scalar<std::int8_t>(c, what);
        case GgufValueType::UINT16: return gguf_read_scalar<std::uint16_t>(c, what);
        case GgufValueType::INT16: return gguf_read_scalar<std::int16_t>(c, what);
        case GgufValueType::UINT32: return gguf_read_scalar<std::uint32_t>(c, what);
        case GgufValueType::INT32: return gguf_read_scalar<std::int32_t>(c, what);
        case GgufValueType::FLOAT32: return gguf_read_scalar<float>(c, what);
        case GgufValueType::BOOL: return gguf_read_bool(c, what);
        case GgufValueType::STRING: return c.string(what);
        case GgufValueType::ARRAY: return gguf_read_array(c, key, 1);
        case GgufValueType::UINT64: return gguf_read_scalar<std::uint64_t>(c, what);
        case GgufValueType::INT64: return gguf_read_scalar<std::int64_t>(c, what);
        case GgufValueType::FLOAT64: return gguf_read_scalar<double>(c, what);
    }
    fail(c.path(), ": ", what, ": unknown value type ", std::uint32_t(t));
}

// Element type, count, elements; `depth` is this array's nesting level (1 for a top-level array).
inline GgufArray gguf_read_array(GgufCursor& c, std::string_view key, int depth) {
    const GgufMetaName what{key};
    const GgufValueType et = gguf_read_type(c, what);
    check(et != GgufValueType::ARRAY || depth < gguf_max_array_depth, c.path(), ": ", what,
          ": arrays nested deeper than ", gguf_max_array_depth, " levels (at byte ", c.pos(), ")");
    const std::uint64_t at = c.pos();
    const auto n = c.uint<std::uint64_t>(what);
    const std::uint64_t min = gguf_min_value_bytes(et);
    check(n <= c.remaining() / min, c.path(), ": ", what, ": array of ", n, " ", to_string(et), " at byte ", at,
          " cannot fit in the ", c.remaining(), " bytes left (each element takes at least ", min, ")");
    // n is now at most the file size: the vectors below are at most a few times the file's size.
    auto scalars = [&]<class T>(std::vector<T>) -> GgufArray {
        std::vector<T> v(static_cast<std::size_t>(n));
        c.need(n * sizeof(T), what);
        for (auto& x : v) x = gguf_read_scalar<T>(c, what);
        return GgufArray(std::move(v));
    };
    switch (et) {
        case GgufValueType::UINT8: return scalars(std::vector<std::uint8_t>{});
        case GgufValueType::INT8: return scalars(std::vector<std::int8_t>{});
        case GgufValueType::UINT16: return scalars(std::vector<std::uint16_t>{});
        case GgufValueType::INT16: return scalars(std::vector<std::int16_t>{});
        case GgufValueType::UINT32: return scalars(std::vector<std::uint32_t>{});
        case GgufValueType::INT32: return scalars(std::vector<std::int32_t>{});
        case GgufValueType::FLOAT32: return scalars(std::vector<float>{});
        case GgufValueType::UINT64: return scalars(std::vector<std::uint64_t>{});
        case GgufValueType::INT64: return scalars(std::vector<std::int64_t>{});
        case GgufValueType::FLOAT64: return scalars(std::vector<double>{});
        case GgufValueType::BOOL: {
            std::vector<bool> v(static_cast<std::size_t>(n));
            for (std::uint64_t i = 0; i < n; ++i) v[std::size_t(i)] = gguf_read_bool(c, GgufElemName{key, i});
            return GgufArray(std::move(v));
        }
        case GgufValueType::STRING: {
            std::vector<std::string> v;
            v.reserve(std::size_t(n));
            for (std::uint64_t i = 0; i < n; ++i) v.push_back(c.string(GgufElemName{key, i}));
            return GgufArray(std::move(v));
        }
        case GgufValueType::ARRAY: {
            std::vector<GgufArray> v;
            v.reserve(std::size_t(n));
            for (std::uint64_t i = 0; i < n; ++i) v.push_back(gguf_read_array(c, key, depth + 1));
            return GgufArray(std::move(v));
        }
    }
    fail(c.path(), ": ", what, ": unknown element type ", std::uint32_t(et));
}

// A parsed and validated header.
struct GgufHeader {
    std::uint32_t version = 0;
    std::uint32_t alignment = gguf_default_alignment;
    std::uint64_t data_offset = 0;  // where the data section starts in the file
    std::vector<GgufKv> kvs;
    std::vector<GgufTensorInfo> tensors;
};

inline GgufHeader parse_gguf(const std::byte* data, std::size_t size, const std::string& path) {
    GgufCursor c(data, size, path);
    GgufHeader h;

    c.need(4, "the magic");
    if (std::memcmp(c.here(), "GGUF", 4) != 0) {
        static constexpr char hex[] = "0123456789abcdef";
        std::string got;
        for (int i = 0; i < 4; ++i) {
            const auto b = std::uint8_t(c.here()[i]);
            got += std::string(i ? " " : "") + hex[b >> 4] + hex[b & 15];
        }
        fail(path, ": not a GGUF file (starts with bytes ", got, ", expected \"GGUF\" = 47 47 55 46)");
    }
    c.skip(4);
    h.version = c.uint<std::uint32_t>("the version");
    if (h.version != gguf_version) {
        // a big-endian file (gguf-py's --bigendian) reads as a byte-swapped version
        if (h.version == 0x03000000u || h.version == 0x02000000u)
            fail(path, ": big-endian GGUF file (version field ", h.version, "): only little-endian files are supported");
        if (h.version == 1 || h.version == 2)
            fail(path, ": GGUF version ", h.version, " is not supported (only version 3; convert the model again with a "
                 "current llama.cpp)");
        fail(path, ": unsupported GGUF version ", h.version, " (expected 3)");
    }
    const auto n_tensors = c.uint<std::uint64_t>("tensor_count");
    const auto n_kv = c.uint<std::uint64_t>("metadata_kv_count");
    // A metadata entry takes at least 13 bytes (key length, value type, a 1-byte value) and a tensor
    // info at least 32 (name length, n_dims, one dim, type, offset): lying counts stop here, before
    // any allocation.
    constexpr std::uint64_t min_kv = 13, min_tensor = 32;
    check(n_kv <= c.remaining() / min_kv, path, ": metadata_kv_count ", n_kv, " cannot fit in the ", c.remaining(),
          " bytes after the header fields (each entry takes at least ", min_kv, ")");
    check(n_tensors <= (c.remaining() - n_kv * min_kv) / min_tensor, path, ": tensor_count ", n_tensors,
          " cannot fit in the ", c.remaining(), " bytes after the header fields with ", n_kv,
          " metadata entries (each tensor info takes at least ", min_tensor, ")");

    h.kvs.reserve(std::size_t(n_kv));
    std::unordered_map<std::string_view, std::size_t> keys;  // views into h.kvs, which never reallocates (reserved)
    keys.reserve(std::size_t(n_kv));
    for (std::uint64_t i = 0; i < n_kv; ++i) {
        const std::uint64_t at = c.pos();
        std::string key = c.string(GgufNth{"key of metadata entry", i});
        if (keys.count(key)) fail(path, ": duplicate metadata key '", key, "' (at byte ", at, ")");
        const GgufValueType t = gguf_read_type(c, GgufMetaName{key});
        GgufValue v = gguf_read_value(c, t, key);
        h.kvs.push_back({std::move(key), std::move(v)});
        keys.emplace(h.kvs.back().key, h.kvs.size() - 1);
    }

    if (auto it = keys.find("general.alignment"); it != keys.end()) {
        const GgufValue& v = h.kvs[it->second].value;
        const auto* a = v.get_if<std::uint32_t>();
        check(a != nullptr, path, ": metadata 'general.alignment': expected uint32, found ", v.type_name());
        check(*a != 0 && std::has_single_bit(*a), path, ": metadata 'general.alignment' = ", *a,
              " is not a power of two");
        h.alignment = *a;
    }

    h.tensors.reserve(std::size_t(n_tensors));
    std::unordered_set<std::string_view> names;
    names.reserve(std::size_t(n_tensors));
    for (std::uint64_t i = 0; i < n_tensors; ++i) {
        const std::uint64_t at = c.pos();
        GgufTensorInfo t;
        t.name = c.string(GgufNth{"name of tensor info", i});
        const GgufTensorName who{path, t.name};
        const std::string_view name = t.name;
        const auto n_dims = c.uint<std::uint32_t>(GgufTensorField{"n_dims", name});
        check(n_dims >= 1 && n_dims <= gguf_max_dims, who, ": n_dims = ", n_dims, " (expected 1..", gguf_max_dims, ")");
        t.ne.resize(n_dims);
        for (auto& d : t.ne) d = c.uint<std::uint64_t>(GgufTensorField{"dimensions", name});
        const std::uint64_t type_at = c.pos();
        const auto type = c.uint<std::uint32_t>(GgufTensorField{"type", name});
        check(ggml_type_known(type), who, ": unknown ggml type id ", type, " at byte ", type_at,
              (type == 4 || type == 5 || (type >= 31 && type <= 33) || (type >= 36 && type <= 38))
                  ? " (a type removed from ggml)"
                  : "");
        t.type = GgmlType(type);
        t.offset = c.uint<std::uint64_t>(GgufTensorField{"offset", name});
        t.bytes = ggml_nbytes(t.type, t.ne, who);
        h.tensors.push_back(std::move(t));
        // views into h.tensors, which never reallocates (reserved above)
        if (!names.insert(h.tensors.back().name).second)
            fail(path, ": duplicate tensor name '", h.tensors.back().name, "' (tensor info at byte ", at, ")");
    }

    // The data section starts at the end of the header rounded up to the alignment (the padding
    // between is not checked: llama.cpp writes zeros but does not read them).
    const std::uint64_t header_end = c.pos();
    h.data_offset = (header_end + h.alignment - 1) / h.alignment * h.alignment;  // alignment <= 2^31: no overflow
    const std::uint64_t data_size = size > h.data_offset ? size - h.data_offset : 0;
    for (const auto& t : h.tensors) {
        const GgufTensorName who{path, t.name};
        check(t.offset % h.alignment == 0, who, ": offset ", t.offset, " is not a multiple of the alignment ",
              h.alignment);
        check(t.offset <= data_size && t.bytes <= data_size - t.offset, who, ": ", t.bytes, " bytes at offset ",
              t.offset, " lie past the end of the file (the data section holds ", data_size, " bytes from byte ",
              h.data_offset, ")");
    }
    std::vector<const GgufTensorInfo*> order;
    order.reserve(h.tensors.size());
    for (const auto& t : h.tensors)
        if (t.bytes) order.push_back(&t);
    std::sort(order.begin(), order.end(), [](const auto* a, const auto* b) { return a->offset < b->offset; });
    for (std::size_t i = 1; i < order.size(); ++i) {
        const auto *p = order[i - 1], *t = order[i];
        check(p->offset + p->bytes <= t->offset, path, ": tensor '", t->name, "' (", t->bytes, " bytes at offset ",
              t->offset, ") overlaps tensor '", p->name, "' (", p->bytes, " bytes at offset ", p->offset, ")");
    }
    return h;
}

}  // namespace detail

/// A GGUF v3 file, opened and validated (see the file comment). Read-only; reads are const and may
/// run concurrently.
class GgufFile {
public:
    /// Opens and validates `path`; throws hystack::error naming the file and the problem.
    explicit GgufFile(const std::string& path) : GgufFile(path, detail::Storage::open(path)) {}
    static GgufFile open(const std::string& path) { return GgufFile(path); }
    /// Parses an in-memory file; `name` stands for the path in messages.
    static GgufFile from_bytes(std::vector<std::byte> bytes, const std::string& name = "<memory>") {
        return GgufFile(name, detail::Storage::from_buffer(std::move(bytes)));
    }

    const std::string& path() const { return path_; }
    std::uint32_t version() const { return h_.version; }
    /// general.alignment, or 32 when the file has none.
    std::uint32_t alignment() const { return h_.alignment; }
    /// Where the data section starts in the file (tensor offsets are relative to it).
    std::uint64_t data_offset() const { return h_.data_offset; }
    std::uint64_t file_size() const { return storage_->size(); }

    // --- metadata ---
    /// Every entry, in file order.
    const std::vector<GgufKv>& metadata() const { return h_.kvs; }
    /// The value of `key`, or nullptr.
    const GgufValue* find(std::string_view key) const {
        auto it = keys_.find(key);
        return it == keys_.end() ? nullptr : &h_.kvs[it->second].value;
    }
    bool has(std::string_view key) const { return find(key) != nullptr; }
    /// The value of `key`; throws "<path>: no metadata key '<key>'" when absent.
    const GgufValue& get(std::string_view key) const {
        const auto* v = find(key);
        if (!v) fail(path_, ": no metadata key '", key, "'");
        return *v;
    }
    // Typed getters: the conversions of GgufValue::as_* (integers of any type that fits, float32
    // only for f32, ...); a missing key or a wrong type throws naming the file, the key, the type
    // found and the type expected.
    std::uint32_t get_u32(std::string_view key) const { return get(key).as_u32(who(key)); }
    std::int32_t get_i32(std::string_view key) const { return get(key).as_i32(who(key)); }
    std::uint64_t get_u64(std::string_view key) const { return get(key).as_u64(who(key)); }
    std::int64_t get_i64(std::string_view key) const { return get(key).as_i64(who(key)); }
    float get_f32(std::string_view key) const { return get(key).as_f32(who(key)); }
    double get_f64(std::string_view key) const { return get(key).as_f64(who(key)); }
    bool get_bool(std::string_view key) const { return get(key).as_bool(who(key)); }
    const std::string& get_string(std::string_view key) const { return get(key).as_string(who(key)); }
    const GgufArray& get_array(std::string_view key) const { return get(key).as_array(who(key)); }
    /// An array of any integer type as int64.
    std::vector<std::int64_t> get_int_array(std::string_view key) const { return get(key).as_int_array(who(key)); }
    const std::vector<float>& get_f32_array(std::string_view key) const { return get(key).as_f32_array(who(key)); }
    const std::vector<std::string>& get_string_array(std::string_view key) const {
        return get(key).as_string_array(who(key));
    }

    // --- tensors ---
    /// Every tensor, in file order.
    const std::vector<GgufTensorInfo>& tensors() const { return h_.tensors; }
    bool contains(std::string_view name) const { return index_.count(name) != 0; }
    /// The tensor's info; throws "<path>: no tensor named '<name>'" when absent.
    const GgufTensorInfo& tensor(std::string_view name) const {
        auto it = index_.find(name);
        if (it == index_.end()) fail(path_, ": no tensor named '", name, "'");
        return h_.tensors[it->second];
    }
    /// The tensor's bytes in place (a view of the mapping, exactly `bytes` long; no copy).
    std::span<const std::byte> data(std::string_view name) const { return data(tensor(name)); }
    std::span<const std::byte> data(const GgufTensorInfo& t) const {
        // an empty tensor may sit where the file has no bytes (a file ending at its header): no pointer there
        if (t.bytes == 0) return {};
        return {storage_->data() + h_.data_offset + t.offset, std::size_t(t.bytes)};
    }
    /// Copies the tensor's bytes into dst (dst.size() must equal its `bytes`); pread for a file,
    /// so a file truncated while open reads short (an error) instead of faulting.
    void read(std::string_view name, std::span<std::byte> dst) const { read(tensor(name), dst); }
    void read(const GgufTensorInfo& t, std::span<std::byte> dst) const {
        check(dst.size() == t.bytes, path_, ": tensor '", t.name, "': expected a buffer of ", t.bytes, " bytes, got ",
              dst.size());
        storage_->read_at(h_.data_offset + t.offset, dst.data(), dst.size());
    }

    /// Copies the tensor's bytes [offset, offset + dst.size()) into dst (pread for a file).
    void read_bytes(const GgufTensorInfo& t, std::size_t offset, std::span<std::byte> dst) const {
        check(offset <= t.bytes && dst.size() <= t.bytes - offset, path_, ": tensor '", t.name, "': bytes [", offset,
              ", ", offset + dst.size(), ") of ", t.bytes);
        if (!dst.empty()) storage_->read_at(h_.data_offset + t.offset + offset, dst.data(), dst.size());
    }

private:
    GgufFile(std::string name, std::unique_ptr<detail::Storage> s) : path_(std::move(name)), storage_(std::move(s)) {
        h_ = detail::parse_gguf(storage_->data(), storage_->size(), path_);
        keys_.reserve(h_.kvs.size());
        for (std::size_t i = 0; i < h_.kvs.size(); ++i) keys_.emplace(h_.kvs[i].key, i);
        index_.reserve(h_.tensors.size());
        for (std::size_t i = 0; i < h_.tensors.size(); ++i) index_.emplace(h_.tensors[i].name, i);
    }
    std::string who(std::string_view key) const { return path_ + ": metadata '" + std::string(key) + "'"; }

    // Heterogeneous lookup by string_view without building a std::string.
    struct Hash {
        using is_transparent = void;
        std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
    };
    using Index = std::unordered_map<std::string, std::size_t, Hash, std::equal_to<>>;

    std::string path_;
    std::unique_ptr<detail::Storage> storage_;
    detail::GgufHeader h_;
    Index keys_, index_;
};

}  // namespace hystack::io
