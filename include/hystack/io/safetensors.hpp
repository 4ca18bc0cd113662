#pragma once
#include "../core/module.hpp"

// safetensors: 8-byte little-endian header length N, N bytes of JSON, then raw data.
// FIRST CUT (foundation): reads the whole file, F32 only, minimal validation. The io issue
// replaces the internals (mmap, BF16/F16, hardening, sharding, writer) keeping this API.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "../core/error.hpp"

namespace hystack::io {

struct TensorInfo {
    std::string name;
    std::string dtype;
    std::vector<std::size_t> shape;
    std::uint64_t begin = 0, end = 0;  // byte offsets into the data section
};

class SafetensorsFile {
public:
    explicit SafetensorsFile(const std::string& path) : path_(path) {
        std::ifstream in(path, std::ios::binary);
        check(bool(in), path, ": cannot open file");
        bytes_.assign(std::istreambuf_iterator<char>(in), {});
        check(bytes_.size() >= 8, path, ": truncated (", bytes_.size(), " bytes, need at least 8)");
        std::uint64_t n = 0;
        for (int i = 7; i >= 0; --i) n = (n << 8) | std::uint8_t(bytes_[std::size_t(i)]);
        check(n <= bytes_.size() - 8, path, ": header length ", n, " past the end of the file");
        auto header = nlohmann::json::parse(bytes_.begin() + 8, bytes_.begin() + 8 + std::ptrdiff_t(n));
        data_offset_ = 8 + n;
        for (auto& [key, val] : header.items()) {
            if (key == "__metadata__") {
                for (auto& [mk, mv] : val.items()) metadata_[mk] = mv.get<std::string>();
                continue;
            }
            TensorInfo t;
            t.name = key;
            t.dtype = val.at("dtype").get<std::string>();
            t.shape = val.at("shape").get<std::vector<std::size_t>>();
            t.begin = val.at("data_offsets").at(0).get<std::uint64_t>();
            t.end = val.at("data_offsets").at(1).get<std::uint64_t>();
            tensors_.push_back(t);
        }
    }
    const std::string& path() const { return path_; }
    const std::map<std::string, std::string>& metadata() const { return metadata_; }
    const std::vector<TensorInfo>& tensors() const { return tensors_; }
    const TensorInfo& info(const std::string& name) const {
        for (auto& t : tensors_)
            if (t.name == name) return t;
        fail(path_, ": no tensor named '", name, "'");
    }
    std::vector<float> read_float(const std::string& name) const {
        const auto& t = info(name);
        check(t.dtype == "F32", path_, ": ", name, ": dtype ", t.dtype, " not supported yet");
        std::vector<float> out((t.end - t.begin) / 4);
        std::memcpy(out.data(), bytes_.data() + data_offset_ + t.begin, out.size() * 4);
        return out;
    }

private:
    std::string path_;
    std::vector<char> bytes_;
    std::uint64_t data_offset_ = 0;
    std::map<std::string, std::string> metadata_;
    std::vector<TensorInfo> tensors_;
};

}  // namespace hystack::io
