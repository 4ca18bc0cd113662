#pragma once
#include "../core/module.hpp"

// Writing safetensors files: write_safetensors from float data (stored as F32, or BF16 rounded to
// nearest even) and write_safetensors_raw from raw bytes of any dtype, both with string metadata. A
// file is written under a temporary name and renamed into place, so a failed write never leaves a
// half-written file under the final name.

#include <nlohmann/json.hpp>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <map>
#include <span>
#include <string>
#include <system_error>
#include <unordered_set>
#include <vector>

#include "../core/bf16.hpp"
#include "../core/error.hpp"
#include "safetensors_format.hpp"

namespace hystack::io {

/// A tensor to write from float values: stored as `dtype` "F32" (exact) or "BF16" (round to nearest even).
struct TensorData {
    std::string name;
    std::vector<std::size_t> shape;
    std::span<const float> data;  // product(shape) floats, row-major
    std::string dtype = "F32";
};

/// A tensor to write from raw little-endian bytes of any safetensors dtype.
struct RawTensor {
    std::string name;
    std::string dtype;
    std::vector<std::size_t> shape;
    std::span<const std::byte> bytes;  // product(shape) * dtype_size(dtype) bytes
};

namespace detail {

struct WriteEntry {
    std::string name, dtype;
    std::vector<std::size_t> shape;
    std::uint64_t nbytes;
};

// Writes header + data (produced by `emit(i, out)` per tensor) to `path` via a temporary file renamed
// into place, so a failed write never leaves a half-written file under the final name.
template <class Emit>
void write_file(const std::string& path, const std::vector<WriteEntry>& entries,
                const std::map<std::string, std::string>& metadata, Emit&& emit) {
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!metadata.empty()) header["__metadata__"] = metadata;
    std::unordered_set<std::string> names;
    std::uint64_t off = 0;
    for (const auto& e : entries) {
        check(!e.name.empty() && e.name != "__metadata__", path, ": cannot write a tensor named '", e.name, "'");
        check(names.insert(e.name).second, path, ": duplicate tensor name '", e.name, "'");
        header[e.name] = {{"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {off, off + e.nbytes}}};
        off += e.nbytes;
    }
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');  // pad so the data section is 8-byte aligned
    const std::string tmp = path + ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        check(bool(out), path, ": cannot create file ", tmp);
        unsigned char len[8];
        for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(std::uint64_t(text.size()) >> (8 * i));
        out.write(reinterpret_cast<const char*>(len), 8);
        out.write(text.data(), std::streamsize(text.size()));
        for (std::size_t i = 0; i < entries.size(); ++i) emit(i, out);
        out.flush();
        if (!out) {
            out.close();
            std::remove(tmp.c_str());
            fail(path, ": write error");
        }
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) {
        std::remove(tmp.c_str());
        fail(path, ": cannot rename ", tmp, " into place (", ec.message(), ")");
    }
}

}  // namespace detail

/// Writes `tensors` (float data stored as F32 or BF16) and string metadata as a safetensors file.
inline void write_safetensors(const std::string& path, std::span<const TensorData> tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
    std::vector<detail::WriteEntry> entries;
    for (const auto& t : tensors) {
        check(t.dtype == "F32" || t.dtype == "BF16", path, ": tensor '", t.name, "': cannot write dtype '", t.dtype,
              "' from floats (F32 or BF16)");
        const auto n = checked_numel(t.shape);
        check(n && *n == t.data.size(), path, ": tensor '", t.name, "': shape ", shape_string(t.shape), " needs ",
              n.value_or(0), " values, got ", t.data.size());
        entries.push_back({t.name, t.dtype, t.shape, *n * dtype_size(t.dtype)});
    }
    detail::write_file(path, entries, metadata, [&](std::size_t i, std::ofstream& out) {
        const auto& t = tensors[i];
        if (t.dtype == "F32") {
            if constexpr (std::endian::native == std::endian::little) {
                out.write(reinterpret_cast<const char*>(t.data.data()), std::streamsize(t.data.size() * 4));
            } else {
                for (float f : t.data) {
                    const auto u = std::bit_cast<std::uint32_t>(f);
                    const char b[4] = {char(u), char(u >> 8), char(u >> 16), char(u >> 24)};
                    out.write(b, 4);
                }
            }
            return;
        }
        bf16 tmp[4096];
        unsigned char bytes[2 * 4096];
        for (std::size_t b = 0; b < t.data.size(); b += 4096) {
            const std::size_t n = std::min<std::size_t>(4096, t.data.size() - b);
            narrow(t.data.subspan(b, n), std::span<bf16>(tmp, n));
            for (std::size_t j = 0; j < n; ++j) {
                bytes[2 * j] = static_cast<unsigned char>(tmp[j].bits);
                bytes[2 * j + 1] = static_cast<unsigned char>(tmp[j].bits >> 8);
            }
            out.write(reinterpret_cast<const char*>(bytes), std::streamsize(2 * n));
        }
    });
}
inline void write_safetensors(const std::string& path, std::initializer_list<TensorData> tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
    write_safetensors(path, std::span<const TensorData>(tensors.begin(), tensors.size()), metadata);
}
inline void write_safetensors(const std::string& path, const std::vector<TensorData>& tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
    write_safetensors(path, std::span<const TensorData>(tensors), metadata);
}

/// Writes tensors given as raw bytes of any dtype (sizes checked) and string metadata.
inline void write_safetensors_raw(const std::string& path, std::span<const RawTensor> tensors,
                                  const std::map<std::string, std::string>& metadata = {}) {
    std::vector<detail::WriteEntry> entries;
    for (const auto& t : tensors) {
        const std::size_t es = dtype_size(t.dtype);
        check(es != 0, path, ": tensor '", t.name, "': unknown dtype '", t.dtype, "'");
        const auto n = checked_numel(t.shape);
        check(n && *n <= UINT64_MAX / es && *n * es == t.bytes.size(), path, ": tensor '", t.name, "': shape ",
              shape_string(t.shape), " x ", t.dtype, " needs ", n.value_or(0) * es, " bytes, got ", t.bytes.size());
        entries.push_back({t.name, t.dtype, t.shape, t.bytes.size()});
    }
    detail::write_file(path, entries, metadata, [&](std::size_t i, std::ofstream& out) {
        out.write(reinterpret_cast<const char*>(tensors[i].bytes.data()), std::streamsize(tensors[i].bytes.size()));
    });
}
inline void write_safetensors_raw(const std::string& path, const std::vector<RawTensor>& tensors,
                                  const std::map<std::string, std::string>& metadata = {}) {
    write_safetensors_raw(path, std::span<const RawTensor>(tensors), metadata);
}

}  // namespace hystack::io
