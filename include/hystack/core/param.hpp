#pragma once
#include "module.hpp"

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace hystack {

enum class DType : std::uint8_t;

/// A named parameter of a layer/model: HuggingFace name (relative to its owner, e.g.
/// "in_proj.weight", or full, e.g. "model.layers.3.mamba.in_proj.weight"), HF shape, the owner's
/// storage (row-major, product(shape) elements) and their element type (core/weight.hpp; f32, the
/// only type today, is DType{0}: `data` is that storage as floats). Loaders fill `data`; `optional`
/// parameters (e.g. biases a config may omit) need not be present in a checkpoint.
struct ParamRef {
    std::string name;
    std::vector<std::size_t> shape;
    std::span<float> data;
    bool optional = false;
    DType dtype = DType{0};
};
using ParamList = std::vector<ParamRef>;

/// Prepends `prefix` to each name of `params` and appends them to `out`.
inline void append_params(ParamList& out, const std::string& prefix, ParamList params) {
    for (auto& p : params) {
        p.name = prefix + p.name;
        out.push_back(std::move(p));
    }
}

}  // namespace hystack
