#pragma once
// hystack_golden: checks reference files produced by implementations hystack did not write.
// Each kind (`__metadata__.kind` of a safetensors file) has a checker in tests/golden/kind_*.cpp
// that registers itself here; the runner dispatches on kind, so new files of a known kind are
// picked up without code changes.
#include <hystack/io.hpp>

#include <cmath>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <map>
#include <sstream>
#include <span>
#include <string>
#include <vector>

namespace golden {

/// One tensor of a golden file, converted to float.
struct Tensor {
    std::vector<std::size_t> shape;
    std::vector<float> data;
    std::size_t numel() const { return data.size(); }
    std::size_t dim(std::size_t i) const { return shape.at(i); }
};

/// A golden file: tensors by name plus string metadata.
struct File {
    std::filesystem::path path;
    std::map<std::string, std::string> meta;
    std::map<std::string, Tensor> tensors;
    const Tensor& at(const std::string& name) const;
    bool has(const std::string& name) const { return tensors.count(name) != 0; }
    std::size_t meta_int(const std::string& key) const;
    double meta_double(const std::string& key) const;
};

File load(const std::filesystem::path& path);

/// The result of checking one file: empty `failures` means passed.
struct Report {
    std::vector<std::string> failures;
    std::vector<std::string> notes;  // e.g. "out max err 3e-6"
    /// Compares got against want elementwise: |got - want| <= atol + rtol * |want|. Sizes must match.
    void compare(const std::string& what, std::span<const float> got, std::span<const float> want, double atol = 1e-4,
                 double rtol = 1e-4);
    void fail(const std::string& msg) { failures.push_back(msg); }
};

/// "[b]" then suffix when a file holds more than one sequence, else "": names sequence b in messages.
/// (Appended piece by piece: GCC 12 misreads `"[" + std::to_string(b)` as an overlapping memcpy, -Wrestrict.)
inline std::string batch_tag(std::size_t batch, std::size_t b, const char* suffix = "") {
    std::string tag;
    if (batch > 1) {
        tag = "[";
        tag += std::to_string(b);
        tag += "]";
        tag += suffix;
    }
    return tag;
}

using Checker = std::function<void(const File&, Report&)>;
std::map<std::string, Checker>& registry();

/// Registers a checker for `kind` at static-initialisation time.
struct Register {
    Register(const std::string& kind, Checker fn) { registry()[kind] = std::move(fn); }
};

}  // namespace golden
