#pragma once
#include "../core/module.hpp"

#include <cstddef>
#include <span>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/param.hpp"
#include "../core/view.hpp"
#include "../kernels/linear.hpp"
#include "stateless.hpp"

namespace hystack {

struct SwiGLUConfig {
    std::size_t d_model = 0;
    std::size_t hidden = 0;  // HF intermediate_size
};

/// Dense SwiGLU MLP (HF JambaMLP / LlamaMLP): y = down(silu(gate x) * up x), no biases.
/// Weights: "gate_proj.weight", "up_proj.weight" [hidden, d_model], "down_proj.weight" [d_model, hidden].
/// Stateless. Keeps a workspace grown on demand (the layer is not reentrant: one call at a time);
/// step allocates nothing once a call of at least its size has run.
class SwiGLU : public StatelessLayer<SwiGLU> {
public:
    static constexpr const char* name = "SwiGLU";
    using StatelessLayer<SwiGLU>::prefill;

    explicit SwiGLU(const SwiGLUConfig& cfg)
        : cfg_(cfg), gate_(cfg.hidden, cfg.d_model), up_(cfg.hidden, cfg.d_model), down_(cfg.d_model, cfg.hidden) {
        check(cfg.d_model > 0 && cfg.hidden > 0, "SwiGLU: d_model and hidden must be positive, got ", cfg.d_model, ", ",
              cfg.hidden);
        h_.resize(cfg.hidden);  // one token: step never allocates
    }

    const SwiGLUConfig& config() const { return cfg_; }

    ParamList params() {
        return {{"gate_proj.weight", {cfg_.hidden, cfg_.d_model}, gate_.span()},
                {"up_proj.weight", {cfg_.hidden, cfg_.d_model}, up_.span()},
                {"down_proj.weight", {cfg_.d_model, cfg_.hidden}, down_.span()}};
    }
    MatrixView<float> gate_proj() { return gate_.view(); }
    MatrixView<float> up_proj() { return up_.view(); }
    MatrixView<float> down_proj() { return down_.view(); }

    /// y = down(silu(gate x) * up x) for x [L, d_model]; y [L, d_model] (written, must not alias x).
    template <Executor Exec>
    void prefill(MatrixView<const float> x, MatrixView<float> y, Exec& exec) {
        check_shape("SwiGLU: x", x, any, cfg_.d_model);
        check_shape("SwiGLU: y", y, x.rows, cfg_.d_model);
        if (x.rows == 0) return;
        if (h_.size() < x.rows * cfg_.hidden) h_.resize(x.rows * cfg_.hidden);
        MatrixView<float> h(h_.data(), x.rows, cfg_.hidden);  // h [L, hidden]
        kernels::linear_swiglu(x, gate_.view(), up_.view(), h, exec);
        kernels::linear(h, down_.view(), {}, y, exec);
    }
    /// Workspace bytes currently held.
    std::size_t workspace_bytes() const { return h_.bytes(); }

private:
    SwiGLUConfig cfg_;
    Matrix<float> gate_, up_, down_;  // gate, up [hidden, d_model]; down [d_model, hidden]
    Buffer<float> h_;                 // h [L, hidden], grown on demand, never shrunk
};

}  // namespace hystack
