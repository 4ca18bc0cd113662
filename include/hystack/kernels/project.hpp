#pragma once
#include "../core/module.hpp"

// Projections by typed weights: what layers hand their weight matrices to. Each dispatches on the
// weight's element type to the kernel for it (f32: linear / linear_swiglu); a new weight type adds
// a case here and its kernels, and no layer changes.

#include <span>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/view.hpp"
#include "../core/weight.hpp"
#include "linear.hpp"

namespace hystack::kernels {

/// y [L, N] = x [L, K] . W^T + bias, W [N, K] typed, bias [N] or empty.
template <Executor Exec>
void project(MatrixView<const float> x, const WeightView& W, std::span<const float> bias, MatrixView<float> y, Exec& exec) {
    switch (W.type) {
        case DType::f32: return linear(x, W.f32(), bias, y, exec);
    }
    fail("project: unsupported weight type ", to_string(W.type));
}

/// h [L, N] = silu(x . Wg^T) * (x . Wu^T), Wg and Wu [N, K] typed alike.
template <Executor Exec>
void project_swiglu(MatrixView<const float> x, const WeightView& Wg, const WeightView& Wu, MatrixView<float> h, Exec& exec) {
    check(Wg.type == Wu.type, "project_swiglu: gate is ", to_string(Wg.type), ", up is ", to_string(Wu.type));
    switch (Wg.type) {
        case DType::f32: return linear_swiglu(x, Wg.f32(), Wu.f32(), h, exec);
    }
    fail("project_swiglu: unsupported weight type ", to_string(Wg.type));
}

}  // namespace hystack::kernels
