#pragma once
#include "module.hpp"

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace hystack {

class Weight;

/// A named parameter of a layer/model: HuggingFace name (relative to its owner, e.g.
/// "in_proj.weight", or full, e.g. "model.layers.3.mamba.in_proj.weight"), HF shape and the owner's
/// storage (row-major, product(shape) elements). A weight matrix (core/weight.hpp) is given by
/// `weight` and its rows [row0, row0 + rows): its element type may be other than f32, and a loader
/// may retype it (param_dtype, param_bytes there). `data` is the storage as floats, for every f32
/// parameter (plain or weight; empty for another type). `optional` parameters (e.g. biases a config
/// may omit) need not be present in a checkpoint.
struct ParamRef {
    std::string name;
    std::vector<std::size_t> shape;
    std::span<float> data;
    bool optional = false;
    Weight* weight = nullptr;
    std::size_t row0 = 0, rows = 0;
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
