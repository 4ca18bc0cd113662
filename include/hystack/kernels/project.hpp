#pragma once
#include "../core/module.hpp"

// Projections by typed weights: what layers hand their weight matrices to. Each dispatches on the
// weight's element type to the kernel for it (f32: linear / linear_swiglu; bf16, q8_0: linear_typed / swiglu_typed); a new weight type adds
// a case here and its kernels, and no layer changes.

#include <span>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/view.hpp"
#include "../core/weight.hpp"
#include "linear.hpp"
#include "linear_typed.hpp"

namespace hystack::kernels {

/// y [L, N] = x [L, K] . W^T + bias, W [N, K] typed, bias [N] or empty.
template <Executor Exec>
void project(MatrixView<const float> x, const WeightView& W, std::span<const float> bias, MatrixView<float> y, Exec& exec) {
    switch (W.type) {
        case DType::f32: return linear(x, W.f32(), bias, y, exec);
        case DType::bf16:
        case DType::q8_0: return linear_typed(x, W, bias, y, exec);
    }
    fail("project: unsupported weight type ", to_string(W.type));
}

/// h [L, N] = silu(x . Wg^T) * (x . Wu^T), Wg and Wu [N, K] typed alike.
template <Executor Exec>
void project_swiglu(MatrixView<const float> x, const WeightView& Wg, const WeightView& Wu, MatrixView<float> h, Exec& exec) {
    check(Wg.type == Wu.type, "project_swiglu: gate is ", to_string(Wg.type), ", up is ", to_string(Wu.type));
    switch (Wg.type) {
        case DType::f32: return linear_swiglu(x, Wg.f32(), Wu.f32(), h, exec);
        case DType::bf16:
        case DType::q8_0: return swiglu_typed(x, Wg, Wu, h, exec);
    }
    fail("project_swiglu: unsupported weight type ", to_string(Wg.type));
}

/// Scalar reference of project: linear_reference, linear_bf16_reference or linear_q8_0_reference by
/// W's type.
inline void project_reference(MatrixView<const float> x, const WeightView& W, std::span<const float> bias,
                              MatrixView<float> y) {
    switch (W.type) {
        case DType::f32: return linear_reference(x, W.f32(), bias, y);
        case DType::bf16: return linear_bf16_reference(x, W, bias, y);
        case DType::q8_0: return linear_q8_0_reference(x, W, bias, y);
    }
    fail("project_reference: unsupported weight type ", to_string(W.type));
}

}  // namespace hystack::kernels
