#pragma once
#include "../core/module.hpp"

// RMSNorm as a small layer (HF LlamaRMSNorm / JambaRMSNorm): y = x / sqrt(mean(x^2) + eps) * w.
// The stack's pre-mixer and pre-feed-forward norms and the model's final norm.

#include <algorithm>
#include <cstddef>
#include <span>
#include <string>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/param.hpp"
#include "../core/view.hpp"
#include "../kernels/rmsnorm.hpp"

namespace hystack {

/// RMSNorm over rows of d floats; weight [d] (HF "<name>.weight"), ones at construction.
class RMSNorm {
public:
    RMSNorm() = default;
    RMSNorm(std::size_t d, float eps) : w_(d), eps_(eps) { std::fill(w_.begin(), w_.end(), 1.0f); }

    std::size_t size() const { return w_.size(); }
    float eps() const { return eps_; }
    std::span<float> weight() { return w_.span(); }
    std::span<const float> weight() const { return w_.span(); }
    /// The weight as parameter `name` (e.g. "input_layernorm.weight").
    ParamRef param(std::string name) { return {std::move(name), {w_.size()}, w_.span()}; }

    /// One row: x, y [d] (may alias).
    void row(const float* x, float* y) const { kernels::rmsnorm_row(x, w_.data(), y, w_.size(), eps_); }

    /// y[r] = rmsnorm(x[r]) * w for x, y [L, d]; rows split over threads when there are many
    /// (rows are independent: the result does not depend on the split).
    template <Executor Exec>
    void forward(MatrixView<const float> x, MatrixView<float> y, Exec& exec) const {
        check_shape("RMSNorm: x", x, any, w_.size());
        check_shape("RMSNorm: y", y, x.rows, w_.size());
        if (x.rows < 64) {
            for (std::size_t r = 0; r < x.rows; ++r) row(x.row(r), y.row(r));
            return;
        }
        exec.parallel_for(x.rows, 32, [&](std::size_t b, std::size_t e) {
            for (std::size_t r = b; r < e; ++r) row(x.row(r), y.row(r));
        });
    }

private:
    Buffer<float> w_;  // [d]
    float eps_ = 1e-6f;
};

}  // namespace hystack
