#pragma once
#include "../core/module.hpp"

#include <cstddef>
#include <span>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/view.hpp"

namespace hystack::kernels {

/// y = x W^T + bias, the nn.Linear of every projection (HF weight layout [out, in]).
/// x [L, in], W [out, in], bias [out] or empty, y [L, out]. y must not alias x or W.
/// Threads split the output features (columns of y), so results do not depend on the thread count.
template <Executor Exec>
void linear(MatrixView<const float> x, MatrixView<const float> W, std::span<const float> bias, MatrixView<float> y,
            Exec& exec) {
    check_shape("linear: x", x, any, W.cols);
    check_shape("linear: y", y, x.rows, W.rows);
    check(bias.empty() || bias.size() == W.rows, "linear: bias: expected [", W.rows, "] or empty, got [", bias.size(), "]");
    if (y.empty()) return;
    if (W.cols == 0) {
        for (std::size_t r = 0; r < y.rows; ++r)
            for (std::size_t c = 0; c < y.cols; ++c) y(r, c) = bias.empty() ? 0.0f : bias[c];
        return;
    }
    // Chunks of output features in multiples of 16 so every chunk keeps full SIMD rows.
    const std::size_t blocks = (W.rows + 15) / 16;
    exec.parallel_for(blocks, 1, [&](std::size_t b0, std::size_t b1) {
        const std::size_t c0 = b0 * 16, c1 = std::min(W.rows, b1 * 16);
        auto yb = y.cols_slice(c0, c1 - c0).eigen();
        yb.noalias() = x.eigen() * W.rows_slice(c0, c1 - c0).eigen().transpose();
        if (!bias.empty())
            for (std::size_t r = 0; r < y.rows; ++r)
                for (std::size_t c = c0; c < c1; ++c) y(r, c) += bias[c];
    });
}

inline void linear(MatrixView<const float> x, MatrixView<const float> W, std::span<const float> bias, MatrixView<float> y) {
    SerialExecutor serial;
    linear(x, W, bias, y, serial);
}

}  // namespace hystack::kernels
