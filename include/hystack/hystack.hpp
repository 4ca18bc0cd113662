#pragma once
/// hystack: header-only C++20 kernels, layers and models for hybrid attention/SSM transformers.
/// This umbrella includes every module that needs only Eigen and xsimd. Checkpoint I/O
/// (<hystack/io.hpp>, needs nlohmann_json through the hystack::io target) is included separately.
#include "core.hpp"
#include "kernels.hpp"
#include "layers.hpp"
#include "stack.hpp"
#include "model.hpp"
