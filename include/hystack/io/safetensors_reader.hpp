#pragma once
#include "../core/module.hpp"

// SafetensorsFile: one safetensors file, opened (mapped_file.hpp) and validated
// (safetensors_header.hpp), and its tensors: info and raw bytes, in-place F32/BF16 views of the
// mapping, and exact conversion of F32, BF16 and F16 to float (read_into/read_float copy with pread,
// straight into the destination for F32, through a small cache-resident buffer for BF16/F16).

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../core/bf16.hpp"
#include "../core/error.hpp"
#include "mapped_file.hpp"
#include "safetensors_format.hpp"
#include "safetensors_header.hpp"

namespace hystack::io {

/// A safetensors file, opened and validated (see the file comment). Read-only; reads are const
/// and may run concurrently.
class SafetensorsFile {
public:
    /// Opens and validates `path`; throws hystack::error naming the file and the problem.
    explicit SafetensorsFile(const std::string& path) : path_(path), storage_(detail::Storage::open(path)) { init(); }

    /// Parses an in-memory file; `name` stands for the path in messages.
    static SafetensorsFile from_bytes(std::vector<std::byte> bytes, const std::string& name = "<memory>") {
        return SafetensorsFile(name, detail::Storage::from_buffer(std::move(bytes)));
    }

    const std::string& path() const { return path_; }
    /// The "__metadata__" entries.
    const std::map<std::string, std::string>& metadata() const { return metadata_; }
    /// Every tensor, in header order.
    const std::vector<TensorInfo>& tensors() const { return tensors_; }
    bool contains(const std::string& name) const { return index_.count(name) != 0; }
    const TensorInfo& info(const std::string& name) const {
        auto it = index_.find(name);
        if (it == index_.end()) fail(path_, ": no tensor named '", name, "'");
        return tensors_[it->second];
    }

    /// The tensor's raw little-endian bytes (a view of the mapping).
    std::span<const std::byte> raw(const std::string& name) const { return raw(info(name)); }
    std::span<const std::byte> raw(const TensorInfo& t) const {
        return {storage_->data() + data_offset_ + t.begin, std::size_t(t.nbytes())};
    }

    /// dst = the tensor's raw bytes [offset, offset + dst.size()) (copied with pread where the file is
    /// mapped: faster than faulting the mapping in).
    void read_bytes(const TensorInfo& t, std::size_t offset, std::span<std::byte> dst) const {
        check(offset <= t.nbytes() && dst.size() <= t.nbytes() - offset, path_, ": tensor '", t.name, "': bytes [",
              offset, ", ", offset + dst.size(), ") of ", t.nbytes());
        if (!dst.empty()) storage_->read_at(data_offset_ + t.begin + offset, dst.data(), dst.size());
    }

    /// dst[i] = float(tensor[i]) for an F32, BF16 or F16 tensor (exact); dst.size() must equal numel.
    void read_into(const std::string& name, std::span<float> dst) const { read_into(info(name), dst); }
    void read_into(const TensorInfo& t, std::span<float> dst) const {
        check(dtype_readable_as_float(t.dtype), path_, ": tensor '", t.name, "': dtype ", t.dtype,
              " cannot be read as float (F32, BF16 and F16 can)");
        check(dst.size() == t.numel(), path_, ": tensor '", t.name, "': expected a buffer of ", t.numel(),
              " floats, got ", dst.size());
        const std::uint64_t off = data_offset_ + t.begin;
        if (t.dtype == "F32") {
            storage_->read_at(off, dst.data(), dst.size() * 4);  // straight into the destination
            if constexpr (std::endian::native != std::endian::little)
                for (auto& f : dst) f = std::bit_cast<float>(byteswap32(std::bit_cast<std::uint32_t>(f)));
            return;
        }
        // 16-bit types: through a small buffer that stays in L1/L2 between the read and the conversion
        constexpr std::size_t chunk = 16384;
        std::vector<std::uint16_t> buf(std::min<std::size_t>(chunk, dst.size()));
        for (std::size_t i = 0; i < dst.size(); i += chunk) {
            const std::size_t n = std::min(chunk, dst.size() - i);
            storage_->read_at(off + 2 * i, buf.data(), 2 * n);
            convert(t.dtype, std::as_bytes(std::span<const std::uint16_t>(buf.data(), n)), dst.subspan(i, n));
        }
    }
    std::vector<float> read_float(const std::string& name) const {
        const auto& t = info(name);
        check(dtype_readable_as_float(t.dtype), path_, ": tensor '", name, "': dtype ", t.dtype,
              " cannot be read as float (F32, BF16 and F16 can)");
        std::vector<float> out(t.numel());
        read_into(t, out);
        return out;
    }

    /// The F32 tensor in place (no copy). Throws when the dtype differs or the data is not 4-byte
    /// aligned in memory (a header length that is not a multiple of 4): use read_into then.
    std::span<const float> view_f32(const std::string& name) const { return view<float>(name, "F32"); }
    /// The BF16 tensor in place (no copy); see view_f32.
    std::span<const bf16> view_bf16(const std::string& name) const { return view<bf16>(name, "BF16"); }

    /// Converts little-endian `src` of `dtype` (F32, BF16, F16) to floats; dst.size() * dtype size == src.size().
    static void convert(std::string_view dtype, std::span<const std::byte> src, std::span<float> dst) {
        check(dtype_readable_as_float(dtype), "convert: dtype ", dtype, " cannot be read as float");
        check(src.size() == dst.size() * dtype_size(dtype), "convert: ", src.size(), " bytes of ", dtype, " for ",
              dst.size(), " floats");
        constexpr bool le = std::endian::native == std::endian::little;
        if (dtype == "F32") {
            if (!dst.empty()) std::memcpy(dst.data(), src.data(), dst.size() * 4);
            if constexpr (!le)
                for (auto& f : dst) f = std::bit_cast<float>(byteswap32(std::bit_cast<std::uint32_t>(f)));
        } else if (dtype == "BF16") {
            // bf16 -> f32 is a 16-bit shift; this loop vectorises (exact, NaN payloads kept)
            const std::byte* p = src.data();
            float* d = dst.data();
            if (le && reinterpret_cast<std::uintptr_t>(p) % 2 == 0) {
                const auto* h = reinterpret_cast<const std::uint16_t*>(p);
                for (std::size_t i = 0; i < dst.size(); ++i) d[i] = std::bit_cast<float>(std::uint32_t(h[i]) << 16);
            } else {
                for (std::size_t i = 0; i < dst.size(); ++i)
                    d[i] = std::bit_cast<float>(std::uint32_t(load_u16(p + 2 * i)) << 16);
            }
        } else {  // F16
            for (std::size_t i = 0; i < dst.size(); ++i) dst[i] = f16_to_float(load_u16(src.data() + 2 * i));
        }
    }

private:
    SafetensorsFile(std::string name, std::unique_ptr<detail::Storage> s) : path_(std::move(name)), storage_(std::move(s)) {
        init();
    }
    void init() {
        auto h = detail::parse_header(storage_->data(), storage_->size(), path_);
        metadata_ = std::move(h.metadata);
        tensors_ = std::move(h.tensors);
        data_offset_ = h.data_offset;
        index_.reserve(tensors_.size());
        for (std::size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
    }
    template <class T>
    std::span<const T> view(const std::string& name, std::string_view dtype) const {
        static_assert(std::endian::native == std::endian::little || sizeof(T) == 1);
        const auto& t = info(name);
        check(t.dtype == dtype, path_, ": tensor '", name, "': dtype ", t.dtype, ", cannot view it as ", dtype);
        const auto r = raw(t);
        check(reinterpret_cast<std::uintptr_t>(r.data()) % alignof(T) == 0, path_, ": tensor '", name,
              "' is not aligned for an in-place view; use read_into");
        return {reinterpret_cast<const T*>(r.data()), t.numel()};
    }
    static std::uint16_t load_u16(const std::byte* p) {
        return std::uint16_t(std::uint16_t(std::uint8_t(p[0])) | (std::uint16_t(std::uint8_t(p[1])) << 8));
    }
    static std::uint32_t byteswap32(std::uint32_t v) {
        return (v >> 24) | ((v >> 8) & 0xff00u) | ((v << 8) & 0xff0000u) | (v << 24);
    }

    std::string path_;
    std::unique_ptr<detail::Storage> storage_;
    std::uint64_t data_offset_ = 0;
    std::map<std::string, std::string> metadata_;
    std::vector<TensorInfo> tensors_;
    std::unordered_map<std::string, std::size_t> index_;
};

}  // namespace hystack::io
