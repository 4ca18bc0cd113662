#pragma once
#include "../core/module.hpp"

// The safetensors format (https://github.com/huggingface/safetensors): 8-byte little-endian header
// length N, N bytes of JSON {"name": {"dtype", "shape", "data_offsets": [begin, end]},
// "__metadata__": {str: str}}, then the data section, tensors packed back to back (offsets relative
// to its start). This file holds what reader and writer share: the header size limit, the dtype
// table and the exact F16 -> float conversion, shape arithmetic with overflow checks, and TensorInfo
// (one entry of the header's tensor table).

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../core/fp16.hpp"

namespace hystack::io {

/// Largest header accepted (the reference implementation's limit).
inline constexpr std::uint64_t max_header_bytes = 100u * 1000u * 1000u;

/// Bytes per element of a safetensors dtype name; 0 for an unknown name.
inline std::size_t dtype_size(std::string_view dtype) {
    static constexpr std::pair<std::string_view, std::size_t> table[] = {
        {"F64", 8}, {"F32", 4},  {"F16", 2},  {"BF16", 2}, {"I64", 8},     {"I32", 4},      {"I16", 2},
        {"I8", 1},  {"U64", 8},  {"U32", 4},  {"U16", 2},  {"U8", 1},      {"BOOL", 1},     {"F8_E5M2", 1},
        {"F8_E4M3", 1}};
    for (const auto& [name, size] : table)
        if (name == dtype) return size;
    return 0;
}

/// True for the dtypes read_into converts to float exactly: F32, BF16, F16.
inline bool dtype_readable_as_float(std::string_view dtype) {
    return dtype == "F32" || dtype == "BF16" || dtype == "F16";
}

/// Exact IEEE half -> float (subnormals, infinities and NaN payloads included).
inline float f16_to_float(std::uint16_t h) { return fp16_to_float(h); }

/// "[3, 4]"
inline std::string shape_string(const std::vector<std::size_t>& shape) {
    std::string s = "[";
    for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

/// Element count of `shape`, or nullopt when the product overflows 64 bits.
inline std::optional<std::uint64_t> checked_numel(const std::vector<std::size_t>& shape) {
    std::uint64_t n = 1;
    for (auto d : shape) {
        if (d != 0 && n > UINT64_MAX / d) return std::nullopt;
        n *= d;
    }
    return n;
}

/// One tensor of a file: dtype name, shape and byte range [begin, end) within the data section.
struct TensorInfo {
    std::string name;
    std::string dtype;
    std::vector<std::size_t> shape;
    std::uint64_t begin = 0, end = 0;  // byte offsets into the data section

    std::size_t numel() const { return std::size_t(checked_numel(shape).value_or(0)); }
    std::uint64_t nbytes() const { return end - begin; }
};

}  // namespace hystack::io
