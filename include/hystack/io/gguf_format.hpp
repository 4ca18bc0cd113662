#pragma once
#include "../core/module.hpp"

// The GGUF format (ggml's docs/gguf.md), version 3, what the reader (gguf.hpp) and the writer
// (gguf_writer.hpp) share: the ggml tensor types with their block sizes, the metadata value types,
// GgufValue / GgufArray (one metadata value) and GgufTensorInfo (one entry of the tensor table).
//
// A file, all little-endian:
//   "GGUF" u32 version u64 tensor_count u64 metadata_kv_count
//   metadata_kv_count x { string key, u32 value_type, value }
//   tensor_count x { string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset }
//   zero padding up to a multiple of general.alignment (u32 key, default 32), then the data section
// string = u64 length + bytes (no NUL); array = u32 element type + u64 count + elements. ne[0] is the
// fastest-varying dimension (the row length, ggml's order, the reverse of a row-major shape), and a
// tensor's offset is relative to the data section and a multiple of the alignment.

#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "../core/error.hpp"

namespace hystack::io {

/// The only GGUF version read and written (1 and 2 predate ggml's current layout).
inline constexpr std::uint32_t gguf_version = 3;
/// The data alignment when a file has no general.alignment.
inline constexpr std::uint32_t gguf_default_alignment = 32;
/// Deepest nesting of arrays accepted (an array of arrays of arrays); the spec allows nesting but
/// no writer uses it, and a depth limit keeps a hostile file from recursing the parser to death.
inline constexpr int gguf_max_array_depth = 3;
/// Most dimensions of a tensor (GGML_MAX_DIMS).
inline constexpr std::uint32_t gguf_max_dims = 4;

// --- ggml tensor types -----------------------------------------------------------------------------

/// ggml's tensor type ids (ggml.h's enum ggml_type) as stored in a GGUF tensor info. Ids 4, 5, 31-33
/// and 36-38 belonged to types removed from ggml and are refused like any unknown id.
enum class GgmlType : std::uint32_t {
    F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
    Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
    IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23,
    I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
    TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39, NVFP4 = 40, Q1_0 = 41,
};

/// A type's block: `block_size` elements stored in `block_bytes` bytes (1 and the element size for
/// the plain types). A row of ne[0] elements is ne[0] / block_size blocks.
struct GgmlTypeTraits {
    std::string_view name;  // ggml's name ("f32", "q8_0", "q4_K", ...)
    std::uint32_t block_size = 0;  // 0: not a known type
    std::uint32_t block_bytes = 0;
};

namespace detail {
// Indexed by type id; the sizes are those of ggml's block structs (ggml-common.h), QK_K = 256.
inline constexpr std::array<GgmlTypeTraits, 42> ggml_traits = {{
    {"f32", 1, 4},        {"f16", 1, 2},      {"q4_0", 32, 18},     {"q4_1", 32, 20},     {"", 0, 0},
    {"", 0, 0},           {"q5_0", 32, 22},   {"q5_1", 32, 24},     {"q8_0", 32, 34},     {"q8_1", 32, 40},
    {"q2_K", 256, 84},    {"q3_K", 256, 110}, {"q4_K", 256, 144},   {"q5_K", 256, 176},   {"q6_K", 256, 210},
    {"q8_K", 256, 292},   {"iq2_xxs", 256, 66}, {"iq2_xs", 256, 74}, {"iq3_xxs", 256, 98}, {"iq1_s", 256, 50},
    {"iq4_nl", 32, 18},   {"iq3_s", 256, 110}, {"iq2_s", 256, 82},  {"iq4_xs", 256, 136}, {"i8", 1, 1},
    {"i16", 1, 2},        {"i32", 1, 4},      {"i64", 1, 8},        {"f64", 1, 8},        {"iq1_m", 256, 56},
    {"bf16", 1, 2},       {"", 0, 0},         {"", 0, 0},           {"", 0, 0},           {"tq1_0", 256, 54},
    {"tq2_0", 256, 66},   {"", 0, 0},         {"", 0, 0},           {"", 0, 0},           {"mxfp4", 32, 17},
    {"nvfp4", 64, 36},    {"q1_0", 128, 18},
}};
}  // namespace detail

/// The traits of type id `id`; block_size is 0 for an id ggml does not (or no longer) define.
inline constexpr GgmlTypeTraits ggml_type_traits(std::uint32_t id) {
    return id < detail::ggml_traits.size() ? detail::ggml_traits[id] : GgmlTypeTraits{};
}
inline constexpr GgmlTypeTraits ggml_type_traits(GgmlType t) { return ggml_type_traits(std::uint32_t(t)); }
/// True when `id` is a type ggml defines today.
inline constexpr bool ggml_type_known(std::uint32_t id) { return ggml_type_traits(id).block_size != 0; }
/// ggml's name of the type ("f32", "bf16", "q8_0", "q4_K", ...); "unknown" for an unknown id.
inline constexpr std::string_view to_string(GgmlType t) {
    return ggml_type_known(std::uint32_t(t)) ? ggml_type_traits(t).name : std::string_view("unknown");
}
/// Elements per block (1 for f32, 32 for q8_0, 256 for the K quants); 0 for an unknown id.
inline constexpr std::uint32_t ggml_block_size(GgmlType t) { return ggml_type_traits(t).block_size; }
/// Bytes per block (4 for f32, 34 for q8_0); 0 for an unknown id.
inline constexpr std::uint32_t ggml_block_bytes(GgmlType t) { return ggml_type_traits(t).block_bytes; }

/// "[4096, 32000]" (ggml order: ne[0] first).
inline std::string ne_string(std::span<const std::uint64_t> ne) {
    std::string s = "[";
    for (std::size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
    return s + "]";
}

/// Bytes of a tensor of `type` with dims `ne` (ne[0] the row length); `who` prefixes the messages.
/// Throws when the type is unknown, ne[0] is not a multiple of the block size, a dimension exceeds
/// INT64_MAX (ggml holds dims as int64) or the element count or the byte size overflows.
template <class Who>
std::uint64_t ggml_nbytes(GgmlType type, std::span<const std::uint64_t> ne, const Who& who) {
    const auto tr = ggml_type_traits(type);
    check(tr.block_size != 0, who, ": unknown ggml type id ", std::uint32_t(type));
    constexpr std::uint64_t i64_max = std::uint64_t(std::numeric_limits<std::int64_t>::max());
    std::uint64_t numel = 1;
    for (std::size_t i = 0; i < ne.size(); ++i) {
        check(ne[i] <= i64_max, who, ": ne[", i, "] = ", ne[i], " exceeds INT64_MAX");
        check(ne[i] == 0 || numel <= i64_max / ne[i], who, ": element count overflows (ne ", ne_string(ne), ")");
        numel *= ne[i];
    }
    const std::uint64_t ne0 = ne.empty() ? 1 : ne[0];
    check(ne0 % tr.block_size == 0, who, ": ne[0] = ", ne0, " is not a multiple of ", tr.name, "'s block size ",
          tr.block_size);
    // bytes = blocks per row x block bytes x rows; numel / block_size blocks in all
    const std::uint64_t blocks = numel / tr.block_size;
    check(blocks <= UINT64_MAX / tr.block_bytes, who, ": byte size overflows (ne ", ne_string(ne), ", ", tr.name,
          ")");
    return blocks * tr.block_bytes;
}

// --- metadata values -----------------------------------------------------------------------------

/// GGUF metadata value type ids.
enum class GgufValueType : std::uint32_t {
    UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
    STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
inline constexpr std::uint32_t gguf_value_type_count = 13;

/// "uint8", "int32", "float32", "bool", "string", "array", ...; "unknown" past the table.
inline constexpr std::string_view to_string(GgufValueType t) {
    constexpr std::string_view names[] = {"uint8",   "int8", "uint16", "int16", "uint32", "int32", "float32",
                                          "bool",    "string", "array", "uint64", "int64", "float64"};
    return std::uint32_t(t) < gguf_value_type_count ? names[std::uint32_t(t)] : std::string_view("unknown");
}

class GgufValue;

/// A metadata array: elements of one type, stored as a vector of that type (so a tokenizer's
/// 150k-entry int32 array costs 600 KB, not 150k variants). Nested arrays are vectors of GgufArray.
/// The variant's index is the element type id.
class GgufArray {
public:
    using Variant = std::variant<std::vector<std::uint8_t>, std::vector<std::int8_t>, std::vector<std::uint16_t>,
                                 std::vector<std::int16_t>, std::vector<std::uint32_t>, std::vector<std::int32_t>,
                                 std::vector<float>, std::vector<bool>, std::vector<std::string>,
                                 std::vector<GgufArray>, std::vector<std::uint64_t>, std::vector<std::int64_t>,
                                 std::vector<double>>;

    /// An empty uint8 array.
    GgufArray() = default;
    /// An array of T, where std::vector<T> is one of Variant's alternatives (e.g. std::vector<std::int32_t>,
    /// std::vector<std::string>, std::vector<float>).
    template <class T>
        requires std::is_constructible_v<Variant, std::vector<T>>
    GgufArray(std::vector<T> values) : v_(std::move(values)) {}

    /// The element type.
    GgufValueType type() const { return GgufValueType(v_.index()); }
    std::size_t size() const {
        return std::visit([](const auto& v) { return v.size(); }, v_);
    }
    bool empty() const { return size() == 0; }
    /// The elements when they are of type T (e.g. get_if<std::string>()), else nullptr.
    template <class T>
    const std::vector<T>* get_if() const {
        return std::get_if<std::vector<T>>(&v_);
    }
    const Variant& variant() const { return v_; }
    /// Element i as a value (a copy); i < size().
    GgufValue at(std::size_t i) const;
    /// Every element as a value (copies).
    std::vector<GgufValue> to_values() const;

    friend bool operator==(const GgufArray&, const GgufArray&) = default;

private:
    Variant v_;
};

/// One metadata value: a scalar, a string or an array. The variant's index is the GGUF value type
/// id. The as_* accessors convert where no information is lost and otherwise throw hystack::error
/// "<who>: expected <type>, found <type>" (or "... value V does not fit <type>").
class GgufValue {
public:
    using Variant = std::variant<std::uint8_t, std::int8_t, std::uint16_t, std::int16_t, std::uint32_t, std::int32_t,
                                 float, bool, std::string, GgufArray, std::uint64_t, std::int64_t, double>;

    GgufValue() = default;
    /// A value of exactly type T: std::uint32_t(32) is a uint32, 1e-5f a float32, 1e-5 a float64, true a bool.
    template <class T>
        requires(std::is_same_v<std::remove_cvref_t<T>, std::uint8_t> || std::is_same_v<std::remove_cvref_t<T>, std::int8_t> ||
                 std::is_same_v<std::remove_cvref_t<T>, std::uint16_t> || std::is_same_v<std::remove_cvref_t<T>, std::int16_t> ||
                 std::is_same_v<std::remove_cvref_t<T>, std::uint32_t> || std::is_same_v<std::remove_cvref_t<T>, std::int32_t> ||
                 std::is_same_v<std::remove_cvref_t<T>, std::uint64_t> || std::is_same_v<std::remove_cvref_t<T>, std::int64_t> ||
                 std::is_same_v<std::remove_cvref_t<T>, float> || std::is_same_v<std::remove_cvref_t<T>, double> ||
                 std::is_same_v<std::remove_cvref_t<T>, bool> || std::is_same_v<std::remove_cvref_t<T>, std::string> ||
                 std::is_same_v<std::remove_cvref_t<T>, GgufArray>)
    GgufValue(T&& v) : v_(std::forward<T>(v)) {}
    GgufValue(const char* s) : v_(std::string(s)) {}
    GgufValue(std::string_view s) : v_(std::string(s)) {}
    /// An array value from a vector of any element type GgufArray takes.
    template <class T>
        requires std::is_constructible_v<GgufArray, std::vector<T>>
    GgufValue(std::vector<T> values) : v_(GgufArray(std::move(values))) {}

    GgufValueType type() const { return GgufValueType(v_.index()); }
    /// "uint32", "string", "array of int32", ...
    std::string type_name() const {
        std::string s;
        if (const auto* a = std::get_if<GgufArray>(&v_)) return s.append("array of ").append(to_string(a->type()));
        return s.append(to_string(type()));
    }
    template <class T>
    const T* get_if() const {
        return std::get_if<T>(&v_);
    }
    const Variant& variant() const { return v_; }

    /// Any integer type (not bool) whose value fits.
    std::uint64_t as_u64(std::string_view who = "GGUF value") const { return as_int<std::uint64_t>(who); }
    std::int64_t as_i64(std::string_view who = "GGUF value") const { return as_int<std::int64_t>(who); }
    std::uint32_t as_u32(std::string_view who = "GGUF value") const { return as_int<std::uint32_t>(who); }
    std::int32_t as_i32(std::string_view who = "GGUF value") const { return as_int<std::int32_t>(who); }
    /// A float32 only (a float64 would round silently).
    float as_f32(std::string_view who = "GGUF value") const {
        if (const auto* f = get_if<float>()) return *f;
        wrong_type(who, "float32");
    }
    /// A float32 or float64.
    double as_f64(std::string_view who = "GGUF value") const {
        if (const auto* f = get_if<float>()) return *f;
        if (const auto* d = get_if<double>()) return *d;
        wrong_type(who, "float64 (or float32)");
    }
    bool as_bool(std::string_view who = "GGUF value") const {
        if (const auto* b = get_if<bool>()) return *b;
        wrong_type(who, "bool");
    }
    const std::string& as_string(std::string_view who = "GGUF value") const {
        if (const auto* s = get_if<std::string>()) return *s;
        wrong_type(who, "string");
    }
    const GgufArray& as_array(std::string_view who = "GGUF value") const {
        if (const auto* a = get_if<GgufArray>()) return *a;
        wrong_type(who, "array");
    }
    /// An array of any integer type, every element converted to int64 (a uint64 above INT64_MAX throws).
    std::vector<std::int64_t> as_int_array(std::string_view who = "GGUF value") const {
        const auto& a = as_array_of(who, "integers");
        std::vector<std::int64_t> out;
        std::visit(
            [&](const auto& v) {
                using E = typename std::decay_t<decltype(v)>::value_type;
                if constexpr (std::is_integral_v<E> && !std::is_same_v<E, bool>) {
                    out.reserve(v.size());
                    for (std::size_t i = 0; i < v.size(); ++i) {
                        if constexpr (std::is_same_v<E, std::uint64_t>)
                            check(v[i] <= std::uint64_t(std::numeric_limits<std::int64_t>::max()), who, "[", i,
                                  "]: value ", v[i], " does not fit int64");
                        out.push_back(std::int64_t(v[i]));
                    }
                } else {
                    wrong_type(who, "array of integers");
                }
            },
            a.variant());
        return out;
    }
    /// An array of float32.
    const std::vector<float>& as_f32_array(std::string_view who = "GGUF value") const {
        if (const auto* v = as_array_of(who, "float32").get_if<float>()) return *v;
        wrong_type(who, "array of float32");
    }
    /// An array of strings.
    const std::vector<std::string>& as_string_array(std::string_view who = "GGUF value") const {
        if (const auto* v = as_array_of(who, "string").get_if<std::string>()) return *v;
        wrong_type(who, "array of string");
    }

    /// A short printable form: 42, 1.5, true, "text", [256 x string] (for listings and messages).
    std::string to_display() const {
        return std::visit(
            [&](const auto& v) -> std::string {
                using T = std::decay_t<decltype(v)>;
                // appends, not "literal" + std::string: that trips GCC 12's -Wrestrict false positive
                std::string s;
                if constexpr (std::is_same_v<T, std::string>) {
                    s.append(1, '"').append(v, 0, 64).append(v.size() > 64 ? "...\"" : "\"");
                    return s;
                } else if constexpr (std::is_same_v<T, GgufArray>) {
                    s.append("[").append(std::to_string(v.size())).append(" x ").append(to_string(v.type())).append("]");
                    return s;
                } else if constexpr (std::is_same_v<T, bool>) {
                    return v ? "true" : "false";
                } else {
                    std::ostringstream os;
                    os.precision(9);
                    os << +v;  // unary + prints (u)int8 as a number
                    return os.str();
                }
            },
            v_);
    }

    friend bool operator==(const GgufValue&, const GgufValue&) = default;

private:
    template <class I>
    I as_int(std::string_view who) const {
        return std::visit(
            [&](const auto& v) -> I {
                using T = std::decay_t<decltype(v)>;
                if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
                    check(std::in_range<I>(v), who, ": value ", +v, " (", type_name(), ") does not fit ", int_name<I>());
                    return I(v);
                } else {
                    wrong_type(who, std::string(int_name<I>()) + " (any integer type that fits)");
                }
            },
            v_);
    }
    template <class I>
    static constexpr std::string_view int_name() {
        if constexpr (std::is_same_v<I, std::uint64_t>) return "uint64";
        else if constexpr (std::is_same_v<I, std::int64_t>) return "int64";
        else if constexpr (std::is_same_v<I, std::uint32_t>) return "uint32";
        else return "int32";
    }
    const GgufArray& as_array_of(std::string_view who, std::string_view elem) const {
        if (const auto* a = get_if<GgufArray>()) return *a;
        wrong_type(who, "array of " + std::string(elem));
    }
    [[noreturn]] void wrong_type(std::string_view who, const std::string& expected) const {
        fail(who, ": expected ", expected, ", found ", type_name());
    }

    Variant v_;
};

inline GgufValue GgufArray::at(std::size_t i) const {
    return std::visit(
        [&](const auto& v) -> GgufValue {
            check(i < v.size(), "GGUF array: index ", i, " out of range (", v.size(), " elements)");
            using E = typename std::decay_t<decltype(v)>::value_type;
            return GgufValue(E(v[i]));
        },
        v_);
}
inline std::vector<GgufValue> GgufArray::to_values() const {
    std::vector<GgufValue> out;
    out.reserve(size());
    for (std::size_t i = 0; i < size(); ++i) out.push_back(at(i));
    return out;
}

/// One metadata entry.
struct GgufKv {
    std::string key;
    GgufValue value;
};

// --- tensor table --------------------------------------------------------------------------------

/// One tensor of a GGUF file: ne in ggml order (ne[0] the row length), the type, and its bytes
/// [offset, offset + bytes) within the data section.
struct GgufTensorInfo {
    std::string name;
    std::vector<std::uint64_t> ne;
    GgmlType type = GgmlType::F32;
    std::uint64_t offset = 0;  // relative to the data section, a multiple of the alignment
    std::uint64_t bytes = 0;

    /// Element count (the product of ne; checked not to overflow when the info was made).
    std::uint64_t numel() const {
        std::uint64_t n = 1;
        for (auto d : ne) n *= d;
        return n;
    }
    /// ne reversed: the row-major shape ([rows, cols] for a 2-D tensor).
    std::vector<std::size_t> shape() const { return {ne.rbegin(), ne.rend()}; }
};

}  // namespace hystack::io
